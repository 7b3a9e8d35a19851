"""
The channels load generator: ``python -m wsapp.bench.channelload --port P --server-pid S``.

Every client is a WebSocket connection to the ``/channels`` app on 127.0.0.1 and writes
one frame at a time. In order:

1. ``--channels`` subscriber connections and ``--publishers`` publisher connections open;
   each subscriber makes one request that subscribes it to nothing (an ``unsubscribe`` of
   its channel, answered with an error), so every connection has been read and written;
   the server's RSS (and Redis's) is read once nothing more arrives.
2. Subscriber I subscribes to ``bench:I``; once every one has its reply and the server is
   quiet, RSS again: the growth per subscription is the memory of an idle subscription.
3. **many**: each publisher sends ``{"action": "publish"}`` to the next channel in turn,
   its next one once the subscriber has the publication, for ``--duration`` seconds.
4. **one**: ``--fanout`` more connections subscribe to ``bench:all``; the first publisher
   publishes there, one at a time, each timed until every subscriber has it.

Prints one JSON object on stdout: each phase's figures, with the CPU time of the server,
Redis, this process and the rest of the machine over it (from ``/proc``).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

from .load import latency_summary, print_result, progress
from .scaleload import Usage
from .wire import Connection, Loop, masked_frame, server_rss

__all__ = ["NAMESPACE", "PATH", "channels_load", "main"]

PATH = "/channels"
#: The namespace the benchmark's configuration opens for publishing by clients.
NAMESPACE = "bench"
DATA = b'"' + b"x" * 16 + b'"'


def request(action: str, channel: str, data: bytes = b"") -> bytes:
    """The frame of a request ``action`` on ``channel`` (with JSON ``data`` if given)."""
    text = b'{"action":"' + action.encode() + b'","channel":"' + channel.encode() + b'"'
    return masked_frame(text + (b',"data":' + data if data else b"") + b"}")


def answer_each(
    loop: Loop, frames: dict[Connection, bytes], deadline: float, at_once: int = 500
) -> None:
    """Send each connection its frame (``at_once`` unanswered at most); wait for every reply."""
    for connection in frames:
        connection.messages = 0
    queue = list(frames.items())
    waiting = 0

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal waiting
        if connection.closed:
            raise RuntimeError("the server closed a channels connection")
        if messages and connection in frames:
            waiting -= messages

    while queue or waiting:
        while queue and waiting < at_once:
            connection, frame = queue.pop()
            connection.sock.send(frame)
            waiting += 1
        loop.poll(0.05, on_read)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{waiting + len(queue)} requests were not answered in time")


def publish_timed(
    loop: Loop,
    publishers: Sequence[Connection],
    frames: Sequence[bytes],
    members: dict[Connection, int],
    args: argparse.Namespace,
    deadline: float,
) -> dict[str, Any]:
    """
    Each publisher publishes ``frames[C]`` for channel C after channel C-1's (round robin),
    its next once every member of C (``members``: connection to channel) has that one.
    """
    listeners = [0] * len(frames)
    for connection, channel in members.items():
        listeners[channel] += 1
        connection.messages = 0
    sent = [0] * len(frames)
    #: per channel: sequence number -> [publisher, send time, members still waiting]
    pending: list[dict[int, list[Any]]] = [{} for _ in frames]
    latencies: list[float] = []
    idle = list(publishers)
    turn = published = delivered = 0

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal delivered
        if connection.closed:
            raise RuntimeError("the server closed a channels connection")
        channel = members.get(connection)
        if not messages or channel is None:
            return
        now = time.perf_counter()
        waiting = pending[channel]
        for sequence in range(connection.messages - messages + 1, connection.messages + 1):
            entry = waiting.get(sequence)
            if entry is None:
                raise RuntimeError("a subscriber got a publication that was not sent")
            entry[2] -= 1
            delivered += 1
            if not entry[2]:
                del waiting[sequence]
                latencies.append(now - entry[1])
                idle.append(entry[0])

    usage = Usage([args.server_pid], args.redis_pid)
    usage.start()
    end = min(time.monotonic() + args.duration, deadline)
    while True:
        sending = time.monotonic() < end and published < args.max_messages
        if not sending and len(idle) == len(publishers):
            break
        while sending and idle and published < args.max_messages:
            channel = turn % len(frames)
            if pending[channel]:
                break  # its last publication is still on its way (fewer channels than publishers)
            publisher = idle.pop()
            turn += 1
            sent[channel] += 1
            pending[channel][sent[channel]] = [publisher, time.perf_counter(), listeners[channel]]
            publisher.sock.send(frames[channel])
            published += 1
        loop.poll(0.05, on_read)
        if time.monotonic() > deadline:
            raise RuntimeError(f"publications to {len(members)} subscribers timed out")
    result = usage.stop(delivered)
    result.update(latency_summary(latencies))
    result.update(
        subscribers=len(members),
        channels=len(frames),
        publishers=len(publishers),
        publishes=published,
        per_second=published / result["seconds"],
        deliveries_per_second=delivered / result["seconds"],
        load_average=os.getloadavg()[0],
    )
    return result


def rss(args: argparse.Namespace) -> tuple[int, int]:
    """Resident bytes of the server and of Redis (0 without)."""
    return server_rss(args.server_pid), server_rss(args.redis_pid) if args.redis_pid else 0


def channels_load(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """The four phases of the module's description; return each one's figures."""
    deadline = time.monotonic() + args.timeout
    loop.open_many(args.channels + args.publishers, PATH, False, deadline)
    connections = list(loop.connections.values())
    publishers, subscribers = connections[: args.publishers], connections[args.publishers :]
    names = [f"{NAMESPACE}:{index}" for index in range(args.channels)]
    channel_of = {connection: index for index, connection in enumerate(subscribers)}

    def ask_each(action: str) -> tuple[int, int]:
        """Each subscriber's ``action`` on its channel; RSS once all are answered and quiet."""
        answer_each(loop, {c: request(action, names[i]) for c, i in channel_of.items()}, deadline)
        loop.settle(0.5, deadline)
        return rss(args)

    before = ask_each("unsubscribe")  # an error reply: a request that subscribes nothing
    after = ask_each("subscribe")
    memory = {
        "subscriptions": args.channels,
        "bytes_per_subscription": (after[0] - before[0]) / args.channels,
        "redis_bytes_per_subscription": (after[1] - before[1]) / args.channels,
    }
    progress(f"{memory['bytes_per_subscription'] / 1024:.2f} KiB per idle subscription")
    frames = [request("publish", name, DATA) for name in names]
    many = publish_timed(loop, publishers, frames, channel_of, args, deadline)
    progress(describe("many", many))

    known = set(loop.connections)
    loop.open_many(args.fanout, PATH, False, deadline)
    fanout = [c for fd, c in loop.connections.items() if fd not in known]
    everyone = f"{NAMESPACE}:all"
    answer_each(loop, dict.fromkeys(fanout, request("subscribe", everyone)), deadline)
    loop.settle(0.3, deadline)
    frame = request("publish", everyone, DATA)
    one = publish_timed(loop, publishers[:1], [frame], dict.fromkeys(fanout, 0), args, deadline)
    progress(describe("one", one))
    return {"memory": memory, "many": many, "one": one, "reconnected": loop.retried}


def describe(name: str, result: dict[str, Any]) -> str:
    return (
        f"{name}: {result['channels']:,} channel(s), {result['subscribers']:,} subscribers: "
        f"{result['per_second']:,.0f} publishes/s, {result['deliveries_per_second']:,.0f} "
        f"deliveries/s, median {result['latency_median_ms']:.2f} ms, p99 "
        f"{result['latency_p99_ms']:.2f} ms, {result['server_cpu_us_per_message']:.2f} us "
        f"server CPU per delivery"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m wsapp.bench.channelload")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--redis-pid", type=int, default=None)
    parser.add_argument("--channels", type=int, default=10_000, help="one subscriber each")
    parser.add_argument("--fanout", type=int, default=1000, help="subscribers of one channel")
    parser.add_argument("--publishers", type=int, default=10, help="connections publishing")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of each phase")
    parser.add_argument("--max-messages", type=int, default=10_000_000, help="publishes")
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    if args.channels < 1 or args.fanout < 1 or args.publishers < 1:
        parser.error("--channels, --fanout and --publishers must be 1 or more")
    loop = Loop(args.port)
    print_result(lambda: channels_load(args, loop))


if __name__ == "__main__":
    main()
