"""The picows client of the cross-check load generator (:mod:`wsapp.bench.picowsload`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .wire import DEFLATE_OFFER, HOST

__all__ = ["Client", "connect", "open_many", "settle"]

#: The extension offer of :mod:`wsapp.bench.wire`, as a header for picows.
OFFER = DEFLATE_OFFER.decode().split(":", 1)[1].strip()


def header_size(payload: int) -> int:
    """Bytes of an unmasked server frame's header for a ``payload``-byte payload."""
    return 2 if payload < 126 else 4 if payload < 65536 else 10


class Client:
    """One picows connection: counts complete data messages and the bytes of their frames."""

    def __init__(self) -> None:
        from picows import WSListener, WSMsgType

        client = self
        data = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)
        close = WSMsgType.CLOSE
        self.messages = 0
        self.received = 0
        self.close_received = False
        self.deflate = False
        self.on_message: Any = None
        self.transport: Any = None
        #: The channel this client is a member of (the channels workload).
        self.channel = 0

        class Listener(WSListener):
            def on_ws_connected(self, transport: Any) -> None:
                client.transport = transport

            def on_ws_frame(self, transport: Any, frame: Any) -> None:
                kind = frame.msg_type
                if kind in data:
                    client.received += frame.payload_size + header_size(frame.payload_size)
                    if frame.fin:
                        client.messages += 1
                        if client.on_message is not None:
                            client.on_message(client, frame)
                elif kind == close:
                    client.close_received = True

        self.listener = Listener()


async def connect(port: int, path: str, deflate: bool) -> Client:
    """One open connection to ``path`` on the server at ``port``, offering deflate if asked."""
    from picows import ws_connect

    client = Client()
    headers = {"Sec-WebSocket-Extensions": OFFER} if deflate else None
    transport, _ = await ws_connect(
        lambda: client.listener,
        f"ws://{HOST}:{port}{path}",
        extra_headers=headers,
        websocket_handshake_timeout=None,
    )
    response = transport.response
    extensions = response.headers.get("sec-websocket-extensions", "") if response else ""
    client.deflate = "permessage-deflate" in str(extensions)
    return client


async def open_many(
    port: int, count: int, path: str, deflate: bool, timeout: float
) -> list[Client]:
    """``count`` open connections to ``port``, at most 20 handshakes at a time."""
    gate = asyncio.Semaphore(20)

    async def one() -> Client:
        async with gate:
            return await connect(port, path, deflate)

    return list(await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), timeout))


async def settle(clients: list[Client], quiet: float, timeout: float) -> None:
    """Wait until no message has arrived for ``quiet`` seconds (at most ``timeout``)."""
    end = time.monotonic() + timeout
    seen = -1
    while time.monotonic() < end:
        now = sum(client.messages for client in clients)
        if now == seen:
            return
        seen = now
        await asyncio.sleep(quiet)
