"""A client that stops reading delays no one and holds a bounded amount of server memory."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest_twisted
from twisted.internet.abstract import FileDescriptor

from tests.conftest import RecordingClient, Server, aio, connect, sleep
from tests.rawws import server_frames, upgrade_request
from wsapp.config import CompressionConfig, Config, LimitsConfig
from wsapp.guard import socket_transport

READERS = 50
BROADCASTS = 2000
PAD = "x" * 4000
HIGH_WATER = 64 * 1024
#: The stated bound on the test process's peak RSS growth while 2,000 broadcasts of 4 KB
#: (8 MB for the client that does not read) go out.
RSS_GROWTH_BOUND = 64 << 20


class StateReader(RecordingClient):
    """Keeps the value of every padded state event it reads (the test's broadcasts)."""

    def onOpen(self) -> None:
        self.values: list[int] = []
        super().onOpen()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        event = json.loads(payload)
        if "pad" in event:
            self.values.append(event["value"])


async def until(condition: Callable[[], bool], timeout: float) -> None:
    """Wait until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await sleep(0.002)


async def open_non_reader(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    """Complete a handshake on a socket with a tiny receive buffer, then stop reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    writer.write(upgrade_request("/counter"))
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, sock.getsockname()[1]


async def read_states(reader: asyncio.StreamReader, last: int, timeout: float) -> list[int]:
    """Read frames until the state ``last`` arrives; return every state value seen."""
    values: list[int] = []
    rest = b""
    async with asyncio.timeout(timeout):
        while last not in values:
            frames, rest = server_frames(rest + await reader.read(1 << 16))
            for _, payload in frames:
                event = json.loads(payload)
                if "pad" in event:
                    values.append(event["value"])
    return values


def pending_bytes(connection: Any) -> int:
    transport = socket_transport(connection.transport)
    return len(transport.dataBuffer) + transport._tempDataLen  # type: ignore[no-any-return]


async def start_readers(server: Server) -> list[StateReader]:
    off = CompressionConfig(enabled=False)
    return [
        await connect(server.url("/counter"), StateReader, compression=off) for _ in range(READERS)
    ]


def server_side(server: Server, port: int) -> Any:
    (connection,) = [
        c for c in server.factory("/counter").registry if c.transport.getPeer().port == port
    ]
    return connection


@pytest_twisted.ensureDeferred
async def test_non_reader_gets_latest_state_and_bounded_buffer(start_server: Any) -> None:
    """50 readers get all 2,000 states; the non-reader's queue stays bounded, then gets the last."""
    limits = LimitsConfig(high_water_mark=HIGH_WATER, rate=0)
    server = start_server(Config(limits=limits))
    reader, writer, port = await aio(open_non_reader(server.port))
    readers = await start_readers(server)
    slow = server_side(server, port)
    factory = server.factory("/counter")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    most_pending = 0
    paused = 0
    for value in range(BROADCASTS):
        factory.broadcast({"type": "state", "value": value, "pad": PAD})
        most_pending = max(most_pending, pending_bytes(slow))
        paused += slow.gate.paused
        if value % 10 == 9:
            await until(lambda v=value: all(len(r.values) > v for r in readers), timeout=30)
    for client in readers:
        assert client.values == list(range(BROADCASTS))
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10) - rss_before
    assert paused > 0 and slow.gate.held
    assert most_pending <= HIGH_WATER + len(PAD) + 100
    assert rss_growth < RSS_GROWTH_BOUND
    values = await aio(read_states(reader, BROADCASTS - 1, timeout=30))
    assert values == sorted(values) and len(values) < BROADCASTS
    assert slow in factory.registry
    writer.close()


@pytest_twisted.ensureDeferred
async def test_close_policy_closes_non_reader(start_server: Any) -> None:
    """With slow_consumer: close the non-reader is closed (1008) and dropped; readers go on."""
    limits = LimitsConfig(
        high_water_mark=HIGH_WATER, rate=0, slow_consumer="close", close_handshake_timeout=0.5
    )
    server = start_server(Config(limits=limits))
    _, writer, port = await aio(open_non_reader(server.port))
    readers = await start_readers(server)
    slow = server_side(server, port)
    factory = server.factory("/counter")
    # The kernel's socket buffers take a few MB before wsapp's own queue grows.
    for value in range(BROADCASTS):
        factory.broadcast({"type": "state", "value": value, "pad": PAD})
        if slow.gate.closing:
            break
        if value % 10 == 9:
            await until(lambda v=value: all(len(r.values) > v for r in readers), timeout=30)
    await until(lambda: slow not in factory.registry, timeout=10)
    assert slow.localCloseCode == 1008
    assert len(factory.registry) == READERS
    await until(lambda: all(len(r.values) > value for r in readers), timeout=30)
    for client in readers:
        assert client.values == list(range(value + 1))
    writer.close()


@pytest_twisted.ensureDeferred
async def test_a_high_mark_leaves_reads_alone_and_still_pauses_past_it(start_server: Any) -> None:
    """A 4 MiB mark keeps Twisted's read size; the gate pauses once 4 MiB are queued."""
    mark = 4 << 20
    server = start_server(Config(limits=LimitsConfig(high_water_mark=mark, rate=0)))
    _, writer, port = await aio(open_non_reader(server.port))
    slow = server_side(server, port)
    assert socket_transport(slow.transport).bufferSize == FileDescriptor.bufferSize
    factory = server.factory("/counter")
    sent = 0
    while not slow.gate.paused and sent < 4 * mark // len(PAD):
        factory.broadcast({"type": "state", "value": sent, "pad": PAD})
        sent += 1
    assert slow.gate.paused
    assert mark < pending_bytes(slow) <= mark + len(PAD) + 100
    writer.close()
