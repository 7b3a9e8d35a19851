"""
The blocking client against ``websocket-client``: round trips per second, one at a time.

:func:`run_blocking` starts wsapp's server (pinned to one core when there are two) and,
from this process (pinned to the other core), runs the same loop with each client against
its echo app: send a JSON message, wait for the one reply. ``wsapp.connect`` runs it as
``request`` (the reply matched by ``id``) and as ``send`` + ``recv``, with and without
permessage-deflate; ``websocket-client`` as ``send`` + ``recv`` (it has no
permessage-deflate, so it is the reference of both modes). The clients take turns, a
slice of round trips each, so a load that comes and goes on the machine weighs on all of
them alike. Server and client CPU time per round trip are reported too: they suffer less
than the rate from other load.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from .report import aligned
from .servers import RunningServer

__all__ = ["blocking_table", "run_blocking"]

#: (client, mode) pairs in the order they run in each round.
LOOPS = [
    ("wsapp.connect request", "plain"),
    ("wsapp.connect send+recv", "plain"),
    ("websocket-client send+recv", "plain"),
    ("wsapp.connect request", "deflate"),
    ("wsapp.connect send+recv", "deflate"),
]
REFERENCE = "websocket-client send+recv"

RoundTrip = Callable[[int], None]


def _ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _ticks()


@contextmanager
def _client(name: str, mode: str, url: str) -> Iterator[RoundTrip]:
    """Open one client; yield its round trip ``(n) -> None``."""
    if name == REFERENCE:
        import websocket

        reference = websocket.create_connection(url)
        try:

            def round_trip(n: int) -> None:
                reference.send(json.dumps({"action": "echo", "n": n, "id": n}))
                if json.loads(reference.recv())["id"] != n:
                    raise RuntimeError("reply to another message")

            yield round_trip
        finally:
            reference.close()
        return
    import wsapp

    with wsapp.connect(url, compression=mode == "deflate") as ws:
        if ws.deflate != (mode == "deflate"):
            raise RuntimeError(f"permessage-deflate negotiated: {ws.deflate}")
        if name.endswith("request"):

            def round_trip(n: int) -> None:
                ws.request({"action": "echo", "n": n}, timeout=10)

        else:

            def round_trip(n: int) -> None:
                ws.send({"action": "echo", "n": n, "id": n})
                if ws.recv(timeout=10)["id"] != n:
                    raise RuntimeError("reply to another message")

        yield round_trip


def _slice(round_trip: RoundTrip, count: int, deadline: float, server_pid: int) -> list[float]:
    """Run up to ``count`` round trips; return [done, seconds, client CPU s, server CPU s]."""
    clock = time.perf_counter
    server_cpu, client_cpu = _process_cpu(server_pid), time.process_time()
    start = clock()
    done = 0
    while done < count and clock() < deadline:
        round_trip(done)
        done += 1
    return [
        done,
        clock() - start,
        time.process_time() - client_cpu,
        _process_cpu(server_pid) - server_cpu,
    ]


def run_blocking(smoke: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """
    Measure every client of :data:`LOOPS` against one wsapp server, taking turns.

    All the clients connect first; then, slice after slice, each runs a few hundred round
    trips in turn, so load from elsewhere on the machine weighs on all of them alike.
    Returns ``{"cpus", "slices", "clients": {client: {mode: figures}}, "ratios": {client:
    {mode: wsapp ÷ websocket-client}}}``: ``per_second`` is the median over the slices,
    ``client_cpu_us`` and ``server_cpu_us`` the CPU time per round trip over all of them.
    ``smoke``: one slice of a few round trips.
    """
    slices, count, seconds = (1, 30, 5.0) if smoke else (15, 400, 3.0)
    cores = sorted(os.sched_getaffinity(0))
    pinned = len(cores) >= 2
    server = RunningServer("wsapp", {cores[0]} if pinned else None)
    taken: dict[tuple[str, str], list[list[float]]] = {loop: [] for loop in LOOPS}
    try:
        if pinned:
            os.sched_setaffinity(0, {cores[1]})
        url = f"ws://127.0.0.1:{server.port}/echo"
        with ExitStack() as clients:
            loops = {loop: clients.enter_context(_client(*loop, url)) for loop in LOOPS}
            for round_trip in loops.values():  # warm up
                for n in range(10 if smoke else 300):
                    round_trip(n)
            for index in range(slices):
                for loop, round_trip in loops.items():
                    deadline = time.perf_counter() + seconds
                    taken[loop].append(_slice(round_trip, count, deadline, server.pid))
                rates = ", ".join(
                    f"{name} {mode} {figures[-1][0] / figures[-1][1]:,.0f}/s"
                    for (name, mode), figures in taken.items()
                )
                log(f"slice {index + 1}/{slices}: {rates}")
    finally:
        if pinned:
            os.sched_setaffinity(0, set(cores))
        server.stop()
    clients_figures: dict[str, dict[str, dict[str, float]]] = {}
    for (name, mode), figures in taken.items():
        done = sum(f[0] for f in figures)
        clients_figures.setdefault(name, {})[mode] = {
            "per_second": statistics.median(f[0] / f[1] for f in figures),
            "client_cpu_us": sum(f[2] for f in figures) / done * 1e6,
            "server_cpu_us": sum(f[3] for f in figures) / done * 1e6,
        }
    reference = clients_figures[REFERENCE]["plain"]["per_second"]
    ratios = {
        name: {mode: figures["per_second"] / reference for mode, figures in modes.items()}
        for name, modes in clients_figures.items()
        if name != REFERENCE
    }
    return {"cpus": len(cores), "slices": slices, "clients": clients_figures, "ratios": ratios}


def blocking_table(result: dict[str, Any]) -> str:
    """The results as a text table: each client's medians and its ratio to websocket-client."""
    lines = [
        ["client", "mode", "round trips/s", "÷ websocket-client", "client CPU µs", "server CPU µs"]
    ]
    for name, modes in result["clients"].items():
        for mode, figures in modes.items():
            ratio = result["ratios"].get(name, {}).get(mode)
            lines.append(
                [
                    name,
                    mode,
                    f"{figures['per_second']:,.0f}",
                    "-" if ratio is None else f"{ratio:.2f}x",
                    f"{figures['client_cpu_us']:.0f}",
                    f"{figures['server_cpu_us']:.0f}",
                ]
            )
    note = (
        f"rates: medians of {result['slices']} slices taken in turn; CPU: totals; "
        "one round trip in flight, "
        f"{'server and client on separate cores' if result['cpus'] >= 2 else 'one core'}; "
        "websocket-client has no permessage-deflate: both modes are compared with it plain"
    )
    return "\n".join([*aligned(lines, 2), note])
