"""
The benchmark's scale-out part: what sharing state through Redis costs per delivery.

Counter broadcasts to ``clients`` clients (:mod:`wsapp.bench.scaleload`) for three
configurations of wsapp: the memory backend in 1 process, the Redis backend in 1 process,
and the Redis backend in 2 processes with the clients split evenly (the ``plus`` sent to
the first). Each run of a configuration gets its own ``redis-server`` (temporary folder,
free port, no persistence) and fresh wsapp processes; the configurations take turns.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .report import _number, aligned
from .servers import WSAPP_CONFIG, RunningServer, free_port, run_load_generator, stop_process

__all__ = [
    "CONFIGURATIONS",
    "SCALEOUT",
    "RedisServer",
    "placement",
    "run_scaleout",
    "scaleout_table",
]

#: The scale-out part's name among the benchmark's workloads.
SCALEOUT = "scaleout"

#: Runs of each configuration and mode; the table shows each figure's median.
RUNS = 3
#: Name, backend and number of wsapp processes of each configuration, in run order.
CONFIGURATIONS = [("memory-1", "memory", 1), ("redis-1", "redis", 1), ("redis-2", "redis", 2)]
LABELS = {"memory-1": "memory, 1 process", "redis-1": "redis, 1 process"}
LABELS["redis-2"] = "redis, 2 processes"


class RedisServer:
    """A ``redis-server`` on a free loopback port in a temporary folder, without persistence."""

    def __init__(self, cpus: set[int] | None, timeout: float = 10) -> None:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("no redis-server on PATH (Debian: apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = tempfile.TemporaryDirectory(prefix="wsapp-bench-redis-")
        with open(Path(self.workdir.name) / "redis.log", "wb") as log:
            self.process = subprocess.Popen(
                [executable, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--dir", self.workdir.name, "--save", "", "--appendonly", "no"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.pid = self.process.pid
        if cpus:
            os.sched_setaffinity(self.pid, cpus)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout} s")

    def stop(self) -> None:
        stop_process(self.process)
        self.workdir.cleanup()


def placement(processes: int, pin: bool) -> tuple[list[set[int] | None], set[int] | None]:
    """
    Cores of each wsapp process, and of redis-server and the load generator (None: any).

    One process: wsapp on core 0, the rest on core 1, as in the main table. Two: one wsapp
    process per core, and redis-server and the load generator wherever the kernel finds
    room (pinning them beside either process would starve that one).
    """
    if not pin:
        return [None] * processes, None
    if processes == 1:
        return [{0}], {1}
    return [{index % 2} for index in range(processes)], None


def wait_connected(server: RunningServer, timeout: float = 10) -> None:
    """Wait until a wsapp process logged that it reached Redis."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "Connected to redis://" in server.log.read_text(errors="replace"):
            return
        time.sleep(0.05)
    raise RuntimeError(f"wsapp did not reach Redis in {timeout} s")


def run_configuration(
    backend: str, processes: int, mode: str, args: list[str], pin: bool
) -> dict[str, Any]:
    """Start Redis (if used) and the wsapp processes, run the load, stop them all."""
    server_cpus, other_cpus = placement(processes, pin)
    redis = RedisServer(other_cpus) if backend == "redis" else None
    config = WSAPP_CONFIG + (f"backend: {redis.url}\n" if redis else "")
    servers: list[RunningServer] = []
    try:
        for cpus in server_cpus:
            servers.append(RunningServer("wsapp", cpus, config=config))
            if redis:
                wait_connected(servers[-1])
        command = [sys.executable, "-m", "wsapp.bench.scaleload", *args]
        command += ["--ports", ",".join(str(server.port) for server in servers)]
        command += ["--server-pids", ",".join(str(server.pid) for server in servers)]
        if redis:
            command += ["--redis-pid", str(redis.pid)]
        if mode == "deflate":
            command.append("--deflate")
        result: dict[str, Any] = run_load_generator(command, other_cpus, timeout=900)
        return result
    finally:
        for server in servers:
            server.stop()
        if redis:
            redis.stop()


#: The ratios reported per mode: (name, configuration over configuration, summed metrics).
RATIOS = [
    ("redis_1_vs_memory_cpu_per_delivery", "redis-1", "memory-1", ("server_cpu_us_per_message",)),
    (
        "redis_1_with_redis_server_vs_memory_cpu_per_delivery",
        "redis-1",
        "memory-1",
        ("server_cpu_us_per_message", "redis_cpu_us_per_message"),
    ),
    ("redis_2_vs_1_deliveries_per_second", "redis-2", "redis-1", ("per_second",)),
    ("redis_2_vs_1_cpu_per_delivery", "redis-2", "redis-1", ("server_cpu_us_per_message",)),
]


def ratios(results: dict[str, dict[str, Any]], mode: str) -> dict[str, float | None]:
    """Each of :data:`RATIOS` for ``mode``; None where a configuration has no result."""

    def total(name: str, keys: tuple[str, ...]) -> float | None:
        result = results.get(name, {}).get(mode, {})
        return sum(float(result[key]) for key in keys) if all(k in result for k in keys) else None

    found: dict[str, float | None] = {}
    for key, top, bottom, metrics in RATIOS:
        mine, theirs = total(top, metrics), total(bottom, metrics)
        found[key] = mine / theirs if mine is not None and theirs else None
    return found


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over ``runs``, all of which succeeded."""
    result: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, list):
            result[key] = [
                statistics.median(run[key][i] for run in runs) for i in range(len(value))
            ]
        else:
            result[key] = statistics.median(run[key] for run in runs)
    return result


def least_disturbed(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """
    The run with the least wsapp CPU per delivery (the first error if any failed), with
    every run and each figure's median over them.

    Other work on the machine only adds to a run's CPU per delivery (shared caches, a busy
    sibling hyperthread), so the least is the estimate the others disturbed least.
    """
    failed = [run for run in runs if "error" in run]
    if failed:
        return {**failed[0], "runs": runs}
    best = min(runs, key=lambda run: float(run["server_cpu_us_per_message"]))
    return {**best, "median": medians(runs), "runs": runs}


def run_scaleout(smoke: bool, modes: list[str], pin: bool, step: Any = print) -> dict[str, Any]:
    """
    Run every configuration in every mode :data:`RUNS` times, the configurations taking
    turns so that a busy moment of the machine falls on each alike; report each one's
    least disturbed run (see :func:`least_disturbed`), and the ratios of those runs and of
    the medians.
    """
    clients, duration, repeat = (20, "0.3", 1) if smoke else (1000, "5", RUNS)
    args = ["--clients", str(clients), "--duration", duration]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for mode in modes:
        for turn in range(repeat):
            for name, backend, processes in CONFIGURATIONS:
                step(f"scale-out {LABELS[name]} {mode} (run {turn + 1} of {repeat})")
                try:
                    result = run_configuration(backend, processes, mode, args, pin)
                except RuntimeError as error:
                    result = {"error": str(error)}
                runs.setdefault(name, {}).setdefault(mode, []).append(result)
    results = {
        name: {mode: least_disturbed(tries) for mode, tries in per_mode.items()}
        for name, per_mode in runs.items()
    }
    median_results = {
        name: {mode: result.get("median", {}) for mode, result in per_mode.items()}
        for name, per_mode in results.items()
    }
    return {
        "clients": clients,
        "runs_per_configuration": repeat,
        "pinned": pin,
        "results": results,
        "ratios": {mode: ratios(results, mode) for mode in modes},
        "ratios_of_medians": {mode: ratios(median_results, mode) for mode in modes},
    }


def scaleout_table(report: dict[str, Any]) -> str:
    """Format the scale-out results: one row per configuration and mode, then the ratios."""
    columns = [
        ("deliveries/s", "per_second"),
        ("median ms", "latency_median_ms"),
        ("p99 ms", "latency_p99_ms"),
        ("wsapp CPU us/delivery", "server_cpu_us_per_message"),
        ("redis CPU us/delivery", "redis_cpu_us_per_message"),
        ("wsapp CPU %", "server_cpu_percent"),
        ("redis CPU %", "redis_cpu_percent"),
        ("client CPU %", "client_cpu_percent"),
        ("other CPU %", "other_cpu_percent"),
    ]
    lines = [["configuration", "mode", *(title for title, _ in columns)]]
    results = report["results"]
    modes = list(report["ratios"])
    for mode in modes:
        for name, backend, _ in CONFIGURATIONS:
            result = results.get(name, {}).get(mode, {})
            line = [LABELS[name], mode]
            for _, key in columns:
                shown = not (key.startswith("redis") and backend == "memory")
                line.append(_number(result.get(key) if shown else None))
            lines.append(line)
    text = [
        f"scale-out: counter broadcast to {report['clients']:,} clients, the least disturbed "
        f"of {report['runs_per_configuration']} run(s) (least wsapp CPU per delivery)"
    ]
    text += aligned(lines, 2)
    for mode in modes:
        for title, key in [("", "ratios"), (" (medians)", "ratios_of_medians")]:
            found = {k: "-" if v is None else f"{v:.2f}x" for k, v in report[key][mode].items()}
            text.append(
                f"{mode}{title}: CPU per delivery, redis 1 process / memory: wsapp "
                f"{found['redis_1_vs_memory_cpu_per_delivery']}, wsapp + redis-server "
                f"{found['redis_1_with_redis_server_vs_memory_cpu_per_delivery']}; redis 2 "
                f"processes / 1: deliveries/s {found['redis_2_vs_1_deliveries_per_second']}, "
                f"wsapp CPU per delivery {found['redis_2_vs_1_cpu_per_delivery']}"
            )
    return "\n".join(text)
