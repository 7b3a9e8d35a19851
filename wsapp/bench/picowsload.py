"""
The cross-check load generator: ``python -m wsapp.bench.picowsload WORKLOAD --port PORT
--server-pid PID``, the workloads of :mod:`wsapp.bench.load` written with a third-party
client, picows on uvloop.

picows writes every frame with its own ``send()`` as it is sent. It has no
permessage-deflate of its own: with ``--deflate`` it offers the extension in the handshake
(as browsers do), sends its own frames uncompressed (RSV1 clear, which the extension
allows), and counts the server's compressed frames without inflating them, like the other
generator. Prints one JSON object on stdout in the shape :mod:`wsapp.bench.load` prints.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from .load import (
    CHAT_TEXTS,
    ECHO_TEXT,
    MEMORY_TEXT,
    Measure,
    chat_result,
    load_arguments,
    print_result,
    progress,
)
from .picowschannels import channels_load
from .picowsclient import Client, connect, open_many, settle
from .wire import server_rss

__all__ = ["WORKLOADS", "main"]


async def echo(args: argparse.Namespace) -> dict[str, Any]:
    """``clients`` connections each keep ``inflight`` echo requests outstanding."""
    from picows import WSMsgType

    clients = await open_many(args.port, args.clients, "/echo", args.deflate, args.timeout)
    text = WSMsgType.TEXT
    done = 0

    def answer(client: Client, frame: Any) -> None:
        nonlocal done
        done += 1
        client.transport.send(text, ECHO_TEXT)

    for client in clients:
        client.on_message = answer
        for _ in range(args.inflight):
            client.transport.send(text, ECHO_TEXT)
    measure = Measure(args.server_pid)
    measure.start()
    await asyncio.sleep(args.duration)
    result = measure.stop(done)
    result.update(per_second=done / result["seconds"], batched=False)
    progress(f"picows: {result['per_second']:,.0f} round trips/s")
    for client in clients:
        client.on_message = None
        client.transport.disconnect()
    return result


async def handshakes(args: argparse.Namespace) -> dict[str, Any]:
    """Whole WebSocket lives, ``clients`` at a time, as :func:`wsapp.bench.load.handshakes`."""
    from picows import WSCloseCode

    done = failed = 0
    end = time.monotonic() + args.duration

    async def worker() -> None:
        nonlocal done, failed
        while time.monotonic() < end or not done:
            client = await connect(args.port, "/echo", args.deflate)
            client.transport.send_close(WSCloseCode.OK)
            await asyncio.wait_for(client.transport.wait_disconnected(), args.timeout)
            if client.close_received:
                done += 1
            else:
                failed += 1

    measure = Measure(args.server_pid)
    measure.start()
    await asyncio.gather(*(worker() for _ in range(args.clients)))
    result = measure.stop(done)
    result.update(per_second=done / result["seconds"], failed=failed)
    progress(f"picows: {result['per_second']:,.0f} handshakes/s, {failed} failed")
    return result


async def memory(args: argparse.Namespace) -> dict[str, Any]:
    """Server RSS per connection that has echoed one 1 KiB message and then stays idle."""
    from picows import WSMsgType

    async def echo_once(count: int) -> list[Client]:
        clients = await open_many(args.port, count, "/echo", args.deflate, args.timeout)
        for client in clients:
            client.transport.send(WSMsgType.TEXT, MEMORY_TEXT)
        end = time.monotonic() + args.timeout
        while sum(client.messages for client in clients) < count and time.monotonic() < end:
            await asyncio.sleep(0.05)
        return clients

    for client in await echo_once(10):  # warm up: first-use allocations
        client.transport.disconnect()
    await asyncio.sleep(0.3)
    base = server_rss(args.server_pid)
    await echo_once(args.clients)
    await asyncio.sleep(0.5)
    grown = server_rss(args.server_pid) - base
    progress(f"picows: {grown / args.clients / 1024:.1f} KiB per connection")
    return {"connections": args.clients, "bytes_per_connection": grown / args.clients}


async def chat(args: argparse.Namespace) -> dict[str, Any]:
    """One sender says a 1 KiB text to ``clients`` members of a /chat room, one at a time."""
    from picows import WSMsgType

    clients = await open_many(args.port, args.clients + 1, "/chat", args.deflate, args.timeout)
    sender, members = clients[0], clients[1:]
    # A member is in the room once it has a first message (wsapp's "joined", or a text):
    # say something every half second until all have one, then let it go quiet.
    end = time.monotonic() + args.timeout
    while any(not client.messages for client in members):
        if time.monotonic() > end:
            raise RuntimeError("the chat members did not all join in time")
        sender.transport.send(WSMsgType.TEXT, CHAT_TEXTS[0])
        await asyncio.sleep(0.5)
    await settle(clients, 0.5, args.timeout)
    waiting = 0
    everyone: asyncio.Future[None] | None = None

    def arrived(client: Client, frame: Any) -> None:
        nonlocal waiting
        waiting -= 1
        # <= 0: a late copy of the priming text must not leave a round waiting forever
        if waiting <= 0 and everyone is not None and not everyone.done():
            everyone.set_result(None)

    for client in members:
        client.on_message = arrived
    received = sum(client.received for client in members)
    latencies: list[float] = []
    measure = Measure(args.server_pid)
    measure.start()
    end = time.monotonic() + args.duration
    loop = asyncio.get_running_loop()
    while time.monotonic() < end or not latencies:
        waiting, everyone = len(members), loop.create_future()
        started = time.perf_counter()
        sender.transport.send(WSMsgType.TEXT, CHAT_TEXTS[len(latencies) % len(CHAT_TEXTS)])
        await asyncio.wait_for(everyone, args.timeout)
        latencies.append(time.perf_counter() - started)
    result = chat_result(
        measure.stop(len(latencies) * len(members)),
        latencies,
        len(members),
        wire=sum(client.received for client in members) - received,
        deflate=any(client.deflate for client in members),
        reconnected=0,
    )
    progress(
        f"picows: chat to {len(members)}: median {result['latency_median_ms']:.2f} ms, "
        f"{result['per_second']:,.0f} deliveries/s"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = load_arguments("python -m wsapp.bench.picowsload", WORKLOADS)
    parser.add_argument("--redis-pid", type=int, default=None)
    parser.add_argument("--channels", type=int, default=1000, help="one subscriber each")
    parser.add_argument("--fanout", type=int, default=1000, help="subscribers of one channel")
    parser.add_argument("--publishers", type=int, default=10, help="connections publishing")
    args, _ = parser.parse_known_args(argv)
    import uvloop

    def run() -> dict[str, Any]:
        try:
            result: dict[str, Any] = uvloop.run(WORKLOADS[args.workload](args))
        except TimeoutError as error:
            raise RuntimeError(f"{args.workload} timed out") from error
        return result

    print_result(run)


WORKLOADS = {
    "echo": echo,
    "handshakes": handshakes,
    "memory": memory,
    "chat": chat,
    "channels": channels_load,
}

if __name__ == "__main__":
    main()
