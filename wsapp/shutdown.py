"""Graceful shutdown: close every WebSocket with 1001 and wait, within a grace period."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, TimeoutError
from twisted.logger import Logger

from .server import ServerFactory

__all__ = ["GOING_AWAY", "ShutdownHook", "close_all"]

log = Logger()

#: WebSocket close code: the server is going away.
GOING_AWAY = 1001

#: Called without arguments on shutdown; may return a Deferred or an awaitable.
ShutdownHook = Callable[[], "Deferred[Any] | Awaitable[Any] | None"]


async def close_all(factories: Iterable[ServerFactory], grace_period: float, reactor: Any) -> None:
    """
    Send a 1001 close to every open connection of ``factories`` and wait until all have
    closed or ``grace_period`` seconds have passed; drop the rest.
    """
    connections = [connection for factory in factories for connection in factory.registry]
    if not connections:
        return
    log.info("shutting down: closing {count} connections", count=len(connections))
    for connection in connections:
        if connection.state == connection.STATE_OPEN:
            connection.close_with(GOING_AWAY, "server shutting down")
    closed: Deferred[Any] = DeferredList([connection.is_closed for connection in connections])
    try:
        await closed.addTimeout(grace_period, reactor)
    except TimeoutError:
        left = [c for c in connections if c.state != c.STATE_CLOSED]
        log.warn("shutting down: dropping {count} connections", count=len(left))
        for connection in left:
            connection.dropConnection(abort=True)
