"""
``python -m wsapp.bench``: wsapp beside its peers, on loopback, in one run.

Each server runs as its own process (pinned to one core when there are two or more), and
the load generator (:mod:`wsapp.bench.load`) runs in another, pinned to another core. Each
workload runs on every server before the next workload starts, so the servers share the
same moment's machine. Prints progress, then one table (ratios first), and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

from .api import run_api_bench
from .channels import CHANNELS, channels_table, run_channels
from .report import table
from .scaleout import SCALEOUT, run_scaleout, scaleout_table
from .servers import SERVERS, RunningServer, run_load_generator

__all__ = ["main"]

MODES = ("plain", "deflate")


@dataclass(frozen=True)
class Workload:
    """One load-generator invocation per server and mode."""

    name: str
    args: tuple[str, ...]


def workloads(smoke: bool, tiers: str) -> list[list[Workload]]:
    """Workloads in groups; each group runs on one fresh server process."""
    if smoke:
        echo, hand, tiers, idle, fan = "0.3", "0.3", "5,20", "20", "0.3"
    else:
        echo, hand, idle, fan = "3", "2", "1000", "5"
    return [
        [
            Workload("echo_1x1", ("echo", "--clients", "1", "--inflight", "1", "--duration", echo)),
            Workload(
                "echo_50x10", ("echo", "--clients", "50", "--inflight", "10", "--duration", echo)
            ),
            Workload("handshakes", ("handshakes", "--clients", "10", "--duration", hand)),
        ],
        [Workload("memory", ("memory", "--clients", idle))],
        [Workload("fanout", ("fanout", "--tiers", tiers, "--duration", fan, "--timeout", "1200"))],
    ]


#: Broadcast tiers a server is not asked to reach. The bare Autobahn server sends every
#: join to every client like the others, at about 30-50 us of CPU per delivery: the 12.5
#: million deliveries of connecting 5,000 clients would take it over 15 minutes per mode.
TIER_CAP = {"autobahn": 1000}


def for_server(workload: Workload, name: str) -> Workload:
    """``workload`` as run on server ``name``: without the tiers above its cap."""
    cap = TIER_CAP.get(name)
    if workload.name != "fanout" or cap is None:
        return workload
    args = list(workload.args)
    at = args.index("--tiers") + 1
    args[at] = ",".join(tier for tier in args[at].split(",") if int(tier) <= cap)
    return Workload(workload.name, tuple(args))


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def run_load(server: RunningServer, workload: Workload, mode: str, cpus: set[int] | None) -> Any:
    command = [sys.executable, "-m", "wsapp.bench.load", *workload.args]
    command += ["--port", str(server.port), "--server-pid", str(server.pid)]
    if mode == "deflate":
        command.append("--deflate")
    return run_load_generator(command, cpus, timeout=1500)


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in cpuinfo
                    if line.startswith("model name")
                ),
                "",
            )
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m wsapp.bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny counts: checks that it works")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated subset")
    parser.add_argument(
        "--workloads",
        default="",
        help=f"comma-separated subset; {SCALEOUT}: wsapp on Redis, 1 and 2 processes; "
        f"{CHANNELS}: the /channels app on memory and Redis [default: all]",
    )
    parser.add_argument("--modes", default=",".join(MODES), help="plain, deflate or both")
    parser.add_argument("--json", default="bench-results.json", help="where to write results")
    parser.add_argument(
        "--tiers",
        default="100,1000",
        help="clients of each broadcast tier, comma-separated [default: 100,1000]",
    )
    parser.add_argument("--full", action="store_true", help="broadcast tiers 100,1000,5000")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args(argv)
    args.servers = [name for name in args.servers.split(",") if name]
    args.modes = [mode for mode in args.modes.split(",") if mode]
    groups = workloads(args.smoke, "100,1000,5000" if args.full else args.tiers)
    known = {workload.name for group in groups for workload in group} | {SCALEOUT, CHANNELS, "api"}
    chosen = set(args.workloads.split(",")) - {""} or known
    for kind, names, allowed in [
        ("servers", set(args.servers), set(SERVERS)),
        ("modes", set(args.modes), set(MODES)),
        ("workloads", chosen, known),
    ]:
        if names - allowed:
            parser.error(f"unknown {kind}: {', '.join(sorted(names - allowed))}")
    args.scaleout = SCALEOUT in chosen and "wsapp" in args.servers
    args.channels = CHANNELS in chosen and "wsapp" in args.servers
    args.api = "api" in chosen and "wsapp" in args.servers
    args.groups = [[w for w in group if w.name in chosen] for group in groups]
    args.groups = [group for group in args.groups if group]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    servers, groups = args.servers, args.groups
    limit = raise_open_files_limit()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    server_cpus, load_cpus = ({0}, {1}) if pin else (None, None)
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in servers}
    steps = sum(len(group) for group in groups) * len(args.modes) * len(servers)
    step = 0
    started = time.monotonic()
    print(f"wsapp.bench: {', '.join(servers)}; open-files limit {limit}", flush=True)
    for group in groups:
        for mode in args.modes:
            for name in servers:
                # memory needs a fresh process per mode; the others share one per group
                server = RunningServer(name, server_cpus)
                try:
                    for workload in group:
                        step += 1
                        elapsed = time.monotonic() - started
                        print(
                            f"[{step}/{steps} {elapsed:4.0f}s] {name} {workload.name} {mode}",
                            flush=True,
                        )
                        result = run_load(server, for_server(workload, name), mode, load_cpus)
                        results[name].setdefault(workload.name, {})[mode] = result
                finally:
                    server.stop()
    scaleout = None
    if args.scaleout:
        scaleout = run_scaleout(
            args.smoke,
            args.modes,
            pin,
            lambda text: print(f"[{time.monotonic() - started:4.0f}s] {text}", flush=True),
        )
    channels = None
    if args.channels:
        channels = run_channels(
            args.smoke,
            pin,
            lambda text: print(f"[{time.monotonic() - started:4.0f}s] {text}", flush=True),
        )
    report = {
        "command": " ".join(
            ["python -m wsapp.bench", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "pinned": pin,
        "smoke": args.smoke,
        "seconds": time.monotonic() - started,
        "results": results,
    }
    if scaleout is not None:
        report["scaleout"] = scaleout
    if channels is not None:
        report["channels"] = channels
    if args.api:
        report["api"] = run_api_bench(args.smoke, lambda text: print(text, flush=True))
        print(json.dumps(report["api"]))
    with open(args.json, "w") as output:
        json.dump(report, output, indent=1)
    if groups:
        print()
        print(table(results, servers))
    if scaleout is not None:
        print()
        print(scaleout_table(scaleout))
    if channels is not None:
        print()
        print(channels_table(channels))
    print(
        f"\n{report['command']} on {report['machine']['cores']} cores "
        f"({report['machine']['cpu']}); results in {args.json}"
    )
    failed = [
        f"FAILED: {name} {test} {mode}: {result['error']}"
        for name, per_test in results.items()
        for test, per_mode in per_test.items()
        for mode, result in per_mode.items()
        if "error" in result
    ]
    if scaleout is not None:
        failed += [
            f"FAILED: scale-out {name} {mode}: {result['error']}"
            for name, per_mode in scaleout["results"].items()
            for mode, result in per_mode.items()
            if "error" in result
        ]
    if channels is not None:
        failed += [
            f"FAILED: channels {name}: {result['error']}"
            for name, result in channels["results"].items()
            if "error" in result
        ]
    if "error" in report.get("api", {}):
        failed.append(f"FAILED: api: {report['api']['error']}")
    for line in failed:
        print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
