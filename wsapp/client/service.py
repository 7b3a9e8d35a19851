"""
A reconnecting client: a Twisted service that keeps one WebSocket connection open.

Each connection is a new instance of the user's :class:`~wsapp.client.ClientProtocol`
subclass, so its hooks (``onOpen``, ``event_<type>``) run again after every reconnect and
rebuild its state from what the server sends on open; ``whenConnected()`` gives the current
one. The API follows Twisted's ``ClientService``, which cannot be used as is: it breaks when
a connection is lost before its ``prepareConnection`` step (the handshake) completes.
Between attempts the service waits with exponential backoff and jitter (:func:`backoff`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..config import CompressionConfig
from .connection import endpoint_for, open_connection
from .protocol import ClientFactory, ClientProtocol

__all__ = ["ReconnectingClient", "backoff"]

log = Logger()


def _fire(result: object, waiting: Deferred[None]) -> object:
    waiting.callback(None)
    return result


def backoff(
    initial: float = 0.5,
    maximum: float = 30.0,
    factor: float = 2.0,
    jitter: float = 0.5,
    uniform: Callable[[], float] = random.random,
) -> Callable[[int], float]:
    """
    Return a retry policy: seconds to wait before reconnect attempt ``n`` (1, 2, ...).

    The wait grows from ``initial`` by ``factor`` up to ``maximum``; ``jitter`` (0 to 1)
    takes a random share of up to that fraction off each wait, so many clients dropped
    together by one server restart do not all come back at the same instant.
    """
    if not 0 <= jitter <= 1:
        raise ValueError("jitter must be between 0 and 1")
    if initial <= 0 or maximum < initial or factor < 1:
        raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")

    def policy(attempt: int) -> float:
        delay = min(initial * factor ** min(max(attempt - 1, 0), 64), maximum)
        return float(delay * (1 - jitter * uniform()))

    return policy


class ReconnectingClient(Service):
    """
    Keeps one connection to ``url`` open with ``protocol``, reconnecting after any loss.

    Like Twisted's ``ClientService``, but an attempt succeeds only once the WebSocket
    handshake completes: a refused upgrade (HTTP 404, 503...) or a TLS failure backs off
    like a refused TCP connection, and :meth:`whenConnected` only ever gives open
    protocols. permessage-deflate is offered as ``compression`` says.
    """

    def __init__(
        self,
        url: str,
        protocol: type[ClientProtocol],
        *,
        retry: Callable[[int], float] | None = None,
        compression: CompressionConfig | None = None,
        tls: Any = None,
        timeout: float = 10,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.retry = retry or backoff()
        self.factory = ClientFactory(url, protocol, compression=compression, reactor=reactor)
        self.factory.setProtocolOptions(openHandshakeTimeout=timeout)
        self.endpoint = endpoint_for(url, reactor, tls=tls, timeout=timeout)
        #: The open connection, or None between connections.
        self.protocol: ClientProtocol | None = None
        #: Failed attempts since the last successful one.
        self.failures = 0
        self._connecting: Deferred[Any] | None = None
        self._next_attempt: IDelayedCall | None = None
        self._waiting: list[tuple[Deferred[Any], int | None]] = []

    def startService(self) -> None:
        super().startService()
        self._attempt()

    def stopService(self) -> Deferred[None]:
        """Stop reconnecting and close the connection with a closing handshake."""
        super().stopService()
        next_attempt: Any = self._next_attempt
        if next_attempt is not None and next_attempt.active():
            next_attempt.cancel()
        if self._connecting is not None:
            self._connecting.cancel()
        self._waiting, cancelled = [], self._waiting
        for waiting, _ in cancelled:
            waiting.errback(CancelledError())
        protocol, self.protocol = self.protocol, None
        if protocol is None or protocol.state == protocol.STATE_CLOSED:
            return succeed(None)
        closed: Deferred[None] = Deferred()
        protocol.is_closed.addBoth(_fire, closed)
        protocol.sendClose(1000)
        return closed

    def whenConnected(self, failAfterFailures: int | None = None) -> Deferred[Any]:
        """
        Fire with the open protocol: now, or after the next successful attempt.

        With ``failAfterFailures=N`` it fails with the error of the N-th failed attempt.
        """
        if self.protocol is not None and self.protocol.state == self.protocol.STATE_OPEN:
            return succeed(self.protocol)
        waiting: Deferred[Any] = Deferred()
        self._waiting.append((waiting, failAfterFailures))
        return waiting

    def _attempt(self) -> None:
        self._next_attempt = None
        self._connecting = open_connection(self.factory, self.endpoint)
        self._connecting.addCallbacks(self._opened, self._failed)

    def _opened(self, protocol: ClientProtocol) -> None:
        self._connecting = None
        if not self.running:
            protocol.sendClose(1000)
            return
        self.failures = 0
        self.protocol = protocol
        protocol.is_closed.addCallback(self._lost, protocol)
        waiting, self._waiting = self._waiting, []
        for each, _ in waiting:
            each.callback(protocol)

    def _failed(self, failure: Failure) -> None:
        self._connecting = None
        if not self.running:
            return
        self.failures += 1
        self._fail_waiting(failure, lambda remaining: remaining <= self.failures)
        delay = self.retry(self.failures)
        log.info(
            "{url}: {error}; retry {n} in {delay:.2f} s",
            url=self.factory.url,
            error=failure.value,
            n=self.failures,
            delay=delay,
        )
        self._next_attempt = self.reactor.callLater(delay, self._attempt)

    def _lost(self, result: object, protocol: ClientProtocol) -> object:
        if self.protocol is protocol:
            self.protocol = None
            if self.running:
                self._next_attempt = self.reactor.callLater(self.retry(1), self._attempt)
        return result

    def _fail_waiting(self, failure: Failure, due: Callable[[int], bool]) -> None:
        failing = [each for each, after in self._waiting if after is not None and due(after)]
        self._waiting = [entry for entry in self._waiting if entry[0] not in failing]
        for waiting in failing:
            waiting.errback(failure)
