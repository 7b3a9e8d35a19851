"""
The timer behind each connection's timeouts: opening and closing handshake, auto-ping.

autobahn gives every connection an opening-handshake timeout and, once open, an auto-ping
call through its factory's batched timer (``factory._batched_timer``): one reactor call per
bucket of deadlines instead of one per connection. :class:`BucketTimer` keeps that
interface (``call_later(delay, f, *args)`` returns a handle with ``cancel()``) with less
work per call: a cancelled call leaves its bucket at once (txaio's timer searches a list
for it), and a call never runs before its time (txaio's runs up to a second early, as it
rounds deadlines down to whole seconds), at most one bucket late.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

__all__ = ["BucketTimer"]

log = Logger()


class _Call:
    """A pending call of a :class:`BucketTimer`."""

    __slots__ = ("args", "bucket", "function", "kwargs")

    def __init__(
        self,
        bucket: dict[_Call, None],
        function: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.bucket: dict[_Call, None] | None = bucket
        self.function = function
        self.args = args
        self.kwargs = kwargs

    def cancel(self) -> None:
        """Forget this call (nothing happens if it ran or was cancelled already)."""
        if self.bucket is not None:
            self.bucket.pop(self, None)
            self.bucket = None


class BucketTimer:
    """
    Runs calls after their delay, gathered in buckets of ``bucket`` seconds, each bucket
    one reactor call; a bucket's calls run ``chunk`` at a time, one reactor turn apart.
    """

    def __init__(self, reactor: Any, bucket: float = 0.2, chunk: int = 1000) -> None:
        self.reactor = reactor
        self.bucket = bucket
        self.chunk = chunk
        self._buckets: dict[int, dict[_Call, None]] = {}

    def call_later(
        self, delay: float, function: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> _Call:
        """Call ``function(*args, **kwargs)`` ``delay`` seconds from now, or a little later."""
        now = self.reactor.seconds()
        index = math.ceil((now + delay) / self.bucket)
        calls = self._buckets.get(index)
        if calls is None:
            calls = self._buckets[index] = {}
            self.reactor.callLater(max(0.0, index * self.bucket - now), self._run, index)
        call = _Call(calls, function, args, kwargs)
        calls[call] = None
        return call

    def _run(self, index: int) -> None:
        calls = self._buckets.pop(index, {})
        self._run_chunk(list(calls))

    def _run_chunk(self, calls: list[_Call]) -> None:
        rest = calls[self.chunk :]
        if rest:
            self.reactor.callLater(0, self._run_chunk, rest)
        for call in calls[: self.chunk]:
            if call.bucket is None:
                continue  # cancelled meanwhile
            call.bucket = None
            try:
                call.function(*call.args, **call.kwargs)
            except Exception:
                log.failure("timed call {call!r} failed", call=call.function)
