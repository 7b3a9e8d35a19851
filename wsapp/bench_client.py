"""
Client benchmark: request/response round trips per second on loopback.

``python -m wsapp.bench_client`` starts wsapp's server (echo app) in a subprocess, then runs
the same loop (send a JSON request with an ``id``, wait for the reply echoing it) with
wsapp's blocking client, with and without permessage-deflate, and with the
``websocket-client`` package when it is installed. Each loop is bounded by ``--count``
round trips and ``--seconds``. With two or more cores the server is pinned to one and the
client to another.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

__all__ = ["main"]

SERVER = """
import sys
from dataclasses import replace
from twisted.internet import reactor
from wsapp.config import Config
from wsapp.service import ServerService

service = ServerService(replace(Config(), port="tcp:0:interface=127.0.0.1"), source="bench")
service.startService()
print(service.port.getHost().port, flush=True)
reactor.run()
"""


@contextmanager
def echo_server() -> Iterator[str]:
    """Run wsapp's server in a subprocess; yield the URL of its echo app."""
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
            cores = sorted(os.sched_getaffinity(0))
            os.sched_setaffinity(process.pid, {cores[0]})
            os.sched_setaffinity(0, {cores[1]})
        yield f"ws://127.0.0.1:{port}/echo"
    finally:
        process.terminate()
        process.wait(10)


Result = tuple[int, float, float, float]


def measure(round_trip: Callable[[int], None], count: int, seconds: float) -> Result:
    """
    Run ``round_trip(n)`` up to ``count`` times or for ``seconds``.

    Return the round trips done, their rate per second, the median round trip and the
    client process's CPU time per round trip (all its threads), both in microseconds. The
    median and the CPU time suffer less than the rate from other load on the machine.
    """
    for n in range(min(200, count)):  # warm up
        round_trip(n)
    times: list[float] = []
    clock = time.perf_counter
    start, cpu = clock(), time.process_time()
    deadline = start + seconds
    while len(times) < count and clock() < deadline:
        began = clock()
        round_trip(len(times))
        times.append(clock() - began)
    elapsed, cpu = clock() - start, time.process_time() - cpu
    done = len(times)
    return done, done / elapsed, statistics.median(times) * 1e6, cpu / done * 1e6


def wsapp_loop(url: str, compression: bool, count: int, seconds: float) -> Result:
    import wsapp

    with wsapp.connect(url, compression=compression) as ws:

        def round_trip(n: int) -> None:
            ws.request({"action": "echo", "n": n}, timeout=10)

        return measure(round_trip, count, seconds)


def websocket_client_loop(url: str, count: int, seconds: float) -> Result:
    import websocket

    ws = websocket.create_connection(url)
    try:

        def round_trip(n: int) -> None:
            ws.send(json.dumps({"action": "echo", "n": n, "id": n}))
            if json.loads(ws.recv())["id"] != n:
                raise RuntimeError("reply to another request")

        return measure(round_trip, count, seconds)
    finally:
        ws.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wsapp.bench_client", description=__doc__)
    parser.add_argument("--url", help="echo server to use instead of starting one")
    parser.add_argument("--count", type=int, default=20_000, help="round trips per client")
    parser.add_argument("--seconds", type=float, default=10, help="time limit per client")
    args = parser.parse_args(argv)
    limits = (args.count, args.seconds)
    loops: list[tuple[str, Callable[[str], Result]]] = [
        ("wsapp.connect, deflate offered", lambda url: wsapp_loop(url, True, *limits)),
        ("wsapp.connect, no deflate", lambda url: wsapp_loop(url, False, *limits)),
    ]
    try:
        import websocket  # noqa: F401

        loops.append(("websocket-client", lambda url: websocket_client_loop(url, *limits)))
    except ImportError:
        print("websocket-client is not installed: skipping it", file=sys.stderr)
    with echo_server() if args.url is None else _given(args.url) as url:
        print(
            f"{'client':32} {'round trips':>11} {'per second':>11} {'median µs':>10}"
            f" {'client CPU µs':>14}"
        )
        for name, loop in loops:
            done, rate, median, cpu = loop(url)
            print(f"{name:32} {done:>11} {rate:>11,.0f} {median:>10,.0f} {cpu:>14,.0f}", flush=True)
    return 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    sys.exit(main())
