"""
wsapp: real-time WebSocket apps on Autobahn and Twisted.

The names listed in ``__all__`` are wsapp's stable API: they keep their meaning within a
major version. They are imported on first use, so ``import wsapp`` stays light (Twisted is
loaded only when a name that needs it is first used).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .version import __version__ as __version__

if TYPE_CHECKING:
    from .channels import Position, Publication
    from .client import ClientFactory, ClientProtocol, Connection, ReconnectingClient, backoff
    from .client.sync import connect
    from .exceptions import (
        BackendUnavailableError,
        ClientError,
        ClientTimeoutError,
        ConfigError,
        ConnectError,
        ConnectionClosedError,
        HandshakeRefusedError,
        MessageError,
        StateError,
        StateFileError,
        WsappError,
    )
    from .messages import Request
    from .server import ServerFactory, ServerProtocol
    from .service import ServerService

#: Where each public name lives.
_HOMES = {
    "connect": ".client.sync",
    "Connection": ".client",
    "ClientFactory": ".client",
    "ClientProtocol": ".client",
    "ReconnectingClient": ".client",
    "backoff": ".client",
    "ServerFactory": ".server",
    "ServerProtocol": ".server",
    "ServerService": ".service",
    "Request": ".messages",
    "Position": ".channels",
    "Publication": ".channels",
    **dict.fromkeys(
        [
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
        ],
        ".exceptions",
    ),
}

__all__ = [
    "BackendUnavailableError",
    "ClientError",
    "ClientFactory",
    "ClientProtocol",
    "ClientTimeoutError",
    "ConfigError",
    "ConnectError",
    "Connection",
    "ConnectionClosedError",
    "HandshakeRefusedError",
    "MessageError",
    "Position",
    "Publication",
    "ReconnectingClient",
    "Request",
    "ServerFactory",
    "ServerProtocol",
    "ServerService",
    "StateError",
    "StateFileError",
    "WsappError",
    "backoff",
    "connect",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'wsapp' has no attribute {name!r}")
    value = getattr(import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
