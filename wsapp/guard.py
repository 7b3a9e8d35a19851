"""
What keeps a public endpoint serving: handshake checks, slow-consumer handling, deadlines.

- :class:`Guard` decides at the opening handshake (origin, the client's real address behind
  trusted proxies, token and user, connection limits), before any state changes, and holds
  the limits each connection of an app applies.
- :class:`SendGate` is the streaming producer a connection registers with its transport:
  Twisted pauses it when the bytes queued to the client pass the high-water mark, and
  resumes it once they are written.
- :class:`HandshakeSite` drops connections that have not sent a complete request within the
  opening-handshake timeout (slowloris), and names the server by ``server_header`` only.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from fnmatch import translate
from typing import Any
from urllib.parse import parse_qsl, urlencode

from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request, Site, version
from zope.interface import implementer

from .config import Config, LimitsConfig
from .identity import Identity, TokenError, User
from .limits import ConnectionLimiter
from .proxy import TrustedProxies

#: A wsapp server protocol (:class:`wsapp.server.ServerProtocol`), which imports this module.
ServerProtocol = Any

__all__ = [
    "Guard",
    "HandshakeSite",
    "SendGate",
    "bearer_token",
    "redacted_target",
    "socket_transport",
]

log = Logger()

#: WebSocket close code for a policy violation (rate abuse, slow consumer).
POLICY_VIOLATION = 1008


class Guard:
    """The limits, origins and tokens one app's connections are checked against."""

    def __init__(
        self,
        config: Config | None = None,
        *,
        app: str = "",
        app_limit: int = 0,
        limiter: ConnectionLimiter | None = None,
        identity: Identity | None = None,
    ) -> None:
        config = config or Config()
        #: Tokens, users and revocation, shared by the server's apps.
        self.identity = identity or Identity(config.auth)
        self.proxies = TrustedProxies(config.proxy.trusted)
        self.limits: LimitsConfig = config.limits
        self.app = app
        self.app_limit = app_limit
        self.limiter = limiter or ConnectionLimiter(
            self.limits.max_connections, self.limits.max_connections_per_address
        )
        self.origins = _origin_pattern(config.origins)
        self.tokens = config.auth.tokens
        #: The ``Server`` header of handshake responses ("": none).
        self.server_header = config.server_header
        #: Set when the server begins to shut down: new handshakes get 503.
        self.draining = False

    def origin_allowed(self, origin: str | None) -> bool:
        """Whether a browser from ``origin`` may connect; clients sending none always may."""
        return origin is None or self.origins is None or bool(self.origins.fullmatch(origin))

    def token_valid(self, token: str | None) -> bool:
        """
        Whether ``token`` is one of the configured tokens (any token when none are, or when
        connection tokens are JWTs, which :meth:`ServerProtocol.authenticate` checks).
        """
        if not self.tokens or self.identity.verifier is not None:
            return True
        return token is not None and any(
            hmac.compare_digest(token.encode(), known.encode()) for known in self.tokens
        )

    def admit(self, protocol: ServerProtocol, request: ConnectionRequest) -> Deferred[None] | None:
        """
        Check a handshake and find its user; raise (or fail the returned Deferred with)
        :class:`ConnectionDeny`, nothing counted, to refuse it.
        """
        if "content-length" in request.headers or "transfer-encoding" in request.headers:
            raise ConnectionDeny(400, "an upgrade request has no body")
        if self.draining:
            raise ConnectionDeny(503, "server shutting down")
        peer = _address(protocol)
        client = self.proxies.client_address(peer, request.headers)
        if client != peer:
            protocol.client_address = client
            protocol.peer = f"{client} via {protocol.peer}"
        if not self.origin_allowed(request.headers.get("origin")):
            log.info("{peer}: origin {origin!r} refused", peer=protocol.peer, origin=request.origin)
            raise ConnectionDeny(403, "origin not allowed")
        token = bearer_token(request)
        if not protocol.authorize(request, token):
            log.info("{peer}: authorization refused", peer=protocol.peer)
            if token is None:
                raise ConnectionDeny(401, "authorization required")
            raise ConnectionDeny(403, "authorization refused")
        try:
            found = protocol.authenticate(request)
        except TokenError as error:
            self._refuse_token(Failure(error), protocol)
        if isinstance(found, Deferred):
            found.addErrback(self._refuse_token, protocol)
            return found.addCallback(self._identified, protocol)
        self._identified(found, protocol)
        return None

    def _refuse_token(self, failure: Failure, protocol: ServerProtocol) -> None:
        failure.trap(TokenError)
        log.info("{peer}: token refused: {why}", peer=protocol.peer, why=failure.getErrorMessage())
        raise ConnectionDeny(401, failure.getErrorMessage())

    def _identified(self, user: User | None, protocol: ServerProtocol) -> None:
        if protocol.state == protocol.STATE_CLOSED:
            raise ConnectionDeny(400, "connection lost during the handshake")
        if user is not None and not isinstance(user, User):
            raise TypeError(f"authenticate() returned {user!r}, not a wsapp.identity.User")
        refusal = self.limiter.admit(self.app, self.app_limit, _address(protocol))
        if refusal is not None:
            log.warn("{peer}: refused: {reason}", peer=protocol.peer, reason=refusal.reason)
            raise ConnectionDeny(refusal.status, refusal.reason)
        protocol._admitted = True
        protocol.user = user
        protocol.awaiting_authentication = user is None and self.identity.requires_user

    def release(self, protocol: ServerProtocol) -> None:
        """Forget a connection that :meth:`admit` let in."""
        self.limiter.release(self.app, _address(protocol))


def _address(protocol: ServerProtocol) -> str:
    """The client's address: from trusted proxies' headers, or the transport's peer."""
    if protocol.client_address:
        return str(protocol.client_address)
    transport: Any = protocol.transport
    return str(getattr(transport.getPeer(), "host", protocol.peer))


def _origin_pattern(origins: Iterable[str]) -> re.Pattern[str] | None:
    patterns = [translate(origin.lower().rstrip("/")) for origin in origins]
    return re.compile("|".join(patterns), re.IGNORECASE) if patterns else None


def bearer_token(request: ConnectionRequest) -> str | None:
    """The token of ``Authorization: Bearer TOKEN`` or, failing that, of ``?token=TOKEN``."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return str(token.strip())
    values = request.params.get("token")
    return str(values[0]) if values else None


def redacted_target(path: str, query: str) -> str:
    """``path?query`` with the value of every ``token`` parameter replaced by ``REDACTED``."""
    if not query:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    shown = [(name, "REDACTED" if name == "token" else value) for name, value in pairs]
    return f"{path}?{urlencode(shown, safe='/:,')}"


def socket_transport(transport: Any) -> Any:
    """The TCP transport under ``transport`` (which may be TLS wrapped around it)."""
    while not hasattr(transport, "bufferSize") and getattr(transport, "transport", None):
        transport = transport.transport
    return transport


def _pause_past(transport: Any, mark: int) -> None:
    """
    Make ``transport`` pause its producer once more than ``mark`` bytes are queued.

    Twisted compares the queue with ``bufferSize``, which is also the size of every
    ``recv``: raising that to the mark (MiBs) made every read allocate as much. Only the
    queue's comparison is replaced, for this one transport.
    """
    transport._isSendBufferFull = lambda: len(transport.dataBuffer) + transport._tempDataLen > mark


@implementer(IPushProducer)
class SendGate:
    """
    Applies the slow-consumer policy to one connection.

    While the client's queued bytes are above the high-water mark the gate is ``paused``:
    the server stops reading from that client (so it cannot queue more replies), and
    broadcasts go to :meth:`hold` instead of the transport. Held events of a coalescible
    type are replaced by the latest of their channel and type, and sent when the client has
    drained; any other held event, or the ``close`` policy, closes the connection with 1008.
    """

    def __init__(self, protocol: ServerProtocol, policy: str, coalescible: frozenset[str]) -> None:
        self.protocol = protocol
        self.policy = policy
        self.coalescible = coalescible
        self.paused = False
        self.closing = False
        self.held: dict[tuple[str, str | None], Any] = {}

    def attach(self, high_water_mark: int) -> None:
        """Register with the connection's transport (replacing the HTTP channel)."""
        transport: Any = self.protocol.transport
        if getattr(transport, "producer", None) or getattr(transport, "_producer", None):
            transport.unregisterProducer()
        transport.registerProducer(self, True)
        _pause_past(socket_transport(transport), high_water_mark)

    def pauseProducing(self) -> None:
        if self.paused:
            return  # Twisted asks again on every write past the mark
        self.paused = True
        socket_transport(self.protocol.transport).pauseProducing()
        if self.policy == "close":
            self._close("it stopped reading")

    def resumeProducing(self) -> None:
        self.paused = False
        protocol = self.protocol
        socket_transport(protocol.transport).resumeProducing()
        held, self.held = self.held, {}
        for key, prepared in held.items():
            if self.paused:
                self.hold(key, prepared)
            elif protocol.state == protocol.STATE_OPEN:
                protocol.sendPreparedMessage(prepared)

    def stopProducing(self) -> None:
        self.held.clear()

    def hold(self, key: tuple[str, str | None], prepared: Any) -> None:
        """
        Keep ``prepared`` (an event of type ``key[1]`` for channel ``key[0]``) until the
        client drains: only the latest of each coalescible (channel, type) is kept.
        """
        if key[1] in self.coalescible:
            self.held.pop(key, None)
            self.held[key] = prepared
        else:
            self._close(f"a {key[1]!r} event of {key[0] or 'the app'!r} could not be queued")

    def _close(self, why: str) -> None:
        protocol = self.protocol
        self.held.clear()
        if protocol.state == protocol.STATE_OPEN and not self.closing:
            self.closing = True
            log.warn("{peer}: slow consumer closed: {why}", peer=protocol.peer, why=why)
            protocol.close_with(POLICY_VIOLATION, "slow consumer")


class HandshakeSite(Site):
    """
    A :class:`Site` whose connections must send a complete request within ``deadline``
    seconds of connecting, and may not idle longer than that between two requests. Its
    responses carry ``Server: server_header`` (none if empty) instead of Twisted's version.
    """

    def __init__(
        self, resource: Any, *, deadline: float, server_header: str = "wsapp", reactor: Any = None
    ) -> None:
        super().__init__(resource, requestFactory=_NamedRequest, timeout=deadline, reactor=reactor)
        self.deadline = deadline
        self.server_header = server_header

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        reactor: Any = self.reactor
        reactor.callLater(self.deadline, _expire, protocol)
        return protocol


def _expire(protocol: Any) -> None:
    channel = getattr(protocol, "_channel", protocol)
    transport = channel.transport
    if transport is None or getattr(transport, "disconnected", False):
        return  # upgraded to a WebSocket, or gone
    if not (channel._handlingRequest or channel.requests):
        log.info("{peer}: no complete request in time", peer=transport.getPeer())
        transport.abortConnection()


class _NamedRequest(Request):
    """A request whose response names the server by its site's ``server_header``."""

    def write(self, data: bytes) -> None:
        if not self.startedWriting and self.responseHeaders.getRawHeaders(b"server") == [version]:
            channel: Any = self.channel
            name: str = channel.site.server_header
            if name:
                self.responseHeaders.setRawHeaders(b"server", [name.encode()])
            else:
                self.responseHeaders.removeHeader(b"server")
        super().write(data)
