"""Graceful shutdown: close every WebSocket with 1001 and wait, within a grace period."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

from .server import ServerFactory

__all__ = ["GOING_AWAY", "ShutdownHook", "close_all"]

log = Logger()

#: WebSocket close code: the server is going away.
GOING_AWAY = 1001
#: Seconds between two looks at whether every client has left.
POLL = 0.01

#: Called without arguments on shutdown; may return a Deferred or an awaitable.
ShutdownHook = Callable[[], "Deferred[Any] | Awaitable[Any] | None"]


async def close_all(factories: Iterable[ServerFactory], grace_period: float, reactor: Any) -> None:
    """
    Send a 1001 close to every open connection of ``factories`` and wait until all have
    left their registries or ``grace_period`` seconds have passed; drop the rest.
    """
    factories = list(factories)
    connections = [connection for factory in factories for connection in factory.registry]
    if not connections:
        return
    log.info("shutting down: closing {count} connections", count=len(connections))
    for connection in connections:
        if connection.state == connection.STATE_OPEN:
            connection.close_with(GOING_AWAY, "server shutting down")
    deadline = reactor.seconds() + grace_period
    while any(factory.registry for factory in factories) and reactor.seconds() < deadline:
        await deferLater(reactor, POLL)
    left = [connection for factory in factories for connection in factory.registry]
    if left:
        log.warn("shutting down: dropping {count} connections", count=len(left))
        for connection in left:
            connection.dropConnection(abort=True)
        deadline = reactor.seconds() + 1.0  # an aborted connection is lost on the next pass
        while any(factory.registry for factory in factories) and reactor.seconds() < deadline:
            await deferLater(reactor, POLL)
