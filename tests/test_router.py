"""The head reader: upgrades to an app go straight to it, everything else to the web site."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest_twisted

from tests.conftest import LogCapture, Server, aio, sleep
from tests.rawws import client_frame, server_frames, upgrade_request
from wsapp.config import Config, LimitsConfig
from wsapp.router import MAX_HEAD


async def exchange(port: int, *writes: bytes, pause: float = 0.0) -> bytes:
    """Send ``writes`` (``pause`` seconds apart), then read until closed or 2 s pass."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    received = b""
    try:
        for data in writes:
            writer.write(data)
            await writer.drain()
            await asyncio.sleep(pause)
        try:
            async with asyncio.timeout(2):
                while chunk := await reader.read(65536):
                    received += chunk
        except TimeoutError:
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()
    return received


def status(response: bytes) -> int:
    """The status code of an HTTP response."""
    return int(response.split(b" ", 2)[1])


@pytest_twisted.ensureDeferred
async def test_upgrade_reaches_the_app_byte_for_byte(server: Server) -> None:
    """The app's protocol parses the very bytes the client sent (no rebuilt request)."""
    request = upgrade_request("/echo?x=1", {"x-Odd-CASE": "Value"})
    reader, writer = await aio(asyncio.open_connection("127.0.0.1", server.port))
    writer.write(request)
    head = await aio(asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
    assert status(head) == 101
    (connection,) = server.factory("/echo").registry
    assert connection.http_request_data == request
    assert connection.transport.protocol is connection
    writer.close()


@pytest_twisted.ensureDeferred
async def test_bytes_after_the_head_reach_the_app(server: Server) -> None:
    """A frame sent in the same write as the handshake is echoed after the 101."""
    response = await aio(exchange(server.port, upgrade_request("/echo") + client_frame(b"hi")))
    head, _, rest = response.partition(b"\r\n\r\n")
    assert status(head) == 101
    frames, _ = server_frames(rest)
    assert frames[0] == (1, b"hi")


@pytest_twisted.ensureDeferred
async def test_head_split_into_single_bytes_still_upgrades(server: Server) -> None:
    """A handshake arriving one byte per read is buffered until its head is complete."""
    request = upgrade_request("/echo")
    pieces = [request[index : index + 1] for index in range(len(request))]
    response = await aio(exchange(server.port, *pieces, pause=0.001))
    assert status(response) == 101


@pytest_twisted.ensureDeferred
async def test_pipelined_http_requests_reach_the_site(server: Server) -> None:
    """Two requests in one write get two answers from the web site."""
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    response = await aio(exchange(server.port, request * 2))
    assert response.count(b"HTTP/1.1 200 OK") == 2


@pytest_twisted.ensureDeferred
async def test_request_without_upgrade_to_an_app_path_is_not_upgraded(server: Server) -> None:
    """A plain GET to an app's path gets autobahn's status page from the site, as before."""
    response = await aio(exchange(server.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"))
    assert status(response) == 200
    assert b"Server: AutobahnPython" in response and b"Sec-WebSocket-Accept" not in response


@pytest_twisted.ensureDeferred
async def test_bad_upgrade_is_refused_by_the_app(server: Server) -> None:
    """An upgrade without Sec-WebSocket-Key is answered 400 and opens nothing."""
    request = upgrade_request("/echo").replace(b"Sec-WebSocket-Key", b"X-Key")
    response = await aio(exchange(server.port, request))
    assert status(response) == 400
    assert len(server.factory("/echo").registry) == 0


@pytest_twisted.ensureDeferred
async def test_upgrade_to_an_unknown_path_gets_404(server: Server) -> None:
    """An upgrade to a path where no app is mounted is answered 404 by the web site."""
    response = await aio(exchange(server.port, upgrade_request("/nope")))
    assert status(response) == 404


@pytest_twisted.ensureDeferred
async def test_oversized_head_is_refused(server: Server) -> None:
    """A request head past MAX_HEAD bytes goes to the site, which closes without upgrading."""
    request = upgrade_request("/echo", {"X-Padding": "p" * MAX_HEAD})
    response = await aio(exchange(server.port, request))
    assert response == b"" or status(response) >= 400
    assert len(server.factory("/echo").registry) == 0
    # The same request with a head just under the limit is upgraded.
    request = upgrade_request("/echo", {"X-Padding": "p" * (MAX_HEAD - 300)})
    assert len(request) < MAX_HEAD
    assert status(await aio(exchange(server.port, request))) == 101


@pytest_twisted.ensureDeferred
async def test_oversized_request_line_is_refused(server: Server) -> None:
    """A request line longer than MAX_HEAD without a line end is not waited for."""
    response = await aio(exchange(server.port, b"GET /" + b"a" * (MAX_HEAD + 10)))
    assert response == b"" or status(response) >= 400


@pytest_twisted.ensureDeferred
async def test_silent_or_unfinished_heads_are_dropped(
    start_server: Any, log_events: LogCapture
) -> None:
    """A socket that sends nothing, or half a head, is closed at open_handshake_timeout."""
    server = start_server(Config(limits=LimitsConfig(open_handshake_timeout=0.3)))
    half = upgrade_request("/echo")[:40]
    for writes in [(), (half,)]:
        started = time.monotonic()
        assert await aio(exchange(server.port, *writes)) == b""
        assert time.monotonic() - started < 1.5
    await sleep(0.05)
    dropped = [m for m in log_events.messages() if "no complete request in time" in m]
    assert len(dropped) == 2
    assert len(server.factory("/echo").registry) == 0
