"""
The blocking client against ``websocket-client``: round trips per second, one at a time.

:func:`run_blocking` starts wsapp's server (pinned to one core when there are two) and,
from this process (pinned to the other core), runs the same loop with each client against
its echo app: send a JSON message, wait for the one reply. ``wsapp.connect`` runs it as
``request`` (the reply matched by ``id``) and as ``send`` + ``recv``, with and without
permessage-deflate; ``websocket-client`` as ``send`` + ``recv`` (it has no
permessage-deflate, so it is the reference of both modes). The clients take turns in
every round, and each figure is the median over the rounds, so a load that comes and goes
on the machine weighs on all of them alike. Server and client CPU time per round trip
are reported too: they suffer less than the rate from other load.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def _measure(round_trip: RoundTrip, count: int, seconds: float, server_pid: int) -> dict[str, Any]:
    for n in range(min(200, count)):  # warm up
        round_trip(n)
    clock = time.perf_counter
    server_cpu, client_cpu = _process_cpu(server_pid), time.process_time()
    start = clock()
    deadline = start + seconds
    done = 0
    while done < count and clock() < deadline:
        round_trip(done)
        done += 1
    elapsed = clock() - start
    return {
        "round_trips": done,
        "per_second": done / elapsed,
        "client_cpu_us": (time.process_time() - client_cpu) / done * 1e6,
        "server_cpu_us": (_process_cpu(server_pid) - server_cpu) / done * 1e6,
    }


def run_blocking(smoke: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """
    Measure every client of :data:`LOOPS` against one wsapp server, in rounds.

    Returns ``{"cpus", "rounds", "clients": {client: {mode: figures}}, "ratios": {client:
    {mode: wsapp ÷ websocket-client}}}``, figures being the medians of ``per_second``,
    ``client_cpu_us`` and ``server_cpu_us`` over the rounds. ``smoke``: a few round trips.
    """
    rounds, count, seconds = (1, 30, 5.0) if smoke else (3, 5000, 5.0)
    cores = sorted(os.sched_getaffinity(0))
    pinned = len(cores) >= 2
    server = RunningServer("wsapp", {cores[0]} if pinned else None)
    samples: dict[tuple[str, str], list[dict[str, Any]]] = {loop: [] for loop in LOOPS}
    try:
        if pinned:
            os.sched_setaffinity(0, {cores[1]})
        url = f"ws://127.0.0.1:{server.port}/echo"
        with _client("wsapp.connect request", "plain", url) as warm_up:
            for n in range(10 if smoke else 2000):
                warm_up(n)
        for index in range(rounds):
            for name, mode in LOOPS:
                with _client(name, mode, url) as round_trip:
                    figures = _measure(round_trip, count, seconds, server.pid)
                samples[name, mode].append(figures)
                log(
                    f"round {index + 1}/{rounds} {name} {mode}: "
                    f"{figures['per_second']:,.0f}/s, client {figures['client_cpu_us']:.0f} µs, "
                    f"server {figures['server_cpu_us']:.0f} µs per round trip"
                )
    finally:
        if pinned:
            os.sched_setaffinity(0, set(cores))
        server.stop()
    clients: dict[str, dict[str, dict[str, float]]] = {}
    for (name, mode), taken in samples.items():
        clients.setdefault(name, {})[mode] = {
            key: statistics.median(sample[key] for sample in taken)
            for key in ("per_second", "client_cpu_us", "server_cpu_us")
        }
    reference = clients[REFERENCE]["plain"]["per_second"]
    ratios = {
        name: {mode: figures["per_second"] / reference for mode, figures in modes.items()}
        for name, modes in clients.items()
        if name != REFERENCE
    }
    return {"cpus": len(cores), "rounds": rounds, "clients": clients, "ratios": ratios}


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
        f"medians of {result['rounds']} rounds, one round trip in flight, "
        f"{'server and client on separate cores' if result['cpus'] >= 2 else 'one core'}; "
        "websocket-client has no permessage-deflate: both modes are compared with it plain"
    )
    return "\n".join([*aligned(lines, 2), note])
