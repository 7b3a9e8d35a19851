"""
Pure limit keeping, no I/O: a per-connection token bucket and the open-connection counts.

The protocols ask these objects before they act; tests drive them with made-up clocks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

__all__ = ["ConnectionLimiter", "Refusal", "TokenBucket"]


class TokenBucket:
    """
    Allows ``rate`` requests per second on average and ``burst`` at once.

    A refused request still costs a token, so a client that keeps sending faster than the
    rate sinks into debt, while one that slows down after a refusal recovers. Each
    :meth:`take` is a handful of float operations.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token at time ``now`` (seconds); return whether one was available."""
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens = tokens - 1.0
        return tokens >= 1.0

    @property
    def debt(self) -> float:
        """How many requests were refused beyond what the rate has since paid back."""
        return max(0.0, -self.tokens)


@dataclass(frozen=True)
class Refusal:
    """Why a connection is refused: the HTTP status and its reason."""

    status: int
    reason: str


class ConnectionLimiter:
    """Counts open connections: in all, per app and per client address."""

    def __init__(self, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self.per_app: Counter[str] = Counter()
        self.per_address: Counter[str] = Counter()

    def admit(self, app: str, app_limit: int, address: str) -> Refusal | None:
        """
        Count a new connection of ``app`` from ``address`` and return None, or return why
        it is refused (then nothing is counted). ``app_limit`` 0 means no per-app limit.
        """
        if self.total >= self.max_total:
            return Refusal(503, "the server has too many connections")
        if app_limit and self.per_app[app] >= app_limit:
            return Refusal(503, "this app has too many connections")
        if self.per_address[address] >= self.max_per_address:
            return Refusal(429, "too many connections from your address")
        self.total += 1
        self.per_app[app] += 1
        self.per_address[address] += 1
        return None

    def release(self, app: str, address: str) -> None:
        """Forget one connection that :meth:`admit` counted."""
        self.total -= 1
        for counts, key in ((self.per_app, app), (self.per_address, address)):
            counts[key] -= 1
            if counts[key] <= 0:
                del counts[key]
