"""The head reader: upgrades go straight to their app or get 404, the rest go to the web site."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import pytest_twisted

from tests.conftest import LogCapture, Server, aio, sleep
from tests.rawws import client_frame, server_frames, upgrade_request
from wsapp.config import Config, LimitsConfig
from wsapp.exceptions import ConfigError
from wsapp.router import MAX_HEAD
from wsapp.service import ServerService


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


async def head_of(port: int, request: bytes) -> bytes:
    """Send ``request`` and return the response head (status line and headers)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()


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
    """A plain GET to an app's path (or below it) gets 426 naming websocket, nothing opens."""
    for path in ["/echo", "/echo/", "/%65cho"]:
        request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
        response = await aio(exchange(server.port, request))
        assert status(response) == 426, path
        assert b"\r\nUpgrade: websocket\r\n" in response
        assert b"Sec-WebSocket-Accept" not in response
    assert len(server.factory("/echo").registry) == 0


@pytest_twisted.ensureDeferred
async def test_bad_upgrade_is_refused_by_the_app(server: Server) -> None:
    """An upgrade without Sec-WebSocket-Key is answered 400 and opens nothing."""
    request = upgrade_request("/echo").replace(b"Sec-WebSocket-Key", b"X-Key")
    response = await aio(exchange(server.port, request))
    assert status(response) == 400
    assert len(server.factory("/echo").registry) == 0


@pytest_twisted.ensureDeferred
async def test_upgrade_to_an_unknown_path_gets_404(server: Server) -> None:
    """An upgrade to a path where no app is mounted is answered 404 by the router itself."""
    for path in ["/nope", "/health", "/"]:
        response = await aio(exchange(server.port, upgrade_request(path)))
        assert status(response) == 404, path
        assert b"no WebSocket app at this path" in response


@pytest_twisted.ensureDeferred
async def test_upgrade_only_to_the_exact_app_path(server: Server) -> None:
    """Paths the web site would resolve to the app (/echo/, /%65cho) are 404 to an upgrade."""
    for path in ["/echo/", "/%65cho", "/echo/x", "//echo", "/ECHO"]:
        response = await aio(exchange(server.port, upgrade_request(path) + client_frame(b"hi")))
        assert status(response) == 404, path
        assert b"no WebSocket app at this path" in response
    assert len(server.factory("/echo").registry) == 0
    assert status(await aio(exchange(server.port, upgrade_request("/echo?x=/echo/")))) == 101


@pytest_twisted.ensureDeferred
async def test_upgrade_over_http_1_0_is_refused(server: Server) -> None:
    """RFC 6455 needs HTTP/1.1: an HTTP/1.0 upgrade to an app gets 505 and opens nothing."""
    request = upgrade_request("/echo").replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n", 1)
    response = await aio(exchange(server.port, request))
    assert status(response) == 505
    assert b"Sec-WebSocket-Accept" not in response
    assert len(server.factory("/echo").registry) == 0


@pytest_twisted.ensureDeferred
async def test_upgrade_with_a_body_is_refused(server: Server) -> None:
    """An upgrade carrying Content-Length or Transfer-Encoding gets 400 and opens nothing."""
    for header in [{"Content-Length": "5"}, {"Transfer-Encoding": "chunked"}]:
        response = await aio(exchange(server.port, upgrade_request("/echo", header) + b"hello"))
        assert status(response) == 400, header
        assert b"Sec-WebSocket-Accept" not in response
    assert len(server.factory("/echo").registry) == 0


@pytest_twisted.ensureDeferred
async def test_server_header_names_no_library_versions(start_server: Any) -> None:
    """Handshakes and HTTP answers say Server: wsapp (configurable, or none), no versions."""
    for name, expected in [("wsapp", b"\r\nServer: wsapp\r\n"), ("edge", b"\r\nServer: edge\r\n")]:
        server = start_server(Config() if name == "wsapp" else Config(server_header=name))
        requests = [
            upgrade_request("/echo"),
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            upgrade_request("/nothing"),
        ]
        for request in requests:
            head = await aio(head_of(server.port, request))
            assert expected in head, (name, request[:20])
            assert head.count(b"\r\nServer:") == 1 and status(head) in (101, 200, 404)
            assert b"Autobahn" not in head and b"Twisted" not in head
    server = start_server(Config(server_header=""))
    for request in [upgrade_request("/echo"), b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"]:
        head = await aio(head_of(server.port, request))
        assert status(head) in (101, 200) and b"\r\nserver:" not in head.lower()


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


def test_server_header_with_a_line_break_is_refused() -> None:
    """A server_header that would split the response head is a ConfigError naming the key."""
    with pytest.raises(ConfigError) as error:
        ServerService(Config(server_header="wsapp\r\nX-Evil: 1"), source="site.yaml")
    assert str(error.value).startswith("site.yaml: server_header: ")
