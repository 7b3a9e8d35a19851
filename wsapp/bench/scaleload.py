"""
The scale-out load generator: counter broadcasts to clients spread over several processes.

``python -m wsapp.bench.scaleload --ports P1,P2 --server-pids A,B --redis-pid R``
connects ``--clients`` counter clients split evenly over the ports (in order), then sends
``{"action":"plus"}`` from the first client, one at a time, and times each until every
client on every port has the new state. Prints one JSON object on stdout with the CPU
time of the servers (summed), of Redis, of itself, and of everything else on the machine
over the measured interval (from ``/proc``).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from .load import latency_summary, print_result, progress, timed_broadcasts
from .wire import CLOCK_TICKS, Loop

__all__ = ["main"]


def cpu_times(pid: int) -> tuple[float, float]:
    """Seconds of user and of system CPU process ``pid`` has used (all its threads)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def machine_busy() -> float:
    """Seconds of CPU all cores have spent busy (not idle or waiting) since boot."""
    with open("/proc/stat") as stat:
        fields = [int(field) for field in stat.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


class Usage:
    """CPU seconds used by the servers, Redis, this process and the machine, and wall time."""

    def __init__(self, server_pids: list[int], redis_pid: int | None) -> None:
        self.server_pids = server_pids
        self.redis_pid = redis_pid

    def sample(self) -> dict[str, Any]:
        return {
            "wall": time.monotonic(),
            "servers": [cpu_times(pid) for pid in self.server_pids],
            "redis": sum(cpu_times(self.redis_pid)) if self.redis_pid else 0.0,
            "client": time.process_time(),
            "machine": machine_busy(),
        }

    def start(self) -> None:
        self.first = self.sample()

    def stop(self, delivered: int) -> dict[str, Any]:
        last, first = self.sample(), self.first
        wall = last["wall"] - first["wall"]
        pairs = list(zip(first["servers"], last["servers"], strict=True))
        servers = [sum(b) - sum(a) for a, b in pairs]
        system = sum(b[1] - a[1] for a, b in pairs)
        redis = last["redis"] - first["redis"]
        client = last["client"] - first["client"]
        others = last["machine"] - first["machine"] - sum(servers) - redis - client
        per = 1e6 / max(delivered, 1)
        return {
            "seconds": wall,
            "delivered": delivered,
            "server_cpu_us_per_message": sum(servers) * per,
            "server_cpu_us_per_message_each": [cpu * per for cpu in servers],
            "server_system_cpu_us_per_message": system * per,
            "server_cpu_percent": 100 * sum(servers) / wall,
            "redis_cpu_us_per_message": redis * per,
            "redis_cpu_percent": 100 * redis / wall,
            "client_cpu_percent": 100 * client / wall,
            "other_cpu_percent": max(0.0, 100 * others / wall),
        }


def open_spread(loop: Loop, ports: list[int], clients: int, args: argparse.Namespace) -> None:
    """Open ``clients`` counter clients, split evenly over ``ports``, the first port first."""
    deadline = time.monotonic() + args.timeout
    for index, port in enumerate(ports):
        loop.port = port  # Loop.connect dials loop.port
        share = clients // len(ports) + (index < clients % len(ports))
        loop.open_many(share, "/counter", args.deflate, deadline)
    loop.settle(0.3, deadline)


def spread_fanout(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """One ``plus`` at a time from the first client, timed until every client has it."""
    open_spread(loop, args.ports, args.clients, args)
    connections = list(loop.connections.values())
    usage = Usage(args.server_pids, args.redis_pid)
    deadline = time.monotonic() + args.timeout
    usage.start()
    latencies = timed_broadcasts(loop, connections, args, deadline)
    result = usage.stop(len(latencies) * len(connections))
    result.update(latency_summary(latencies))
    result.update(
        clients=len(connections),
        processes=len(args.ports),
        per_second=len(latencies) * len(connections) / result["seconds"],
        reconnected=loop.retried,
        load_average=os.getloadavg()[0],
    )
    progress(
        f"{len(connections)} clients on {len(args.ports)} process(es): "
        f"median {result['latency_median_ms']:.2f} ms, p99 {result['latency_p99_ms']:.2f} ms, "
        f"{result['per_second']:,.0f} deliveries/s, "
        f"{result['server_cpu_us_per_message']:.2f} us server CPU per delivery"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    def numbers(text: str) -> list[int]:
        return [int(n) for n in text.split(",")]

    parser = argparse.ArgumentParser(prog="python -m wsapp.bench.scaleload")
    parser.add_argument("--ports", type=numbers, required=True)
    parser.add_argument("--server-pids", type=numbers, required=True)
    parser.add_argument("--redis-pid", type=int, default=None)
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--max-messages", type=int, default=10_000_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    loop = Loop(args.ports[0])
    print_result(lambda: spread_fanout(args, loop))


if __name__ == "__main__":
    main()
