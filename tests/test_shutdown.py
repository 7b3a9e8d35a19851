"""Graceful shutdown: stop accepting, close clients with 1001, run hooks, exit in time."""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import websockets

from tests.conftest import aio, close_code, connect, sleep
from tests.rawws import open_raw, status_of
from wsapp.config import Config, LimitsConfig, ShutdownConfig


async def close_code_when_server_stops(url: str, started: asyncio.Event) -> int:
    """Connect with websockets, signal ``started``, and return the close code received."""
    async with websockets.connect(url) as websocket:
        started.set()
        return await close_code(websocket)


@pytest_twisted.ensureDeferred
async def test_stop_closes_clients_with_1001_then_runs_hooks(start_server: Any) -> None:
    """Stopping closes every client with 1001, refuses new ones, then runs the shutdown hooks."""
    server = start_server()
    ours = await connect(server.url("/counter"))
    started = asyncio.Event()
    theirs = asyncio.ensure_future(close_code_when_server_stops(server.url("/chat"), started))
    await aio(started.wait())
    seen: list[tuple[int, int]] = []
    server.service.add_shutdown_hook(
        lambda: seen.append((len(server.factory("/counter").registry), server.port))
    )
    server.factory("/counter").hub.backend.integers["/counter"] = 7
    await server.service.stopService()
    assert server.service.stopping
    _, code, _ = await ours.factory.closed
    assert code == 1001
    assert await aio(theirs) == 1001
    assert seen == [(0, server.port)]
    with pytest.raises(ConnectionRefusedError):
        await aio(asyncio.open_connection("127.0.0.1", server.port))


@pytest_twisted.ensureDeferred
async def test_unresponsive_client_is_dropped_after_grace_period(start_server: Any) -> None:
    """A client that never answers the close is dropped when the grace period ends."""
    config = Config(
        shutdown=ShutdownConfig(grace_period=0.5),
        limits=LimitsConfig(close_handshake_timeout=60),
    )
    server = start_server(config)
    status, _, writer = await aio(open_raw(server.port))
    assert status == 101
    started = time.monotonic()
    await server.service.stopService()
    assert 0.4 < time.monotonic() - started < 5
    assert len(server.factory("/counter").registry) == 0
    writer.close()


@pytest_twisted.ensureDeferred
async def test_sigterm_to_twistd_closes_with_1001_and_exits(twistd: Any, tmp_path: Path) -> None:
    """SIGTERM makes ``twistd -n wsapp`` send 1001 to a websockets client and exit within grace."""
    (tmp_path / "config.yaml").write_text(
        "port: tcp:0:interface=127.0.0.1\nshutdown: {grace_period: 3}\n"
    )
    process = twistd()
    started = asyncio.Event()
    closing = asyncio.ensure_future(close_code_when_server_stops(process.url("/counter"), started))
    await aio(asyncio.wait_for(started.wait(), 10))
    sent = time.monotonic()
    process.process.send_signal(signal.SIGTERM)
    assert await aio(asyncio.wait_for(closing, 10)) == 1001

    async def exit_code() -> int:
        while process.process.poll() is None:
            assert time.monotonic() - sent < 10, "twistd did not exit"
            await asyncio.sleep(0.05)
        return process.process.returncode  # type: ignore[no-any-return]

    # twistd ends by re-raising the signal that stopped it, after a clean shutdown.
    assert await aio(exit_code()) == -signal.SIGTERM
    assert "Server Shut Down." in process.output()
    assert time.monotonic() - sent < 3 + 2
    assert "shutting down: closing 1 connections" in process.output()


@pytest_twisted.ensureDeferred
async def test_drain_period_keeps_listening_with_503_before_closing(start_server: Any) -> None:
    """While draining, /health and new handshakes get 503 and clients stay; then they close."""
    server = start_server(Config(shutdown=ShutdownConfig(drain_period=0.6)))
    ours = await connect(server.url("/counter"))
    stopping = server.service.stopService()
    await sleep(0.1)
    health = f"http://127.0.0.1:{server.port}/health"
    assert await aio(asyncio.to_thread(http_status, health)) == 503
    assert await aio(status_of(server.port)) == 503
    assert not ours.factory.closed.called
    ours.send_action("plus")
    while (await ours.next_of("state"))["value"] != 1:
        pass
    await stopping
    _, code, _ = await ours.factory.closed
    assert code == 1001
    with pytest.raises(ConnectionRefusedError):
        await aio(asyncio.open_connection("127.0.0.1", server.port))


def http_status(url: str) -> int:
    """The status code of a GET to ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
