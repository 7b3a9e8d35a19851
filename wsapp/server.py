"""
The server side: a base protocol that apps subclass, and the factory shared by one app.

A :class:`ServerProtocol` turns frames into calls: a JSON text message
``{"action": "plus"}`` calls ``action_plus(request)``. An action may return a mapping (the
reply, sent with the request's id), a Deferred or be ``async def`` (its result is the
reply); a :class:`~wsapp.exceptions.MessageError` it raises becomes an error event to the
sender only, and the connection stays open. A connection listens to channels with
:meth:`~ServerProtocol.subscribe`; any code publishes with
:meth:`ServerFactory.publish`, on every process sharing the backend.

The checks of a public endpoint (origin, token and user, connection limits at the
handshake; the request rate and the closing state for every message) run in methods apps
do not override, so an app that overrides ``onConnect``, ``onOpen``, ``onMessage`` or
``onClose`` without calling ``super()`` opens no hole.

Every connection has a ``user`` (:class:`~wsapp.identity.User`, or None for anonymous) from
:meth:`ServerProtocol.authenticate`. With ``auth.jwt`` a connection that brought no token
(a browser cannot set headers on a WebSocket) must first send ``{"action":
"authenticate", "token": T}`` (→ ``{"type": "authenticated", "user": ID, "expires": EXP}``);
until then it is not in the registry, the app's ``onOpen`` has not run, and other requests
get ``not-authenticated``. ``{"action": "refresh", "token": T}`` replaces the token before
it expires (→ ``{"type": "refreshed", "expires": EXP}``); the close codes are those of
:mod:`wsapp.identity`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, ClassVar

from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import accesslog
from .channels import HistoryResult, Position
from .compression import apply_level
from .exceptions import BackendUnavailableError, MessageError
from .factory import ServerFactory
from .guard import POLICY_VIOLATION, SendGate, bearer_token
from .identity import User
from .identity_protocol import IdentityMixin
from .limits import TokenBucket
from .messages import (
    INTERNAL_ERROR,
    LIMIT_EXCEEDED,
    RATE_LIMITED,
    UNKNOWN_ACTION,
    Request,
    encode,
    error_event,
    parse_request,
    with_id,
)
from .metrics import deflate_octets

__all__ = ["ServerFactory", "ServerProtocol"]

log = Logger()


def _guarded(hook: Any) -> Any:
    """Wrap an app's ``onConnect`` so the handshake checks run before it, once."""

    def onConnect(self: ServerProtocol, request: ConnectionRequest) -> Any:
        admitting = self._admit(request)
        if admitting is None:
            return hook(self, request)
        return admitting.addCallback(lambda _: hook(self, request))

    onConnect.__doc__ = hook.__doc__
    onConnect._wsapp_guarded = True  # type: ignore[attr-defined]
    return onConnect


class ServerProtocol(IdentityMixin):
    """
    Base class of wsapp server apps: JSON requests in, JSON events out.

    Hooks, each optional (wsapp's own work happens around them, ``super()`` or not):

    - ``onConnect(request)``: after the origin, token (:meth:`authorize`), user
      (:meth:`authenticate`) and connection limits were checked; return a subprotocol from
      :attr:`subprotocols` (the default does), or raise
      :class:`autobahn.websocket.types.ConnectionDeny` to refuse.
    - ``onOpen()``: the connection has joined ``factory.registry`` (after its
      ``authenticate`` message, where one is needed).
    - ``onMessage(payload, isBinary)``: a message within the rate limit, while open; the
      default decodes a request and calls ``action_<name>``.
    - ``onLeave()``: once, when a connection that had opened is gone (its channels left).
    """

    factory: ServerFactory
    #: Subprotocols this app speaks, most preferred first.
    subprotocols: ClassVar[tuple[str, ...]] = ()
    #: The app's options and their defaults; ``apps.<path>.options`` in config overrides them.
    default_options: ClassVar[Mapping[str, Any]] = {}
    #: The factory class serving this protocol.
    factory_class: ClassVar[type[ServerFactory]] = ServerFactory
    #: True: invalid UTF-8 in a text frame fails the connection (1007), as RFC 6455 asks.
    #: False: the whole message reaches :meth:`onMessage`, which answers ``invalid-utf8``.
    validate_utf8: ClassVar[bool] = False
    #: Whether ``limits.rate`` applies to this app's messages (the echo app, which the
    #: Autobahn TestSuite floods on purpose, says no).
    rate_limited: ClassVar[bool] = True
    #: True: with permessage-deflate, every message is compressed, however short (the echo
    #: app: the TestSuite's compression cases, as kosoku runs them, expect compressed
    #: echoes). False: messages under ``compression.min_size`` go uncompressed.
    compress_every_message: ClassVar[bool] = False
    #: Event types of which a slow consumer only needs the latest of each channel.
    coalescible_events: ClassVar[frozenset[str]] = frozenset({"state", "users", "time"})
    #: This connection's id in presence and events; set when it opens.
    client_id = ""
    #: The client's address from trusted proxies' headers ("": the transport's peer).
    client_address = ""
    _admitted = False
    _opened = False
    _bucket: TokenBucket | None = None
    gate: SendGate | None = None
    #: Reactor time of the last bytes received: auto-pings wait for a quiet interval.
    _last_received = 0.0
    autoPingInterval: float  # copied from the factory by autobahn

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        hook = cls.onConnect  # the app's own, or a mixin's
        if not getattr(hook, "_wsapp_guarded", False):
            cls.onConnect = _guarded(hook)  # type: ignore[method-assign]

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

    def authenticate(self, request: ConnectionRequest) -> User | Deferred[User | None] | None:
        """
        Return this handshake's user, None (anonymous), or a Deferred of either; raise (or
        fail with) :class:`~wsapp.identity.TokenError` (401) or
        :class:`~autobahn.websocket.types.ConnectionDeny` to refuse. By default: the user
        of the ``auth.jwt`` connection token of ``Authorization: Bearer`` or ``?token=``;
        None without a token, or without ``auth.jwt`` (static tokens name nobody).
        Override for your own scheme, such as a session looked up in a database.
        """
        identity = self.factory.guard.identity
        token = bearer_token(request)
        if identity.verifier is None or token is None:
            return None
        found: Deferred[User | None] = identity.user(token)  # type: ignore[assignment]
        return found

    # --- what wsapp does around the hooks ---

    def _admit(self, request: ConnectionRequest) -> Deferred[None] | None:
        if self._admitted:
            return None
        return self.factory.guard.admit(self, request)

    def onConnect(self, request: ConnectionRequest) -> Any:
        admitting = self._admit(request)
        if admitting is not None:
            return admitting.addCallback(lambda _: self.onConnect(request))
        for name in self.subprotocols:
            if name in request.protocols:
                return name
        return None

    onConnect._wsapp_guarded = True  # type: ignore[attr-defined]

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

    def _onOpen(self) -> None:
        factory = self.factory
        factory.metrics.accepted += 1
        extensions = ", ".join(map(_describe, self.websocket_extensions_in_use)) or "none"
        accesslog.accepted(self, "-" if self.user is None else self.user.id, extensions)
        apply_level(self, factory.compression.level)
        limits = factory.guard.limits
        if limits.rate and self.rate_limited:
            self._bucket = TokenBucket(limits.rate, limits.burst, factory.reactor.seconds())
        if hasattr(self.transport, "registerProducer"):
            self.gate = SendGate(self, limits.slow_consumer, self.coalescible_events)
            self.gate.attach(limits.high_water_mark)
        self.client_id = os.urandom(8).hex()
        #: The channels this connection listens to.
        self.subscriptions: set[str] = set()
        if self.awaiting_authentication:
            self._auth_timer = factory.reactor.callLater(
                limits.open_handshake_timeout, self._not_authenticated
            )
            return
        self._finish_open()

    def _finish_open(self) -> None:
        self.factory.registry.add(self)
        self._opened = True
        self._watch_expiry()
        super()._onOpen()

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        headers = responseHeaders
        if code == 401 and not headers:
            headers = [("WWW-Authenticate", "Bearer")]  # RFC 6750
        self.factory.metrics.rejected += 1
        accesslog.refused(self, code, reason)
        super().failHandshake(reason, code, headers)

    def _onMessage(self, payload: bytes, isBinary: bool) -> None:
        metrics = self.factory.metrics
        metrics.messages_in += 1
        metrics.bytes_in += len(payload)
        if self.state != self.STATE_OPEN:
            return  # once the closing handshake began, requests change nothing
        bucket = self._bucket
        if bucket is not None and not bucket.take(self.factory.reactor.seconds()):
            self.rate_limited_request(bucket)
            return
        if self.awaiting_authentication:
            self._first_message(payload, isBinary)
            return
        self.onMessage(payload, isBinary)

    def _onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.wasMaxMessagePayloadSizeExceeded or self.wasMaxFramePayloadSizeExceeded:
            log.warn("{peer}: closed with 1009: message too big", peer=self.peer)
        if self._admitted:
            self._admitted = False
            self.factory.guard.release(self)
        for timer in (self._auth_timer, self._expiry_timer):
            if timer is not None and timer.active():
                timer.cancel()
        if self.gate is not None:
            self.gate.stopProducing()
        try:
            super()._onClose(wasClean, code, reason)
        finally:
            if self._opened:
                self._opened = False
                self.factory.registry.discard(self)
                self.factory.metrics.closed(code, deflate_octets(self))
                for channel in tuple(self.subscriptions):
                    self.unsubscribe(channel)
                self.onLeave()

    def onLeave(self) -> None:
        """Called once when a connection that had opened is gone."""

    # --- requests ---

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            request = parse_request(payload, isBinary)
        except MessageError as error:
            self.refuse(error, None)
            return
        self.dispatch(request)

    def dispatch(self, request: Request) -> None:
        """Call ``action_<name>`` for ``request`` and send its reply or error."""
        handler = getattr(self, f"action_{request.action}", None)
        if not callable(handler):
            self.refuse(MessageError(UNKNOWN_ACTION, f"unknown action {request.action!r}"), request)
            return
        try:
            result = handler(request)
        except Exception:
            self.request_failed(Failure(), request)
            return
        if hasattr(result, "__await__") and not isinstance(result, Deferred):
            result = Deferred.fromCoroutine(result)
        if isinstance(result, Deferred):
            result.addCallbacks(
                self._answer, self.request_failed, callbackArgs=(request,), errbackArgs=(request,)
            )
        else:
            self._answer(result, request)

    def _answer(self, result: object, request: Request) -> None:
        if isinstance(result, Mapping):
            try:
                self.send_event(with_id(result, request.id))
            except Exception:
                self.request_failed(Failure(), request)

    def request_failed(self, failure: Failure, request: Request | None = None) -> None:
        """Answer the sender of ``request`` with the error event ``failure`` calls for."""
        error = failure.value
        if not isinstance(error, MessageError):
            log.failure("{peer}: request failed", failure, peer=self.peer)
            error = MessageError(INTERNAL_ERROR, "the server failed to handle this request")
        self.refuse(error, request)

    def refuse(self, error: MessageError, request: Request | None) -> None:
        """Send ``error`` as an error event, with ``request``'s id."""
        self.factory.metrics.error(error.code)
        self.send_event(error_event(error, None if request is None else request.id))

    def rate_limited_request(self, bucket: TokenBucket) -> None:
        """Refuse a request over the rate; close with 1008 once the debt passes the limit."""
        if bucket.debt > self.factory.guard.limits.abuse_limit:
            if self.state == self.STATE_OPEN:
                log.warn("{peer}: closed for exceeding the request rate", peer=self.peer)
                self.close_with(POLICY_VIOLATION, "request rate exceeded")
            return
        self.refuse(MessageError(RATE_LIMITED, "too many requests; slow down"), None)

    def close_with(self, code: int, reason: str) -> None:
        """Start the closing handshake with a protocol-level ``code`` such as 1001 or 1008."""
        self.sendCloseFrame(code, reason.encode(), isReply=False)

    # --- sending ---

    def send_event(self, event: Mapping[str, Any]) -> None:
        """
        Send one event to this client; nothing happens once the connection is closing.

        Unlike channel publications this is never coalesced: a slow consumer's replies stay
        bounded because the server stops reading its requests meanwhile.
        """
        if self.state == self.STATE_OPEN:
            self.sendMessage(encode(event))

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: int | None = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        """Send one message; under ``compression.min_size`` bytes it goes uncompressed
        (unless :attr:`compress_every_message`)."""
        small = len(payload) < self.factory.compression.min_size and not self.compress_every_message
        super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress or small)
        metrics = self.factory.metrics
        metrics.messages_out += 1
        metrics.bytes_out += len(payload)

    # --- channels ---

    def subscribe(
        self, channel: str, *, since: Position | None = None, latest: int = 0, reply: Any = None
    ) -> Deferred[HistoryResult]:
        """
        Make this connection listen to ``channel`` (no permission check: the app decides).

        Returns the channel's history after ``since`` (or its ``latest`` publications);
        ``reply(result)``, if given, runs before any later publication reaches the client.
        Fails with ``limit-exceeded`` past ``channels.max_subscriptions``. In a namespace
        with presence the connection enters the channel's presence.
        """
        factory = self.factory
        if len(self.subscriptions) >= factory.channels.max_subscriptions:
            raise MessageError(LIMIT_EXCEEDED, "too many subscriptions on this connection")
        options = factory.channel_options(channel)
        self.subscriptions.add(channel)
        joining = Deferred.fromCoroutine(
            factory.hub.subscribe(channel, self, since=since, latest=latest, reply=reply)
        )
        if options.presence:
            joining.addCallback(self._enter_presence, channel, options.join_leave)
        return joining.addErrback(self._not_subscribed, channel)

    def _enter_presence(self, result: HistoryResult, channel: str, announce: bool) -> Any:
        if channel not in self.subscriptions:
            return result
        adding = self.factory.hub.backend.presence_add(
            channel, self.client_id, self.presence_info(), announce=announce
        )
        return adding.addCallback(lambda _: result)

    def _not_subscribed(self, failure: Failure, channel: str) -> Failure:
        self.subscriptions.discard(channel)
        self.factory.hub.unsubscribe(channel, self)
        return failure

    def unsubscribe(self, channel: str) -> bool:
        """Stop listening to ``channel``; return whether this connection listened to it."""
        if channel not in self.subscriptions:
            return False
        self.subscriptions.discard(channel)
        factory = self.factory
        factory.hub.unsubscribe(channel, self)
        options = factory.channel_options(channel, strict=False)
        if options.presence:
            removing = factory.hub.backend.presence_remove(
                channel, self.client_id, announce=options.join_leave
            )
            removing.addErrback(lambda _: None)  # entries of a lost backend expire
        return True

    async def once_available(self, attempt: Callable[[], Deferred[Any]]) -> bool:
        """
        Run ``attempt()`` (the server's own step for this connection, such as joining its
        channel); while the backend is unreachable, tell the client with an error event and
        try again once it is back. Return False if the connection closed meanwhile.
        """
        while True:
            try:
                await attempt()
                return True
            except BackendUnavailableError as error:
                self.refuse(error, None)
                await self.factory.hub.backend.when_available()
                if not self._opened:
                    return False

    def presence_info(self) -> Mapping[str, Any]:
        """
        The public data shown for this connection in presence and join events:
        ``{"user": ID, "info": INFO}`` for a user, ``{}`` for an anonymous connection.
        """
        if self.user is None:
            return {}
        return {"user": self.user.id, "info": dict(self.user.info)}


def _describe(extension: Any) -> str:
    """Name a negotiated extension with its LZ77 windows, for the access log."""
    server = getattr(extension, "server_max_window_bits", None)
    client = getattr(extension, "client_max_window_bits", None)
    return _described(extension.EXTENSION_NAME, server, client)


@lru_cache(maxsize=64)
def _described(name: str, server: int | None, client: int | None) -> str:
    windows = [
        f"{side}_max_window_bits={bits}"
        for side, bits in (("server", server), ("client", client))
        if bits
    ]
    return "; ".join([name, *windows])


ServerFactory.protocol = ServerProtocol
