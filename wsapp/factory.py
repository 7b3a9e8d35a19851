"""
The factory shared by one app's connections: options, limits, channels and sending to many.

A :class:`ServerFactory` holds the registry of the app's open connections in this process,
its options and limits (its :class:`~wsapp.guard.Guard`), and the :class:`~wsapp.hub.Hub`
through which its connections listen to channels. :meth:`~ServerFactory.publish` reaches a
channel's subscribers on every process; the hub hands each publication back here, where it
is encoded and framed once for all local subscribers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

from .backends import Backend, PresenceChange
from .channels import Position, Publication, check_channel_name, namespace_of
from .compression import LeveledPerMessageDeflate, compressed_frame, server_accept
from .config import AppConfig, ChannelsConfig, CompressionConfig, NamespaceConfig
from .exceptions import MessageError
from .guard import Guard
from .hub import Hub
from .identity import TokenError
from .messages import PERMISSION_DENIED, UNKNOWN_NAMESPACE, encode
from .metrics import AppMetrics
from .state import Registry
from .timers import BucketTimer

__all__ = ["ServerFactory"]


class ServerFactory(WebSocketServerFactory):
    """
    Serves one mounted app and holds what its connections share.

    ``options`` must already be checked against ``protocol.default_options``
    (:func:`wsapp.config.resolve_options` does it for config files). Without a ``hub``
    the app gets channels of its own on a memory backend.
    """

    def __init__(
        self,
        protocol: type[Any],
        *,
        app: AppConfig | None = None,
        options: Mapping[str, Any] | None = None,
        compression: CompressionConfig | None = None,
        channels: ChannelsConfig | None = None,
        guard: Guard | None = None,
        reactor: IReactorTime | None = None,
        hub: Hub | None = None,
        backend: Backend | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(reactor=reactor)
        self._batched_timer = BucketTimer(self.reactor)
        app = app or AppConfig(f"{protocol.__module__}:{protocol.__qualname__}")
        self.protocol = protocol
        #: The app's name: its URL path when mounted from config.
        self.name = name or app.protocol
        self.options: Mapping[str, Any] = {**protocol.default_options, **(options or {})}
        self.compression = compression or CompressionConfig()
        self.channels = channels or ChannelsConfig()
        self.registry: Registry[Any] = Registry()
        if hub is None:
            if backend is None:
                from .backends.memory import MemoryBackend

                backend = MemoryBackend(reactor=reactor)
            hub = Hub(backend)
        #: Where this app's connections listen to channels.
        self.hub = hub
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

    # --- channels ---

    def channel_options(self, channel: str, *, strict: bool = True) -> NamespaceConfig:
        """
        The options of ``channel``'s namespace; with ``strict``, a bad name or an unknown
        namespace raises :class:`MessageError` (``invalid-argument``, ``unknown-namespace``).
        Server channels (``$...``) use the default options.
        """
        config = self.channels
        if channel.startswith("$"):
            return config.default
        if strict:
            check_channel_name(channel, config.max_name_length)
        namespace = namespace_of(channel)
        if not namespace:
            return config.default
        options = config.namespaces.get(namespace)
        if options is None:
            if strict:
                raise MessageError(UNKNOWN_NAMESPACE, f"no namespace {namespace!r}")
            return config.default
        return options

    async def check_permission(
        self, connection: Any, what: str, channel: str, token: object = None
    ) -> None:
        """
        Raise ``permission-denied`` unless ``connection`` may ``what`` (``subscribe`` or
        ``publish``) ``channel``, as its namespace says: ``anyone``, ``authenticated`` (a
        user), ``capability`` (a user whose token's ``channels`` match it, or a channel
        token) or ``token`` (a channel token ``token`` for this channel and user).
        """
        rule = getattr(self.channel_options(channel), what)
        user = connection.user
        if rule == "anyone" or (rule == "authenticated" and user is not None):
            return
        if rule == "capability" and user is not None and user.may_use(channel):
            return
        refusal = f"you may not {what} to {channel!r}"
        if rule in ("capability", "token") and what == "subscribe" and token is not None:
            try:
                await self.guard.identity.channel_claims(token, user, channel)
            except TokenError as error:
                raise MessageError(PERMISSION_DENIED, f"{refusal}: {error}") from None
            return
        raise MessageError(PERMISSION_DENIED, refusal)

    def publish(self, channel: str, data: Any, *, exclude: Any = None) -> Deferred[Position]:
        """
        Publish ``data`` (JSON) to ``channel``'s subscribers on every process, with the
        history its namespace keeps; return the publication's position. With ``exclude``
        (a subscribed connection), it does not get the publication and the Deferred fires
        in the channel's order, so a reply to it comes where the publication would have.
        """
        options = self.channel_options(channel)
        return self.hub.publish(
            channel,
            data,
            history_size=options.history_size,
            history_ttl=options.history_ttl,
            exclude=exclude,
        )

    def publication_event(self, channel: str, publication: Publication) -> Mapping[str, Any]:
        """The event a subscriber gets for ``publication``; apps may shape their own."""
        return {
            "type": "publication",
            "channel": channel,
            "offset": publication.offset,
            "data": publication.data,
        }

    def lost_event(self, channel: str, position: Position) -> Mapping[str, Any] | None:
        """The event telling subscribers that publications up to ``position`` were lost."""
        return {"type": "unrecovered", "channel": channel, **position.as_dict()}

    def channel_publication(
        self, channel: str, publication: Publication, members: list[Any]
    ) -> None:
        self.send_to(members, self.publication_event(channel, publication), channel)

    def channel_lost(self, channel: str, position: Position, members: list[Any]) -> None:
        event = self.lost_event(channel, position)
        if event is not None:
            self.send_to(members, event, channel)

    def channel_presence(self, channel: str, change: PresenceChange, members: list[Any]) -> None:
        """A channel's presence changed: ``join`` and ``leave`` events where announced."""
        if change.client is None:
            return
        event = {
            "type": "join" if change.joined else "leave",
            "channel": channel,
            "client": change.client,
            "info": change.info or {},
        }
        self.send_to(members, event, channel)

    # --- sending to many ---

    def broadcast(self, event: Mapping[str, Any]) -> int:
        """Send ``event`` to every open connection of this app in this process."""
        return self.send_to(self.registry, event, "")

    def send_to(self, connections: Iterable[Any], event: Mapping[str, Any], channel: str) -> int:
        """
        Send ``event`` to ``connections``, encoded and framed once; return how many got it.

        Below ``compression.min_size`` bytes it goes out uncompressed everywhere; larger
        events are compressed once for every deflate connection with the same window, and
        each of those connections' own compressor starts its next message afresh. A slow
        consumer (past ``limits.high_water_mark``) gets it through its gate, keyed by
        ``channel`` and the event's type.
        """
        payload = encode(event)
        size = len(payload)
        small = size < self.compression.min_size
        prepared = self.prepareMessage(payload, doNotCompress=small)
        key = (channel, event.get("type"))
        frame = prepared.payloadHybi
        compressed: dict[int, tuple[bytes, int]] = {}
        sent = framed = 0
        for connection in connections:
            if connection.state != connection.STATE_OPEN:
                continue
            sent += 1
            gate = connection.gate
            if gate is not None and gate.paused:
                gate.hold(key, prepared)
                continue
            framed += 1
            negotiated = connection._perMessageCompress
            if small or negotiated is None:
                connection.sendData(frame)
                continue
            if not isinstance(negotiated, LeveledPerMessageDeflate):
                connection.sendMessage(payload)  # counts itself in the metrics
                framed -= 1
                continue
            bits = negotiated.server_max_window_bits
            found = compressed.get(bits)
            if found is None:
                found = compressed[bits] = compressed_frame(payload, negotiated)
            negotiated.forget_context()
            connection.sendData(found[0])
            stats = connection.trafficStats
            stats.outgoingWebSocketMessages += 1
            stats.outgoingOctetsAppLevel += size
            stats.outgoingOctetsWebSocketLevel += found[1]
        metrics = self.metrics
        metrics.broadcasts += 1
        metrics.broadcast_recipients += sent
        metrics.messages_out += framed
        metrics.bytes_out += framed * size
        return sent
