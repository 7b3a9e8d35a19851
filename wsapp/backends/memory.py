"""
The default backend: channels in this process, counters optionally kept in a state file.

Everything happens synchronously: a publication has reached the listener when
:meth:`MemoryBackend.publish` returns, and every Deferred has already fired. A channel's
log is forgotten once nobody listens to it and its history is empty, and a new log starts
a new epoch, so a subscriber can always tell. A restarted process has new epochs for all.
With a state file, changed counters are written every ``interval`` seconds and once more
when the service stops, so a clean restart keeps them and a ``kill -9`` loses at most the
last interval's changes. Only integers that were incremented (or restored) are kept.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..channels import ChannelLog, HistoryResult, Position
from ..exceptions import StateError
from ..messages import OUT_OF_RANGE
from . import Backend, PresenceChange
from .statefile import load_counters, save_counters

__all__ = ["MemoryBackend"]

log = Logger()


class MemoryBackend(Backend):
    """
    Channels and counters in this process; ``state_file`` (if given) keeps the counters.

    The file is read here, so a corrupt one stops the server before it listens
    (:class:`~wsapp.exceptions.StateFileError`); a missing one means every counter is 0.
    """

    def __init__(
        self, *, state_file: str | None = None, interval: float = 1.0, reactor: Any = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.state_file = state_file
        self.interval = interval
        self.reactor = reactor
        self.logs: dict[str, ChannelLog] = {}
        self.subscribed: set[str] = set()
        self.presences: dict[str, dict[str, Mapping[str, Any]]] = {}
        self.integers: dict[str, int] = {}
        #: The deny-list: each key's expiry (Unix time).
        self.denials: dict[str, float] = {}
        self._saved: dict[str, int] = {}
        self._saver: LoopingCall | None = None
        if state_file is not None:
            counters = load_counters(state_file)
            if counters is None:
                log.info("No state file {file} yet: counters start at 0", file=state_file)
            else:
                log.info("Counters restored from {file}", file=state_file)
            self._saved = counters or {}
            self.integers = dict(self._saved)

    @property
    def address(self) -> str:
        return "memory"

    def _log(self, channel: str) -> ChannelLog:
        channel_log = self.logs.get(channel)
        if channel_log is None:
            channel_log = self.logs[channel] = ChannelLog(uuid.uuid4().hex[:8])
        return channel_log

    def _forget(self, channel: str) -> None:
        channel_log = self.logs.get(channel)
        if (
            channel_log is not None
            and channel not in self.subscribed
            and channel_log.is_empty(self.reactor.seconds())
        ):
            del self.logs[channel]

    def publish(
        self,
        channel: str,
        data: Any,
        *,
        history_size: int = 0,
        history_ttl: float = 0.0,
        tag: str = "",
    ) -> Deferred[Position]:
        return succeed(self._publish(channel, data, history_size, history_ttl, tag))

    def _publish(
        self, channel: str, data: Any, history_size: int, history_ttl: float, tag: str
    ) -> Position:
        channel_log = self._log(channel)
        channel_log.configure(history_size, history_ttl)
        publication = channel_log.append(data, self.reactor.seconds(), tag)
        if channel in self.subscribed and self.listener is not None:
            self.listener.deliver(channel, channel_log.epoch, publication, tag)
        position = channel_log.position
        self._forget(channel)
        return position

    def subscribe(self, channel: str) -> Deferred[None]:
        self.subscribed.add(channel)
        return succeed(None)

    def unsubscribe(self, channel: str) -> Deferred[None]:
        self.subscribed.discard(channel)
        self._forget(channel)
        return succeed(None)

    def history(
        self, channel: str, *, since: Position | None = None, limit: int = 0
    ) -> Deferred[HistoryResult]:
        result = self._log(channel).read(self.reactor.seconds(), since, limit)
        self._forget(channel)
        return succeed(result)

    def presence_add(
        self, channel: str, client: str, info: Mapping[str, Any], *, announce: bool = False
    ) -> Deferred[int]:
        present = self.presences.setdefault(channel, {})
        new = client not in present
        present[client] = info
        if new:
            self._changed(channel, PresenceChange(len(present), client, info, True), announce)
        return succeed(len(present))

    def presence_remove(
        self, channel: str, client: str, *, announce: bool = False
    ) -> Deferred[int]:
        present = self.presences.get(channel, {})
        info = present.pop(client, None)
        count = len(present)
        if not present:
            self.presences.pop(channel, None)
        if info is not None:
            self._changed(channel, PresenceChange(count, client, info, False), announce)
        return succeed(count)

    def _changed(self, channel: str, change: PresenceChange, announce: bool) -> None:
        if channel in self.subscribed and self.listener is not None:
            if not announce:
                change = PresenceChange(change.count)
            self.listener.presence_changed(channel, change)

    def presence(self, channel: str) -> Deferred[dict[str, Mapping[str, Any]]]:
        return succeed(dict(self.presences.get(channel, {})))

    def presence_count(self, channel: str) -> Deferred[int]:
        return succeed(len(self.presences.get(channel, {})))

    def increment(
        self, key: str, amount: int, *, limit: int, channel: str = "", tag: str = ""
    ) -> Deferred[tuple[int, Position | None]]:
        value = self.integers.get(key, 0) + amount
        if not -limit <= value <= limit:
            return fail(StateError(OUT_OF_RANGE, f"the counter must stay within ±{limit}"))
        self.integers[key] = value
        position = None
        if channel:
            position = self._publish(channel, value, 1, 0.0, tag)
        return succeed((value, position))

    def deny(self, key: str, until: float) -> Deferred[None]:
        now = self.reactor.seconds()
        self.denials = {name: end for name, end in self.denials.items() if end > now}
        if until > now:
            self.denials[key] = max(until, self.denials.get(key, 0.0))
        return succeed(None)

    def denied(self, key: str) -> Deferred[bool]:
        return succeed(self.denials.get(key, 0.0) > self.reactor.seconds())

    def counters(self) -> dict[str, int]:
        """Return every integer kept, by key."""
        return dict(self.integers)

    def save(self) -> None:
        """Write the state file if an integer changed since the last write."""
        counters = self.counters()
        if self.state_file is None or counters == self._saved:
            return
        try:
            save_counters(self.state_file, counters)
        except OSError as error:
            log.error("Cannot write state file {file}: {error}", file=self.state_file, error=error)
            return
        self._saved = counters

    def startService(self) -> None:
        super().startService()
        if self.state_file is not None:
            self._saver = LoopingCall(self.save)
            self._saver.clock = self.reactor
            self._saver.start(self.interval, now=False)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._saver is not None:
            self._saver.stop()
            self._saver = None
        self.save()
        return None
