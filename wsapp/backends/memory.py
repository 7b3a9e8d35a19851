"""
The default backend: state in this process, optionally kept in a state file.

Everything happens synchronously: a publish is the factory's local broadcast and a
counter change returns an already-fired Deferred. With a state file, changed counters are
written every ``interval`` seconds and once more when the service stops, so a clean
restart keeps them and a ``kill -9`` loses at most the last interval's changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from ..exceptions import StateError
from ..state import Counter
from . import AppState, Backend, StateListener
from .statefile import load_counters, save_counters

__all__ = ["MemoryAppState", "MemoryBackend"]

log = Logger()


class MemoryAppState(AppState):
    """One app's state in this process: a :class:`~wsapp.state.Counter`."""

    def __init__(self, listener: StateListener, counter: Counter) -> None:
        super().__init__(listener)
        self.counter = counter

    def publish(self, event: Mapping[str, Any], *, exclude: Any = None) -> None:
        self.listener.broadcast(event, exclude=exclude)

    def counter_value(self) -> Deferred[int]:
        return succeed(self.counter.value)

    def counter_add(self, amount: int, *, exclude: Any = None) -> Deferred[int]:
        try:
            value = self.counter.add(amount)
        except StateError as error:
            return fail(error)
        self.listener.counter_changed(value, exclude)
        return succeed(value)

    def report_users(self, local: int) -> None:
        self.listener.users_changed(local)


class MemoryBackend(Backend):
    """
    The apps' state in this process; ``state_file`` (if given) keeps the counters.

    The file is read here, so a corrupt one stops the server before it listens
    (:class:`~wsapp.exceptions.StateFileError`); a missing one means every counter is 0.
    """

    def __init__(
        self, *, state_file: str | None = None, interval: float = 1.0, reactor: Any = None
    ) -> None:
        self.state_file = state_file
        self.interval = interval
        self.reactor = reactor
        self.apps: dict[str, MemoryAppState] = {}
        self._saved: dict[str, int] = {}
        self._saver: LoopingCall | None = None
        if state_file is not None:
            counters = load_counters(state_file)
            if counters is None:
                log.info("No state file {file} yet: counters start at 0", file=state_file)
            else:
                log.info("Counters restored from {file}", file=state_file)
            self._saved = counters or {}

    def app(self, name: str, listener: StateListener) -> MemoryAppState:
        state = MemoryAppState(listener, Counter(self._saved.get(name, 0)))
        self.apps[name] = state
        return state

    def counters(self) -> dict[str, int]:
        """Return the counter of every app, by name."""
        return {name: state.counter.value for name, state in self.apps.items()}

    def save(self) -> None:
        """Write the state file if a counter changed since the last write."""
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
            if self.reactor is not None:
                self._saver.clock = self.reactor
            self._saver.start(self.interval, now=False)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._saver is not None:
            self._saver.stop()
            self._saver = None
        self.save()
        return None
