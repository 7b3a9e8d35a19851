"""The JSON message layer, without sockets."""

from __future__ import annotations

import json

import pytest

from wsapp.exceptions import MessageError
from wsapp.messages import Request, encode, error_event, parse_request


@pytest.mark.parametrize(
    ("payload", "is_binary", "code"),
    [
        (b'{"action":"plus"}', True, "binary-not-supported"),
        (b"\xff\xfe{}", False, "invalid-utf8"),
        (b"{not json", False, "invalid-json"),
        (b"", False, "invalid-json"),
        (b"[1, 2]", False, "invalid-request"),
        (b'"plus"', False, "invalid-request"),
        (b"{}", False, "invalid-request"),
        (b'{"action": 3}', False, "invalid-request"),
        (b'{"action": "__init__"}', False, "invalid-request"),
        (b'{"action": "plus", "id": [1]}', False, "invalid-request"),
        (b'{"action": "plus", "id": true}', False, "invalid-request"),
        (b'{"action": "plus", "id": "\\udfff"}', False, "invalid-json"),
        (b'{"action": "say", "text": "\\ud83d"}', False, "invalid-json"),
        (b"[" * 32000 + b"]" * 32000, False, "invalid-json"),
    ],
)
def test_bad_messages_raise_their_error_code(payload: bytes, is_binary: bool, code: str) -> None:
    """Each kind of bad input is named by its own error code."""
    with pytest.raises(MessageError) as error:
        parse_request(payload, is_binary)
    assert error.value.code == code


def test_request_carries_action_fields_and_id() -> None:
    """A valid request keeps its action, all its fields and its id."""
    request = parse_request(b'{"action": "add", "amount": 3, "id": "a1"}', False)
    assert request == Request("add", {"action": "add", "amount": 3, "id": "a1"}, "a1")


def test_request_integer_and_text_fields_are_checked() -> None:
    """Typed field accessors refuse wrong types and out-of-range values."""
    request = Request("x", {"n": 5, "b": True, "t": "hello"})
    assert request.integer("n", low=0, high=5) == 5
    assert request.text("t", max_length=5) == "hello"
    for call in [
        lambda: request.integer("n", low=0, high=4),
        lambda: request.integer("b", low=0, high=4),
        lambda: request.integer("missing", low=0, high=4),
        lambda: request.text("t", max_length=4),
        lambda: request.text("n", max_length=4),
    ]:
        with pytest.raises(MessageError):
            call()


def test_events_encode_compactly_and_errors_echo_ids() -> None:
    """Events are compact UTF-8 JSON; an error event carries the request's id."""
    assert encode({"type": "state", "value": 1}) == b'{"type":"state","value":1}'
    assert json.loads(encode({"type": "chat", "text": "é"})) == {"type": "chat", "text": "é"}
    error = MessageError("unknown-action", "no")
    assert error_event(error, 4) == {
        "type": "error",
        "error": "unknown-action",
        "detail": "no",
        "id": 4,
    }
    assert "id" not in error_event(error)


def test_surrogate_pairs_decode_and_lone_surrogates_encode_escaped() -> None:
    """An escaped pair is one character; encode() writes a lone surrogate as an escape."""
    request = parse_request(b'{"action": "say", "text": "\\ud83d\\ude00", "id": "\\u00e9"}', False)
    assert request.fields["text"] == "\U0001f600" and request.id == "\u00e9"
    assert (
        encode({"type": "chat", "text": "a\udfff\u00e9"})
        == '{"type":"chat","text":"a\\udfff\u00e9"}'.encode()
    )
    assert json.loads(encode({"type": "x", "\ud800": 1})) == {"type": "x", "\ud800": 1}
