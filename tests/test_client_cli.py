"""The command-line client, run as a subprocess against servers in the test's reactor."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.conftest import BIN, Server, sleep


async def client(*args: str, stdin: str = "", script: bool = False) -> Any:
    """Run ``python -m wsapp.client ARGS`` (or the ``wsapp-client`` script) in a worker thread."""
    command = [str(BIN / "wsapp-client")] if script else [sys.executable, "-m", "wsapp.client"]
    return await deferToThread(
        subprocess.run,
        [*command, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest_twisted.ensureDeferred
async def test_send_prints_the_reply_and_exits(server: Server) -> None:
    """``--send JSON`` prints the one reply carrying the request's id and exits 0."""
    server.factory("/counter").hub.backend.integers["/counter"] = 10
    done = await client(server.url("/counter"), "--send", '{"action": "plus"}')
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"type": "state", "value": 11, "id": 1}
    ]


@pytest_twisted.ensureDeferred
async def test_console_script_sends_without_compression(server: Server) -> None:
    """The installed ``wsapp-client`` script works too, here with deflate not offered."""
    done = await client(
        server.url("/echo"), "--no-compression", "--send", '{"id": "x", "a": [1]}', script=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"id": "x", "a": [1]}


@pytest_twisted.ensureDeferred
async def test_lines_typed_are_sent_and_replies_printed(server: Server) -> None:
    """Each stdin line goes out as a message; every incoming one is printed until input ends."""
    typed = '{"action": "plus"}\n\n{"action": "add", "amount": 5}\nnot json\n'
    done = await client(server.url("/counter"), stdin=typed)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["value"] for e in events if e["type"] == "state"] == [0, 1, 6]
    assert [e["error"] for e in events if e["type"] == "error"] == ["invalid-json"]
    assert server.factory("/counter").hub.backend.integers["/counter"] == 6


@pytest.mark.parametrize(
    ("path", "expected"),
    [("/missing", "server refused the WebSocket upgrade: HTTP 404 Not Found")],
)
@pytest_twisted.ensureDeferred
async def test_refused_upgrade_is_one_line(server: Server, path: str, expected: str) -> None:
    """An HTTP refusal exits 1 with one line naming the status."""
    done = await client(server.url(path))
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"wsapp-client: {expected}\n"


@pytest_twisted.ensureDeferred
async def test_nothing_listening_is_one_line() -> None:
    """A refused TCP connection exits 1 with one line."""
    done = await client("ws://127.0.0.1:1/counter", "--send", "{}")
    assert done.returncode == 1
    assert done.stderr.startswith("wsapp-client: cannot connect to ws://127.0.0.1:1/counter:")
    assert "refused" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args", [["http://127.0.0.1/"], ["ws://127.0.0.1:1/", "--send", "{oops"], []]
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    """A URL of another scheme, --send that is not JSON, or no URL: usage error, status 2."""
    done = subprocess.run(
        [sys.executable, "-m", "wsapp.client", *args], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2
    assert "usage: wsapp-client" in done.stderr


@pytest_twisted.ensureDeferred
async def test_untrusted_certificate_is_a_tls_failure(tls_server: tuple[int, Path]) -> None:
    """wss:// to a certificate no trusted CA signed exits 1 with a one-line TLS reason."""
    port, _ = tls_server
    done = await client(f"wss://localhost:{port}/counter", "--send", '{"action": "get"}')
    assert done.returncode == 1
    assert done.stderr.startswith("wsapp-client: TLS handshake failed: certificate verify failed")
    assert done.stderr.count("\n") == 1


@pytest_twisted.ensureDeferred
async def test_cafile_makes_the_certificate_trusted(tls_server: tuple[int, Path]) -> None:
    """With ``--cafile`` naming the issuing CA, the same wss:// request succeeds."""
    port, ca_file = tls_server
    done = await client(
        f"wss://localhost:{port}/counter", "--cafile", str(ca_file), "--send", '{"action": "get"}'
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"type": "state", "value": 0, "id": 1}


@pytest_twisted.ensureDeferred
async def test_server_closing_ends_the_session_with_its_reason(server: Server) -> None:
    """While input stays open, a close by the server (code 4000) exits 1 naming the close."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wsapp.client", server.url("/counter")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        registry = server.factory("/counter").registry
        deadline = time.monotonic() + 20
        while not registry:
            assert time.monotonic() < deadline, "the client did not connect"
            await sleep(0.05)
        for connection in list(registry):
            connection.sendClose(4000, "bye")
        await deferToThread(process.wait, 20)  # stdin stays open: no end of input
        assert process.stdout is not None and process.stderr is not None
        stdout, stderr = process.stdout.read(), process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()
    assert process.returncode == 1
    assert json.loads(stdout.splitlines()[0]) == {"type": "state", "value": 0}
    assert stderr == "wsapp-client: connection closed (4000 bye)\n"


async def run_until_server_closes(url: str, close: Any) -> tuple[Any, ...]:
    """
    Run ``wsapp-client URL`` with standard input a pipe that ``sleep 30`` holds open; once it
    printed its first line (it is connected), call ``close()``; return (exit status, stdout,
    stderr, seconds from close to exit).
    """
    sleeper = subprocess.Popen(["sleep", "30"], stdout=subprocess.PIPE)
    process = subprocess.Popen(
        [str(BIN / "wsapp-client"), url],
        stdin=sleeper.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert sleeper.stdout is not None and process.stdout is not None
    sleeper.stdout.close()
    try:
        first = await deferToThread(process.stdout.readline)  # the connection is open
        close()
        closed = time.monotonic()
        stdout, stderr = await deferToThread(process.communicate, timeout=20)
        return process.returncode, first + stdout, stderr, time.monotonic() - closed
    finally:
        for running in (process, sleeper):
            if running.poll() is None:
                running.kill()
                running.wait()


@pytest.mark.parametrize(("code", "status"), [(1000, 0), (1011, 1)])
@pytest_twisted.ensureDeferred
async def test_exits_when_the_server_closes_while_a_pipe_stays_open(
    server: Server, code: int, status: int
) -> None:
    """With stdin a pipe that stays open, a server close ends the client at once: 0 or 1."""

    def close() -> None:
        for connection in list(server.factory("/counter").registry):
            connection.close_with(code, "done")

    returncode, stdout, stderr, took = await run_until_server_closes(server.url("/counter"), close)
    assert (returncode, json.loads(stdout.splitlines()[0])) == (
        status,
        {"type": "state", "value": 0},
    )
    assert stderr == ("" if status == 0 else f"wsapp-client: connection closed ({code} done)\n")
    assert took < 5


@pytest_twisted.ensureDeferred
async def test_exits_0_when_twistd_shuts_down(twistd: Any, tmp_path: Path) -> None:
    """SIGTERM to the server (close 1001) ends a client whose stdin pipe stays open, status 0."""
    (tmp_path / "config.yaml").write_text("port: tcp:0:interface=127.0.0.1\n")
    server = twistd()
    returncode, stdout, stderr, took = await run_until_server_closes(
        server.url("/counter"), lambda: server.process.send_signal(signal.SIGTERM)
    )
    assert (returncode, stderr) == (0, "")
    assert json.loads(stdout.splitlines()[0]) == {"type": "state", "value": 0}
    assert took < 5
