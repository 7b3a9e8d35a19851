"""
The load generator: ``python -m wsapp.bench.load WORKLOAD --port PORT --server-pid PID``.

Runs one workload against a server already listening on 127.0.0.1 (through
:mod:`wsapp.bench.wire`), prints progress on stderr and one JSON object on stdout, with
its own CPU time and the server's (``/proc/PID/stat``) over the measured interval.

Every frame is its own ``send()``, as browsers and most client libraries write them;
``--batched`` writes each connection's in-flight echo requests in one ``send()`` instead
(the result says ``"batched": true``).
"""

from __future__ import annotations

import argparse
import errno
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from .wire import CLOSE_FRAME, Connection, Loop, masked_frame, server_cpu, server_rss

__all__ = [
    "CHAT_TEXTS",
    "ECHO_TEXT",
    "MEMORY_TEXT",
    "latency_summary",
    "main",
    "print_result",
    "progress",
    "timed_broadcasts",
]


def words(count: int, seed: int) -> str:
    """``count`` characters of lower-case words: text that compresses like prose."""
    vocabulary = (
        "the a to of and in is it you that he was for on are with as his they be at one have "
        "this from or had by hot word but what some we can out other were all there when up "
        "use your how said an each she which do their time if will way about many then them "
        "write would like so these her long make thing see him two has look more day could go "
        "come did number sound no most people my over know water than call first who may down"
    ).split()
    pick = random.Random(seed)
    text = ""
    while len(text) < count:
        text += pick.choice(vocabulary) + " "
    return text[:count]


#: The echo workloads' request: a 51-byte text message.
ECHO_TEXT = b'{"action":"echo","text":"' + b"x" * 24 + b'"}'
#: The chat broadcast's requests, taken in turn: each event is about 1 KiB (over
#: ``compression.min_size``), and 64 different texts keep a compressor from finding the
#: previous one in its window.
CHAT_TEXTS = [('{"action":"say","text":"' + words(960, seed) + '"}').encode() for seed in range(64)]
#: The memory workload's request: 1 KiB echoed back, compressed on deflate connections.
MEMORY_TEXT = ('{"action":"echo","text":"' + words(990, 4) + '"}').encode()


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
    frame = masked_frame(ECHO_TEXT)
    measure = Measure(args.server_pid)
    done = 0
    batched = args.batched

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal done
        if connection.closed:
            raise RuntimeError("the server closed an echo connection")
        if messages:
            done += messages
            send = connection.sock.send
            if batched:
                send(frame * messages)
            else:
                for _ in range(messages):
                    send(frame)

    for connection in loop.connections.values():
        on_read(connection, args.inflight)
    done = 0
    measure.start()
    end = time.monotonic() + args.duration
    while running(end, done, args):
        loop.poll(0.1, on_read)
    result = measure.stop(done)
    result["per_second"] = done / result["seconds"]
    result["batched"] = batched
    progress(f"{result['per_second']:,.0f} round trips/s")
    return result


def handshakes(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """
    Connections to /echo, ``clients`` at a time, each a whole WebSocket life: the opening
    handshake, then the closing one (the client sends Close, waits for the server's Close
    and for the server to close the TCP connection). One counts once its TCP close came.
    """
    measure = Measure(args.server_pid)
    done = failed = 0

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal done, failed
        if connection.eof:
            if connection.close_received:
                done += 1
            else:
                failed += 1
            loop.close(connection)
        elif connection.open and not connection.closed and not connection.messages:
            connection.messages = -1  # Close sent
            connection.sock.send(CLOSE_FRAME)

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
    """
    Server RSS per connection that has echoed one 1 KiB message (compressed on a deflate
    connection) and then stays idle.
    """
    deadline = time.monotonic() + args.timeout
    frame = masked_frame(MEMORY_TEXT)

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
    loop: Loop,
    connections: list[Connection],
    args: argparse.Namespace,
    deadline: float,
    requests: list[bytes] | None = None,
    sender: Connection | None = None,
) -> list[float]:
    """
    From ``sender`` (by default the first of ``connections``), one of ``requests`` (by
    default a counter's ``plus``) at a time, in turn, for ``args.duration`` seconds; return
    the seconds each took until every one of ``connections`` had the message it causes.
    """
    frames = [masked_frame(request) for request in requests or [b'{"action":"plus"}']]
    rounds = waiting = 0
    members = set(connections)

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal waiting
        if connection.closed:
            raise RuntimeError("the server closed a broadcast connection")
        if messages and connection in members:
            if connection.messages > rounds:
                raise RuntimeError("a client got more messages than broadcasts were sent")
            if connection.messages == rounds:
                waiting -= 1

    for connection in connections:
        connection.messages = 0
    source = connections[0] if sender is None else sender
    latencies: list[float] = []
    end = min(time.monotonic() + args.duration, deadline)
    while running(end, rounds, args):
        rounds += 1
        waiting = len(connections)
        started = time.perf_counter()
        source.sock.send(frames[rounds % len(frames)])
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


def chat(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """
    ``clients`` members of one /chat room and a sender; the sender says a 1 KiB text, one at
    a time, each timed until every member has it. Also the bytes the members received.
    """
    deadline = time.monotonic() + args.timeout
    loop.open_many(args.clients + 1, "/chat", args.deflate, deadline)
    connections = list(loop.connections.values())
    sender, members = connections[0], connections[1:]
    # A member is in the room once it has a first message (wsapp's "joined", or a text):
    # say something every half second until all have one, then let it go quiet.
    for connection in members:
        connection.messages = 0
    prime = masked_frame(CHAT_TEXTS[0])
    while any(not connection.messages for connection in members):
        if time.monotonic() > deadline:
            raise RuntimeError("the chat members did not all join in time")
        sender.sock.send(prime)
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            loop.poll(0.1, lambda connection, messages: None)
    loop.settle(0.5, deadline)
    received = sum(connection.received for connection in members)
    measure = Measure(args.server_pid)
    measure.start()
    latencies = timed_broadcasts(loop, members, args, deadline, CHAT_TEXTS, sender)
    result = chat_result(
        measure.stop(len(latencies) * len(members)),
        latencies,
        len(members),
        wire=sum(connection.received for connection in members) - received,
        deflate=any(connection.deflate for connection in members),
        reconnected=loop.retried,
    )
    progress(
        f"chat to {len(members)}: median {result['latency_median_ms']:.2f} ms, "
        f"{result['per_second']:,.0f} deliveries/s, "
        f"{result['wire_bytes_per_delivery']:,.0f} bytes on the wire each"
    )
    return result


def chat_result(
    result: dict[str, Any],
    latencies: list[float],
    clients: int,
    *,
    wire: int,
    deflate: bool,
    reconnected: int,
) -> dict[str, Any]:
    """
    A chat round's ``result`` (of :meth:`Measure.stop`) with its latencies, rate and the
    ``wire`` bytes its ``clients`` members received.
    """
    result.update(latency_summary(latencies))
    result.update(
        clients=clients,
        per_second=result["delivered"] / result["seconds"],
        wire_bytes_per_delivery=wire / max(result["delivered"], 1),
        deflate=deflate,
        reconnected=reconnected,
    )
    return result


WORKLOADS = {
    "echo": echo,
    "handshakes": handshakes,
    "memory": memory,
    "fanout": fanout,
    "chat": chat,
}


def load_arguments(prog: str, workloads: Iterable[str]) -> argparse.ArgumentParser:
    """The command line both load generators take; each adds its own options."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("workload", choices=sorted(workloads))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = load_arguments("python -m wsapp.bench.load", WORKLOADS)
    parser.add_argument(
        "--batched", action="store_true", help="write each connection's echo requests at once"
    )
    parser.add_argument("--tiers", type=lambda text: [int(n) for n in text.split(",")])
    parser.add_argument("--max-messages", type=int, default=10_000_000)
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
