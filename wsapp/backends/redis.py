"""
The Redis backend: channels, history, presence and counters shared by every process.

Each process keeps two connections to Redis (see :mod:`wsapp.backends.redis_link`): one for
commands, one subscribed to the pub/sub name of each channel this process subscribed to
(again, all of them, after a reconnection; then the listener hears ``reconnected()``).
Every change is one Lua script (:mod:`wsapp.backends.redis_scripts`, loaded with SCRIPT
LOAD and run with EVALSHA) that applies it and PUBLISHes its frame, atomically, so every
process hears a channel's publications in offset order.

Keys, under ``wsapp:DB:`` (``DB`` the database number; pub/sub names are shared by all
databases, so they carry it too):

- ``meta:CHANNEL``: hash of ``offset`` (the last publication's), ``epoch`` (created with the
  hash) and ``ttl`` (the history TTL in ms); it expires :data:`~.redis_scripts.KEEP`
  seconds (or the history TTL, if longer) after the last publication, and then the next
  one starts a new epoch;
- ``history:CHANNEL``: stream of the last ``history_size`` publications, id ``OFFSET-0``,
  fields ``d`` (the JSON data) and ``t`` (publication time in ms);
- ``integer:KEY``: a counter changed by :meth:`RedisBackend.increment`;
- ``presence:CHANNEL``: set of the processes with presence entries in the channel;
- ``clients:PROCESS:CHANNEL``: hash of one process's entries (client id -> JSON info),
  expiring after :data:`PRESENCE_TTL` seconds unless refreshed every :data:`HEARTBEAT`;
  counts and lists skip (and forget) processes whose hash expired, and the heartbeat
  publishes a recount when a count changed that way;
- ``count:CHANNEL``: the presence count last published;
- ``deny:KEY``: an entry of the deny-list (``jti:ID`` for a revoked token), expiring when
  the entry ends;
- pub/sub ``channel:CHANNEL``: the channel's frames, JSON arrays starting with the format
  version 1: ``[1, "p", OFFSET, EPOCH, TAG, DATA]`` for a publication, ``[1, "r", COUNT,
  CLIENT, INFO, JOINED]`` for a presence change (CLIENT and INFO null unless announced, and
  in a recount). Anything else is logged, counted in :attr:`RedisBackend.malformed` and
  ignored.

Presence counts add up the entries of each process, so a client id is expected to be in
one process at a time. While either connection is down, calls fail at once with
:class:`~wsapp.exceptions.BackendUnavailableError`.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from typing import Any

import txredisapi
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..channels import HistoryResult, Position, Publication, recover
from ..exceptions import BackendUnavailableError
from ..state import SAFE_INTEGER
from . import Backend, PresenceChange
from .redis_api import nodes, publish_once, put_node
from .redis_link import REPLY_TIMEOUT, Link, Subscriber, translate
from .redis_presence import HEARTBEAT, PRESENCE_TTL, Presence
from .redis_scripts import HISTORY, INCREMENT, PRESENCE, PUBLISH, Script, parse_frame, to_json

__all__ = ["HEARTBEAT", "PRESENCE_TTL", "RedisBackend"]

log = Logger()


class RedisBackend(Backend):
    """The channels in the Redis database ``db`` at ``host:port``."""

    def __init__(self, host: str, port: int, db: int = 0, *, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self._address = f"redis://{host}:{port}/{db}"
        self.prefix = f"wsapp:{db}:"
        #: This process's id in Redis (the name of its presence entries).
        self.process = secrets.token_hex(6)
        #: Channels this process subscribed to.
        self.channels: set[str] = set()
        self.presences = Presence(self)
        #: Pub/sub messages that were not frames (logged and ignored).
        self.malformed = 0
        self.subscribed = False
        self._was_available = False
        self._missed = False
        endpoint = HostnameEndpoint(reactor, host, port, timeout=REPLY_TIMEOUT)
        self.commands = Link(
            endpoint,
            txredisapi.RedisProtocol,
            db,
            self._load,
            self._lost,
            reactor,
            retrying=self._retrying,
        )
        self.subscription = Link(
            endpoint, Subscriber, db, self._resubscribe, self._unsubscribed, reactor
        )
        self.subscription.factory.on_message = self._received
        self._heartbeat = LoopingCall(self.beat)
        self._heartbeat.clock = reactor

    @property
    def address(self) -> str:
        return self._address

    @property
    def available(self) -> bool:
        """Whether both connections are up and every channel is subscribed again."""
        return self.commands.protocol is not None and self.subscribed

    def run(self, script: Script, *arguments: Any, limit: int = SAFE_INTEGER) -> Deferred[Any]:
        """
        Run ``script`` with ``arguments`` (after the key prefix); fail at once while down.

        ``limit`` is the bound an ``out-of-range`` error names.
        """
        connection = self.commands.protocol
        if connection is None or not self.subscribed:
            return fail(BackendUnavailableError())
        running: Deferred[Any] = connection.execute_command(
            "EVALSHA", script.sha, 0, self.prefix, *arguments
        )
        running.addErrback(self._reload, connection, script, arguments)
        return running.addErrback(translate, limit)

    def _reload(self, failure: Failure, connection: Any, script: Script, arguments: Any) -> Any:
        """On NOSCRIPT (Redis restarted or flushed its scripts), load ``script`` and retry."""
        if not (failure.check(txredisapi.ResponseError) and "NOSCRIPT" in str(failure.value)):
            return failure
        loading: Deferred[Any] = connection.execute_command("SCRIPT", "LOAD", script.text)
        return loading.addCallback(
            lambda _: connection.execute_command("EVALSHA", script.sha, 0, self.prefix, *arguments)
        )

    def publish(
        self,
        channel: str,
        data: Any,
        *,
        history_size: int = 0,
        history_ttl: float = 0.0,
        tag: str = "",
    ) -> Deferred[Position]:
        try:
            encoded = to_json(data)
        except (TypeError, ValueError) as error:
            return fail(ValueError(f"publication data is not JSON: {error}"))
        ttl = round(history_ttl * 1000)
        arguments = (channel, encoded, history_size, ttl, to_json(tag), secrets.token_hex(4))
        publishing = self.run(PUBLISH, *arguments)
        return publishing.addCallback(lambda reply: Position(int(reply[0]), reply[1]))

    def subscribe(self, channel: str) -> Deferred[None]:
        connection = self.subscription.protocol
        if connection is None or not self.available:
            return fail(BackendUnavailableError())
        self.channels.add(channel)

        def failed(failure: Failure) -> Failure:
            self.channels.discard(channel)
            return translate(failure)

        subscribing: Deferred[Any] = connection.subscribe(self._pubsub(channel))
        return subscribing.addCallbacks(lambda _: None, failed)

    def unsubscribe(self, channel: str) -> Deferred[None]:
        """Stop delivering ``channel``; succeeds while Redis is down (nothing is subscribed)."""
        self.channels.discard(channel)
        self.presences.counts.pop(channel, None)
        connection = self.subscription.protocol
        if connection is None:
            return succeed(None)
        unsubscribing: Deferred[Any] = connection.unsubscribe(self._pubsub(channel))
        return unsubscribing.addBoth(lambda _: None)

    def _pubsub(self, channel: str) -> str:
        return f"{self.prefix}channel:{channel}"

    def history(
        self, channel: str, *, since: Position | None = None, limit: int = 0
    ) -> Deferred[HistoryResult]:
        after = ("", "") if since is None else (since.offset, since.epoch)
        reading = self.run(HISTORY, channel, secrets.token_hex(4), *after, limit)

        def result(reply: list[Any]) -> HistoryResult:
            top = Position(int(reply[0]), reply[1])
            found = reply[2]
            kept = tuple(
                Publication(int(found[i]), json.loads(found[i + 1]))
                for i in range(0, len(found), 2)
            )
            if since is None:
                return HistoryResult(top, kept, True)
            publications, recovered = recover(since, top, kept)
            if limit and top.offset - since.offset > limit:
                recovered = False
            return HistoryResult(top, publications, recovered)

        return reading.addCallback(result)

    def presence_add(
        self, channel: str, client: str, info: Mapping[str, Any], *, announce: bool = False
    ) -> Deferred[int]:
        return self.presences.add(channel, client, info, announce)

    def presence_remove(
        self, channel: str, client: str, *, announce: bool = False
    ) -> Deferred[int]:
        return self.presences.remove(channel, client, announce)

    def presence(self, channel: str) -> Deferred[dict[str, Mapping[str, Any]]]:
        return self.presences.entries(channel)

    def presence_count(self, channel: str) -> Deferred[int]:
        return self.presences.count(channel)

    def increment(
        self, key: str, amount: int, *, limit: int, channel: str = "", tag: str = ""
    ) -> Deferred[tuple[int, Position | None]]:
        arguments = (key, amount, limit, channel, to_json(tag), secrets.token_hex(4))
        incrementing = self.run(INCREMENT, *arguments, limit=limit)

        def result(reply: list[Any]) -> tuple[int, Position | None]:
            position = Position(int(reply[1]), reply[2]) if len(reply) == 3 else None
            return int(reply[0]), position

        return incrementing.addCallback(result)

    def deny(self, key: str, until: float) -> Deferred[None]:
        """``deny:KEY`` is set to expire at ``until``."""
        connection = self.commands.protocol
        if connection is None:
            return fail(BackendUnavailableError())
        milliseconds = round((until - self.reactor.seconds()) * 1000)
        if milliseconds <= 0:
            return succeed(None)
        name = f"{self.prefix}deny:{key}"
        denying: Deferred[Any] = connection.execute_command("SET", name, "1", "PX", milliseconds)
        return denying.addCallbacks(lambda _: None, translate)

    def denied(self, key: str) -> Deferred[bool]:
        connection = self.commands.protocol
        if connection is None:
            return fail(BackendUnavailableError())
        checking: Deferred[Any] = connection.execute_command("EXISTS", f"{self.prefix}deny:{key}")
        return checking.addCallbacks(lambda found: int(found) > 0, translate)

    def publish_once(
        self,
        channel: str,
        data: Any,
        *,
        key: str,
        window: float,
        history_size: int = 0,
        history_ttl: float = 0.0,
    ) -> Deferred[tuple[Position, bool]]:
        return publish_once(
            self,
            channel,
            data,
            key=key,
            window=window,
            history_size=history_size,
            history_ttl=history_ttl,
        )

    def put_node(self, node: str, report: Mapping[str, Any], ttl: float) -> Deferred[None]:
        return put_node(self, node, report, ttl)

    def nodes(self) -> Deferred[list[dict[str, Any]]]:
        return nodes(self)

    def _received(self, name: str, message: str | bytes) -> None:
        channel = name.removeprefix(f"{self.prefix}channel:")
        if channel == name or channel not in self.channels:
            return  # a channel unsubscribed meanwhile
        try:
            frame = parse_frame(message)
        except ValueError:
            self.malformed += 1
            log.warn(
                "Ignored a malformed message on {name}: {message!r:.80}", name=name, message=message
            )
            return
        if self.listener is None:
            return
        if isinstance(frame, PresenceChange):
            self.presences.heard(channel, frame.count)
            self.listener.presence_changed(channel, frame)
        elif not self._missed:
            self.listener.deliver(channel, frame[0], frame[1], frame[2])
        # else: pub/sub is back but the command connection may not be; the listener reads
        # this publication from history when it hears reconnected(), with those missed.

    def beat(self) -> None:
        """Check that pub/sub still answers; refresh presence entries and counts."""
        if self.available:
            self.subscription.protocol.execute_command("PING").addErrback(lambda _: None)
            self.presences.beat()

    def _load(self, connection: Any) -> Deferred[Any]:
        loading = [
            connection.execute_command("SCRIPT", "LOAD", script.text)
            for script in (PUBLISH, INCREMENT, HISTORY, PRESENCE)
        ]
        self._ready()
        return gatherResults(loading, consumeErrors=True)

    def _resubscribe(self, connection: Any) -> Deferred[Any]:
        names = [self._pubsub(channel) for channel in sorted(self.channels)]
        subscribing = gatherResults([connection.subscribe(n) for n in names], consumeErrors=True)
        return subscribing.addCallback(self._subscribed)

    def _subscribed(self, _: object) -> None:
        self.subscribed = True
        self._ready()

    def _unsubscribed(self) -> None:
        self._missed = self._missed or self.subscribed
        self.subscribed = False
        self._lost()
        if self.listener is not None:
            self.listener.interrupted()

    def _ready(self) -> None:
        if not self.available or self._was_available:
            return
        self._was_available = True
        log.info("Connected to {address}", address=self.address)
        self.presences.restore()
        if self._missed:
            self._missed = False
            if self.listener is not None:
                self.listener.reconnected()
        self.became_available()

    def _retrying(self, reason: str, delay: float) -> None:
        """One line per retry of the command connection (the subscription retries alike)."""
        log.warn(
            "Redis {address} unreachable ({reason}); retrying in {delay:.1f} s",
            address=self.address,
            reason=reason,
            delay=delay,
        )

    def _lost(self) -> None:
        if self._was_available and self.running:
            self._was_available = False
            log.warn("Lost {address}: requests fail until it is back", address=self.address)

    def startService(self) -> None:
        super().startService()
        self.commands.service.startService()
        self.subscription.service.startService()
        self._heartbeat.start(HEARTBEAT, now=False)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._heartbeat.running:
            self._heartbeat.stop()
        done = self.presences.leave()
        done.addTimeout(REPLY_TIMEOUT, self.reactor)
        done.addBoth(lambda _: self.commands.service.stopService())
        done.addBoth(lambda _: self.subscription.service.stopService())
        return done.addBoth(lambda _: None)
