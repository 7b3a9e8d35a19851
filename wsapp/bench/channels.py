"""
The benchmark's channels part: publications through the ``/channels`` app.

For each configuration, a fresh ``twistd wsapp`` (and, on Redis, a fresh ``redis-server``)
and the load of :mod:`wsapp.bench.channelload`: 1,000 channels with one subscriber each
(published to by 10 client connections over the WebSocket, each waiting for its
publication to arrive before the next), then 1,000 subscribers of one channel (one
publication at a time); then the same two loads by picows on uvloop
(:mod:`wsapp.bench.picowsload`) as a cross-check. The namespace ``bench`` lets clients
publish and keeps ``history_size`` publications per channel. The configurations take
turns, :data:`RUNS` times; the table shows each figure's median, and the ratio the
history costs on Redis.
"""

from __future__ import annotations

import itertools
import resource
import statistics
import sys
from collections.abc import Callable
from typing import Any

import yaml

from .report import _number, aligned
from .scaleout import RedisServer, medians, placement, wait_connected
from .servers import WSAPP_CONFIG, RunningServer, run_load_generator

__all__ = ["CHANNELS", "CONFIGURATIONS", "channels_table", "run_channels", "wsapp_config"]

#: The channels part's name among the benchmark's workloads.
CHANNELS = "channels"
#: Runs of each configuration; the table shows each figure's median.
RUNS = 3
#: Name, backend and history size of each configuration, in run order.
CONFIGURATIONS = [
    ("memory-100", "memory", 100),
    ("redis-100", "redis", 100),
    ("redis-0", "redis", 0),
]
LABELS = {name: f"{backend}, history {size}" for name, backend, size in CONFIGURATIONS}
#: The load generators, each in turn on the same server: the own one, then picows.
GENERATORS = ("wsapp", "picows")
#: Open files the bench needs beside its connections (listening sockets, Redis, logs).
SPARE_FILES = 200


def wsapp_config(connections: int, history_size: int, backend: str = "memory") -> str:
    """The bench's wsapp config, room for ``connections``, and the ``bench`` namespace."""
    config = yaml.safe_load(WSAPP_CONFIG)
    config["limits"]["max_connections"] = connections + SPARE_FILES
    config["backend"] = backend
    config["channels"] = {
        "namespaces": {"bench": {"publish": "anyone", "history_size": history_size}}
    }
    return str(yaml.safe_dump(config, sort_keys=False))


def check_open_files(connections: int) -> None:
    """Refuse to start when the open-files limit cannot hold ``connections`` sockets."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < connections + SPARE_FILES:
        raise RuntimeError(
            f"the open-files limit is {soft}: the channels part needs "
            f"{connections + SPARE_FILES} (raise it with ulimit -n)"
        )


def run_configuration(
    backend: str, history_size: int, sizes: dict[str, int], args: list[str], pin: bool
) -> dict[str, Any]:
    """Start Redis (if used) and wsapp, run the load, stop them; RuntimeError if they fail."""
    connections = sizes["channels"] + sizes["fanout"] + sizes["publishers"]
    check_open_files(connections)
    (server_cpus,), other_cpus = placement(1, pin)
    redis = RedisServer(other_cpus) if backend == "redis" else None
    config = wsapp_config(connections, history_size, redis.url if redis else "memory")
    server = None
    try:
        server = RunningServer("wsapp", server_cpus, config=config)
        if redis:
            wait_connected(server)
        command = [sys.executable, "-m", "wsapp.bench.channelload", *args]
        command += ["--port", str(server.port), "--server-pid", str(server.pid)]
        if redis:
            command += ["--redis-pid", str(redis.pid)]
        result: dict[str, Any] = run_load_generator(command, other_cpus, timeout=900)
        # the cross-check generator, on the same server once the first one's clients left
        command[2] = "wsapp.bench.picowsload"
        command.insert(3, "channels")
        result["picows"] = run_load_generator(command, other_cpus, timeout=900)
        return result
    finally:
        if server is not None:
            server.stop()
        if redis:
            redis.stop()


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over ``runs`` (the first error if any failed), with every run."""
    failed = [run for run in runs if "error" in run]
    failed += [run["picows"] for run in runs if "error" in run.get("picows", {})]
    if failed:
        return {**failed[0], "runs": runs}
    found: dict[str, Any] = {"runs": runs}
    for part in ("memory", "many", "one"):
        found[part] = medians([run[part] for run in runs])
    found["picows"] = {
        part: medians([run["picows"][part] for run in runs]) for part in ("many", "one")
    }
    return found


def cpu_per_delivery(result: dict[str, Any], with_redis: bool) -> float | None:
    if "server_cpu_us_per_message" not in result:
        return None
    extra = float(result.get("redis_cpu_us_per_message", 0.0)) if with_redis else 0.0
    return float(result["server_cpu_us_per_message"]) + extra


def history_ratios(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """
    CPU per delivery on Redis with history 100 over without, per load and CPU counted: of
    the medians, and of each turn's pair of runs (the runs taken one after the other).
    """
    found: dict[str, Any] = {}
    with_history, without = results.get("redis-100", {}), results.get("redis-0", {})
    for part in ("many", "one"):
        for key, with_redis in [("wsapp", False), ("wsapp_and_redis", True)]:
            top = cpu_per_delivery(with_history.get(part, {}), with_redis)
            bottom = cpu_per_delivery(without.get(part, {}), with_redis)
            turns = []
            for a, b in zip(with_history.get("runs", []), without.get("runs", []), strict=False):
                mine = cpu_per_delivery(a.get(part, {}), with_redis)
                theirs = cpu_per_delivery(b.get(part, {}), with_redis)
                if mine is not None and theirs:
                    turns.append(mine / theirs)
            found[f"{part}_{key}"] = {
                "of_medians": top / bottom if top is not None and bottom else None,
                "per_turn": turns,
                "median_per_turn": statistics.median(turns) if turns else None,
            }
    return found


def run_channels(smoke: bool, pin: bool, step: Callable[[str], Any] = print) -> dict[str, Any]:
    """
    Run every configuration :data:`RUNS` times, the configurations taking turns so that a
    busy moment of the machine falls on each alike; report each figure's median.
    """
    if smoke:
        sizes, duration, repeat = {"channels": 20, "fanout": 10, "publishers": 4}, "0.3", 1
    else:
        sizes, duration, repeat = {"channels": 1000, "fanout": 1000, "publishers": 10}, "3", RUNS
    args = [item for key, value in sizes.items() for item in (f"--{key}", str(value))]
    args += ["--duration", duration, "--timeout", "60" if smoke else "600"]
    runs: dict[str, list[dict[str, Any]]] = {}
    for turn in range(repeat):
        for name, backend, history_size in CONFIGURATIONS:
            step(f"channels {LABELS[name]} (run {turn + 1} of {repeat})")
            try:
                result = run_configuration(backend, history_size, sizes, args, pin)
            except RuntimeError as error:
                result = {"error": str(error)}
            runs.setdefault(name, []).append(result)
    results = {name: summary(tries) for name, tries in runs.items()}
    return {
        **sizes,
        "runs_per_configuration": repeat,
        "pinned": pin,
        "results": results,
        "history_ratios": history_ratios(results),
    }


COLUMNS = [
    ("publishes/s", "per_second"),
    ("deliveries/s", "deliveries_per_second"),
    ("median ms", "latency_median_ms"),
    ("p99 ms", "latency_p99_ms"),
    ("wsapp CPU us/delivery", "server_cpu_us_per_message"),
    ("redis CPU us/delivery", "redis_cpu_us_per_message"),
    ("wsapp CPU %", "server_cpu_percent"),
    ("redis CPU %", "redis_cpu_percent"),
    ("client CPU %", "client_cpu_percent"),
    ("other CPU %", "other_cpu_percent"),
]


def channels_table(report: dict[str, Any]) -> str:
    """Format the channels results: one row per load and configuration, then the ratios."""
    loads = [
        ("many", f"{report['channels']:,} channels x 1"),
        ("one", f"1 channel x {report['fanout']:,}"),
    ]
    lines = [["load", "configuration", "generator", *(title for title, _ in COLUMNS)]]
    lines[0] += ["wsapp KiB/idle sub", "redis KiB/idle sub"]
    for part, label in loads:
        for (name, backend, _), generator in itertools.product(CONFIGURATIONS, GENERATORS):
            result = report["results"].get(name, {})
            if generator == "picows":
                result = result.get("picows", {})
            figures = result.get(part, {})
            line = [label, LABELS[name], generator]
            for _, key in COLUMNS:
                shown = not (key.startswith("redis") and backend == "memory")
                line.append(_number(figures.get(key) if shown else None))
            memory = result.get("memory", {}) if part == "many" else {}
            ours = memory.get("bytes_per_subscription")
            theirs = memory.get("redis_bytes_per_subscription") if backend == "redis" else None
            line += [_number(None if value is None else value / 1024) for value in (ours, theirs)]
            lines.append(line)
    text = [
        f"channels: {report['channels']:,} channels with 1 subscriber each ({report['publishers']} "
        f"publishing connections), 1 channel with {report['fanout']:,} subscribers (1 "
        f"publishing), median of {report['runs_per_configuration']} run(s)"
    ]
    text += aligned(lines, 3)
    ratios = report["history_ratios"]
    for part, label in loads:
        parts = []
        for key, title in [("wsapp", "wsapp"), ("wsapp_and_redis", "wsapp + redis-server")]:
            ratio = ratios[f"{part}_{key}"]
            turns = ", ".join(f"{value:.2f}x" for value in ratio["per_turn"]) or "-"
            of_medians = ratio["of_medians"]
            parts.append(
                f"{title} {'-' if of_medians is None else f'{of_medians:.2f}x'} (per turn {turns})"
            )
        text.append(
            f"{label}: CPU per delivery on redis, history 100 / history 0: {'; '.join(parts)}"
        )
    return "\n".join(text)
