"""Echo: every message, text or binary, comes back as it was sent."""

from __future__ import annotations

from ..client import ClientProtocol
from ..server import ServerProtocol

__all__ = ["EchoClientProtocol", "EchoProtocol"]


class EchoProtocol(ServerProtocol):
    """Sends every message back unchanged; invalid UTF-8 text fails the connection (RFC 6455)."""

    validate_utf8 = True
    #: The Autobahn TestSuite sends thousands of messages at once to this app.
    rate_limited = False
    #: Its compression cases check that echoes come back compressed, however short.
    compress_every_message = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


class EchoClientProtocol(ClientProtocol):
    """Sends every message back unchanged: the peer the Autobahn TestSuite's server drives."""

    validate_utf8 = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # A message can still arrive once closing began; nothing may be sent then.
        if self.state == self.STATE_OPEN:
            self.sendMessage(payload, isBinary)
