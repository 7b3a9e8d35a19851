"""The reconnecting client service: backoff policy, restarts of the server, refusals."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted
import websockets
from twisted.internet import defer

from tests.conftest import Server, aio, sleep, the_reactor
from wsapp.apps.counter import CounterClientProtocol
from wsapp.client import ReconnectingClient, backoff
from wsapp.config import CompressionConfig, Config
from wsapp.service import ServerService


def test_backoff_grows_to_its_maximum() -> None:
    """Without jitter the waits grow by the factor from the initial delay up to the maximum."""
    policy = backoff(initial=0.5, maximum=4, factor=2, jitter=0)
    assert [policy(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert policy(10_000) == 4


def test_backoff_jitter_takes_off_up_to_its_share() -> None:
    """Jitter shortens each wait by a random share of at most ``jitter``, never lengthens it."""
    assert backoff(initial=2, jitter=0.5, uniform=lambda: 1.0)(1) == 1.0
    assert backoff(initial=2, jitter=0.5, uniform=lambda: 0.0)(1) == 2.0
    policy = backoff(initial=1, maximum=8, jitter=0.25)
    waits = [policy(4) for _ in range(200)]
    assert all(6 <= wait <= 8 for wait in waits)
    assert len(set(waits)) > 100


@pytest.mark.parametrize(
    "options", [{"jitter": 2}, {"initial": 0}, {"initial": 2, "maximum": 1}, {"factor": 0.5}]
)
def test_backoff_rejects_impossible_settings(options: dict[str, float]) -> None:
    """Settings that cannot describe a backoff raise ValueError."""
    with pytest.raises(ValueError):
        backoff(**options)


def fast_retry() -> Callable[[int], float]:
    return backoff(initial=0.05, maximum=0.2, jitter=0.5)


async def eventually(check: Callable[[], bool], timeout: float = 5) -> None:
    """Wait until ``check()`` is true, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await sleep(0.01)


class Restartable:
    """A wsapp server that stops and starts again on the same port."""

    def __init__(self) -> None:
        self.service: ServerService | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def start(self, counter: int) -> None:
        """Start listening (on the port of the last start, if any) with this counter value."""
        config = replace(Config(), port=f"tcp:{self.port}:interface=127.0.0.1")
        self.service = ServerService(config, source="test", reactor=the_reactor())
        self.service.startService()
        server = Server(self.service)
        self.port = server.port
        server.factory("/counter").hub.backend.integers["/counter"] = counter

    async def stop(self) -> None:
        """Drop every connection without a close frame and stop listening."""
        if self.service is not None:
            service, self.service = self.service, None
            for factory in service.factories.values():
                for connection in list(factory.registry):
                    connection.dropConnection(abort=True)
            await defer.maybeDeferred(service.stopService)


@pytest.fixture
def restartable() -> Iterator[Restartable]:
    """A server to stop and start on one port; stopped after the test."""
    server = Restartable()
    yield server
    pytest_twisted.blockon(defer.ensureDeferred(server.stop()))


def counter_client(url: str) -> ReconnectingClient:
    return ReconnectingClient(url, CounterClientProtocol, retry=fast_retry(), reactor=the_reactor())


@pytest_twisted.ensureDeferred
async def test_client_resumes_with_latest_state_after_two_restarts(
    restartable: Restartable,
) -> None:
    """The server restarts twice on its port; the client reconnects and shows each new state."""
    await restartable.start(counter=5)
    service = counter_client(restartable.url("/counter"))
    service.startService()
    seen: list[CounterClientProtocol] = []
    try:
        for value in (5, 7, 9):
            if seen:
                await restartable.stop()
                await seen[-1].is_closed
                await restartable.start(counter=value)
            protocol = await service.whenConnected()
            assert protocol not in seen
            await eventually(lambda p=protocol, v=value: p.value == v and p.users == 1)
            seen.append(protocol)
    finally:
        await service.stopService()
    assert [protocol.value for protocol in seen] == [5, 7, 9]


@pytest_twisted.ensureDeferred
async def test_client_keeps_retrying_while_the_server_is_down(restartable: Restartable) -> None:
    """With nothing listening the service keeps retrying, and connects once a server is back."""
    await restartable.start(counter=1)
    service = counter_client(restartable.url("/counter"))
    service.startService()
    try:
        first = await service.whenConnected()
        await restartable.stop()
        await first.is_closed
        await eventually(lambda: service.failures >= 3)  # refused, 25 to 200 ms apart
        assert service.protocol is None
        await restartable.start(counter=3)
        second = await service.whenConnected()
        assert second is not first and service.failures == 0
        await eventually(lambda: second.value == 3)
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_refused_handshake_is_retried_not_fatal(server: Server) -> None:
    """A 404 on the upgrade fails each attempt; ``whenConnected`` reports it after N failures."""
    service = ReconnectingClient(
        server.url("/nowhere"), CounterClientProtocol, retry=fast_retry(), reactor=the_reactor()
    )
    service.startService()
    try:
        with pytest.raises(Exception, match="HTTP 404"):
            await service.whenConnected(failAfterFailures=2)
    finally:
        await service.stopService()


@pytest.mark.parametrize("compression", [True, False])
@pytest_twisted.ensureDeferred
async def test_reconnecting_client_against_websockets_server(compression: bool) -> None:
    """The service keeps state from a third-party server, with and without permessage-deflate."""
    connections = 0

    async def handler(websocket: Any) -> None:
        nonlocal connections
        connections += 1
        await websocket.send(json.dumps({"type": "state", "value": 100 + connections}))
        if connections == 1:
            await websocket.close()
        else:
            await websocket.wait_closed()

    server = await aio(
        websockets.serve(handler, "127.0.0.1", 0, compression="deflate" if compression else None)
    )
    port = next(iter(server.sockets)).getsockname()[1]
    service = ReconnectingClient(
        f"ws://127.0.0.1:{port}/",
        CounterClientProtocol,
        retry=fast_retry(),
        compression=CompressionConfig(enabled=compression),
        reactor=the_reactor(),
    )
    service.startService()
    try:
        await eventually(lambda: connections == 2)
        protocol = await service.whenConnected()
        await eventually(lambda: protocol.value == 102)
        assert (protocol._perMessageCompress is not None) == compression
    finally:
        await service.stopService()
        server.close()
        await aio(server.wait_closed())


@pytest_twisted.ensureDeferred
async def test_stopping_during_the_handshake_drops_the_connection() -> None:
    """A service stopped while the server has not answered the upgrade leaves no connection."""
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.protocol import Factory, Protocol

    lost: defer.Deferred[None] = defer.Deferred()
    upgrade_asked: defer.Deferred[None] = defer.Deferred()

    class Silent(Protocol):
        def dataReceived(self, data: bytes) -> None:
            if not upgrade_asked.called:
                upgrade_asked.callback(None)

        def connectionLost(self, reason: object = None) -> None:
            lost.callback(None)

    port = await TCP4ServerEndpoint(the_reactor(), 0, interface="127.0.0.1").listen(
        Factory.forProtocol(Silent)
    )
    service = counter_client(f"ws://127.0.0.1:{port.getHost().port}/counter")
    try:
        service.startService()
        await upgrade_asked
        await service.stopService()
        lost.addTimeout(5, the_reactor())
        await lost
        assert service.protocol is None
    finally:
        await port.stopListening()
