"""Property-based: arbitrary frames at the counter's dispatcher, through an in-memory transport."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from tests.rawws import client_frame, server_frames, upgrade_request
from wsapp.apps.counter import CounterProtocol
from wsapp.config import Config, LimitsConfig
from wsapp.guard import Guard
from wsapp.messages import (
    BINARY_NOT_SUPPORTED,
    INVALID_ARGUMENT,
    INVALID_JSON,
    INVALID_REQUEST,
    INVALID_UTF8,
    UNKNOWN_ACTION,
)

CLIENT_ERRORS = {
    BINARY_NOT_SUPPORTED,
    INVALID_ARGUMENT,
    INVALID_JSON,
    INVALID_REQUEST,
    INVALID_UTF8,
    UNKNOWN_ACTION,
}
MAX_AMOUNT = CounterProtocol.default_options["max_amount"]

#: Texts that may hold lone surrogates, which JSON can escape and UTF-8 cannot encode.
texts = st.text(st.characters(codec=None, exclude_categories=()), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
requests = st.fixed_dictionaries(
    {
        "action": st.sampled_from(["plus", "minus", "add", "get", "say", "Plus", ""])
        | st.text(max_size=8)
    },
    optional={
        "amount": st.integers(-2 * MAX_AMOUNT, 2 * MAX_AMOUNT) | json_values,
        "id": st.integers() | texts | json_values,
    },
)
#: (is_binary, payload) pairs: raw bytes, text, any JSON, and request-shaped JSON.
messages = st.one_of(
    st.tuples(st.booleans(), st.binary(max_size=64)),
    st.tuples(st.just(False), st.text(max_size=64).map(str.encode)),
    st.tuples(st.just(False), json_values.map(lambda value: json.dumps(value).encode())),
    st.tuples(st.just(False), requests.map(lambda value: json.dumps(value).encode())),
)


def expected_change(is_binary: bool, payload: bytes) -> int:
    """What the counter must move by: only valid plus, minus and add requests move it."""
    if is_binary:
        return 0
    try:
        data = json.loads(payload.decode("utf-8"))
    except ValueError:
        return 0
    if not isinstance(data, dict) or has_lone_surrogate(data):
        return 0
    request_id = data.get("id")
    if "id" in data and (isinstance(request_id, bool) or not isinstance(request_id, (str, int))):
        return 0
    amount = data.get("amount")
    return {
        "plus": 1,
        "minus": -1,
        "add": amount
        if isinstance(amount, int) and not isinstance(amount, bool) and abs(amount) <= MAX_AMOUNT
        else 0,
    }.get(data.get("action"), 0)  # type: ignore[arg-type]


def has_lone_surrogate(data: Any) -> bool:
    """Whether decoded JSON holds a string UTF-8 cannot encode: such requests are refused."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def open_in_memory() -> tuple[Any, StringTransport, Any]:
    """A counter connection past its opening handshake, on an in-memory transport."""
    guard = Guard(Config(limits=LimitsConfig(rate=0)))
    factory = CounterProtocol.factory_class(
        CounterProtocol, guard=guard, reactor=MemoryReactorClock()
    )
    peer = IPv4Address("TCP", "127.0.0.1", 40000)
    protocol = factory.buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    protocol.dataReceived(upgrade_request("/counter"))
    assert transport.value().startswith(b"HTTP/1.1 101")
    transport.clear()
    return protocol, transport, factory


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6))
def test_dispatcher_survives_anything(sequence: list[tuple[bool, bytes]]) -> None:
    """No exception escapes, every reply is a JSON event, only valid actions move the counter."""
    protocol, transport, factory = open_in_memory()
    expected = 0
    for is_binary, payload in sequence:
        protocol.dataReceived(client_frame(payload, 2 if is_binary else 1))
        frames, rest = server_frames(transport.value())
        transport.clear()
        assert rest == b"" and frames, "every message gets a whole reply"
        for opcode, data in frames:
            assert opcode == 1
            event = json.loads(data)
            assert isinstance(event, dict) and isinstance(event["type"], str)
            if event["type"] == "error":
                assert event["error"] in CLIENT_ERRORS
        expected += expected_change(is_binary, payload)
        assert factory.hub.backend.integers.get(factory.name, 0) == expected
        assert protocol.state == protocol.STATE_OPEN
    protocol.connectionLost(Failure(ConnectionDone()))
    assert len(factory.registry) == 0
