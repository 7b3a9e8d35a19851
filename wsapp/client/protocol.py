"""
The client side: a base protocol mirroring :class:`wsapp.server.ServerProtocol`.

Incoming JSON events ``{"type": "state", ...}`` call ``event_state(event)``; outgoing
requests are sent with :meth:`ClientProtocol.send_action`.
"""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..compression import apply_level, client_offers, client_response_accept
from ..config import CompressionConfig
from ..messages import encode

__all__ = ["ClientFactory", "ClientProtocol"]

log = Logger()

_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")


class ClientProtocol(WebSocketClientProtocol):
    """
    Base class of wsapp clients: JSON events in, JSON requests out.

    ``onOpen``, ``onMessage`` and ``onClose`` follow autobahn's lifecycle; a text message
    holding a JSON object with a ``"type"`` calls ``event_<type>(event)`` when defined, and
    :meth:`onUnhandled` otherwise (including binary and non-JSON messages).
    """

    factory: ClientFactory
    #: True: invalid UTF-8 in a text frame fails the connection (1007), as RFC 6455 asks.
    validate_utf8: ClassVar[bool] = True
    #: Why the TCP (or TLS) connection ended, once it has.
    lost_reason: Failure | None = None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost_reason = reason
        super().connectionLost(reason)

    def onOpen(self) -> None:
        apply_level(self, self.factory.compression.level)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        event = None if isBinary else _decode_event(payload)
        handler = getattr(self, f"event_{event['type']}", None) if event else None
        if callable(handler):
            handler(event)
        else:
            self.onUnhandled(payload, isBinary)

    def onUnhandled(self, payload: bytes, isBinary: bool) -> None:
        """Called with a message no ``event_<type>`` method takes; logs it by default."""
        log.debug("unhandled message of {size} bytes", size=len(payload))

    def send_action(self, action: str, **fields: Any) -> None:
        """Send ``{"action": action, **fields}`` to the server."""
        payload = encode({"action": action, **fields})
        self.sendMessage(payload, doNotCompress=len(payload) < self.factory.compression.min_size)


def _decode_event(payload: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(payload)
    except ValueError:
        return None
    if isinstance(event, dict) and isinstance(event.get("type"), str):
        if _EVENT_TYPE.fullmatch(event["type"]):
            return event
    return None


class ClientFactory(WebSocketClientFactory):
    """Connects one :class:`ClientProtocol` class to ``url``, offering permessage-deflate."""

    protocol: type[ClientProtocol]  # type: ignore[assignment]

    def __init__(
        self,
        url: str,
        protocol: type[ClientProtocol],
        *,
        compression: CompressionConfig | None = None,
        max_message_size: int = 16 << 20,
        max_frame_size: int = 16 << 20,
        reactor: IReactorTime | None = None,
    ) -> None:
        super().__init__(url, reactor=reactor)
        self.protocol = protocol
        self.compression = compression or CompressionConfig()
        self.setProtocolOptions(
            maxMessagePayloadSize=max_message_size,
            maxFramePayloadSize=max_frame_size,
            utf8validateIncoming=protocol.validate_utf8,
            # On a protocol error, send a close frame after what was already queued instead
            # of aborting the TCP connection, which would discard queued messages.
            failByDrop=False,
        )
        if self.compression.enabled:
            self.setProtocolOptions(
                perMessageCompressionOffers=client_offers(self.compression),
                perMessageCompressionAccept=client_response_accept(self.compression),
            )
