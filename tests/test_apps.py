"""The echo, chat and clock apps, and permessage-deflate on the wire."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest_twisted
import websockets
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import DATA_OPCODES, Frame

from tests.conftest import Server, aio, connect
from wsapp.config import AppConfig, CompressionConfig, Config


@pytest_twisted.ensureDeferred
async def test_echo_returns_text_and_binary_as_sent(server: Server) -> None:
    """Echo sends text back as text and binary back as binary, byte for byte."""

    async def echo() -> list[Any]:
        async with websockets.connect(server.url("/echo"), max_size=2**21) as websocket:
            replies = []
            for message in ["héllo", b"\x00\xff\x10", "x" * 100_000, b""]:
                await websocket.send(message)
                replies.append(await websocket.recv())
            return replies

    assert await aio(echo()) == ["héllo", b"\x00\xff\x10", "x" * 100_000, b""]


@pytest_twisted.ensureDeferred
async def test_chat_reaches_every_other_client(server: Server) -> None:
    """A chat text goes to all other clients, not back to its sender, who gets an ack by id."""
    clients = [await connect(server.url("/chat")) for _ in range(3)]
    joined = [await client.next_of("joined") for client in clients]
    clients[0].send_action("say", text="hi all", id="m1")
    sent = await clients[0].next_of("sent")
    assert sent == {"type": "sent", "room": "lobby", "offset": 1, "id": "m1"}
    sender = joined[0]["client"]
    for other in clients[1:]:
        chat = await other.next_of("chat")
        assert {key: chat[key] for key in ("type", "room", "text")} == {
            "type": "chat",
            "room": "lobby",
            "text": "hi all",
        }
        assert chat["client"] == sender
    clients[1].send_action("say", text="x" * 4001)
    assert (await clients[1].next_event())["error"] == "invalid-argument"


@pytest_twisted.ensureDeferred
async def test_clock_pushes_utc_time_at_the_configured_interval(start_server: Any) -> None:
    """Clock clients get an ISO-8601 UTC time at once, then one per interval."""
    clock = AppConfig("wsapp.apps.clock:ClockProtocol", options={"interval": 0.05})
    server = start_server(Config(apps={"/clock": clock}))
    client = await connect(server.url("/clock"))
    times = [datetime.fromisoformat((await client.next_event())["time"]) for _ in range(4)]
    assert all(time.tzinfo == UTC for time in times)
    assert times == sorted(times)
    assert abs((datetime.now(UTC) - times[-1]).total_seconds()) < 5
    client.sendClose()
    await client.factory.closed
    assert server.factory("/clock").ticker is None


async def compressed_frames(url: str, message: dict[str, Any]) -> tuple[str, list[bool], Any]:
    """Send ``message`` with websockets; return the extension header, RSV1 bits and reply."""
    rsv1: list[bool] = []
    async with websockets.connect(url) as websocket:
        extension = websocket.protocol.extensions[0]
        assert isinstance(extension, PerMessageDeflate)
        decode = extension.decode

        def recording_decode(frame: Frame, **kwargs: Any) -> Frame:
            if frame.opcode in DATA_OPCODES:
                rsv1.append(frame.rsv1)
            return decode(frame, **kwargs)

        extension.decode = recording_decode  # type: ignore[method-assign]
        await websocket.send(json.dumps(message))
        reply = json.loads(await websocket.recv())
        header = websocket.response.headers["Sec-WebSocket-Extensions"]
    return header, rsv1, reply


@pytest_twisted.ensureDeferred
async def test_permessage_deflate_is_negotiated_and_compresses(server: Server) -> None:
    """With the websockets client, deflate is negotiated and large replies arrive as RSV1 frames."""
    text = "compress me " * 100
    header, rsv1, reply = await aio(
        compressed_frames(server.url("/echo"), {"action": "echo", "text": text})
    )
    assert header.startswith("permessage-deflate")
    assert reply["text"] == text
    assert rsv1 == [True]


@pytest_twisted.ensureDeferred
async def test_small_messages_go_uncompressed_and_deflate_can_be_turned_off(
    start_server: Any,
) -> None:
    """Messages under compression.min_size go uncompressed (the echo app compresses every
    one, as the TestSuite expects); min_size 0 compresses all; enabled=false declines."""
    server = start_server()
    _, rsv1, reply = await aio(compressed_frames(server.url("/counter"), {"action": "plus"}))
    assert reply == {"type": "state", "value": 0}
    assert rsv1 == [False]
    _, rsv1, reply = await aio(compressed_frames(server.url("/echo"), {"text": "short"}))
    assert reply == {"text": "short"}
    assert rsv1 == [True]  # the echo app compresses whatever the size

    every = start_server(Config(compression=CompressionConfig(min_size=0)))
    _, rsv1, reply = await aio(compressed_frames(every.url("/counter"), {"action": "plus"}))
    assert reply == {"type": "state", "value": 0}
    assert rsv1 == [True]

    off = start_server(Config(compression=CompressionConfig(enabled=False)))

    async def extensions() -> Any:
        async with websockets.connect(off.url("/echo")) as websocket:
            return websocket.response.headers.get("Sec-WebSocket-Extensions")

    assert await aio(extensions()) is None


@pytest_twisted.ensureDeferred
async def test_wsapp_client_offers_deflate_with_configured_windows(server: Server) -> None:
    """wsapp's client offers deflate; the server applies the configured level and windows."""
    client = await connect(server.url("/echo"), compression=CompressionConfig(level=9))
    negotiated = client._perMessageCompress
    assert negotiated is not None and negotiated.level == 9
    assert negotiated.server_max_window_bits == 12
    factory = server.factory("/echo")
    (server_side,) = list(factory.registry)
    assert server_side._perMessageCompress.level == 6
    assert server_side._perMessageCompress.mem_level == 5


@pytest_twisted.ensureDeferred
async def test_a_reply_larger_than_the_accepted_message_size_is_sent(start_server: Any) -> None:
    """max_message_size bounds what clients send: a join whose history exceeds it arrives."""
    chat = AppConfig("wsapp.apps.chat:ChatProtocol", max_message_size=4096)
    server = start_server(Config(apps={"/chat": chat}))
    sender = await connect(server.url("/chat"))
    await sender.next_of("joined")
    texts = [f"{index:02d}" + "x" * 998 for index in range(10)]
    for index, text in enumerate(texts):
        sender.send_action("say", text=text, id=str(index))
        await sender.next_of("sent")

    async def join() -> Any:
        async with websockets.connect(
            server.url("/chat"), max_size=2**20, compression=None
        ) as websocket:
            return json.loads(await websocket.recv())

    joined = await aio(join())
    assert joined["type"] == "joined"
    assert [message["text"] for message in joined["messages"]] == texts
