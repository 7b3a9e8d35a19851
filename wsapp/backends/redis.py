"""
The Redis backend: one counter, one users count and every event shared by all processes.

Each process keeps two connections to Redis (txredisapi protocols, each reconnected by a
Twisted :class:`~twisted.application.internet.ClientService`): one for commands and one
subscribed to the channel of every app. Every change is one Lua script that applies it and
PUBLISHes it, atomically, so all processes see the changes in the order Redis applied
them. A process sends its clients only what arrives on its subscription, so the reply to
a sender comes in the same order as everyone's broadcasts.

Keys, per app ``NAME`` (its URL path), under ``wsapp:NAME:``: ``counter`` (an integer
changed by INCRBY), ``users:PROCESS`` (this process's clients, expiring after
:data:`USERS_TTL` seconds unless refreshed every :data:`HEARTBEAT` seconds), ``processes``
(a set of process ids), ``users-total`` (the last total published); and the channel
``wsapp:DB:NAME:events`` (channels are shared by all databases). A message on it is
``KIND ORIGIN TOKEN BODY``:

- ``E``: BODY is an encoded event for every client, except TOKEN's connection on ORIGIN;
- ``C``: the counter is now BODY, for every client, except TOKEN's connection on ORIGIN;
- ``V``: the counter is BODY, for the request TOKEN on ORIGIN only;
- ``R``: the counter is BODY, for every client of ORIGIN only (after it reconnected);
- ``U``: the app has BODY clients over all processes.

While either connection is down, requests fail at once with
:class:`~wsapp.exceptions.BackendUnavailableError`; clients stay connected.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import txredisapi
from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..exceptions import BackendUnavailableError
from ..messages import encode
from ..state import SAFE_INTEGER
from . import AppState, Backend, StateListener
from .redis_link import REPLY_TIMEOUT, Link, Subscriber, translate

__all__ = ["HEARTBEAT", "USERS_TTL", "RedisAppState", "RedisBackend"]

log = Logger()

#: Seconds between two refreshes of a process's users count.
HEARTBEAT = 1.0
#: Seconds after which the users count of a process that stopped refreshing it is dropped.
USERS_TTL = 3.0

ADD = """
local value = tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])
if value > tonumber(ARGV[2]) or value < -tonumber(ARGV[2]) then
  return redis.error_reply('out-of-range')
end
value = string.format('%d', redis.call('INCRBY', KEYS[1], ARGV[1]))
redis.call('PUBLISH', ARGV[3], ARGV[4] .. value)
return value
"""

VALUE = """
local value = string.format('%d', tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('PUBLISH', ARGV[1], ARGV[2] .. value)
return value
"""

USERS = """
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
  redis.call('SREM', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  redis.call('SADD', KEYS[1], ARGV[2])
end
local total = 0
for _, process in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local count = redis.call('GET', ARGV[1] .. process)
  if count then total = total + tonumber(count) else redis.call('SREM', KEYS[1], process) end
end
total = string.format('%d', total)
if ARGV[7] == '1' or redis.call('GET', KEYS[3]) ~= total then
  redis.call('SET', KEYS[3], total)
  redis.call('PUBLISH', ARGV[5], ARGV[6] .. total)
end
return total
"""


@dataclass
class _Pending:
    """A request of this process waiting for its message to come back on the channel."""

    done: Deferred[Any]
    exclude: Any = None
    #: The script's result, once Redis replied (used if the subscription is lost meanwhile).
    result: Any = None
    replied: bool = False
    orphaned: bool = False


class RedisAppState(AppState):
    """One app's state in Redis, as seen from this process."""

    def __init__(self, backend: RedisBackend, name: str, listener: StateListener) -> None:
        super().__init__(listener)
        self.backend = backend
        self.prefix = f"wsapp:{name}:"
        self.channel = f"wsapp:{backend.db}:{name}:events"
        self.local_users: int | None = None

    def publish(self, event: Mapping[str, Any], *, exclude: Any = None) -> Deferred[None]:
        token = self.backend.expect(exclude)
        message = f"E {self.backend.process} {token} {encode(event).decode()}"
        return self.backend.run(token, "publish", self.channel, message)

    def counter_value(self) -> Deferred[int]:
        token = self.backend.expect(None)
        header = f"V {self.backend.process} {token} "
        return self.backend.run(
            token, "eval", VALUE, [f"{self.prefix}counter"], [self.channel, header]
        )

    def counter_add(self, amount: int, *, exclude: Any = None) -> Deferred[int]:
        token = self.backend.expect(exclude)
        header = f"C {self.backend.process} {token} "
        arguments = [amount, SAFE_INTEGER, self.channel, header]
        return self.backend.run(token, "eval", ADD, [f"{self.prefix}counter"], arguments)

    def report_users(self, local: int) -> None:
        self.local_users = local
        self.announce_users(force=True)

    def announce_users(self, *, force: bool = False, leaving: bool = False) -> Deferred[Any]:
        """Store this process's users count and publish the total if it changed (or ``force``)."""
        keys = [f"{self.prefix}processes", f"{self.prefix}users:{self.backend.process}"]
        keys.append(f"{self.prefix}users-total")
        count = "" if leaving else str(self.local_users)
        ttl = str(int(USERS_TTL * 1000))
        header = f"U {self.backend.process} - "
        arguments = [f"{self.prefix}users:", self.backend.process, count, ttl, self.channel]
        arguments += [header, "1" if force else "0"]
        return self.backend.run(None, "eval", USERS, keys, arguments).addErrback(_ignore)

    def resynchronize(self) -> Deferred[Any]:
        """Send this process's clients the counter and users total after a reconnection."""
        header = f"R {self.backend.process} - "
        reading = self.backend.run(
            None, "eval", VALUE, [f"{self.prefix}counter"], [self.channel, header]
        )
        if self.local_users is not None:
            self.announce_users(force=True)
        return reading.addErrback(_ignore)

    def received(self, kind: str, origin: str, token: str, body: str) -> None:
        """Handle one message of this app's channel."""
        own = origin == self.backend.process
        pending = self.backend.pending.pop(token, None) if own and token != "-" else None
        exclude = None if pending is None else pending.exclude
        result: int | None = None
        if kind == "E":
            self.listener.fan_out(body.encode(), exclude)
        elif kind == "U":
            self.listener.users_changed(int(body))
        elif kind == "C":
            result = int(body)
            self.listener.counter_changed(result, exclude)
        elif kind == "R" and own:
            self.listener.counter_changed(int(body), None)
        elif kind == "V":
            result = int(body)
        if pending is not None:
            pending.done.callback(result)


def _ignore(failure: Failure) -> None:
    """Errback of background updates: the next heartbeat or reconnection repairs them."""
    if not failure.check(BackendUnavailableError):
        log.failure("Updating Redis failed", failure)


class RedisBackend(Backend):
    """The state of every app in the Redis database ``db`` at ``host:port``."""

    def __init__(self, host: str, port: int, db: int = 0, *, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.address = f"redis://{host}:{port}/{db}"
        self.db = db
        #: This process's id in Redis: its users count and the origin of its messages.
        self.process = uuid.uuid4().hex[:12]
        #: The apps' states by channel.
        self.apps: dict[str, RedisAppState] = {}
        #: This process's requests whose message has not come back yet, by token.
        self.pending: dict[str, _Pending] = {}
        self.subscribed = False
        self._was_available = False
        self._tokens = itertools.count(1)
        endpoint = HostnameEndpoint(reactor, host, port, timeout=REPLY_TIMEOUT)
        self.commands = Link(
            endpoint,
            txredisapi.RedisProtocol,
            db,
            self._ready,
            self._lost,
            reactor,
            retrying=self._retrying,
        )
        self.subscription = Link(
            endpoint, Subscriber, db, self._subscribe, self._unsubscribed, reactor
        )
        self.subscription.factory.on_message = self._received
        self._heartbeat = LoopingCall(self.beat)
        self._heartbeat.clock = reactor

    @property
    def available(self) -> bool:
        """Whether requests can be served: both connections are up and subscribed."""
        return self.commands.protocol is not None and self.subscribed

    def app(self, name: str, listener: StateListener) -> RedisAppState:
        state = RedisAppState(self, name, listener)
        self.apps[state.channel] = state
        return state

    def expect(self, exclude: Any) -> str:
        """Register a request whose message will come back on the channel; return its token."""
        token = str(next(self._tokens))
        self.pending[token] = _Pending(Deferred(), exclude)
        return token

    def run(self, token: str | None, command: str, *arguments: Any) -> Deferred[Any]:
        """
        Send a command; with a ``token``, return the Deferred of that pending request.

        Fails at once with :class:`BackendUnavailableError` while Redis is unreachable.
        """
        connection = self.commands.protocol
        if connection is None or not self.subscribed:
            if token is not None:
                del self.pending[token]
            return fail(BackendUnavailableError())
        replying: Deferred[Any] = getattr(connection, command)(*arguments)
        if token is None:
            return replying.addErrback(translate)
        replying.addCallbacks(
            self._replied, self._failed, callbackArgs=(token, command), errbackArgs=(token,)
        )
        return self.pending[token].done

    def _replied(self, result: Any, token: str, command: str) -> None:
        pending = self.pending.get(token)
        if pending is None:
            return
        pending.result = int(result) if command == "eval" else None
        pending.replied = True
        if pending.orphaned:
            del self.pending[token]
            pending.done.callback(pending.result)

    def _failed(self, failure: Failure, token: str) -> None:
        pending = self.pending.pop(token, None)
        if pending is not None:
            pending.done.errback(translate(failure))

    def _received(self, channel: str, message: str) -> None:
        state = self.apps.get(channel)
        parts = message.split(" ", 3)
        if state is None or len(parts) != 4:
            log.warn("Ignored a malformed message on {channel}", channel=channel)
            return
        state.received(*parts)

    def beat(self) -> None:
        """Refresh this process's users counts; publish totals that changed (dead processes)."""
        if self.available:
            for state in self.apps.values():
                if state.local_users is not None:
                    state.announce_users()

    def _subscribe(self, connection: Any) -> Deferred[Any]:
        subscribing: Deferred[Any] = connection.subscribe(list(self.apps))
        return subscribing.addCallback(self._subscribed)

    def _subscribed(self, _: object) -> None:
        self.subscribed = True
        self._ready(None)

    def _unsubscribed(self) -> None:
        self.subscribed = False
        for token, pending in list(self.pending.items()):
            if pending.replied:
                del self.pending[token]
                pending.done.callback(pending.result)
            else:
                pending.orphaned = True
        self._lost()

    def _ready(self, _: object) -> None:
        if self.available and not self._was_available:
            self._was_available = True
            log.info("Connected to {address}", address=self.address)
            for state in self.apps.values():
                state.resynchronize()

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
        leaving = [
            state.announce_users(leaving=True)
            for state in self.apps.values()
            if state.local_users is not None
        ]
        done: Deferred[Any] = gatherResults(leaving).addTimeout(REPLY_TIMEOUT, self.reactor)
        done.addBoth(lambda _: self.commands.service.stopService())
        done.addBoth(lambda _: self.subscription.service.stopService())
        return done.addBoth(lambda _: None)
