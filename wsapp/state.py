"""
Application state with no I/O: the connection registry, the counter and a throttle.

Protocols translate frames into calls on these objects; tests drive them directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from .exceptions import StateError
from .messages import OUT_OF_RANGE

__all__ = ["Counter", "Registry", "Throttle"]

T = TypeVar("T")

#: Largest integer a JavaScript client represents exactly (2**53 - 1).
SAFE_INTEGER = (1 << 53) - 1


class Registry(Generic[T]):
    """The open connections of one app, in the order they joined."""

    def __init__(self) -> None:
        self._members: dict[T, None] = {}

    def add(self, member: T) -> None:
        self._members[member] = None

    def discard(self, member: T) -> bool:
        """Remove ``member``; return whether it was registered."""
        return self._members.pop(member, False) is None

    def __contains__(self, member: object) -> bool:
        return member in self._members

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[T]:
        """Iterate over a snapshot, so members may join or leave meanwhile."""
        return iter(tuple(self._members))


class Counter:
    """An integer shared by every client, kept within the range clients represent exactly."""

    def __init__(self, value: int = 0, *, limit: int = SAFE_INTEGER) -> None:
        self.value = value
        self.limit = limit

    def add(self, amount: int) -> int:
        """Add ``amount`` and return the new value; refuse to leave ``[-limit, limit]``."""
        value = self.value + amount
        if not -self.limit <= value <= self.limit:
            raise StateError(OUT_OF_RANGE, f"the counter must stay within ±{self.limit}")
        self.value = value
        return value


class Throttle:
    """
    At most one run per ``interval`` seconds: a request in a quiet period runs at once,
    and every request during the interval after a run is merged into one run at its end.

    The caller owns the clock: :meth:`request` says when to run, :meth:`ran` records it.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last_run = float("-inf")
        self.pending = False

    def request(self, now: float) -> float | None:
        """Ask for a run: return the seconds until it is due, or None if one is already due."""
        if self.pending:
            return None
        self.pending = True
        return max(0.0, self.last_run + self.interval - now)

    def ran(self, now: float) -> None:
        self.last_run = now
        self.pending = False

    def skipped(self) -> None:
        """The due run had nothing to do: the next request may run at once."""
        self.pending = False
