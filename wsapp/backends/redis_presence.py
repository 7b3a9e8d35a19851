"""
Presence for :mod:`wsapp.backends.redis`: this process's entries, kept alive by a heartbeat.

This process keeps its own entries (client -> JSON info, by channel) and makes Redis hold
the same: on every heartbeat it refreshes their expiry (entering them again if they expired
meanwhile), after a reconnection it replaces them, and when it stops it removes them. Each
heartbeat also recounts the channels where it has entries or last heard a nonzero count, so
the entries of a process that died are dropped from the count within
``HEARTBEAT + PRESENCE_TTL`` seconds, and one process publishes the recount.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..exceptions import BackendUnavailableError
from .redis_scripts import PRESENCE, Script, to_json


class _Backend(Protocol):
    """What the presence entries use of :class:`~wsapp.backends.redis.RedisBackend`."""

    @property
    def process(self) -> str: ...

    @property
    def channels(self) -> Collection[str]: ...

    @property
    def available(self) -> bool: ...

    def run(self, script: Script, *arguments: Any) -> Deferred[Any]: ...


__all__ = ["HEARTBEAT", "PRESENCE_TTL", "Presence"]

log = Logger()

#: Seconds between two refreshes of this process's presence entries (and recounts).
HEARTBEAT = 1.0
#: Seconds after which the presence entries of a process that stopped refreshing them expire.
PRESENCE_TTL = 3.0


def _background(failure: Failure) -> None:
    """Errback of background updates: the next heartbeat or reconnection repairs them."""
    if not failure.check(BackendUnavailableError):
        log.failure("Updating presence in Redis failed", failure)


class Presence:
    """The presence entries of one :class:`~wsapp.backends.redis.RedisBackend`."""

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend
        #: This process's entries: JSON info by client, by channel.
        self.present: dict[str, dict[str, str]] = {}
        #: The last count heard of each subscribed channel.
        self.counts: dict[str, int] = {}

    def add(
        self, channel: str, client: str, info: Mapping[str, Any], announce: bool
    ) -> Deferred[int]:
        """Enter ``client`` in ``channel``; return the count."""
        if not self.backend.available:
            return fail(BackendUnavailableError())
        try:
            entry = to_json(info)
        except (TypeError, ValueError) as error:
            return fail(ValueError(f"presence info is not JSON: {error}"))
        change = f"{to_json(client)},{entry},true" if announce else "null,null,true"
        self.present.setdefault(channel, {})[client] = entry
        adding: Deferred[int] = self._run("add", channel, client, entry, change)
        return adding.addErrback(self._failed, channel, client)

    def remove(self, channel: str, client: str, announce: bool) -> Deferred[int]:
        """Remove ``client`` from ``channel``; return the count."""
        if not self.backend.available:
            return fail(BackendUnavailableError())
        info = self.present.get(channel, {}).get(client, "null")
        change = f"{to_json(client)},{info},false" if announce else "null,null,false"
        self._forget(channel, client)
        return self._run("remove", channel, client, change)

    def _failed(self, failure: Failure, channel: str, client: str) -> Failure:
        """An add failed, maybe applied: drop it here (a reconnection replaces all entries)."""
        self._forget(channel, client)
        return failure

    def _forget(self, channel: str, client: str) -> None:
        entries = self.present.get(channel, {})
        entries.pop(client, None)
        if not entries:
            self.present.pop(channel, None)

    def entries(self, channel: str) -> Deferred[dict[str, Mapping[str, Any]]]:
        """Return every process's entries in ``channel``."""

        def decode(found: list[str]) -> dict[str, Mapping[str, Any]]:
            entries = {found[i]: json.loads(found[i + 1]) for i in range(0, len(found), 2)}
            self.heard(channel, len(entries))
            return entries

        return self._run("list", channel).addCallback(decode)

    def count(self, channel: str) -> Deferred[int]:
        """Return how many clients all processes have in ``channel``."""
        return self._run("count", channel)

    def _run(self, mode: str, channel: str, *arguments: Any) -> Deferred[Any]:
        ttl = round(PRESENCE_TTL * 1000)
        running = self.backend.run(PRESENCE, mode, channel, self.backend.process, ttl, *arguments)
        if mode in ("add", "remove", "count"):
            running.addCallback(lambda count: self.heard(channel, int(count)))
        return running

    def heard(self, channel: str, count: int) -> int:
        """Note ``channel``'s count, if this process is subscribed to it; return the count."""
        if channel in self.backend.channels:
            self.counts[channel] = count
        return count

    def beat(self) -> None:
        """Refresh this process's entries; publish counts that changed (dead processes)."""
        channels = set(self.present)
        channels.update(channel for channel, count in self.counts.items() if count)
        for channel in channels:
            beating = self._run("beat", channel)
            beating.addCallback(self._beaten, channel).addErrback(_background)

    def _beaten(self, reply: list[int], channel: str) -> Deferred[Any] | None:
        self.heard(channel, int(reply[0]))
        if reply[1] or not self.present.get(channel):
            return None
        return self.replace(channel)  # they expired while this process was stalled

    def replace(self, channel: str) -> Deferred[Any]:
        """Make this process's entries in ``channel`` in Redis the ones kept here (none: leave)."""
        entries = [part for pair in self.present.get(channel, {}).items() for part in pair]
        return self._run("replace", channel, *entries)

    def restore(self) -> None:
        """Replace every channel's entries (after a reconnection: calls may have failed)."""
        for channel in list(self.present):
            self.replace(channel).addErrback(_background)

    def leave(self) -> Deferred[Any]:
        """Remove this process's entries from every channel (when it stops)."""
        channels, self.present = list(self.present), {}
        return gatherResults([self.replace(channel) for channel in channels], consumeErrors=True)
