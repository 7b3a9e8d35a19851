"""
The blocking client, used from worker threads of the test's running reactor.

The test process runs the server's reactor in its main thread, so each blocking test body
runs in a thread (``deferToThread``); plain scripts run in a subprocess.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
import pytest_twisted
import websockets
from twisted.internet.threads import deferToThread

import wsapp
from tests.conftest import Server, aio, the_reactor
from wsapp.exceptions import (
    ClientTimeoutError,
    ConnectError,
    ConnectionClosedError,
    HandshakeRefusedError,
    MessageError,
)

T = TypeVar("T")


async def in_thread(body: Callable[[], T]) -> T:
    """Run a blocking test body in a worker thread while the reactor keeps serving."""
    return await deferToThread(body)  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_counter_state_requests_and_errors(server: Server) -> None:
    """recv gets the pushed state, request gets the reply echoing its id, errors raise."""
    server.factory("/counter").hub.backend.integers["/counter"] = 41

    def body() -> None:
        with wsapp.connect(server.url("/counter")) as ws:
            assert ws.recv(timeout=5) == {"type": "state", "value": 41}
            assert ws.recv(timeout=5) == {"type": "users", "count": 1}
            assert ws.request({"action": "plus"}, timeout=5) == {
                "type": "state",
                "value": 42,
                "id": 1,
            }
            assert ws.request({"action": "get", "id": "mine"}, timeout=5)["id"] == "mine"
            with pytest.raises(MessageError, match="invalid-argument"):
                ws.request({"action": "add", "amount": "x"}, timeout=5)
            with pytest.raises(ClientTimeoutError):
                ws.recv(timeout=0.05)

    await in_thread(body)
    assert server.factory("/counter").hub.backend.integers["/counter"] == 42


@pytest_twisted.ensureDeferred
async def test_threads_share_one_connection(server: Server) -> None:
    """Eight threads send requests on one connection; each gets exactly its own replies."""

    def body() -> list[list[int]]:
        with wsapp.connect(server.url("/echo")) as ws:
            results: list[list[int]] = [[] for _ in range(8)]

            def worker(index: int) -> None:
                for n in range(50):
                    reply = ws.request({"worker": index, "n": n}, timeout=5)
                    assert reply["worker"] == index
                    results[index].append(reply["n"])

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            return results

    assert await in_thread(body) == [list(range(50))] * 8


@pytest_twisted.ensureDeferred
async def test_iteration_and_message_kinds(server: Server) -> None:
    """Binary comes back as bytes, JSON text parsed, other text as str; iteration ends on close."""

    def body() -> list[Any]:
        ws = wsapp.connect(server.url("/echo"))
        ws.send(b"\x00\xff")
        ws.send("not json")
        ws.send([1, 2, 3])
        received = []
        for message in ws:
            received.append(message)
            if len(received) == 3:
                ws.close()
        with pytest.raises(ConnectionClosedError, match="1000"):
            ws.send("late")
        with pytest.raises(ConnectionClosedError):
            ws.recv(timeout=1)
        return received

    assert await in_thread(body) == [b"\x00\xff", "not json", [1, 2, 3]]


@pytest_twisted.ensureDeferred
async def test_on_message_callbacks_get_every_message(server: Server) -> None:
    """Registered callbacks get incoming messages in order, in the connection's own thread."""

    def body() -> tuple[list[Any], set[str]]:
        got: list[Any] = []
        threads: set[str] = set()
        done = threading.Event()
        with wsapp.connect(server.url("/echo")) as ws:

            @ws.on_message
            def collect(message: Any) -> None:
                got.append(message)
                threads.add(threading.current_thread().name)
                if len(got) == 20:
                    done.set()

            for n in range(20):
                ws.send({"n": n})
            assert done.wait(5)
        return got, threads

    got, threads = await in_thread(body)
    assert got == [{"n": n} for n in range(20)]
    assert threads == {"wsapp-on-message"}


@pytest_twisted.ensureDeferred
async def test_waiting_request_sees_the_close(server: Server) -> None:
    """A request waiting for a reply raises ConnectionClosedError when the server goes away."""

    def body() -> None:
        with wsapp.connect(server.url("/counter")) as ws:
            ws.recv(timeout=5)
            for connection in list(server.factory("/counter").registry):
                the_reactor().callFromThread(connection.sendClose, 4000, "bye")
            with pytest.raises(ConnectionClosedError, match="4000 bye"):
                ws.request({"action": "nothing-answers-this"}, timeout=5)
            assert ws.closed

    await in_thread(body)


@pytest_twisted.ensureDeferred
async def test_refusals_raise_connect_errors(server: Server) -> None:
    """An HTTP 404 raises HandshakeRefusedError; a closed port raises ConnectError."""

    def body() -> None:
        with pytest.raises(HandshakeRefusedError) as refused:
            wsapp.connect(server.url("/missing"), timeout=5)
        assert refused.value.status == 404
        with pytest.raises(ConnectError, match="refused"):
            wsapp.connect("ws://127.0.0.1:1/", timeout=5)
        with pytest.raises(ValueError):
            wsapp.connect("http://127.0.0.1/", timeout=5)

    await in_thread(body)


def test_blocking_call_in_the_reactor_thread_is_refused(server: Server) -> None:
    """In a running reactor's own thread (here: the test's), connecting raises, not hangs."""
    with pytest.raises(RuntimeError, match="reactor's thread"):
        wsapp.connect(server.url("/echo"), timeout=1)


@pytest.mark.parametrize("compression", [True, False])
@pytest_twisted.ensureDeferred
async def test_against_websockets_server(compression: bool) -> None:
    """Against the websockets library's server: requests, a large message, deflate negotiated."""
    seen_extensions: list[list[str]] = []

    async def echo(websocket: Any) -> None:
        seen_extensions.append([type(e).__name__ for e in websocket.protocol.extensions])
        async for message in websocket:
            await websocket.send(message)

    server = await aio(
        websockets.serve(echo, "127.0.0.1", 0, compression="deflate" if compression else None)
    )
    port = next(iter(server.sockets)).getsockname()[1]
    big = {"text": "abc" * 100_000}

    def body() -> tuple[Any, Any]:
        with wsapp.connect(f"ws://127.0.0.1:{port}/", compression=compression) as ws:
            assert ws.deflate == compression
            return ws.request({"action": "x"}, timeout=5), ws.request(big, timeout=5)

    try:
        reply, echoed = await in_thread(body)
    finally:
        server.close()
        await aio(server.wait_closed())
    assert reply == {"action": "x", "id": 1}
    assert echoed == {**big, "id": 2}
    assert seen_extensions == [["PerMessageDeflate"] if compression else []]


@pytest.mark.parametrize("compression", [True, False])
@pytest_twisted.ensureDeferred
async def test_against_wsapp_server_with_and_without_deflate(
    server: Server, compression: bool
) -> None:
    """Against wsapp's echo: deflate is negotiated only when offered; large messages round-trip."""
    big = ["x" * 1000] * 200

    def body() -> Any:
        with wsapp.connect(server.url("/echo"), compression=compression) as ws:
            assert ws.deflate == compression
            ws.send(big)
            return ws.recv(timeout=5)

    assert await in_thread(body) == big


SCRIPT = """
import sys, threading, wsapp
url = sys.argv[1]
with wsapp.connect(url) as ws:
    print(ws.request({"action": "get"}, timeout=5)["value"])
    print(threading.active_count(), "twisted.internet.reactor" in sys.modules)
with wsapp.connect(url) as again:
    print(again.request({"action": "plus"}, timeout=5)["value"])
"""


def run_python(args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=30
    )


@pytest_twisted.ensureDeferred
async def test_plain_script_needs_no_thread_or_reactor(server: Server) -> None:
    """A plain script: the client does its I/O in the script's thread, without a reactor."""
    server.factory("/counter").hub.backend.integers["/counter"] = 6
    done = await in_thread(lambda: run_python(["-c", SCRIPT, server.url("/counter")]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == ["6", "1 False", "7", ""]
    assert done.stderr == ""


OWN_REACTOR_THREAD = """
import sys, threading, time, wsapp
from twisted.internet import reactor
threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False}).start()
while not reactor.running:
    time.sleep(0.01)
with wsapp.connect(sys.argv[1]) as ws:
    print(ws.request({"action": "get"}, timeout=5)["value"])
print(sorted(t.name for t in threading.enumerate() if t.name.startswith("wsapp")))
reactor.callFromThread(reactor.stop)
"""


@pytest_twisted.ensureDeferred
async def test_process_running_its_own_reactor_thread(server: Server) -> None:
    """A process that runs a reactor in a thread of its own: other threads may connect."""
    server.factory("/counter").hub.backend.integers["/counter"] = 3
    done = await in_thread(lambda: run_python(["-c", OWN_REACTOR_THREAD, server.url("/counter")]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n") == ["3", "[]", ""]


@pytest_twisted.ensureDeferred
async def test_interactive_session(server: Server) -> None:
    """Typed into an interactive interpreter, connect and request work and the session ends."""
    typed = (
        "import wsapp\n"
        f"ws = wsapp.connect({server.url('/counter')!r})\n"
        "ws.request({'action': 'add', 'amount': 5})['value']\n"
        "ws.close()\n"
    )
    done = await in_thread(lambda: run_python(["-i", "-q"], stdin=typed))
    assert done.returncode == 0, done.stderr
    assert "5" in done.stdout.split()
    assert "Traceback" not in done.stderr
    assert server.factory("/counter").hub.backend.integers["/counter"] == 5
