"""
The load generator: ``python -m wsapp.bench.load WORKLOAD --port PORT --server-pid PID``.

Runs one workload against a server already listening on 127.0.0.1 (through
:mod:`wsapp.bench.wire`), prints progress on stderr and one JSON object on stdout, with
its own CPU time and the server's (``/proc/PID/stat``) over the measured interval.
"""

from __future__ import annotations

import argparse
import errno
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from .wire import Connection, Loop, masked_frame, server_cpu, server_rss

__all__ = ["latency_summary", "main", "print_result", "progress", "timed_broadcasts"]


def running(end: float, done: int, args: argparse.Namespace) -> bool:
    """Whether to go on: until ``end`` and ``max_messages``, but past ``end`` until one is done."""
    if done >= args.max_messages:
        return False
    return time.monotonic() < (end if done else end + args.timeout)


def progress(text: str) -> None:
    print(f"    {text}", file=sys.stderr, flush=True)


class Measure:
    """Client and server CPU, and wall time, from :meth:`start` to :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def start(self) -> None:
        self.wall, self.cpu = time.monotonic(), time.process_time()
        self.server = server_cpu(self.pid)

    def stop(self, delivered: int) -> dict[str, float]:
        wall = time.monotonic() - self.wall
        server = server_cpu(self.pid) - self.server
        client = time.process_time() - self.cpu
        return {
            "seconds": wall,
            "delivered": delivered,
            "server_cpu_us_per_message": server * 1e6 / max(delivered, 1),
            "server_cpu_percent": 100 * server / wall,
            "client_cpu_percent": 100 * client / wall,
        }


def echo(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """``clients`` connections each keep ``inflight`` echo requests outstanding."""
    deadline = time.monotonic() + args.timeout
    loop.open_many(args.clients, "/echo", args.deflate, deadline)
    frame = masked_frame(b'{"action":"echo","text":"' + b"x" * 24 + b'"}')
    measure = Measure(args.server_pid)
    done = 0

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal done
        if connection.closed:
            raise RuntimeError("the server closed an echo connection")
        if messages:
            done += messages
            connection.sock.send(frame * messages)

    for connection in loop.connections.values():
        connection.sock.send(frame * args.inflight)
    measure.start()
    end = time.monotonic() + args.duration
    while running(end, done, args):
        loop.poll(0.1, on_read)
    result = measure.stop(done)
    result["per_second"] = done / result["seconds"]
    progress(f"{result['per_second']:,.0f} round trips/s")
    return result


def handshakes(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """Open connections to /echo, ``clients`` at a time; each closes once it is open."""
    measure = Measure(args.server_pid)
    done = failed = 0

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal done, failed
        if connection.open:
            done += 1
            loop.close(connection)
        elif connection.closed:
            failed += 1
            loop.close(connection)

    measure.start()
    end = time.monotonic() + args.duration
    while running(end, done, args):
        while len(loop.connections) < args.clients:
            loop.connect("/echo", args.deflate)
        loop.poll(0.1, on_read)
    result = measure.stop(done)
    result["per_second"] = done / result["seconds"]
    result["failed"] = failed
    progress(f"{result['per_second']:,.0f} handshakes/s, {failed} failed")
    return result


def memory(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """Server RSS per connection that has echoed one message and then stays idle."""
    deadline = time.monotonic() + args.timeout
    frame = masked_frame(b'{"type":"state","value":1234}')

    def echo_once(count: int) -> None:
        before = len(loop.connections)
        loop.open_many(count, "/echo", args.deflate, deadline)
        fresh = list(loop.connections.values())[before:]
        for connection in fresh:
            connection.sock.send(frame)
        while sum(c.messages for c in fresh) < count and time.monotonic() < deadline:
            loop.poll(0.1, lambda connection, messages: None)

    echo_once(10)  # warm up: first-use allocations are not per connection
    for connection in list(loop.connections.values()):
        loop.close(connection)
    time.sleep(0.3)
    base = server_rss(args.server_pid)
    echo_once(args.clients)
    time.sleep(0.5)
    grown = server_rss(args.server_pid) - base
    result = {"connections": args.clients, "bytes_per_connection": grown / args.clients}
    progress(f"{grown / args.clients / 1024:.1f} KiB per connection")
    return result


def timed_broadcasts(
    loop: Loop, connections: list[Connection], args: argparse.Namespace, deadline: float
) -> list[float]:
    """
    From the first of ``connections``, one ``plus`` at a time for ``args.duration`` seconds;
    return the seconds each took until every connection had the new state.
    """
    plus = masked_frame(b'{"action":"plus"}')
    rounds = waiting = 0

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal waiting
        if connection.closed:
            raise RuntimeError("the server closed a counter connection")
        if messages:
            if connection.messages > rounds:
                raise RuntimeError("a client got more messages than broadcasts were sent")
            if connection.messages == rounds:
                waiting -= 1

    for connection in connections:
        connection.messages = 0
    sender = connections[0]
    latencies: list[float] = []
    end = min(time.monotonic() + args.duration, deadline)
    while running(end, rounds, args):
        rounds += 1
        waiting = len(connections)
        started = time.perf_counter()
        sender.sock.send(plus)
        while waiting:
            loop.poll(1.0, on_read)
            if time.monotonic() > deadline:
                raise RuntimeError(f"broadcast to {len(connections)} clients timed out")
        latencies.append(time.perf_counter() - started)
    return latencies


def latency_summary(latencies: list[float]) -> dict[str, float]:
    """Broadcasts, and the median and p99 of their ``latencies`` in milliseconds."""
    ordered = sorted(latencies)
    return {
        "broadcasts": len(ordered),
        "latency_median_ms": statistics.median(ordered) * 1e3,
        "latency_p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3,
    }


def fanout(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """Per tier of connected counter clients: one ``plus`` at a time, timed until all have it."""
    results: dict[str, Any] = {}
    for tier in args.tiers:
        deadline = time.monotonic() + args.timeout
        loop.open_many(tier - len(loop.connections), "/counter", args.deflate, deadline)
        loop.settle(0.3, deadline)
        measure = Measure(args.server_pid)
        measure.start()
        latencies = timed_broadcasts(loop, list(loop.connections.values()), args, deadline)
        result = measure.stop(len(latencies) * tier)
        result.update(latency_summary(latencies))
        result.update(clients=tier, per_second=len(latencies) * tier / result["seconds"])
        result["reconnected"] = loop.retried
        results[str(tier)] = result
        progress(
            f"{tier} clients: median {result['latency_median_ms']:.2f} ms, "
            f"p99 {result['latency_p99_ms']:.2f} ms, {result['per_second']:,.0f} deliveries/s"
        )
    return results


WORKLOADS = {"echo": echo, "handshakes": handshakes, "memory": memory, "fanout": fanout}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wsapp.bench.load")
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--tiers", type=lambda text: [int(n) for n in text.split(",")])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--max-messages", type=int, default=10_000_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    loop = Loop(args.port)
    print_result(lambda: WORKLOADS[args.workload](args, loop))


def print_result(workload: Callable[[], dict[str, Any]]) -> None:
    """Run ``workload`` and print its result as JSON; a refused or failed run is an error."""
    try:
        result = workload()
    except (OSError, RuntimeError) as error:
        if isinstance(error, OSError) and error.errno not in (errno.ECONNREFUSED, errno.EPIPE):
            raise
        result = {"error": str(error)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
