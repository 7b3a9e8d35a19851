"""
The JSON message layer: parse client requests and build server events.

A request is a JSON object with an ``"action"`` and, optionally, an ``"id"`` that the
server echoes in its reply. An event is a JSON object with a ``"type"``. This module does
no I/O; :class:`MessageError` carries the error code sent back to the client.

Lone surrogates: JSON may escape half of a UTF-16 surrogate pair (``"\\udfff"``), which
no UTF-8 text can hold. A request containing one, anywhere (id, key, text), is refused as
``invalid-json`` before anything runs; that error carries no id, since the id may be the
bad string. Escaped pairs (``"\\ud83d\\ude00"``) are one character and fine. An event that
server code builds with a lone surrogate is still sent: :func:`encode` writes it as a
``\\uXXXX`` escape. JSON nested too deeply to decode is ``invalid-json`` as well.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .exceptions import MessageError

__all__ = [
    "BACKEND_UNAVAILABLE",
    "BINARY_NOT_SUPPORTED",
    "INTERNAL_ERROR",
    "INVALID_ARGUMENT",
    "INVALID_JSON",
    "INVALID_REQUEST",
    "INVALID_TOKEN",
    "INVALID_UTF8",
    "LIMIT_EXCEEDED",
    "NOT_AUTHENTICATED",
    "OUT_OF_RANGE",
    "PERMISSION_DENIED",
    "RATE_LIMITED",
    "UNKNOWN_ACTION",
    "UNKNOWN_NAMESPACE",
    "Request",
    "encode",
    "error_event",
    "parse_request",
]

#: The error codes a client can receive in ``{"type": "error", "error": CODE}``.
INVALID_UTF8 = "invalid-utf8"
INVALID_JSON = "invalid-json"
BINARY_NOT_SUPPORTED = "binary-not-supported"
INVALID_REQUEST = "invalid-request"
UNKNOWN_ACTION = "unknown-action"
INVALID_ARGUMENT = "invalid-argument"
OUT_OF_RANGE = "out-of-range"
INTERNAL_ERROR = "internal-error"
BACKEND_UNAVAILABLE = "backend-unavailable"
RATE_LIMITED = "rate-limited"
PERMISSION_DENIED = "permission-denied"
UNKNOWN_NAMESPACE = "unknown-namespace"
LIMIT_EXCEEDED = "limit-exceeded"
#: A connection token (authenticate, refresh) was refused.
INVALID_TOKEN = "invalid-token"
#: A connection that must authenticate sent another request first.
NOT_AUTHENTICATED = "not-authenticated"

_ACTION_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")

RequestId = str | int


@dataclass(frozen=True)
class Request:
    """A decoded client request."""

    action: str
    fields: Mapping[str, Any]
    id: RequestId | None = None

    def integer(self, name: str, *, low: int, high: int) -> int:
        """Return field ``name`` as an integer within ``[low, high]``, or raise MessageError."""
        value = self.fields.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise MessageError(INVALID_ARGUMENT, f"{name!r} must be an integer")
        if not low <= value <= high:
            raise MessageError(INVALID_ARGUMENT, f"{name!r} must be between {low} and {high}")
        return value

    def text(self, name: str, *, max_length: int) -> str:
        """Return field ``name`` as a string of at most ``max_length`` characters."""
        value = self.fields.get(name)
        if not isinstance(value, str):
            raise MessageError(INVALID_ARGUMENT, f"{name!r} must be a string")
        if len(value) > max_length:
            raise MessageError(INVALID_ARGUMENT, f"{name!r} is longer than {max_length} characters")
        return value


def request_id(data: object) -> RequestId | None:
    """Return the ``"id"`` of a decoded request if it is a string or an integer."""
    if isinstance(data, Mapping):
        value = data.get("id")
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return value
    return None


def parse_request(payload: bytes, is_binary: bool) -> Request:
    """
    Decode one WebSocket message into a :class:`Request`.

    Raises :class:`MessageError` with the code of the first problem found.
    """
    if is_binary:
        raise MessageError(BINARY_NOT_SUPPORTED, "this app takes JSON text messages, not binary")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageError(INVALID_UTF8, "message is not valid UTF-8") from None
    try:
        data = json.loads(text)
        lone_surrogate = "\\u" in text and _has_lone_surrogate(data)
    except ValueError as error:
        raise MessageError(INVALID_JSON, f"message is not valid JSON: {error}") from None
    except RecursionError:
        raise MessageError(INVALID_JSON, "message is nested too deeply") from None
    if lone_surrogate:
        raise MessageError(INVALID_JSON, "message has a lone surrogate escape (\\ud800-\\udfff)")
    if not isinstance(data, dict):
        raise MessageError(INVALID_REQUEST, "a request must be a JSON object")
    if "id" in data and request_id(data) is None:
        raise MessageError(INVALID_REQUEST, "'id' must be a string or an integer")
    action = data.get("action")
    if not isinstance(action, str) or not _ACTION_NAME.fullmatch(action):
        raise MessageError(INVALID_REQUEST, "a request needs an 'action' naming what to do")
    return Request(action, data, request_id(data))


def _has_lone_surrogate(data: object) -> bool:
    """Whether a decoded JSON value holds a string with a lone surrogate (not UTF-8 encodable)."""
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


#: ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)`` without making an encoder
#: on every call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(event: Mapping[str, Any]) -> bytes:
    """Serialize an event as compact UTF-8 JSON; a lone surrogate is written as ``\\uXXXX``."""
    # Outside strings the JSON text is ASCII, so the only characters UTF-8 cannot encode are
    # lone surrogates inside strings, and backslashreplace writes them as JSON escapes.
    return _COMPACT.encode(event).encode("utf-8", "backslashreplace")


def error_event(error: MessageError, request: RequestId | None = None) -> dict[str, Any]:
    """Build the error event sent to the client whose message caused ``error``."""
    event: dict[str, Any] = {"type": "error", "error": error.code, "detail": error.detail}
    if request is not None:
        event["id"] = request
    return event


def with_id(event: Mapping[str, Any], request: RequestId | None) -> Mapping[str, Any]:
    """Return ``event`` carrying the request's id, if it had one."""
    return event if request is None else {**event, "id": request}
