"""
The connection lifecycle of a server connection without autobahn's per-connection waste.

autobahn builds the arguments of its debug-log lines (highlighted function names, peer
strings, a list of ~40 option triples) on every connection, debug logging on or off. The
overrides here do the same work as autobahn's methods, in the same order, without those
arguments (with debug logging on, autobahn's own methods run, lines and all);
``tests/test_handshake.py`` fails when the autobahn code they mirror changes.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import txaio
from autobahn.twisted.util import create_transport_details
from autobahn.util import _is_tls_error, _maybe_tls_reason
from autobahn.wamp.types import TransportDetails
from autobahn.websocket.protocol import TrafficStats, WebSocketProtocol
from autobahn.websocket.utf8validator import Utf8Validator
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure

from .fastpath import FastServerProtocol

__all__ = ["MIRRORED", "HandshakeProtocol"]

_CONNECTING = WebSocketProtocol.STATE_CONNECTING
_GROUND = WebSocketProtocol.SEND_STATE_GROUND


_COPIED: dict[type, tuple[str, ...]] = {}


def _copied(cls: Any) -> tuple[str, ...]:
    """The options a connection of ``cls`` copies from its factory: those it does not set."""
    names = _COPIED.get(cls)
    if names is None:
        names = _COPIED[cls] = tuple(n for n in cls.CONFIG_ATTRS if not hasattr(cls, n))
    return names


def _debugging() -> bool:
    return txaio.get_global_log_level() in ("debug", "trace")  # type: ignore[attr-defined]


class _LazyValidator:
    """A connection's UTF-8 validator, made when first read (autobahn reads it to validate)."""

    def __get__(self, protocol: Any, owner: type | None = None) -> Any:
        if protocol is None:
            return self
        validator = protocol.__dict__["utf8validator"] = Utf8Validator()
        return validator


class HandshakeProtocol(FastServerProtocol):
    """autobahn's server protocol whose connections start without debug-log arguments."""

    utf8validator: Any = _LazyValidator()

    openHandshakeTimeout: float
    trackTimings: bool
    utf8validateIncoming: bool

    def connectionMade(self) -> None:
        # autobahn.twisted.websocket.WebSocketAdapterProtocol.connectionMade without its
        # debug line
        if _debugging():
            super().connectionMade()
            return
        transport: Any = self.transport
        details = self._transport_details = create_transport_details(transport, self.is_server)
        details.channel_framing = TransportDetails.CHANNEL_FRAMING_WEBSOCKET
        self.peer = details.peer
        try:
            transport.setTcpNoDelay(self.tcpNoDelay)  # type: ignore[attr-defined]
        except Exception:  # as autobahn: Unix sockets refuse the option, for one
            pass
        self._connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # WebSocketAdapterProtocol.connectionLost without its debug lines (their arguments
        # are built on every close)
        if _debugging():
            super().connectionLost(reason)
            return
        error = reason.value
        if not isinstance(error, ConnectionDone) and _is_tls_error(error):
            self.log.error(_maybe_tls_reason(error))
        self._connectionLost(reason)

    def _connectionMade(self) -> None:
        # WebSocketProtocol._connectionMade (a server's) without the option list it builds
        # for a debug line, then WebSocketServerProtocol's count.
        if _debugging():
            super()._connectionMade()
            return
        factory = self.factory
        own = self.__dict__
        own.update(
            (name, getattr(factory, name)) for name in _copied(type(self)) if name not in own
        )
        self._perMessageCompress = None
        self.trackedTimings = None  # type: ignore[assignment]
        self.setTrackTimings(self.trackTimings)
        self.trafficStats = TrafficStats()
        self.state = _CONNECTING
        self.send_state = _GROUND
        self.data = b""
        self.send_queue = deque()
        self.triggered = False
        if self.utf8validateIncoming:
            self.utf8validator = Utf8Validator()
        # else: made when first used (_LazyValidator)
        self.wasMaxFramePayloadSizeExceeded = False
        self.wasMaxMessagePayloadSizeExceeded = False
        self.closedByMe = False
        self.failedByMe = False
        self.droppedByMe = False
        self.wasClean = False
        self.wasNotCleanReason = None  # type: ignore[assignment]
        self.wasServerConnectionDropTimeout = False
        self.wasOpenHandshakeTimeout = False
        self.wasCloseHandshakeTimeout = False
        self.wasServingFlashSocketPolicyFile = False
        self.localCloseCode = None
        self.localCloseReason = None
        self.remoteCloseCode = None
        self.remoteCloseReason = None
        self.openHandshakeTimeoutCall = None
        self.closeHandshakeTimeoutCall = None
        self.autoPingTimeoutCall = None
        self.autoPingPending = None
        self.autoPingPendingCall = None
        self.autoPingPendingSeq = 0
        self.autoPingPendingSent = None
        if self.openHandshakeTimeout > 0:
            self.openHandshakeTimeoutCall = factory._batched_timer.call_later(
                self.openHandshakeTimeout, self.onOpenHandshakeTimeout
            )
        factory.countConnections += 1


#: The autobahn methods mirrored above, by qualified name, and the hash of the source each
#: was written from (``tests/test_handshake.py`` compares them with the installed one).
MIRRORED: dict[str, str] = {
    "autobahn.twisted.websocket.WebSocketAdapterProtocol.connectionMade": (
        "63ceb64088e44552f7a6d6e97d2d7b5449cfb3dd86484c5e009356a316c6f7fe"
    ),
    "autobahn.twisted.websocket.WebSocketAdapterProtocol.connectionLost": (
        "cf4d8aab057cd161dc6c415c3204dc0455d0444d7d1e19b2d28dbc5c88720c27"
    ),
    "autobahn.websocket.protocol.WebSocketProtocol._connectionMade": (
        "7ac58d8bb6c3c752dc6753e09d2358573a2a47da90275e962830af0600fdf077"
    ),
    "autobahn.websocket.protocol.WebSocketServerProtocol._connectionMade": (
        "213dadb6d12d3d482c041df7230067083cf5047489dadf823314ea96a0d1914f"
    ),
}


def source_digest(qualified: str) -> str:
    """The SHA-256 of the source of the function named ``qualified`` (module.Class.name)."""
    import hashlib
    import importlib
    import inspect

    module_name, class_name, name = qualified.rsplit(".", 2)
    function: Any = getattr(getattr(importlib.import_module(module_name), class_name), name)
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()
