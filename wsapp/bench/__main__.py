"""
``python -m wsapp.bench``: wsapp beside its peers, on loopback, in one run.

Each server runs as its own process (pinned to one core when there are two or more), warmed
up with a short 50 x 1 echo, and each load generator runs in another, pinned to another
core: :mod:`wsapp.bench.load` (one frame per write; ``--batched`` packs a connection's
in-flight echo requests into one write) and the cross-check :mod:`wsapp.bench.picowsload`
(picows on uvloop). Each workload runs on every server before the next workload starts, so
the servers share the same moment's machine; ``--repeat N`` runs the whole set N times and
reports each figure's median with its range. Prints progress, then the targets and one
table per generator (ratios first), and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from importlib import metadata
from typing import Any

from .api import run_api_bench
from .blocking import blocking_table, run_blocking
from .channels import CHANNELS, channels_table, run_channels
from .report import table
from .scaleout import SCALEOUT, run_scaleout, scaleout_table
from .servers import SERVERS
from .suite import GENERATORS, MODES, Group, Results, run_set, workloads
from .targets import combine, spread_table, target_rows, targets_table
from .workers import WORKERS, run_workers, workers_table

__all__ = ["main"]


def raise_open_files_limit() -> int:
    """Raise the soft limit on open files to the hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries measured and measuring."""
    found = {"python": platform.python_version()}
    for name in ("wsapp", "autobahn", "twisted", "websockets", "picows", "uvloop"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "-"
    return found


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
        help=f"comma-separated subset, or all; {WORKERS}: twistd wsapp --workers 1 and 2 on "
        f"Redis; {CHANNELS}: the /channels app on memory and Redis; {SCALEOUT} (wsapp on "
        "Redis, 1 and 2 processes), api and fanout (the counter's broadcast): only when named "
        "[default: all but those three]",
    )
    parser.add_argument("--modes", default=",".join(MODES), help="plain, deflate or both")
    parser.add_argument(
        "--generators", default=",".join(GENERATORS), help="wsapp (own), picows or both"
    )
    parser.add_argument(
        "--batched", action="store_true", help="the own generator writes echo requests at once"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of the whole set [1]")
    parser.add_argument("--json", default="bench-results.json", help="where to write results")
    parser.add_argument(
        "--tiers",
        default="1000",
        help="clients of each counter broadcast tier, comma-separated [default: 1000]",
    )
    parser.add_argument("--full", action="store_true", help="broadcast tiers 100,1000,5000")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args(argv)
    args.servers = [name for name in args.servers.split(",") if name]
    args.modes = [mode for mode in args.modes.split(",") if mode]
    args.generators = [name for name in args.generators.split(",") if name]
    groups = workloads(args.smoke, "100,1000,5000" if args.full else args.tiers)
    named = {workload.name for group in groups for workload in group.workloads}
    default = (named - {"fanout"}) | {CHANNELS, WORKERS, "blocking"}
    known = default | {SCALEOUT, "api", "fanout"}
    chosen = set(args.workloads.split(",")) - {""}
    chosen = known if chosen == {"all"} else chosen or default
    for kind, names, allowed in [
        ("servers", set(args.servers), set(SERVERS)),
        ("modes", set(args.modes), set(MODES)),
        ("generators", set(args.generators), set(GENERATORS)),
        ("workloads", chosen, known),
    ]:
        if names - allowed:
            parser.error(f"unknown {kind}: {', '.join(sorted(names - allowed))}")
    if args.repeat < 1:
        parser.error("--repeat must be 1 or more")
    for extra in (SCALEOUT, CHANNELS, "api", WORKERS, "blocking"):
        setattr(args, extra, extra in chosen and "wsapp" in args.servers)
    args.groups = [
        Group(tuple(w for w in group.workloads if w.name in chosen), group.fresh)
        for group in groups
    ]
    args.groups = [group for group in args.groups if group.workloads]
    return args


def failures(report: dict[str, Any]) -> list[str]:
    """A line for every figure that failed."""
    failed = [
        f"FAILED: {gen} generator, {name} {test} {mode}: {result['error']}"
        for gen, per_server in report["results"].items()
        for name, per_test in per_server.items()
        for test, per_mode in per_test.items()
        for mode, result in per_mode.items()
        if "error" in result
    ]
    if "scaleout" in report:
        failed += [
            f"FAILED: scale-out {name} {mode}: {result['error']}"
            for name, per_mode in report["scaleout"]["results"].items()
            for mode, result in per_mode.items()
            if "error" in result
        ]
    if "channels" in report:
        failed += [
            f"FAILED: channels {name}: {result['error']}"
            for name, result in report["channels"]["results"].items()
            if "error" in result
        ]
    if "error" in report.get("api", {}):
        failed.append(f"FAILED: api: {report['api']['error']}")
    return failed


def run_blocking_part(smoke: bool, log: Any) -> dict[str, Any]:
    """The blocking client against websocket-client (its ``ratios`` feed the blocking target)."""
    return run_blocking(smoke, log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_open_files_limit()
    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    started = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:4.0f}s] {text}", flush=True)

    print(f"wsapp.bench: {', '.join(args.servers)}; open-files limit {limit}", flush=True)
    runs: list[Results] = []
    blocking: list[dict[str, Any] | None] = []
    extras: dict[str, list[Any]] = {}
    for turn in range(args.repeat):
        log(f"run {turn + 1} of {args.repeat}")
        runs.append(run_set(args, log, pin))
        if args.workers:
            extras.setdefault("workers", []).append(run_workers(args.smoke, log))
        if args.blocking:
            blocking.append(run_blocking_part(args.smoke, log))
    if args.scaleout:
        extras["scaleout"] = [run_scaleout(args.smoke, args.modes, pin, log)]
    if args.channels:
        extras["channels"] = [run_channels(args.smoke, pin, log)]
    report: dict[str, Any] = {
        "command": " ".join(
            ["python -m wsapp.bench", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "versions": versions(),
        "pinned": pin,
        "smoke": args.smoke,
        "batched": args.batched,
        "repeat": args.repeat,
        "seconds": time.monotonic() - started,
        "results": combine(runs),
        "spread": {key: combine(runs, pick) for key, pick in (("min", min), ("max", max))},
        "targets": target_rows(runs, blocking or [None]),
    }
    for key, values in extras.items():
        report[key] = combine(values) if key == "workers" else values[0]
    if blocking and blocking[-1] is not None:
        report["blocking"] = combine(blocking)
    if args.api:
        report["api"] = run_api_bench(args.smoke, lambda text: print(text, flush=True))
        print(json.dumps(report["api"]))
    with open(args.json, "w") as output:
        json.dump(report, output, indent=1)
    print()
    print(targets_table(report["targets"], args.repeat))
    shown = [name for name in args.servers if name in ("wsapp", "websockets", "autobahn")]
    for gen in args.generators:
        label = "batched writes" if args.batched and gen == "wsapp" else "one frame per write"
        print(f"\n{gen} load generator ({label}), median of {args.repeat} run(s)")
        print(table(report["results"][gen], shown))
    if args.repeat > 1:
        print()
        print(spread_table(report))
    for key, format_table in (
        ("workers", workers_table),
        ("scaleout", scaleout_table),
        ("channels", channels_table),
        ("blocking", blocking_table),
    ):
        if key in report:
            print()
            print(format_table(report[key]))
    print(
        f"\n{report['command']} on {report['machine']['cores']} cores "
        f"({report['machine']['cpu']}); {report['seconds']:.0f} s; results in {args.json}"
    )
    for line in failures(report):
        print(line)
    return 1 if failures(report) else 0


if __name__ == "__main__":
    sys.exit(main())
