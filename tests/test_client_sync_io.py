"""
The blocking client's own I/O: TLS, headers, timeouts, closes, pings, fragments, threads.

Peers are real servers on 127.0.0.1: wsapp's, and the websockets library's where a test
needs a server that misbehaves on purpose. Blocking bodies run in worker threads.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import websockets
from twisted.internet.threads import deferToThread

import wsapp
from tests.conftest import Server, aio
from wsapp.exceptions import ClientTimeoutError, ConnectError, ConnectionClosedError
from wsapp.tls import CAFile

Handler = Callable[[Any], Awaitable[None]]


@asynccontextmanager
async def peer(handler: Handler, **options: Any) -> AsyncIterator[str]:
    """A websockets server running ``handler``; yields its ws:// URL."""
    server = await aio(websockets.serve(handler, "127.0.0.1", 0, **options))
    try:
        yield f"ws://127.0.0.1:{next(iter(server.sockets)).getsockname()[1]}/"
    finally:
        server.close()
        await aio(server.wait_closed())


@pytest_twisted.ensureDeferred
async def test_wss_trusts_what_tls_names(tls_server: tuple[int, Path]) -> None:
    """wss:// works with a CA file path, a CAFile or an SSLContext; untrusted, it refuses."""
    port, ca_file = tls_server
    url = f"wss://localhost:{port}/counter"
    context = ssl.create_default_context(cafile=str(ca_file))

    def body() -> list[Any]:
        with pytest.raises(ConnectError, match="TLS handshake failed: certificate verify failed"):
            wsapp.connect(url, timeout=5)
        with pytest.raises(TypeError, match="tls="):
            wsapp.connect(url, tls=42, timeout=5)
        values = []
        for tls in (str(ca_file), CAFile(str(ca_file)), context):
            with wsapp.connect(url, tls=tls, timeout=5) as ws:
                values.append(ws.request({"action": "plus"}, timeout=5)["value"])
        return values

    assert await deferToThread(body) == [1, 2, 3]


@pytest_twisted.ensureDeferred
async def test_headers_and_origin_reach_the_server() -> None:
    """``headers`` and ``origin`` are sent with the upgrade request."""
    seen: list[tuple[str | None, str | None]] = []

    async def handler(websocket: Any) -> None:
        headers = websocket.request.headers
        seen.append((headers.get("Authorization"), headers.get("Origin")))
        await websocket.send("hello")

    async with peer(handler) as url:

        def body() -> Any:
            with wsapp.connect(
                url, headers={"Authorization": "Bearer abc"}, origin="https://example.com"
            ) as ws:
                return ws.recv(timeout=5)

        assert await deferToThread(body) == "hello"
    assert seen == [("Bearer abc", "https://example.com")]


@pytest_twisted.ensureDeferred
async def test_late_reply_after_a_timeout_goes_to_the_inbox() -> None:
    """A request that timed out raises; its reply, arriving later, is an ordinary message."""

    async def handler(websocket: Any) -> None:
        first = await websocket.recv()  # not answered until the second arrives
        second = await websocket.recv()
        await websocket.send(first)
        await websocket.send(second)
        await websocket.wait_closed()

    async with peer(handler) as url:

        def body() -> tuple[Any, Any]:
            with wsapp.connect(url, compression=False) as ws:
                with pytest.raises(ClientTimeoutError, match="'slow'"):
                    ws.request({"id": "slow"}, timeout=0.05)
                return ws.request({"id": "fast"}, timeout=5), ws.recv(timeout=5)

        assert await deferToThread(body) == ({"id": "fast"}, {"id": "slow"})


@pytest_twisted.ensureDeferred
async def test_server_close_code_reaches_a_waiting_recv() -> None:
    """A thread waiting in recv gets ConnectionClosedError with the server's code and reason."""

    async def handler(websocket: Any) -> None:
        await websocket.send("last words")
        await websocket.recv()
        await websocket.close(4001, "go away")

    async with peer(handler) as url:

        def body() -> tuple[Any, int | None, str | None, bool]:
            ws = wsapp.connect(url)
            first = ws.recv(timeout=5)
            ws.send("bye")
            with pytest.raises(ConnectionClosedError, match="4001 go away") as closed:
                ws.recv(timeout=5)
            ws.close()
            return first, closed.value.code, closed.value.reason, ws.closed

        assert await deferToThread(body) == ("last words", 4001, "go away", True)


@pytest_twisted.ensureDeferred
async def test_pings_fragments_and_size_limit() -> None:
    """Pings are answered while reading, fragments joined, a too large message closes (1009)."""

    async def handler(websocket: Any) -> None:
        await (await websocket.ping())  # answered by the client's reading thread
        await websocket.send(["frag", "ment", "ed"])
        await websocket.send(b"\x01" * 5000)
        await websocket.wait_closed()

    async with peer(handler, compression=None) as url:

        def body() -> tuple[Any, int | None]:
            with wsapp.connect(url, max_message_size=4096) as ws:
                message = ws.recv(timeout=5)
                with pytest.raises(ConnectionClosedError) as closed:
                    ws.recv(timeout=5)
                return message, closed.value.code

        assert await deferToThread(body) == ("fragmented", 1009)


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_fails_the_connection() -> None:
    """A text message that is not UTF-8 closes the connection with 1007, as RFC 6455 asks."""
    codes: list[int | None] = []

    async def handler(websocket: Any) -> None:
        await websocket.send(b"\xff\xfe", text=True)
        await websocket.wait_closed()
        codes.append(websocket.close_code)

    async with peer(handler) as url:

        def body() -> int | None:
            with wsapp.connect(url) as ws, pytest.raises(ConnectionClosedError) as closed:
                ws.recv(timeout=5)
            return closed.value.code

        assert await deferToThread(body) == 1007
    assert codes == [1007]


@pytest_twisted.ensureDeferred
async def test_recv_and_requests_in_different_threads(server: Server) -> None:
    """One thread reads broadcasts with recv while others make requests on the same socket."""

    def body() -> tuple[list[int], list[int]]:
        with (
            wsapp.connect(server.url("/counter")) as ws,
            wsapp.connect(server.url("/counter")) as other,
        ):
            assert ws.recv(timeout=5)["type"] == "state"
            pushed: list[int] = []

            def reader() -> None:
                while len(pushed) < 20:
                    event = ws.recv(timeout=5)
                    assert "id" not in event
                    if event["type"] == "state":
                        pushed.append(event["value"])

            thread = threading.Thread(target=reader)
            thread.start()
            answers = []
            for _ in range(20):
                other.request({"action": "plus"}, timeout=5)
                answers.append(ws.request({"action": "get"}, timeout=5)["value"])
            thread.join(10)
            assert not thread.is_alive()
            return pushed, answers

    pushed, answers = await deferToThread(body)
    assert pushed == list(range(1, 21))
    assert answers == sorted(answers) and answers[-1] == 20


@pytest.mark.parametrize("compression", [True, False])
@pytest_twisted.ensureDeferred
async def test_many_threads_with_and_without_deflate(server: Server, compression: bool) -> None:
    """Six threads share one connection; large and small echoes each come back to their sender."""

    def body() -> list[int]:
        done = [0] * 6
        with wsapp.connect(server.url("/echo"), compression=compression) as ws:
            assert ws.deflate == compression

            def worker(index: int) -> None:
                for n in range(30):
                    text = "x" * (n * 500 if n % 3 == 0 else n)
                    reply = ws.request({"w": index, "n": n, "text": text}, timeout=5)
                    assert (reply["w"], reply["n"], reply["text"]) == (index, n, text)
                    done[index] += 1

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        return done

    assert await deferToThread(body) == [30] * 6
