"""``twistd wsapp``: options over config.yaml, startup errors, and the real server process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket

from tests.conftest import BIN, run_twistd
from wsapp.config import AppConfig, CompressionConfig
from wsapp.tap import Options


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_options_override_the_config_file(tmp_path: Path, monkeypatch: Any) -> None:
    """--port, --mount, --no-compression and --compression-level override ./config.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(
        "port: 9001\ncompression: {level: 2, memory_level: 4}\n"
        "apps: {/counter: wsapp.apps.counter:CounterProtocol}\n"
    )
    assert parse()["wsapp"].port == "tcp:9001"
    assert parse()["source"] == "config.yaml"
    overridden = parse(
        "--port", "tcp:9002:interface=127.0.0.1",
        "--mount", "/echo=wsapp.apps.echo:EchoProtocol",
        "--compression-level", "7",
        "--no-compression",
    )["wsapp"]  # fmt: skip
    assert overridden.port == "tcp:9002:interface=127.0.0.1"
    assert overridden.apps == {
        "/counter": AppConfig("wsapp.apps.counter:CounterProtocol"),
        "/echo": AppConfig("wsapp.apps.echo:EchoProtocol"),
    }
    assert overridden.compression == CompressionConfig(enabled=False, level=7, memory_level=4)


def test_config_option_names_another_file(tmp_path: Path, monkeypatch: Any) -> None:
    """--config reads the named file; without one and without ./config.yaml, defaults apply."""
    monkeypatch.chdir(tmp_path)
    assert parse()["source"] == "built-in defaults"
    (tmp_path / "other.yaml").write_text("port: 9003\n")
    assert parse("--config", "other.yaml")["wsapp"].port == "tcp:9003"


@pytest.mark.parametrize(
    ("files", "args", "error"),
    [
        ({"c.yaml": "port: 80\nbogus: 1\n"}, ["-c", "c.yaml"], "c.yaml: bogus: unknown key"),
        ({"c.yaml": "compression: {level: x}"}, ["-c", "c.yaml"], "c.yaml: compression.level:"),
        ({}, ["-c", "missing.yaml"], "missing.yaml: cannot read file"),
        ({"config.yaml": "apps: {/a: nope.nope:App}"}, [], "config.yaml: apps./a.protocol: cannot"),
        ({}, ["--port", "99999"], "command line: port: port 99999 is out of range"),
        ({}, ["--port", "bogus:1"], "command line: port: invalid endpoint 'bogus:1'"),
        ({"c.yaml": "port: 'bogus:1'"}, ["-c", "c.yaml"], "c.yaml: port: invalid endpoint"),
        ({}, ["--backend", "bogus"], "command line: backend: expected memory or redis://"),
        ({}, ["--mount", "/x=os.path"], "command line: apps./x.protocol: expected an import path"),
        ({}, ["--mount", "/x=os:path"], "command line: apps./x.protocol: 'os:path' is not a"),
        (
            {"config.yaml": "apps: {/a: nope.nope:App}"},
            ["--mount", "/b=wsapp.apps.echo:EchoProtocol"],
            "config.yaml: apps./a.protocol: cannot import",
        ),
        (
            {"c.yaml": "port: 80\n  bad: 1\n"},
            ["-c", "c.yaml"],
            "c.yaml: invalid YAML at line 2, column 6: mapping values are not allowed here",
        ),
        ({}, ["--compression-level", "0"], "command line: compression.level: must be between"),
    ],
)
def test_bad_settings_end_with_one_line_and_nonzero_exit(
    tmp_path: Path, files: dict[str, str], args: list[str], error: str
) -> None:
    """Bad config or options exit non-zero with a one-line message naming the file and key."""
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = run_twistd(tmp_path, *args)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("twistd wsapp: ") and error in last_line, result.stderr


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another socket is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("tcp:{taken}:interface=127.0.0.1", "Address already in use"),
        ("tcp:0:interface=192.0.2.1", "Cannot assign requested address"),
        ("unix:{folder}/missing/wsapp.sock", "No such file or directory"),
        ("unix:{folder}/file/wsapp.sock", "Not a directory"),
    ],
)
def test_failing_to_listen_is_one_line_naming_endpoint_and_error(
    tmp_path: Path, taken_port: int, endpoint: str, reason: str
) -> None:
    """A port in use, an address not here or an unusable socket path: one line, exit 1."""
    (tmp_path / "file").write_text("")
    endpoint = endpoint.format(taken=taken_port, folder=tmp_path)
    result = run_twistd(tmp_path, "--port", endpoint)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "twistd wsapp: " in line]
    assert len(errors) == 1, output
    expected = f"twistd wsapp: command line: port: cannot listen on {endpoint}: {reason}"
    assert errors[0].endswith(expected), output


def test_port_number_alone_is_logged_as_every_interface(twistd: Any) -> None:
    """--port with a number listens on every interface, and the serving line says 0.0.0.0."""
    server = twistd("--port", "0")
    assert f"wsapp serving http://0.0.0.0:{server.port}/ (apps: " in server.output()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=10) as answer:
        assert json.loads(answer.read())["status"] == "ok"


def test_help_documents_every_option() -> None:
    """``twistd wsapp --help`` lists each option with its explanation."""
    result = subprocess.run(
        [str(BIN / "twistd"), "wsapp", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    options = [
        "--config",
        "--port",
        "--mount",
        "--no-compression",
        "--compression-level",
        "--app-dir",
    ]
    for option in options:
        assert option in result.stdout
    assert "tcp:8000:interface=127.0.0.1" in result.stdout


def test_twistd_serves_third_party_clients_and_stops_on_sigterm(twistd: Any) -> None:
    """The installed plugin serves the counter to websocket-client; SIGTERM exits cleanly."""
    server = twistd("--port", "tcp:0:interface=127.0.0.1")
    first = websocket.create_connection(server.url("/counter"), timeout=5)
    second = websocket.create_connection(server.url("/counter"), timeout=5)
    assert json.loads(first.recv()) == {"type": "state", "value": 0}
    first.send(json.dumps({"action": "plus", "id": 1}))
    received = [json.loads(first.recv()) for _ in range(3)]
    assert {"type": "state", "value": 1, "id": 1} in received
    assert {"type": "state", "value": 1} in [json.loads(second.recv()) for _ in range(3)]
    # twistd shuts down, then ends by the signal it received, as Unix daemons do
    assert server.stop() == -signal.SIGTERM
    assert "Server Shut Down." in server.output()
    assert "Traceback" not in server.output()


def test_daemon_mode_writes_pid_and_log_files(tmp_path: Path) -> None:
    """Without -n, twistd daemonizes with a pid file and a log file, and SIGTERM stops it."""
    pidfile, logfile = tmp_path / "wsapp.pid", tmp_path / "wsapp.log"
    result = subprocess.run(
        [
            str(BIN / "twistd"), f"--pidfile={pidfile}", f"--logfile={logfile}",
            "wsapp", "--port", "tcp:0:interface=127.0.0.1",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 60
    while "wsapp serving" not in (logfile.read_text() if logfile.exists() else ""):
        assert time.monotonic() < deadline, "the daemon did not start"
        time.sleep(0.05)
    # The line is logged before the reactor runs; it handles SIGTERM once it answers.
    url = re.search(r"wsapp serving (\S+)", logfile.read_text()).group(1)  # type: ignore[union-attr]
    urllib.request.urlopen(url + "health", timeout=30).close()
    pid = int(pidfile.read_text())
    os.kill(pid, signal.SIGTERM)
    # twistd removes the pid file, then logs its last line.
    while pidfile.exists() or "Server Shut Down." not in logfile.read_text():
        assert time.monotonic() < deadline + 30, "the daemon did not stop"
        time.sleep(0.05)
