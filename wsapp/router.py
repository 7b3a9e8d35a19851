"""
The listening port's protocol: WebSocket upgrades straight to their app, the rest to the web site.

A :class:`HeadReader` buffers a new connection's first bytes. A request
``GET /app-path HTTP/1.1`` that asks for a WebSocket upgrade, on a mounted app's path, goes
to that app's autobahn protocol with the buffered bytes, just as
:class:`autobahn.twisted.resource.WebSocketResource` hands over the transport, but without
Twisted's web server parsing the request first (the request object, the resource lookup,
the request rebuilt as bytes for autobahn to parse again). Anything else (the page,
``/health``, ``/metrics``, unknown paths, requests without an upgrade, oversized heads)
goes to the :class:`~twisted.web.server.Site` unchanged, where each app is still mounted as
a ``WebSocketResource``, so those requests are answered as before. A connection that has
not sent a request head within the opening-handshake timeout is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.web.server import Site

__all__ = ["HandshakeRouter", "HeadReader"]

log = Logger()

#: The largest request head (request line and headers) read here, as Twisted's web server
#: allows; a longer one goes to the site, which refuses it.
MAX_HEAD = 16384


class HandshakeRouter(Factory):
    """Builds a :class:`HeadReader` per connection; listen with this instead of ``site``."""

    def __init__(
        self,
        site: Site,
        apps: Mapping[str, WebSocketServerFactory],
        *,
        deadline: float,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.site = site
        #: The app factory of each upgrade path, as bytes.
        self.apps = {path.encode(): factory for path, factory in apps.items()}
        self.deadline = deadline
        self.reactor = reactor

    def doStart(self) -> None:
        super().doStart()
        self.site.doStart()

    def doStop(self) -> None:
        self.site.doStop()
        super().doStop()

    def buildProtocol(self, addr: IAddress | None) -> HeadReader:
        return HeadReader(self, addr)


class HeadReader(Protocol):
    """Reads a request head, then hands the connection to an app or to the web site."""

    def __init__(self, router: HandshakeRouter, addr: IAddress | None) -> None:
        self.router = router
        self.addr = addr
        self.buffer = b""
        self.timer: DelayedCall | None = None

    def connectionMade(self) -> None:
        self.timer = self.router.reactor.callLater(self.router.deadline, self._expire)

    def dataReceived(self, data: bytes) -> None:
        buffer = self.buffer = self.buffer + data
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            if len(buffer) > MAX_HEAD:
                self._hand_over(self.router.site)
            return
        app = self._app(buffer[:line_end])
        if app is None:
            self._hand_over(self.router.site)
            return
        head_end = buffer.find(b"\r\n\r\n", line_end, MAX_HEAD)
        if head_end < 0:
            if len(buffer) >= MAX_HEAD:
                self._hand_over(self.router.site)
            return
        upgrade = b"\r\nupgrade:" in buffer[line_end : head_end + 2].lower()
        self._hand_over(app if upgrade else self.router.site)

    def _app(self, request_line: bytes) -> WebSocketServerFactory | None:
        """The app of a ``GET PATH HTTP/1.1`` request line whose path is mounted, or None."""
        method, _, rest = request_line.partition(b" ")
        target, _, version = rest.partition(b" ")
        if method != b"GET" or version != b"HTTP/1.1":
            return None
        return self.router.apps.get(target.partition(b"?")[0])

    def _hand_over(self, factory: Any) -> None:
        """Connect ``factory``'s new protocol to this transport and give it the bytes read."""
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        transport: Any = self.transport
        protocol = factory.buildProtocol(self.addr)
        if getattr(transport, "wrappedProtocol", None) is self:
            transport.wrappedProtocol = protocol  # TLS wraps this protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        buffer, self.buffer = self.buffer, b""
        protocol.dataReceived(buffer)

    def _expire(self) -> None:
        self.timer = None
        transport: Any = self.transport
        log.info("{peer}: no complete request in time", peer=transport.getPeer())
        transport.abortConnection()

    def connectionLost(self, reason: object = None) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
