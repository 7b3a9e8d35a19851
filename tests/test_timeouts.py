"""Dead peers and slow handshakes are dropped within the configured timeouts."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest_twisted

from tests.conftest import RecordingClient, aio, connect, sleep
from tests.rawws import open_raw, upgrade_request
from wsapp.config import Config, LimitsConfig


async def wait_until_closed(reader: asyncio.StreamReader, timeout: float) -> float:
    """Read and discard until the server closes; return the seconds that took."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass  # dropped with a reset
    return time.monotonic() - started


@pytest_twisted.ensureDeferred
async def test_half_open_peer_is_dropped_by_auto_ping(start_server: Any) -> None:
    """A peer that never answers pings leaves; a client that answers them stays."""
    limits = LimitsConfig(auto_ping_interval=1, auto_ping_timeout=1)
    server = start_server(Config(limits=limits))
    healthy = await connect(server.url("/counter"))
    status, reader, writer = await aio(open_raw(server.port))
    assert status == 101
    registry = server.factory("/counter").registry
    assert len(registry) == 2
    # The raw peer reads (so its socket stays open) but never sends a pong.
    seconds = await aio(wait_until_closed(reader, timeout=5))
    assert seconds < 5
    await sleep(0.05)
    assert len(registry) == 1 and not healthy.factory.closed.called
    writer.close()


@pytest_twisted.ensureDeferred
async def test_unanswered_close_is_dropped_after_close_timeout(start_server: Any) -> None:
    """A peer that never answers the server's close frame is dropped after the close timeout."""
    server = start_server(Config(limits=LimitsConfig(close_handshake_timeout=0.3)))
    status, reader, writer = await aio(open_raw(server.port))
    assert status == 101
    (connection,) = server.factory("/counter").registry
    connection.close_with(1001, "test")
    assert await aio(wait_until_closed(reader, timeout=5)) < 5
    await sleep(0.05)
    assert len(server.factory("/counter").registry) == 0
    writer.close()


@pytest_twisted.ensureDeferred
async def test_slowloris_handshake_is_dropped(start_server: Any) -> None:
    """A client trickling its handshake is dropped at open_handshake_timeout; others connect."""
    server = start_server(Config(limits=LimitsConfig(open_handshake_timeout=0.5)))

    async def trickle() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        started = time.monotonic()
        request = upgrade_request("/counter")
        try:
            for index in range(100):  # at most 10 s
                writer.write(request[index : index + 1])
                await asyncio.sleep(0.1)
                if reader.at_eof() or writer.is_closing():
                    break
                try:
                    if await asyncio.wait_for(reader.read(1), 0.001) == b"":
                        break
                except TimeoutError:
                    pass
        except ConnectionError:
            pass
        finally:
            writer.close()
        return time.monotonic() - started

    trickled = await aio(trickle())
    assert trickled < 3
    client = await connect(server.url("/counter"))
    assert client.state == client.STATE_OPEN


@pytest_twisted.ensureDeferred
async def test_silent_tcp_connection_is_dropped(start_server: Any) -> None:
    """A client that opens TCP and sends nothing is dropped at open_handshake_timeout."""
    server = start_server(Config(limits=LimitsConfig(open_handshake_timeout=0.3)))

    async def silent() -> float:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            return await wait_until_closed(reader, timeout=5)
        finally:
            writer.close()

    assert await aio(silent()) < 5


@pytest_twisted.ensureDeferred
async def test_auto_ping_waits_for_a_quiet_interval(start_server: Any) -> None:
    """A client busy sending is not pinged; once it has been quiet a whole interval, it is."""

    class PingRecorder(RecordingClient):
        pings: list[float]

        def onPing(self, payload: bytes) -> None:
            self.pings.append(time.monotonic())
            super().onPing(payload)

    server = start_server(Config(limits=LimitsConfig(auto_ping_interval=1, rate=0)))
    client = await connect(server.url("/counter"), PingRecorder)
    client.pings = []
    busy_until = time.monotonic() + 2.5
    while time.monotonic() < busy_until:
        client.send_action("get")
        await sleep(0.1)
    assert client.pings == []
    await sleep(2.5)
    assert client.pings and client.pings[0] >= busy_until + 0.5
