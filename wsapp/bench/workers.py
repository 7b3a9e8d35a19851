"""
The benchmark's ``workers`` part: ``twistd wsapp --workers N`` on Redis, for N = 1 and 2.

Each run starts its own ``redis-server`` and one ``twistd -n --pidfile= wsapp --workers N
--backend redis://... --port tcp:PORT:interface=127.0.0.1``, then the counter broadcast
load of :mod:`wsapp.bench.scaleload` on its one port. The CPU per delivery is the sum over
every wsapp process (the one started and its children, found through ``/proc``). Nothing
is pinned: on a 2-core machine the workers share the cores with the load generator and
Redis, so the throughput of 2 workers shows what is left, not what 2 free cores give.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .scaleout import RedisServer
from .servers import BIN, WSAPP_CONFIG, free_port, run_load_generator, stop_process

__all__ = ["WORKERS", "descendants", "run_workers", "workers_table"]

#: The part's name among the benchmark's workloads.
WORKERS = "workers"
#: The worker counts measured.
COUNTS = (1, 2)


def descendants(pid: int) -> list[int]:
    """Process ``pid``'s children, grandchildren and so on, from ``/proc``."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                parent = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


class WorkersServer:
    """One ``twistd wsapp --workers N`` on Redis; RuntimeError when it does not serve."""

    def __init__(self, count: int, redis_url: str, timeout: float = 30) -> None:
        self.port = free_port()
        self.workdir = tempfile.TemporaryDirectory(prefix="wsapp-bench-workers-")
        folder = Path(self.workdir.name)
        (folder / "config.yaml").write_text(WSAPP_CONFIG)
        self.log = folder / "server.log"
        command = [str(BIN / "twistd"), "-n", "--pidfile=", "wsapp", "--workers", str(count)]
        command += ["--backend", redis_url, "--port", f"tcp:{self.port}:interface=127.0.0.1"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=folder, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            self._wait(count, timeout)
        except RuntimeError:
            self.stop()
            raise

    def _wait(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = self.log.read_text(errors="replace")
                if "workers" in text:
                    raise RuntimeError("--workers not supported by this twistd wsapp")
                raise RuntimeError(f"twistd wsapp --workers {count} exited:\n{text[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            # each worker logs reaching Redis (if its log lands here): wait for them, a while
            settle = min(deadline, time.monotonic() + 10)
            while time.monotonic() < settle:
                if self.log.read_text(errors="replace").count("Connected to redis://") >= count:
                    break
                time.sleep(0.05)
            return
        raise RuntimeError(f"twistd wsapp --workers {count} did not serve in {timeout} s")

    def pids(self) -> list[int]:
        """The process started and all its descendants."""
        return [self.process.pid, *descendants(self.process.pid)]

    def stop(self) -> None:
        stop_process(self.process)
        self.workdir.cleanup()


def run_count(count: int, smoke: bool) -> dict[str, Any]:
    """One run of ``count`` workers: its figures, or the reason it could not run."""
    clients, duration = (20, "0.3") if smoke else (1000, "3")
    redis = RedisServer(None)
    server = None
    try:
        server = WorkersServer(count, redis.url)
        pids = server.pids()
        command = [sys.executable, "-m", "wsapp.bench.scaleload", "--clients", str(clients)]
        command += ["--duration", duration, "--ports", str(server.port)]
        command += ["--server-pids", ",".join(map(str, pids)), "--redis-pid", str(redis.pid)]
        result: dict[str, Any] = run_load_generator(command, None, timeout=600)
        result["workers"] = count
        result["pids"] = pids
        return result
    except RuntimeError as error:
        return {"error": str(error), "workers": count}
    finally:
        if server is not None:
            server.stop()
        redis.stop()


def run_workers(smoke: bool, step: Callable[[str], Any] = print) -> dict[str, Any]:
    """Each worker count in turn; the ratios of 2 workers to 1."""
    results: dict[str, Any] = {}
    for count in COUNTS:
        step(f"workers: twistd wsapp --workers {count} on redis")
        results[str(count)] = run_count(count, smoke)
    one, two = results["1"], results["2"]
    ratios: dict[str, float | None] = {}
    for key in ("server_cpu_us_per_message", "per_second"):
        ratios[key] = two[key] / one[key] if key in one and key in two and one[key] else None
    return {"results": results, "ratios": ratios, "cores": os.cpu_count()}


def workers_table(report: dict[str, Any]) -> str:
    """The workers part as text: one row per worker count, then the ratios."""
    from .report import _number, aligned

    columns = [
        ("deliveries/s", "per_second"),
        ("median ms", "latency_median_ms"),
        ("wsapp CPU us/delivery", "server_cpu_us_per_message"),
        ("redis CPU us/delivery", "redis_cpu_us_per_message"),
        ("wsapp CPU %", "server_cpu_percent"),
        ("client CPU %", "client_cpu_percent"),
        ("other CPU %", "other_cpu_percent"),
    ]
    lines = [["workers", "processes", *(title for title, _ in columns)]]
    errors = []
    for count, result in report["results"].items():
        if "error" in result:
            errors.append(f"--workers {count}: {result['error']}")
        line = [count, str(len(result.get("pids", []))) if "pids" in result else "-"]
        line += [_number(result.get(key)) for _, key in columns]
        lines.append(line)
    ratios = report["ratios"]

    def ratio(key: str) -> str:
        value = ratios.get(key)
        return "-" if value is None else f"{value:.2f}x"

    text = [
        f"workers: counter broadcast on redis, twistd wsapp --workers N, {report['cores']} "
        "cores shared with the load generator and redis-server (nothing pinned)"
    ]
    text += aligned(lines, 2)
    text.append(
        f"2 workers / 1: wsapp CPU per delivery {ratio('server_cpu_us_per_message')}, "
        f"deliveries/s {ratio('per_second')}"
    )
    text += errors
    return "\n".join(text)
