"""The benchmark's server workloads: which runs where, and running one set of them."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from .servers import RunningServer, run_load_generator

__all__ = [
    "GENERATORS",
    "MODES",
    "PEERS",
    "Group",
    "Workload",
    "for_server",
    "run_set",
    "workloads",
]

MODES = ("plain", "deflate")
#: The load generators: this package's own (raw sockets) and the cross-check (picows).
GENERATORS = ("wsapp", "picows")
MODULES = {"wsapp": "wsapp.bench.load", "picows": "wsapp.bench.picowsload"}
#: The servers of the main tables; the wsapp variant runs only the targets' echo.
PEERS = ("wsapp", "websockets", "autobahn")


@dataclass(frozen=True)
class Workload:
    """One load-generator invocation per server, mode and generator."""

    name: str
    args: tuple[str, ...]
    #: The load generators that run it (the first decides the targets).
    generators: tuple[str, ...] = GENERATORS
    #: The servers that run it (None: all of those chosen).
    servers: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Group:
    """Workloads run one after the other on one server process (per generator if ``fresh``)."""

    workloads: tuple[Workload, ...]
    fresh: bool = False


def workloads(smoke: bool, tiers: str) -> list[Group]:
    """The workloads in groups; each group runs on fresh server processes."""
    if smoke:
        echo, hand, tiers, many, fan = "0.3", "0.3", "5,20", "20", "0.3"
    else:
        echo, hand, many, fan = "1", "1", "1000", "2"

    def echo_load(clients: int, inflight: int, **more: Any) -> Workload:
        args = ("echo", "--clients", str(clients), "--inflight", str(inflight))
        return Workload(f"echo_{clients}x{inflight}", (*args, "--duration", echo), **more)

    return [
        Group(
            (
                echo_load(1, 1, servers=PEERS),
                echo_load(50, 1),
                echo_load(50, 10, servers=PEERS),
                Workload(
                    "handshakes",
                    ("handshakes", "--clients", "10", "--duration", hand),
                    servers=PEERS,
                ),
            )
        ),
        Group(
            (Workload("memory", ("memory", "--clients", "20" if smoke else "300"), servers=PEERS),),
            fresh=True,
        ),
        Group((Workload("chat", ("chat", "--clients", many, "--duration", fan), servers=PEERS),)),
        Group(
            (
                Workload(
                    "fanout",
                    ("fanout", "--tiers", tiers, "--duration", fan, "--timeout", "1200"),
                    generators=("wsapp",),
                    servers=PEERS,
                ),
            )
        ),
    ]  # fmt: skip


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
    return replace(workload, args=tuple(args))


def run_load(
    server: RunningServer,
    workload: Workload,
    mode: str,
    cpus: set[int] | None,
    generator: str = "wsapp",
    batched: bool = False,
) -> Any:
    command = [sys.executable, "-m", MODULES[generator], *workload.args]
    command += ["--port", str(server.port), "--server-pid", str(server.pid)]
    if mode == "deflate":
        command.append("--deflate")
    if batched and generator == "wsapp" and workload.args[0] == "echo":
        command.append("--batched")
    result = run_load_generator(command, cpus, timeout=1500)
    if isinstance(result, dict) and "error" not in result and workload.args[0] == "echo":
        result["batched"] = batched and generator == "wsapp"
    return result


def warm_up(server: RunningServer, mode: str, cpus: set[int] | None, smoke: bool) -> None:
    """A short 50 x 1 echo: a fresh server runs slower until it has served a few connections."""
    seconds = "0.2" if smoke else "1"
    args = ("echo", "--clients", "50", "--inflight", "1", "--duration", seconds)
    result = run_load(server, Workload("warm-up", args), mode, cpus)
    if "error" in result:
        raise RuntimeError(f"{server.name} failed its warm-up: {result['error']}")


Results = dict[str, dict[str, dict[str, dict[str, Any]]]]


def run_set(args: Any, log: Callable[[str], None], pin: bool) -> Results:
    """Every group on every server, mode and generator once: results by generator, server."""
    results: Results = {gen: {name: {} for name in args.servers} for gen in args.generators}
    for group in args.groups:
        for mode in args.modes:
            for name in args.servers:
                runs = [w for w in group.workloads if w.servers is None or name in w.servers]
                gens = [g for g in args.generators if any(g in w.generators for w in runs)]
                batches = [[g] for g in gens] if group.fresh else [gens]
                for batch in batches:
                    if runs and batch:
                        run_batch(name, mode, runs, batch, results, args, log, pin)
    return results


def run_batch(
    name: str,
    mode: str,
    runs: list[Workload],
    batch: list[str],
    results: Results,
    args: Any,
    log: Callable[[str], None],
    pin: bool,
) -> None:
    """
    ``runs`` by each generator of ``batch`` on one fresh, warmed-up server ``name``; a
    server that does not start or warm up is each of their results' error.
    """
    server_cpus, load_cpus = ({0}, {1}) if pin else (None, None)
    server = None
    try:
        server = RunningServer(name, server_cpus, timeout=90)
        warm_up(server, mode, load_cpus, args.smoke)
        failure = None
    except RuntimeError as error:
        failure = {"error": str(error).splitlines()[0]}
    try:
        for workload in runs:
            for gen in batch:
                if gen not in workload.generators:
                    continue
                log(f"{name} {workload.name} {mode} ({gen} generator)")
                if failure is not None or server is None:
                    result: Any = failure
                else:
                    chosen = for_server(workload, name)
                    result = run_load(server, chosen, mode, load_cpus, gen, args.batched)
                results[gen][name].setdefault(workload.name, {})[mode] = result
    finally:
        if server is not None:
            server.stop()
