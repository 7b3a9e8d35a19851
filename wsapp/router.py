"""
The listening port's protocol: the one authority over WebSocket upgrades.

A :class:`HeadReader` buffers a new connection's request head. A WebSocket upgrade (an
``Upgrade`` header naming ``websocket``) on a mounted app's exact path goes to that app's
autobahn protocol with the buffered bytes, which checks the rest of the handshake (method,
HTTP version, key, origin, token, limits). An upgrade to any other path is answered 404
here. Every other request (the page, ``/health``, ``/metrics``, oversized heads) goes to
the :class:`~twisted.web.server.Site`, which upgrades nothing: at each app's path it holds an
:class:`UpgradeRequired` page. A connection that has not sent a request head within the
opening-handshake timeout is dropped.

Over TLS the router offers ALPN ``http/1.1`` only (:meth:`HandshakeRouter.acceptableProtocols`):
neither the apps nor the site's requests here speak HTTP/2.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.interfaces import IAddress, IProtocolNegotiationFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface import implementer

from .timers import BucketTimer

__all__ = ["HandshakeRouter", "HeadReader", "UpgradeRequired", "http_response"]

log = Logger()

#: The largest request head (request line and headers) read here, as Twisted's web server
#: allows; a longer one goes to the site, which refuses it.
MAX_HEAD = 16384

#: The values of ``Upgrade`` headers in a lowercased request head.
_UPGRADE = re.compile(rb"\r\nupgrade[ \t]*:([^\r\n]*)")


def http_response(status: int, text: str, server: str) -> bytes:
    """A complete ``HTTP/1.1`` response with a plain-text body, closing the connection."""
    phrase = HTTPStatus(status).phrase
    body = f"{status} {phrase}: {text}\n".encode()
    lines = [f"HTTP/1.1 {status} {phrase}"]
    if server:
        lines.append(f"Server: {server}")
    lines += [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@implementer(IProtocolNegotiationFactory)
class HandshakeRouter(Factory):
    """Builds a :class:`HeadReader` per connection; listen with this instead of ``site``."""

    def __init__(
        self,
        site: Site,
        apps: Mapping[str, WebSocketServerFactory],
        *,
        deadline: float,
        server_header: str = "wsapp",
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.site = site
        #: The app factory of each upgrade path, as bytes.
        self.apps = {path.encode(): factory for path, factory in apps.items()}
        self.deadline = deadline
        #: The ``Server`` header of the answers given here ("": none).
        self.server_header = server_header
        self.reactor = reactor
        #: The request-head deadlines of connections not handed over yet.
        self.timer = BucketTimer(reactor)

    def acceptableProtocols(self) -> list[bytes]:
        """The ALPN protocols spoken after TLS: HTTP/1.1 only."""
        return [b"http/1.1"]

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
        self.timer: Any = None
        #: Set once this reader answered the request itself.
        self.refused = False

    def connectionMade(self) -> None:
        self.timer = self.router.timer.call_later(self.router.deadline, self._expire)

    def dataReceived(self, data: bytes) -> None:
        if self.refused:
            return  # answered already; the connection is closing
        buffer = self.buffer = self.buffer + data
        head_end = buffer.find(b"\r\n\r\n", 0, MAX_HEAD)
        if head_end < 0:
            if len(buffer) >= MAX_HEAD:
                self._hand_over(self.router.site)
            return
        head = buffer[: head_end + 2].lower()
        if not any(_names_websocket(value) for value in _UPGRADE.findall(head)):
            self._hand_over(self.router.site)
            return
        target = buffer[: buffer.find(b"\r\n")].split(b" ")[1:2]
        app = self.router.apps.get(target[0].partition(b"?")[0]) if target else None
        if app is None:
            self._refuse(404, "no WebSocket app at this path")
        else:
            self._hand_over(app)

    def _refuse(self, status: int, text: str) -> None:
        """Answer an upgrade with an HTTP error and close."""
        self._stop_timer()
        self.refused = True
        transport: Any = self.transport
        log.info("{peer}: upgrade refused with {status}", peer=transport.getPeer(), status=status)
        transport.write(http_response(status, text, self.router.server_header))
        transport.loseConnection()

    def _hand_over(self, factory: Any) -> None:
        """Connect ``factory``'s new protocol to this transport and give it the bytes read."""
        self._stop_timer()
        transport: Any = self.transport
        protocol = factory.buildProtocol(self.addr)
        if getattr(transport, "wrappedProtocol", None) is self:
            transport.wrappedProtocol = protocol  # TLS wraps this protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        buffer, self.buffer = self.buffer, b""
        protocol.dataReceived(buffer)

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = None

    def _expire(self) -> None:
        self.timer = None
        transport: Any = self.transport
        log.info("{peer}: no complete request in time", peer=transport.getPeer())
        transport.abortConnection()

    def connectionLost(self, reason: object = None) -> None:
        self._stop_timer()


def _names_websocket(value: bytes) -> bool:
    return any(token.strip() == b"websocket" for token in value.split(b","))


class UpgradeRequired(Resource):
    """What the site answers at an app's path: 426, as the app is reached by upgrading."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        request.setResponseCode(426, b"Upgrade Required")
        request.setHeader(b"upgrade", b"websocket")
        request.setHeader(b"connection", b"Upgrade")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"426 Upgrade Required: this path is a WebSocket endpoint\n"
