"""
The two Redis connections of :mod:`wsapp.backends.redis`, kept open while it runs.

Each is a txredisapi protocol, opened again with exponential backoff (0.1 s, up to 2 s
between attempts, plus up to 1 s of jitter) by a Twisted
:class:`~twisted.application.internet.ClientService`. The service's own line per retry is
silenced: a link given a ``retrying`` callback reports each retry with its reason instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, cast

import txredisapi
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectError
from twisted.internet.error import TimeoutError as ConnectTimeout
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..exceptions import BackendUnavailableError, StateError
from ..messages import OUT_OF_RANGE
from ..state import SAFE_INTEGER

__all__ = ["REPLY_TIMEOUT", "Link", "Subscriber", "describe", "translate"]

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


def _discard(event: Mapping[str, Any]) -> None:
    """A log observer that drops every event."""


class _QuietClientService(ClientService):
    """A ClientService that does not log its retries."""

    _log = Logger(observer=cast(ILogObserver, _discard))


@implementer(IStreamClientEndpoint)
class _Attempts:
    """An endpoint that tells ``failed`` why each connection attempt failed."""

    def __init__(self, endpoint: Any, failed: Callable[[Failure], None]) -> None:
        self.endpoint = endpoint
        self.failed = failed

    def connect(self, factory: Any) -> Deferred[Any]:
        connecting: Deferred[Any] = self.endpoint.connect(factory)
        return connecting.addErrback(self._failed)

    def _failed(self, failure: Failure) -> Failure:
        self.failed(failure)
        return failure


class Link:
    """
    One Redis connection, opened again with backoff by a ClientService while it runs.

    ``retrying(reason, delay)``, if given, is called before each retry with why the last
    attempt failed and the seconds until the next one.
    """

    def __init__(
        self,
        endpoint: Any,
        protocol_class: type[Any],
        db: int,
        ready: Callable[[Any], Any],
        lost: Callable[[], None],
        reactor: Any,
        retrying: Callable[[str, float], None] | None = None,
    ) -> None:
        #: The connected, ready protocol, or None.
        self.protocol: Any = None
        self.factory = _ProtocolFactory(protocol_class, db)
        self.service = _QuietClientService(
            cast(IStreamClientEndpoint, _Attempts(endpoint, self._attempt_failed)),
            cast(IProtocolFactory, self.factory),
            retryPolicy=self._retry_delay,
            prepareConnection=self._prepare,
        )
        self._ready = ready
        self._lost = lost
        self._retrying = retrying
        self._backoff = backoffPolicy(initialDelay=0.1, maxDelay=2.0)
        #: Why the last attempt to connect failed.
        self.reason = "no reply"
        self.reactor = reactor

    def _attempt_failed(self, failure: Failure) -> None:
        self.reason = describe(failure)

    def _retry_delay(self, attempt: int) -> float:
        delay = self._backoff(attempt)
        if self._retrying is not None:
            self._retrying(self.reason, delay)
        return delay

    def _prepare(self, connection: Any) -> Deferred[Any]:
        preparing: Deferred[Any] = connection.whenConnected()
        preparing.addCallback(self._connected)
        preparing.addTimeout(REPLY_TIMEOUT, self.reactor)
        return preparing.addErrback(self._prepare_failed)

    def _prepare_failed(self, failure: Failure) -> Failure:
        self._attempt_failed(failure)
        return failure

    def _connected(self, connection: Any) -> Any:
        self.protocol = connection
        connection.whenDisconnected().addCallback(self._disconnected)
        return self._ready(connection)

    def _disconnected(self, _: object) -> None:
        self.protocol = None
        self._lost()


def describe(failure: Failure) -> str:
    """Say in a few words why connecting failed, e.g. ``Connection refused``."""
    error = failure.value
    if isinstance(error, ConnectTimeout):
        return "no answer in time"
    if isinstance(error, ConnectError):
        return str(error.args[0] if error.args and error.args[0] else error.MESSAGE).rstrip(".")
    return str(error).rstrip(".") or type(error).__name__


def translate(failure: Failure, limit: int = SAFE_INTEGER) -> Failure:
    """Turn txredisapi's errors into the errors the protocols answer clients with."""
    if failure.check(txredisapi.ResponseError) and "out-of-range" in str(failure.value):
        return Failure(StateError(OUT_OF_RANGE, f"the counter must stay within ±{limit}"))
    if failure.check(txredisapi.ConnectionError):
        return Failure(BackendUnavailableError())
    return failure
