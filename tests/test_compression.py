"""permessage-deflate: the shared compressor, broadcasts compressed once, and negotiation."""

from __future__ import annotations

import asyncio
import json
import struct
import zlib
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted
import websocket as websocket_client
import websockets

from tests.conftest import Server, aio, connect
from tests.rawws import client_frame, open_raw, server_frame_heads
from wsapp.compression import (
    LeveledPerMessageDeflate,
    SharedCompressor,
    compressed_frame,
    shared_compressor,
)
from wsapp.config import CompressionConfig, Config

#: Chat-sized and compressible: repeats within a message and across messages.
TEXTS = [f"message {n}: " + "the quick brown fox jumps over the lazy dog " * 30 for n in range(4)]


def test_shared_compressor_output_is_a_fresh_compressors() -> None:
    """Each message is the bytes a fresh compressor makes, and decodes with or without context."""
    shared = SharedCompressor(6, 12, 5)
    continuing = zlib.decompressobj(-12)
    for text in [*TEXTS, ""]:
        payload = text.encode()
        fresh = zlib.compressobj(6, zlib.DEFLATED, -12, 5)
        expected = (fresh.compress(payload) + fresh.flush(zlib.Z_SYNC_FLUSH))[:-4]
        data = shared.compress(payload)
        assert data == expected
        tail = b"\x00\x00\xff\xff"
        assert zlib.decompressobj(-12).decompress(data + tail) == payload
        assert continuing.decompress(data + tail) == payload


def test_one_shared_compressor_per_setting_and_frame_headers() -> None:
    """shared_compressor is one object per (level, window, memory level); frames are RSV1 text."""
    assert shared_compressor(6, 12, 5) is shared_compressor(6, 12, 5)
    assert shared_compressor(6, 12, 5) is not shared_compressor(6, 11, 5)
    negotiated = LeveledPerMessageDeflate(True, True, False, 12, 12, 5)
    frame, size = compressed_frame(b"x" * 100, negotiated)
    assert frame[0] == 0xC1 and frame[1] == size == len(frame) - 2
    noise = bytes(range(256)) * 2  # over 125 bytes compressed: a 16-bit length
    frame, size = compressed_frame(noise, negotiated)
    assert frame[:2] == b"\xc1\x7e" and struct.unpack("!H", frame[2:4])[0] == size > 125
    assert zlib.decompressobj(-12).decompress(frame[4:] + b"\x00\x00\xff\xff") == noise


def test_streamed_messages_do_not_share_a_busy_compressor() -> None:
    """A message started while the shared compressor is in use gets a compressor of its own."""
    first = LeveledPerMessageDeflate(True, True, False, 12, 12, 5)
    second = LeveledPerMessageDeflate(True, True, False, 12, 12, 5)
    first.start_compress_message()
    head = first.compress_message_data(TEXTS[0].encode())
    second.start_compress_message()
    other = second.compress_message_data(TEXTS[1].encode()) + second.end_compress_message()
    head += first.compress_message_data(TEXTS[2].encode()) + first.end_compress_message()
    tail = b"\x00\x00\xff\xff"
    assert zlib.decompressobj(-12).decompress(head + tail) == (TEXTS[0] + TEXTS[2]).encode()
    assert zlib.decompressobj(-12).decompress(other + tail) == TEXTS[1].encode()
    assert first._compressor is None and second._compressor is None
    assert not shared_compressor(6, 12, 5).busy


def test_a_broadcast_while_a_message_is_streamed_and_an_abandoned_message() -> None:
    """A broadcast compressed mid-stream leaves the stream whole; an abandoned one is dropped."""
    streamed = LeveledPerMessageDeflate(True, True, False, 12, 12, 5)
    streamed.start_compress_message()
    head = streamed.compress_message_data(TEXTS[0].encode())
    frame, _ = compressed_frame(TEXTS[1].encode(), streamed)
    head += streamed.end_compress_message()
    tail = b"\x00\x00\xff\xff"
    assert zlib.decompressobj(-12).decompress(head + tail) == TEXTS[0].encode()
    ((_, payload),) = read_frames(frame)
    assert zlib.decompressobj(-12).decompress(payload + tail) == TEXTS[1].encode()
    streamed.start_compress_message()
    streamed.compress_message_data(TEXTS[2].encode())
    streamed.start_compress_message()  # the previous message was abandoned
    data = streamed.compress_message_data(TEXTS[3].encode()) + streamed.end_compress_message()
    assert zlib.decompressobj(-12).decompress(data + tail) == TEXTS[3].encode()


def read_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The whole server frames at the start of ``data``: (first octet, payload)."""
    return server_frame_heads(data)[0]


async def raw_frames(port: int, ready: asyncio.Event) -> list[tuple[int, bytes]]:
    """A deflate client on /echo, as browsers offer it: the first frame it gets."""
    offer = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
    status, reader, writer = await open_raw(port, "/echo", offer)
    assert status == 101
    ready.set()
    data = b""
    while not read_frames(data):
        data += await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    return read_frames(data)


@pytest.mark.parametrize("takeover", [False, True], ids=["shared", "context-takeover"])
@pytest_twisted.ensureDeferred
async def test_broadcast_compressed_once_decodes_everywhere(
    start_server: Any, takeover: bool
) -> None:
    """
    A broadcast reaches deflate and plain clients of websockets, websocket-client, autobahn
    and raw sockets, compressed once (the same bytes on every deflate connection), and
    each client's own messages before and after it still decode.
    """
    compression = CompressionConfig(server_no_context_takeover=not takeover)
    server: Server = start_server(replace(Config(), compression=compression))
    url = server.url("/echo")
    ready = [asyncio.Event(), asyncio.Event()]
    raw = [asyncio.ensure_future(raw_frames(server.port, event)) for event in ready]
    autobahn = await connect(url, compression=compression)
    deflate = await aio(websockets.connect(url, compression="deflate"))
    plain = await aio(websockets.connect(url, compression=None))
    sync = await aio(asyncio.to_thread(websocket_client.create_connection, url, timeout=5))
    for event in ready:
        await aio(event.wait())

    async def echo(client: Any, text: str) -> None:
        await client.send(json.dumps({"text": text}))
        assert json.loads(await asyncio.wait_for(client.recv(), 5)) == {"text": text}

    for client in (deflate, plain):
        await aio(echo(client, TEXTS[0]))
    autobahn.sendMessage(json.dumps({"text": TEXTS[0]}).encode())
    assert (await autobahn.next_event()) == {"text": TEXTS[0]}

    factory = server.factory("/echo")
    assert factory.broadcast({"type": "news", "text": TEXTS[1]}) == 6
    news = {"type": "news", "text": TEXTS[1]}
    for client in (deflate, plain):
        assert json.loads(await aio(asyncio.wait_for(client.recv(), 5))) == news
    assert (await autobahn.next_event()) == news
    assert json.loads(await aio(asyncio.to_thread(sync.recv))) == news
    frames = [await aio(task) for task in raw]
    assert frames[0] == frames[1] and frames[0][0][0] == 0xC1  # the same compressed frame
    inflated = zlib.decompressobj(-12).decompress(frames[0][0][1] + b"\x00\x00\xff\xff")
    assert json.loads(inflated) == news

    for text in TEXTS[:3]:  # after the broadcast: each connection's own compressor, if any
        for client in (deflate, plain):
            await aio(echo(client, text))
        autobahn.sendMessage(json.dumps({"text": text}).encode())
        assert (await autobahn.next_event()) == {"text": text}
    await aio(asyncio.to_thread(sync.send, json.dumps({"text": TEXTS[2]})))
    assert json.loads(await aio(asyncio.to_thread(sync.recv))) == {"text": TEXTS[2]}
    negotiated = [c._perMessageCompress for c in factory.registry if c._perMessageCompress]
    assert [n.server_no_context_takeover for n in negotiated] == [not takeover] * 2
    await aio(deflate.close())
    await aio(plain.close())
    await aio(asyncio.to_thread(sync.close))
    autobahn.sendClose()
    await autobahn.factory.closed


@pytest_twisted.ensureDeferred
async def test_negotiation_with_browser_websockets_and_autobahn_offers(server: Server) -> None:
    """Chrome's, websockets' and autobahn's offers get the shared compressor's answer."""
    chrome = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}
    status, reader, writer = await aio(open_raw(server.port, "/echo", chrome))
    assert status == 101
    writer.write(client_frame(json.dumps({"text": TEXTS[0]}).encode()))
    (first, payload), *_ = read_frames(await aio(asyncio.wait_for(reader.read(65536), 5)))
    assert first == 0xC1
    writer.close()
    inflated = zlib.decompressobj(-12).decompress(payload + b"\x00\x00\xff\xff")
    assert json.loads(inflated) == {"text": TEXTS[0]}
    (connection,) = [c for c in server.factory("/echo").registry]
    assert connection.websocket_extensions_in_use[0].client_max_window_bits == 12
    assert connection._perMessageCompress._compressor is None  # none kept between messages

    async def websockets_client() -> str:
        async with websockets.connect(server.url("/echo")) as client:
            await client.send(json.dumps({"text": TEXTS[1]}))
            assert json.loads(await client.recv()) == {"text": TEXTS[1]}
            return str(client.response.headers["Sec-WebSocket-Extensions"])

    header = await aio(websockets_client())
    assert header == ("permessage-deflate; server_no_context_takeover; client_max_window_bits=12")

    autobahn = await connect(server.url("/echo"))
    negotiated = autobahn._perMessageCompress
    assert negotiated.server_no_context_takeover and negotiated.server_max_window_bits == 12
    autobahn.sendClose()
    await autobahn.factory.closed


@pytest_twisted.ensureDeferred
async def test_client_no_context_takeover_frees_the_inflater(start_server: Any) -> None:
    """With client_no_context_takeover a connection keeps no zlib stream between messages."""
    compression = CompressionConfig(client_no_context_takeover=True)
    server: Server = start_server(replace(Config(), compression=compression))

    async def echo() -> str:
        async with websockets.connect(server.url("/echo")) as client:
            for text in TEXTS[:2]:
                await client.send(json.dumps({"text": text}))
                assert json.loads(await client.recv()) == {"text": text}
            (connection,) = list(server.factory("/echo").registry)
            negotiated = connection._perMessageCompress
            assert negotiated._compressor is None and negotiated._decompressor is None
            return str(client.response.headers["Sec-WebSocket-Extensions"])

    header = await aio(echo())
    assert "client_no_context_takeover" in header
