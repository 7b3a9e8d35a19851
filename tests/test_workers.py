"""``twistd wsapp --workers N``: N real processes on one port, sharing Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import websocket

from tests.conftest import BIN, RedisServer, run_twistd
from tests.test_docs_examples import EXAMPLES
from wsapp.config import from_mapping
from wsapp.exceptions import ConfigError
from wsapp.workers.sockets import listening_sockets
from wsapp.workers.supervisor import check_workers

pytestmark = pytest.mark.slow


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    """Poll ``condition`` every 50 ms until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except OSError:
        return 0, b""


def health(port: int) -> dict[str, Any] | None:
    status, body = get(f"http://127.0.0.1:{port}/health")
    return json.loads(body) if status in (200, 503) else None


def serving(port: int, count: int, without: set[int] = frozenset()) -> list[int] | None:  # type: ignore[assignment]
    """The pids of ``count`` workers all ``ok`` (none of ``without``), else None."""
    report = health(port)
    if report is None or report["status"] != "ok":
        return None
    pids = [worker["pid"] for worker in report["workers"]]
    return pids if len(pids) == count and not set(pids) & without else None


def test_more_workers_than_one_need_a_shared_backend(tmp_path: Path) -> None:
    """--workers 2 with the memory backend (or a state file) stops at start with one line."""
    result = run_twistd(tmp_path, "--workers", "2", "--port", "tcp:0:interface=127.0.0.1")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "twistd wsapp: command line: workers: 2 workers need a shared backend: set backend "
        "to redis://HOST:PORT/DB (the memory backend is one process's)"
    )
    (tmp_path / "c.yaml").write_text("workers: 3\nstate_file: s.json\n")
    result = run_twistd(tmp_path, "-c", "c.yaml")
    assert result.returncode != 0
    assert "twistd wsapp: c.yaml: workers: 3 workers need a shared backend" in result.stderr
    assert "Traceback" not in result.stderr


def test_endpoints_that_workers_cannot_share_are_refused(tmp_path: Path) -> None:
    """A worker's endpoint is tcp:, ssl: (the simple form) or unix:; others get one line."""
    config = from_mapping({"workers": 2, "backend": "redis://127.0.0.1:1/0"}, "c.yaml")
    check_workers(config, "c.yaml")
    with pytest.raises(ConfigError, match=r"c.yaml: port: with more than one worker"):
        listening_sockets("systemd:domain=INET:index=0", 2, "c.yaml", "port")
    with pytest.raises(ConfigError, match=r"an ssl: endpoint takes only interface"):
        listening_sockets("ssl:0:privateKey=k.pem:method=TLSv1", 2, "c.yaml", "port")
    sockets = listening_sockets("tcp:0:interface=127.0.0.1", 2, "c.yaml", "port")
    assert sockets[0] is not sockets[1]
    assert sockets[0].getsockname() == sockets[1].getsockname()
    path = str(tmp_path / "s.sock")
    shared = listening_sockets(f"unix:{path}", 2, "c.yaml", "port")
    assert shared[0] is shared[1]
    with pytest.raises(ConfigError, match=r"port: cannot listen on tcp:"):
        listening_sockets(f"tcp:{sockets[0].getsockname()[1]}:interface=127.0.0.1", 1,
                          "c.yaml", "port", reuseport=False)  # fmt: skip
    for listening in {*sockets, *shared}:
        listening.close()


def test_two_workers_share_the_port_restart_and_stop_gracefully(
    twistd: Any, redis_server: RedisServer
) -> None:
    """
    Two workers both get connections and share the counter through Redis; /health and
    /metrics list both pids; a stopped worker (SIGSTOP) shows as unreachable, health
    degraded; a worker killed with -9 is restarted while the port keeps
    serving; SIGTERM stops every worker gracefully and the supervisor exits 0.
    """
    server = twistd(
        "--workers", "2", "--backend", redis_server.url, "--port", "tcp:0:interface=127.0.0.1"
    )  # fmt: skip
    port = server.port
    pids = wait_for(lambda: serving(port, 2), what="two workers serving")
    clients = [websocket.create_connection(server.url("/counter"), timeout=10) for _ in range(24)]
    for client in clients:
        assert json.loads(client.recv())["type"] in ("state", "users")
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    text = body.decode()
    for pid in pids:
        assert f'wsapp_worker_up{{pid="{pid}"}} 1.0' in text
        found = re.search(rf'wsapp_connections{{app="/counter",pid="{pid}"}} (\d+)', text)
        assert found is not None and int(found.group(1)) > 0, f"worker {pid} got none"
    assert health(port)["connections"] == 24  # type: ignore[index]

    clients[0].send(json.dumps({"action": "plus", "id": 1}))
    for client in clients:  # those on the other worker get it through Redis

        def incremented(client: Any = client) -> bool:
            event = json.loads(client.recv())
            return event["type"] == "state" and event["value"] == 1

        wait_for(incremented, what="the shared counter's new value")
    for client in clients:
        client.close()

    stopped = pids[1]
    os.kill(stopped, signal.SIGSTOP)  # it cannot answer: the other reports it, without hanging

    def unreachable() -> bool:
        status, body = get(f"http://127.0.0.1:{port}/health", timeout=3)
        report = json.loads(body) if status else {}
        return (
            report.get("status") == "degraded"
            and {"pid": stopped, "status": "unreachable"} in report["workers"]
        )

    try:
        wait_for(unreachable, what="the stopped worker listed as unreachable")
    finally:
        os.kill(stopped, signal.SIGCONT)

    killed = pids[0]
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while killed in (serving(port, 2) or [killed]):
        # the other worker answers while the killed one is restarted
        assert time.monotonic() < deadline, "the killed worker was not replaced"
        websocket.create_connection(server.url("/echo"), timeout=30).close()
    assert re.search(rf"worker {killed} exited \(killed by signal 9\); restarting", server.output())

    restarted = wait_for(lambda: serving(port, 2, {killed}), what="the worker restarted")
    assert server.stop(timeout=60) == 0
    output = server.output()
    for pid in restarted:
        assert f"worker {pid} stopped" in output
        assert f"worker {pid}: Server Shut Down." in output
    assert "Traceback" not in output


def test_how_to_example_runs_a_daemon_with_two_workers(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The how-to's command daemonizes the supervisor: its pid file, its log, SIGTERM."""
    command = EXAMPLES["howto-workers-run"].replace(".venv/bin/", f"{BIN}/")
    command = command.replace("tcp:8000:", "tcp:0:").replace(
        "redis://127.0.0.1:6379/0", redis_server.url
    )
    result = subprocess.run(
        ["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    log = tmp_path / "wsapp.log"
    found = wait_for(
        lambda: log.exists() and re.search(r"wsapp serving http://[\d.]+:(\d+)/", log.read_text()),
        what="the supervisor's serving line",
    )
    port = int(found.group(1))
    pids = wait_for(lambda: serving(port, 2), what="two workers serving")
    supervisor = int((tmp_path / "wsapp.pid").read_text())
    assert supervisor not in pids
    os.kill(supervisor, signal.SIGTERM)
    wait_for(lambda: not (tmp_path / "wsapp.pid").exists(), what="the pid file removed")
    for pid in pids:
        wait_for(lambda pid=pid: not os.path.exists(f"/proc/{pid}"), what=f"worker {pid} gone")
        assert f"worker {pid} stopped" in log.read_text()


def test_sigint_stops_the_workers_and_a_second_signal_kills_them(
    twistd: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """SIGINT starts every worker's graceful shutdown (its drain period); SIGTERM then kills."""
    (tmp_path / "c.yaml").write_text("shutdown: {drain_period: 600}\n")
    server = twistd(
        "-c", "c.yaml", "--workers", "2", "--backend", redis_server.url,
        "--port", "tcp:0:interface=127.0.0.1",
    )  # fmt: skip
    pids = wait_for(lambda: serving(server.port, 2), what="two workers serving")
    server.process.send_signal(signal.SIGINT)
    wait_for(
        lambda: all(f"worker {pid}: shutting down: draining" in server.output() for pid in pids),
        what=f"both workers {pids} draining",
    )
    # killed, not a clean shutdown: twistd ends by the signal that began it
    assert server.stop(timeout=60) == -signal.SIGINT
    output = server.output()
    assert "second signal: killing the workers" in output
    for pid in pids:
        assert f"worker {pid} stopped (killed by signal 9)" in output
