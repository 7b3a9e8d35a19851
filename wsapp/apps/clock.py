"""Clock: pushes ``{"type": "time", "time": ISO-8601 UTC}`` to every client at an interval."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from twisted.internet.task import LoopingCall

from ..server import ServerFactory, ServerProtocol

__all__ = ["ClockFactory", "ClockProtocol", "time_event"]


def time_event(now: datetime) -> dict[str, Any]:
    return {"type": "time", "time": now.isoformat(timespec="milliseconds").replace("+00:00", "Z")}


class ClockFactory(ServerFactory):
    """Ticks while at least one client is connected, every ``interval`` seconds."""

    ticker: LoopingCall | None = None

    def tick(self) -> None:
        self.broadcast(time_event(datetime.now(UTC)))

    def client_joined(self) -> None:
        if self.ticker is None:
            self.ticker = LoopingCall(self.tick)
            self.ticker.clock = self.reactor
            self.ticker.start(self.options["interval"], now=False)

    def client_left(self) -> None:
        if self.ticker is not None and not self.registry:
            self.ticker.stop()
            self.ticker = None


class ClockProtocol(ServerProtocol):
    """Receives the time; option ``interval`` is in seconds."""

    factory: ClockFactory
    factory_class = ClockFactory
    default_options: ClassVar[Mapping[str, Any]] = {"interval": 1.0}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        if options["interval"] <= 0:
            raise ValueError("'interval' must be a positive number of seconds")

    def onOpen(self) -> None:
        super().onOpen()
        self.send_event(time_event(datetime.now(UTC)))
        self.factory.client_joined()

    def onLeave(self) -> None:
        self.factory.client_left()
