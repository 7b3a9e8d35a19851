"""
The channels load of :mod:`wsapp.bench.channelload` by picows on uvloop (run through
``python -m wsapp.bench.picowsload channels``): ``many`` (``--channels`` channels with one
subscriber each, ``--publishers`` connections publishing in turn) and ``one`` (``--fanout``
subscribers of one channel), without the memory phase.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from .channelload import DATA, NAMESPACE, PATH
from .load import latency_summary, progress
from .picowsclient import Client, open_many, settle
from .scaleload import Usage

__all__ = ["channels_load"]


async def channels_load(args: argparse.Namespace) -> dict[str, Any]:
    """
    The publications of :mod:`wsapp.bench.channelload` (``many`` and ``one``, without its
    memory phase), each publisher waiting for its publication to arrive before the next.
    """
    from picows import WSMsgType

    text = WSMsgType.TEXT
    loop = asyncio.get_running_loop()

    def request(action: str, channel: str, data: bytes = b"") -> bytes:
        body = b'{"action":"' + action.encode() + b'","channel":"' + channel.encode() + b'"'
        return body + (b',"data":' + data if data else b"") + b"}"

    async def subscribe(clients: list[Client], names: list[str]) -> None:
        for client, name in zip(clients, names, strict=True):
            client.transport.send(text, request("subscribe", name))
        end = time.monotonic() + args.timeout
        while any(client.messages < 1 for client in clients):
            if time.monotonic() > end:
                raise RuntimeError("subscriptions were not answered in time")
            await asyncio.sleep(0.02)
        await settle(clients, 0.3, args.timeout)

    async def publish(
        publishers: list[Client], members: list[list[Client]], names: list[str]
    ) -> dict[str, Any]:
        """Each publisher publishes to the next channel in turn, once its last one arrived."""
        waiting: dict[int, list[Any]] = {}  # channel -> [members left, future]

        def arrived(client: Client, frame: Any) -> None:
            entry = waiting.get(client.channel)
            if entry is not None:
                entry[0] -= 1
                if not entry[0]:
                    entry[1].set_result(None)

        for channel, group in enumerate(members):
            for client in group:
                client.channel = channel
                client.on_message = arrived
        latencies: list[float] = []
        published = 0
        end = time.monotonic() + args.duration
        frames = [request("publish", name, DATA) for name in names]

        async def publisher(client: Client) -> None:
            nonlocal published
            while time.monotonic() < end or not published:
                channel = published % len(names)
                if channel in waiting:
                    await asyncio.sleep(0)
                    continue
                published += 1
                done = loop.create_future()
                waiting[channel] = [len(members[channel]), done]
                started = time.perf_counter()
                client.transport.send(text, frames[channel])
                await asyncio.wait_for(done, args.timeout)
                latencies.append(time.perf_counter() - started)
                del waiting[channel]

        usage = Usage([args.server_pid], args.redis_pid)
        usage.start()
        await asyncio.gather(*(publisher(client) for client in publishers))
        delivered = sum(len(members[i % len(names)]) for i in range(published))
        result: dict[str, Any] = usage.stop(delivered)
        result.update(latency_summary(latencies))
        result.update(
            subscribers=sum(len(group) for group in members),
            channels=len(names),
            publishers=len(publishers),
            publishes=published,
            per_second=published / result["seconds"],
            deliveries_per_second=delivered / result["seconds"],
        )
        return result

    clients = await open_many(args.port, args.channels + args.publishers, PATH, False, args.timeout)
    publishers, subscribers = clients[: args.publishers], clients[args.publishers :]
    names = [f"{NAMESPACE}:{index}" for index in range(args.channels)]
    await subscribe(subscribers, names)
    many = await publish(publishers, [[client] for client in subscribers], names)
    progress(f"picows: many: {many['deliveries_per_second']:,.0f} deliveries/s")
    fanout = await open_many(args.port, args.fanout, PATH, False, args.timeout)
    everyone = f"{NAMESPACE}:all"
    await subscribe(fanout, [everyone] * len(fanout))
    one = await publish(publishers[:1], [fanout], [everyone])
    progress(f"picows: one: {one['deliveries_per_second']:,.0f} deliveries/s")
    for client in clients + fanout:
        client.transport.disconnect()
    return {"many": many, "one": one}
