"""
The two Redis connections of :mod:`wsapp.backends.redis`, kept open while it runs.

Each is a txredisapi protocol, opened again with exponential backoff (0.1 s, up to 2 s
between attempts) by a Twisted :class:`~twisted.application.internet.ClientService`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IProtocolFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..exceptions import BackendUnavailableError, StateError
from ..messages import OUT_OF_RANGE
from ..state import SAFE_INTEGER

__all__ = ["REPLY_TIMEOUT", "Link", "Subscriber", "translate"]

log = Logger()

#: Seconds to wait for a reply of Redis before the connection is taken as lost.
REPLY_TIMEOUT = 5


class Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
    """Hands every message received to its factory's ``on_message(channel, message)``."""

    def messageReceived(self, pattern: str | None, channel: str, message: str) -> None:
        self.factory.on_message(channel, message)


class _ProtocolFactory(protocol.Factory):
    """Builds the txredisapi protocols of one :class:`Link`."""

    noisy = False
    #: txredisapi: report a failed SELECT by logging it (ClientService retries meanwhile).
    isLazy = True

    def __init__(self, protocol_class: type[Any], db: int) -> None:
        self.protocol_class = protocol_class
        self.db = db
        self.on_message: Callable[[str, str], None] | None = None

    def buildProtocol(self, addr: Any) -> Any:
        connection = self.protocol_class(
            dbid=self.db or None, convertNumbers=False, replyTimeout=REPLY_TIMEOUT
        )
        connection.factory = self
        return connection

    def stopTrying(self) -> None:
        """Called by txredisapi when SELECT failed; the ClientService keeps retrying."""

    def connectionError(self, why: str) -> None:
        log.error("{why}", why=why)


class Link:
    """One Redis connection, opened again with backoff by a ClientService while it runs."""

    def __init__(
        self,
        endpoint: Any,
        protocol_class: type[Any],
        db: int,
        ready: Callable[[Any], Any],
        lost: Callable[[], None],
        reactor: Any,
    ) -> None:
        #: The connected, ready protocol, or None.
        self.protocol: Any = None
        self.factory = _ProtocolFactory(protocol_class, db)
        self.service = ClientService(
            endpoint,
            cast(IProtocolFactory, self.factory),
            retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=2.0),
            prepareConnection=self._prepare,
        )
        self._ready = ready
        self._lost = lost
        self.reactor = reactor

    def _prepare(self, connection: Any) -> Deferred[Any]:
        preparing: Deferred[Any] = connection.whenConnected()
        preparing.addCallback(self._connected)
        return preparing.addTimeout(REPLY_TIMEOUT, self.reactor)

    def _connected(self, connection: Any) -> Any:
        self.protocol = connection
        connection.whenDisconnected().addCallback(self._disconnected)
        return self._ready(connection)

    def _disconnected(self, _: object) -> None:
        self.protocol = None
        self._lost()


def translate(failure: Failure, limit: int = SAFE_INTEGER) -> Failure:
    """Turn txredisapi's errors into the errors the protocols answer clients with."""
    if failure.check(txredisapi.ResponseError) and "out-of-range" in str(failure.value):
        return Failure(StateError(OUT_OF_RANGE, f"the counter must stay within ±{limit}"))
    if failure.check(txredisapi.ConnectionError):
        return Failure(BackendUnavailableError())
    return failure
