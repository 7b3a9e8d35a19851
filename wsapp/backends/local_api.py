"""
The HTTP API's state for a backend without a shared store: idempotency keys and the one
process's report, kept in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from ..channels import Position

__all__ = ["LocalApiState"]


class LocalApiState:
    """Idempotency keys and node reports, expiring on the monotonic clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        #: Each key's expiry, and its publication's position (None while it is made).
        self.once: dict[Hashable, tuple[float, Position | None]] = {}
        self._waiting: dict[Hashable, list[Deferred[tuple[Position, bool]]]] = {}
        self.reports: dict[str, tuple[float, dict[str, Any]]] = {}

    def publish_once(
        self, publish: Callable[[], Deferred[Position]], key: Hashable, window: float
    ) -> Deferred[tuple[Position, bool]]:
        """Call ``publish`` unless ``key`` was seen within ``window`` seconds."""
        now = self.clock()
        for old in [k for k, (expiry, done) in self.once.items() if expiry <= now and done]:
            del self.once[old]
        seen = self.once.get(key)
        if seen is not None:
            if seen[1] is not None:
                return succeed((seen[1], False))
            waiting: Deferred[tuple[Position, bool]] = Deferred()
            self._waiting.setdefault(key, []).append(waiting)
            return waiting
        self.once[key] = (now + window, None)

        def published(position: Position) -> tuple[Position, bool]:
            self.once[key] = (self.clock() + window, position)
            for other in self._waiting.pop(key, []):
                other.callback((position, False))
            return position, True

        def failed(failure: Failure) -> Failure:
            self.once.pop(key, None)
            for other in self._waiting.pop(key, []):
                other.errback(failure)
            return failure

        return publish().addCallbacks(published, failed)

    def put_node(self, node: str, report: Mapping[str, Any], ttl: float) -> Deferred[None]:
        """Keep ``report`` for ``ttl`` seconds."""
        self.reports[node] = (self.clock() + ttl, dict(report))
        return succeed(None)

    def nodes(self) -> Deferred[list[dict[str, Any]]]:
        """The reports that have not expired."""
        now = self.clock()
        for node in [n for n, (expiry, _) in self.reports.items() if expiry <= now]:
            del self.reports[node]
        return succeed([report for _, report in self.reports.values()])
