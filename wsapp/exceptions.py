"""
Exceptions raised by wsapp.

All of them derive from :class:`WsappError`::

    WsappError
    ├── ConfigError        a configuration file or option is invalid
    ├── StateFileError     the memory backend's state file cannot be read
    ├── MessageError       a client message cannot be handled; sent back as an error event
    │   ├── StateError     a valid request that the state refuses (e.g. counter out of range)
    │   └── BackendUnavailableError  the shared state (Redis) cannot be reached right now
    └── ClientError        a client could not do what it was asked
        ├── ConnectError   no connection: refused, unreachable, TLS failure, handshake timeout
        │   └── HandshakeRefusedError   the server answered the upgrade with an HTTP status
        ├── ConnectionClosedError       the connection is closed (or closed while waiting)
        ├── ClientTimeoutError          no message or reply arrived in time
        └── ApiError       the HTTP API answered with an error status

The client errors also derive from the matching built-in (:class:`ConnectionError`,
:class:`TimeoutError`), so code that catches those keeps working.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ClientError",
    "ClientTimeoutError",
    "ConfigError",
    "ConnectError",
    "ConnectionClosedError",
    "HandshakeRefusedError",
    "MessageError",
    "StateError",
    "StateFileError",
    "WsappError",
]


class WsappError(Exception):
    """Base class of every exception raised by wsapp."""


class ConfigError(WsappError):
    """
    A configuration value is invalid.

    ``source`` names the file (or ``"command line"``), ``key`` the dotted path of the
    offending setting, so the message points at the exact line to fix.
    """

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")
        self.source = source
        self.key = key
        self.message = message


class MessageError(WsappError):
    """
    A client message cannot be handled.

    The server answers it with ``{"type": "error", "error": code, "detail": detail}``
    to the sender only and keeps the connection open.
    """

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class StateError(MessageError):
    """A well-formed request that the application state refuses."""


class StateFileError(WsappError):
    """The memory backend's state file exists but cannot be used; the message names it."""


class BackendUnavailableError(MessageError):
    """The shared state (Redis) cannot be reached; the request may not have taken effect."""

    def __init__(self, detail: str = "the shared state is unavailable, try again shortly") -> None:
        super().__init__("backend-unavailable", detail)


class ClientError(WsappError):
    """Base class of the errors a client raises."""


class ConnectError(ClientError, ConnectionError):
    """The connection could not be opened; the message says why in one line."""


class HandshakeRefusedError(ConnectError):
    """The server refused the WebSocket upgrade with HTTP ``status``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"server refused the WebSocket upgrade: HTTP {status} {reason}".rstrip())
        self.status = status
        self.reason = reason


class ConnectionClosedError(ClientError, ConnectionError):
    """The connection is closed; ``code`` and ``reason`` come from the close, if any."""

    def __init__(self, code: int | None = None, reason: str | None = None) -> None:
        detail = f" ({code}{f' {reason}' if reason else ''})" if code else ""
        super().__init__(f"connection closed{detail}")
        self.code = code
        self.reason = reason


class ClientTimeoutError(ClientError, TimeoutError):
    """Nothing arrived within the timeout given to ``recv`` or ``request``."""


class ApiError(ClientError):
    """
    The HTTP API refused a call: HTTP ``status``, the API's error ``code`` (such as
    ``invalid-argument``, ``unauthorized``, ``backend-unavailable``) and its ``detail``.
    """

    def __init__(self, status: int, code: str, detail: str = "") -> None:
        super().__init__(f"HTTP {status} {code}{f': {detail}' if detail else ''}")
        self.status = status
        self.code = code
        self.detail = detail
