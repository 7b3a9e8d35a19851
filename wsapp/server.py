"""
The server side: a base protocol that apps subclass, and the factory shared by one app.

A :class:`ServerProtocol` turns frames into calls: a JSON text message
``{"action": "plus"}`` calls ``action_plus(request)``. Bad input is answered with an error
event to the sender only; the connection stays open. The :class:`ServerFactory` holds what
the connections of one app share: the registry of open connections, the app's options,
:meth:`~ServerFactory.broadcast` to this process's connections, and ``state``, the app's
:class:`~wsapp.backends.AppState` (counter, users count, app-wide publish) on the
configured backend. Its :class:`~wsapp.guard.Guard` checks each handshake and sets the
limits every connection applies (README: "Limits and security").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .backends import AppState, Backend
from .compression import apply_level, server_accept
from .config import AppConfig, CompressionConfig
from .exceptions import MessageError
from .fastpath import FastServerProtocol
from .guard import POLICY_VIOLATION, Guard, SendGate
from .limits import TokenBucket
from .messages import (
    INTERNAL_ERROR,
    RATE_LIMITED,
    UNKNOWN_ACTION,
    Request,
    RequestId,
    encode,
    error_event,
    parse_request,
    with_id,
)
from .metrics import AppMetrics, deflate_octets
from .state import Registry

__all__ = ["ServerFactory", "ServerProtocol"]

log = Logger()


class ServerProtocol(FastServerProtocol):
    """
    Base class of wsapp server apps: JSON requests in, JSON events out.

    Lifecycle, each step extensible by overriding and calling ``super()``:

    - ``onConnect(request)``: checks origin, token (:meth:`authorize`) and connection limits,
      then picks a subprotocol from :attr:`subprotocols`; raise
      :class:`autobahn.websocket.types.ConnectionDeny` to refuse with an HTTP status.
    - ``onOpen()``: the connection joins ``factory.registry``.
    - ``onMessage(payload, isBinary)``: applies the rate limit, decodes a request and calls
      ``action_<name>``. A message that arrives once the closing handshake has begun is
      dropped unseen: no reply could reach its sender.
    - ``onClose(wasClean, code, reason)``: the connection leaves the registry, also when
      the peer vanished without a close frame; :meth:`onLeave` runs if it had joined.
    """

    factory: ServerFactory
    #: Subprotocols this app speaks, most preferred first.
    subprotocols: ClassVar[tuple[str, ...]] = ()
    #: The app's options and their defaults; ``apps.<path>.options`` in config overrides them.
    default_options: ClassVar[Mapping[str, Any]] = {}
    #: The factory class serving this protocol.
    factory_class: ClassVar[type[ServerFactory]]
    #: True: invalid UTF-8 in a text frame fails the connection (1007), as RFC 6455 asks.
    #: False: the whole message reaches :meth:`onMessage`, which answers ``invalid-utf8``.
    validate_utf8: ClassVar[bool] = False
    #: Event types of which a slow consumer only needs the latest (see :class:`SendGate`).
    coalescible_events: ClassVar[frozenset[str]] = frozenset({"state", "users", "time"})
    _admitted = False
    _bucket: TokenBucket | None = None
    gate: SendGate | None = None
    #: Reactor time of the last bytes received: auto-pings wait for a quiet interval.
    _last_received = 0.0
    autoPingInterval: float  # copied from the factory by autobahn

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise :class:`ValueError` if ``options`` (typed like the defaults) are unusable."""

    def authorize(self, request: ConnectionRequest, token: str | None) -> bool:
        """
        Return whether this handshake may proceed; ``token`` comes from ``?token=`` or
        ``Authorization: Bearer``. By default: any request when ``auth.tokens`` is empty,
        else one with a configured token. Override for your own check; refusal answers
        401 without a token and 403 with one.
        """
        return self.factory.guard.token_valid(token)

    def dataReceived(self, data: bytes) -> None:
        self._last_received = self.factory.reactor.seconds()
        super().dataReceived(data)

    def _sendAutoPing(self) -> None:
        # autobahn pings every interval, even in the middle of a peer's long transfer, and
        # some peers give up on a message interrupted that way. Ping only a connection
        # that has sent nothing for a whole interval: that is the one that may be dead.
        quiet = self.factory.reactor.seconds() - self._last_received
        if quiet < self.autoPingInterval:
            self.autoPingPendingCall = self.factory._batched_timer.call_later(
                self.autoPingInterval - quiet, self._sendAutoPing
            )
        else:
            super()._sendAutoPing()

    def onConnect(self, request: ConnectionRequest) -> str | None:
        self.factory.guard.admit(self, request)
        self._admitted = True
        for name in self.subprotocols:
            if name in request.protocols:
                return name
        return None

    def onOpen(self) -> None:
        self.factory.metrics.accepted += 1
        extensions = ", ".join(map(_describe, self.websocket_extensions_in_use)) or "none"
        log.info(
            "{peer} GET {path} 101 extensions: {extensions}",
            peer=self.peer,
            path=self.http_request_path,
            extensions=extensions,
        )
        apply_level(self, self.factory.compression.level)
        limits = self.factory.guard.limits
        if limits.rate:
            self._bucket = TokenBucket(limits.rate, limits.burst, self.factory.reactor.seconds())
        if hasattr(self.transport, "registerProducer"):
            self.gate = SendGate(self, limits.slow_consumer, self.coalescible_events)
            self.gate.attach(limits.high_water_mark)
        self.factory.registry.add(self)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        headers = responseHeaders
        if code == 401 and not headers:
            headers = [("WWW-Authenticate", "Bearer")]  # RFC 6750
        self.factory.metrics.rejected += 1
        log.info(
            "{peer} GET {path} {status} ({reason})",
            peer=self.peer,
            path=getattr(self, "http_request_path", "-"),
            status=code,
            reason=reason,
        )
        super().failHandshake(reason, code, headers)

    def _onMessage(self, payload: bytes, isBinary: bool) -> None:
        metrics = self.factory.metrics
        metrics.messages_in += 1
        metrics.bytes_in += len(payload)
        # Once the closing handshake has begun no reply can be sent, so a request arriving
        # then (sent before its client saw our close) must not run: it would change state
        # that its sender is never told about.
        if self.state == self.STATE_OPEN:
            self.onMessage(payload, isBinary)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        bucket = self._bucket
        if bucket is not None and not bucket.take(self.factory.reactor.seconds()):
            self.rate_limited(bucket)
            return
        request_id: RequestId | None = None
        try:
            request = parse_request(payload, isBinary)
            request_id = request.id
            handler = getattr(self, f"action_{request.action}", None)
            if not callable(handler):
                raise MessageError(UNKNOWN_ACTION, f"unknown action {request.action!r}")
            handler(request)
        except MessageError as error:
            self.factory.metrics.error(error.code)
            self.send_event(error_event(error, request_id))
        except Exception:
            log.failure("{peer}: request failed", peer=self.peer)
            self.factory.metrics.error(INTERNAL_ERROR)
            failed = MessageError(INTERNAL_ERROR, "the server failed to handle this request")
            self.send_event(error_event(failed, request_id))

    def rate_limited(self, bucket: TokenBucket) -> None:
        """Refuse a request over the rate; close with 1008 once the debt passes the limit."""
        if bucket.debt > self.factory.guard.limits.abuse_limit:
            if self.state == self.STATE_OPEN:
                log.warn("{peer}: closed for exceeding the request rate", peer=self.peer)
                self.close_with(POLICY_VIOLATION, "request rate exceeded")
            return
        self.send_event(
            error_event(MessageError(RATE_LIMITED, "too many requests; slow down"), None)
        )

    def close_with(self, code: int, reason: str) -> None:
        """Start the closing handshake with a protocol-level ``code`` such as 1001 or 1008."""
        self.sendCloseFrame(code, reason.encode(), isReply=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.wasMaxMessagePayloadSizeExceeded or self.wasMaxFramePayloadSizeExceeded:
            log.warn("{peer}: closed with 1009: message too big", peer=self.peer)
        if self._admitted:
            self._admitted = False
            self.factory.guard.release(self)
        if self.gate is not None:
            self.gate.stopProducing()
        if self.factory.registry.discard(self):
            self.factory.metrics.closed(code, deflate_octets(self))
            self.onLeave()

    def onLeave(self) -> None:
        """Called once when a connection that had opened has left the registry."""

    def send_event(self, event: Mapping[str, Any]) -> None:
        """
        Send one event to this client; nothing happens once the connection is closing.

        Unlike :meth:`ServerFactory.broadcast` this is never coalesced: a slow consumer's
        replies stay bounded because the server stops reading its requests meanwhile.
        """
        if self.state == self.STATE_OPEN:
            payload = encode(event)
            small = len(payload) < self.factory.compression.min_size
            self.sendMessage(payload, doNotCompress=small)

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: int | None = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)
        metrics = self.factory.metrics
        metrics.messages_out += 1
        metrics.bytes_out += len(payload)

    def publish(self, event: Mapping[str, Any], request: Request | None = None) -> None:
        """Publish ``event`` to the whole app; the copy for ``request``'s sender carries its id."""
        request_id = None if request is None else request.id
        exclude = None if request_id is None else self
        reply = None if request_id is None else with_id(event, request_id)
        self.reply_when(self.factory.state.publish(event, exclude=exclude), reply, request_id)

    # --- backend results (see wsapp.backends) ---

    def reply_when(
        self,
        done: Deferred[Any] | None,
        reply: Mapping[str, Any] | None,
        request_id: RequestId | None,
    ) -> None:
        """Send ``reply`` once ``done`` fires (now if None); if it fails, an error event."""
        if done is None:
            if reply is not None:
                self.send_event(reply)
        else:
            done.addCallbacks(
                self._reply, self.request_failed, callbackArgs=(reply,), errbackArgs=(request_id,)
            )

    def _reply(self, _: object, reply: Mapping[str, Any] | None) -> None:
        if reply is not None:
            self.send_event(reply)

    def request_failed(self, failure: Failure, request_id: RequestId | None = None) -> None:
        """Errback of a backend call: answer the sender with an error event."""
        error = failure.value
        if not isinstance(error, MessageError):
            log.failure("{peer}: request failed", failure, peer=self.peer)
            error = MessageError(INTERNAL_ERROR, "the server failed to handle this request")
        self.send_event(error_event(error, request_id))


class ServerFactory(WebSocketServerFactory):
    """
    Serves one mounted app and holds the state its connections share.

    ``options`` must already be checked against ``protocol.default_options``
    (:func:`wsapp.config.resolve_options` does it for config files).
    """

    protocol: type[ServerProtocol]  # type: ignore[assignment]

    def __init__(
        self,
        protocol: type[ServerProtocol],
        *,
        app: AppConfig | None = None,
        options: Mapping[str, Any] | None = None,
        compression: CompressionConfig | None = None,
        guard: Guard | None = None,
        reactor: IReactorTime | None = None,
        backend: Backend | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(reactor=reactor)
        app = app or AppConfig(f"{protocol.__module__}:{protocol.__qualname__}")
        self.protocol = protocol
        self.options: Mapping[str, Any] = {**protocol.default_options, **(options or {})}
        self.compression = compression or CompressionConfig()
        self.registry: Registry[ServerProtocol] = Registry()
        if backend is None:
            from .backends.memory import MemoryBackend

            backend = MemoryBackend()
        #: This app's shared state (counter, users count, publish) on the backend.
        self.state: AppState = backend.app(name or app.protocol, self)
        #: This app's counts; :func:`wsapp.service.build_site` puts them in the server's metrics.
        self.metrics = AppMetrics("", self)
        self.guard = guard or Guard(app_limit=app.max_connections)
        limits = self.guard.limits
        #: The ``Server`` header of the handshake response (None: none).
        self.server = self.guard.server_header or None
        # maxMessagePayloadSize also bounds inflation: autobahn stops decompressing there.
        self.setProtocolOptions(
            maxMessagePayloadSize=app.max_message_size,
            maxFramePayloadSize=app.max_frame_size,
            utf8validateIncoming=protocol.validate_utf8,
            openHandshakeTimeout=limits.open_handshake_timeout,
            closeHandshakeTimeout=limits.close_handshake_timeout,
            autoPingInterval=limits.auto_ping_interval,
            autoPingTimeout=limits.auto_ping_timeout,
            # Protocol errors close with a status code (1002, 1007, 1009) the peer can read.
            failByDrop=False,
            allowNullOrigin=True,
            # RFC 6455 only: hybi-08 clients name their origin differently (and no browser
            # has sent version 8 for a decade), so their handshakes are refused with 400.
            versions=[13],
        )
        if self.compression.enabled:
            self.setProtocolOptions(
                perMessageCompressionAccept=server_accept(self.compression), allowNullOrigin=True
            )

    def broadcast(self, event: Mapping[str, Any], *, exclude: ServerProtocol | None = None) -> int:
        """
        Send ``event`` to every open connection of this app in this process; return how
        many got it. :meth:`ServerProtocol.publish` reaches the app's clients on every process.

        The event is encoded and framed once. Below ``compression.min_size`` bytes it goes
        out uncompressed on every connection; larger events are compressed per connection
        where deflate was negotiated. A slow consumer (past ``limits.high_water_mark``)
        gets the event through its :class:`~wsapp.guard.SendGate` instead.
        """
        return self.fan_out(encode(event), exclude)

    def fan_out(self, payload: bytes, exclude: ServerProtocol | None = None) -> int:
        """Send an encoded event to every open connection but ``exclude``, framed once."""
        prepared = self.prepareMessage(
            payload, doNotCompress=len(payload) < self.compression.min_size
        )
        kind = _event_type(payload)
        frame, plain = prepared.payloadHybi, prepared.doNotCompress
        sent = framed = 0
        for connection in self.registry:
            if connection is exclude or connection.state != connection.STATE_OPEN:
                continue
            sent += 1
            # sendPreparedMessage, inlined: the frame as is, or compressed for this client
            uncompressed = plain or connection._perMessageCompress is None
            gate = connection.gate
            if gate is not None and gate.paused:
                gate.hold(kind, prepared)
            elif uncompressed:
                connection.sendData(frame)
            else:
                connection.sendMessage(payload)  # counts itself in the metrics
            if uncompressed:
                framed += 1
        metrics = self.metrics
        metrics.broadcasts += 1
        metrics.broadcast_recipients += sent
        metrics.messages_out += framed
        metrics.bytes_out += framed * len(payload)
        return sent

    # --- backend notifications (see wsapp.backends.StateListener); apps override these ---

    def counter_changed(self, value: int, exclude: ServerProtocol | None = None) -> None:
        """The app's counter became ``value`` (on any process)."""

    def users_changed(self, count: int) -> None:
        """The app has ``count`` clients over all processes."""


def _describe(extension: Any) -> str:
    """Name a negotiated extension with its LZ77 windows, for the access log."""
    windows = [
        f"{side}_max_window_bits={bits}"
        for side in ("server", "client")
        if (bits := getattr(extension, f"{side}_max_window_bits", None))
    ]
    return "; ".join([extension.EXTENSION_NAME, *windows])


ServerProtocol.factory_class = ServerFactory


_TYPE_PREFIX = b'{"type":"'


def _event_type(payload: bytes) -> str | None:
    """The ``type`` of an encoded event (which puts it first), for the slow-consumer gate."""
    if payload.startswith(_TYPE_PREFIX):
        end = payload.find(b'"', len(_TYPE_PREFIX))
        if end > 0:
            return payload[len(_TYPE_PREFIX) : end].decode("utf-8", "replace")
    return None
