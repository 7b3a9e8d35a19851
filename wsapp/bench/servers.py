"""Start and stop the servers under test, each its own process on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIGS",
    "SERVERS",
    "RunningServer",
    "free_port",
    "run_load_generator",
    "stop_process",
]

BIN = Path(sys.executable).parent


#: The shipped configuration but for two limits that every benchmark client, all on
#: 127.0.0.1, would hit (connections per address, requests per second per connection), and
#: the chat rooms without presence and join/leave events, as the peers' chat rooms are (1,000
#: joins would otherwise cost half a million join events before the broadcast is measured).
WSAPP_CONFIG = """\
limits:
  max_connections_per_address: 1000000
  rate: 0
channels:
  namespaces:
    chat:
      publish: anyone
      history_size: 100
      history_ttl: 300.0
"""


#: wsapp's configuration variants by server name: the shipped one, and a 4 MiB high-water
#: mark (the slow-consumer threshold must not change how fast replies go out).
CONFIGS = {
    "wsapp": WSAPP_CONFIG,
    "wsapp-hwm4m": WSAPP_CONFIG.replace("limits:\n", "limits:\n  high_water_mark: 4194304\n"),
}


def _wsapp(port: int) -> list[str]:
    # Run in a folder whose config.yaml holds only WSAPP_CONFIG, over the built-in defaults
    # (the values of the shipped config.yaml).
    return [
        str(BIN / "twistd"),
        "-n",
        "--pidfile=",
        "wsapp",
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
    ]


def _peer(name: str) -> object:
    return lambda port: [sys.executable, "-m", "wsapp.bench.peers", name, str(port)]


#: Command line of each server by name, given its port.
SERVERS = {
    "wsapp": _wsapp,
    "wsapp-hwm4m": _wsapp,
    "websockets": _peer("websockets"),
    "autobahn": _peer("autobahn"),
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RunningServer:
    """
    One server process, pinned to ``cpus`` when given; stop it with :meth:`stop`.

    wsapp reads ``config`` (by default its variant's of :data:`CONFIGS`) as its config.yaml.
    """

    def __init__(
        self, name: str, cpus: set[int] | None, timeout: float = 30, config: str | None = None
    ) -> None:
        self.name = name
        self.port = free_port()
        self.workdir = tempfile.TemporaryDirectory(prefix=f"wsapp-bench-{name}-")
        self.log = Path(self.workdir.name) / "server.log"
        if name in CONFIGS:
            text = CONFIGS[name] if config is None else config
            (Path(self.workdir.name) / "config.yaml").write_text(text)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                SERVERS[name](self.port),  # type: ignore[operator]
                cwd=self.workdir.name,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.pid = self.process.pid
        if cpus:
            os.sched_setaffinity(self.pid, cpus)
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log.read_text(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on port {self.port} in {timeout} s")

    def stop(self) -> None:
        stop_process(self.process)
        self.workdir.cleanup()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and SIGKILL if ``process`` has not exited 10 s later."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_load_generator(command: list[str], cpus: set[int] | None, timeout: float) -> Any:
    """Run a load generator (pinned to ``cpus`` if given); return its JSON, or an error."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    if cpus:
        os.sched_setaffinity(process.pid, cpus)
    output, _ = process.communicate(timeout=timeout)
    if process.returncode:
        return {"error": f"load generator exited with {process.returncode}"}
    return json.loads(output)
