"""
Drive wsapp's echo client through an Autobahn TestSuite fuzzingserver.

The fuzzingserver protocol: ``/getCaseCount`` sends the number of cases, ``/runCase?case=N``
runs case N against the connecting client, and ``/updateReports`` ends the run so the server
writes its reports. Every case connection is a :class:`wsapp.apps.echo.EchoClientProtocol`
made by a :class:`wsapp.client.ClientFactory`, offering permessage-deflate.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from wsapp.apps.echo import EchoClientProtocol
from wsapp.client import ClientFactory, ClientProtocol

__all__ = ["run_cases"]

#: Seconds before a case connection is aborted: above kosoku's own limit of 480 s per case.
CASE_TIMEOUT = 600.0


class _CountProtocol(ClientProtocol):
    """Keeps the one message ``/getCaseCount`` sends: the number of cases."""

    def onUnhandled(self, payload: bytes, isBinary: bool) -> None:
        self.factory.case_count = int(payload)  # type: ignore[attr-defined]


class _Closed(WrappingFactory):
    """Wraps a client factory; ``closed`` fires once its connection's TCP is gone."""

    def __init__(self, wrapped: ClientFactory) -> None:
        super().__init__(wrapped)
        self.closed: Deferred[None] = Deferred()
        self.connection: ProtocolWrapper | None = None

    def registerProtocol(self, p: ProtocolWrapper) -> None:
        super().registerProtocol(p)
        self.connection = p

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        super().unregisterProtocol(p)
        self.closed.callback(None)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.closed.errback(reason)


async def _session(
    url: str, protocol: type[ClientProtocol], reactor: Any, timeout: float
) -> ClientFactory:
    """Connect ``protocol`` to ``url`` and return its factory once the connection has closed."""
    address = urlsplit(url)
    assert address.hostname is not None and address.port is not None, url
    factory = ClientFactory(url, protocol, reactor=reactor)
    watch = _Closed(factory)
    reactor.connectTCP(address.hostname, address.port, watch, timeout=10)

    def abort(closed: Any, timeout: float) -> None:
        if watch.connection is not None:
            watch.connection.transport.abortConnection()

    watch.closed.addTimeout(timeout, reactor, onTimeoutCancel=abort)
    await watch.closed
    return factory


async def run_cases(
    url: str,
    agent: str,
    *,
    reactor: Any,
    concurrency: int = 1,
    protocol: type[ClientProtocol] = EchoClientProtocol,
) -> int:
    """
    Run every case of the fuzzingserver at ``url`` (``ws://host:port``); return how many.

    Up to ``concurrency`` cases run at once, each on a connection of ``protocol``; the
    reports name the client ``agent``.
    """
    base = url.rstrip("/")
    counted = await _session(f"{base}/getCaseCount", _CountProtocol, reactor, 30)
    count: int = counted.case_count  # type: ignore[attr-defined]
    name = quote(agent)
    slots = DeferredSemaphore(concurrency)

    def run_case(number: int) -> Deferred[ClientFactory]:
        case_url = f"{base}/runCase?case={number}&agent={name}"
        return Deferred.fromCoroutine(_session(case_url, protocol, reactor, CASE_TIMEOUT))

    await gatherResults([slots.run(run_case, number) for number in range(1, count + 1)])
    await _session(f"{base}/updateReports?agent={name}", ClientProtocol, reactor, 60)
    return count
