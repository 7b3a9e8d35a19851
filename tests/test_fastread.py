"""The receive fast path answers every sequence of bytes exactly as autobahn's parser does."""

from __future__ import annotations

import asyncio
import os
import struct
import zlib
from typing import Any

import pytest
import pytest_twisted
import websockets
from autobahn.twisted.websocket import WebSocketAdapterProtocol
from autobahn.websocket.protocol import FrameHeader, WebSocketProtocol

from tests.conftest import Server, aio
from tests.rawws import server_frames, upgrade_request
from wsapp.apps.echo import EchoProtocol
from wsapp.config import AppConfig, Config
from wsapp.fastread import STREAMING_HOOKS, FastReceiveProtocol

DEFLATE = {"Sec-WebSocket-Extensions": "permessage-deflate; client_max_window_bits"}


class AutobahnParsedEcho(EchoProtocol):
    """The echo app with a parsing hook overridden: every frame goes to autobahn's parser."""

    def onFrameBegin(self) -> None:
        super().onFrameBegin()


def frame(payload: bytes, opcode: int = 1, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A masked client frame, with the minimal length encoding."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    size = len(payload)
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    mask = os.urandom(4)
    return head + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def compressed(messages: list[bytes], opcode: int = 1) -> list[bytes]:
    """Frames of ``messages`` compressed by one permessage-deflate context."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return [
        frame((compressor.compress(m) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4], opcode, rsv=4)
        for m in messages
    ]


def fragmented(message: bytes) -> list[bytes]:
    """A compressed message in two frames: RSV1 on the first only."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = (compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]
    return [frame(data[:3], fin=False, rsv=4), frame(data[3:], 0)]


CLOSE = frame(struct.pack("!H", 1000) + b"done", 8)
TEXT = [b"", b"a", b"{}" * 62, b"x" * 126, "é€😀".encode() * 40, b"y" * 1000, b"z" * 65535]
#: name: (frames, whether deflate is offered); every case starts with a frame both accept.
CASES: dict[str, tuple[list[bytes], bool]] = {
    "pipelined": ([frame(t) for t in TEXT] + [frame(os.urandom(300), 2), CLOSE], False),
    "64-bit length": ([frame(b"a"), frame(b"b" * 70000), frame(b"c"), CLOSE], False),
    "control and fragments": (
        [
            frame(b"one"),
            frame(b"ping", 9),
            frame(b"frag", fin=False),
            frame(b"ment", 0, fin=False),
            frame(b"ed", 0),
            frame(b"pong", 10),
            frame(b"two", 2),
            CLOSE,
        ],
        False,
    ),
    "invalid utf-8": ([frame(b"ok"), frame(b"bad \xff\xfe"), frame(b"after")], False),
    "utf-8 ends inside a code point": ([frame(b"ok"), frame("é".encode()[:1])], False),
    "surrogate in utf-8": ([frame(b"ok"), frame(b"\xed\xa0\x80")], False),
    "rsv2 set": ([frame(b"ok"), frame(b"x", rsv=2), frame(b"after")], False),
    "rsv1 without deflate": ([frame(b"ok"), frame(b"x", rsv=4)], False),
    "unmasked": ([frame(b"ok"), b"\x81\x02hi", frame(b"after")], False),
    "non-minimal length": ([frame(b"ok"), b"\x81\xfe\x00\x02abcdhi"], False),
    "reserved opcode": ([frame(b"ok"), frame(b"x", 3)], False),
    "continuation outside a message": ([frame(b"ok"), frame(b"x", 0)], False),
    "close with a bad code": ([frame(b"ok"), frame(struct.pack("!H", 999), 8)], False),
    "deflate": (
        [
            *compressed([b"hello", b"hello", b"", "é€".encode() * 300]),
            frame(b"plain on deflate"),
            *compressed([os.urandom(200)], 2),
            CLOSE,
        ],
        True,
    ),
    "deflate fragments": ([frame(b"ok"), *fragmented(b"a fragmented message"), CLOSE], True),
    "deflate corrupt": ([*compressed([b"ok"]), frame(b"\xff\xff\xff\xff", rsv=4)], True),
    "deflate invalid utf-8": ([*compressed([b"ok", b"\xff\xfe"])], True),
    "deflate utf-8 ends inside a code point": ([*compressed([b"ok", "é".encode()[:1]])], True),
    "deflate control frame": ([*compressed([b"ok"]), frame(b"ping", 9, rsv=4)], True),
}
#: Cases for the apps with small limits (1 KiB frames, 100 kB messages).
LIMITED: dict[str, tuple[list[bytes], bool]] = {
    "frame too long for the app": ([frame(b"ok"), frame(b"q" * 2000), frame(b"after")], False),
    "deflate bomb": ([*compressed([b"ok", b"\0" * 200_000])], True),
}


@pytest.fixture
def pair(start_server: Any) -> Server:
    """Echo apps parsed by the fast path (/fast) and by autobahn (/autobahn), 16 MiB and 1 KiB."""
    fast, slow = "wsapp.apps.echo:EchoProtocol", f"{__name__}:AutobahnParsedEcho"
    big = {"max_message_size": 16 * 1024 * 1024, "max_frame_size": 16 * 1024 * 1024}
    small = {"max_message_size": 100_000, "max_frame_size": 1024}
    return start_server(  # type: ignore[no-any-return]
        Config(
            apps={
                "/fast": AppConfig(fast, **big),
                "/autobahn": AppConfig(slow, **big),
                "/fast-small": AppConfig(fast, **small),
                "/autobahn-small": AppConfig(slow, **small),
            }
        )
    )


async def exchange(port: int, path: str, data: bytes, deflate: bool, chunk: int | None) -> bytes:
    """Send ``data`` (in ``chunk``-byte writes); return what the server sent up to its close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.set_write_buffer_limits(0)  # type: ignore[attr-defined]
    writer.write(upgrade_request(path, DEFLATE if deflate else None))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert b" 101 " in head
    assert (b"permessage-deflate" in head) is deflate
    step = chunk or len(data)
    for start in range(0, len(data), step):
        writer.write(data[start : start + step])
        await writer.drain()
    received = b""
    while True:
        more = await asyncio.wait_for(reader.read(65536), 10)
        received += more
        frames, _ = server_frames(received)
        if not more or any(opcode == 8 for opcode, _ in frames):
            break
    writer.close()
    return received


@pytest.mark.parametrize("chunk", [None, 3], ids=["one write", "3-byte writes"])
@pytest.mark.parametrize("case", list(CASES) + list(LIMITED))
@pytest_twisted.ensureDeferred
async def test_fast_path_answers_as_autobahn_does(pair: Server, case: str, chunk: Any) -> None:
    """Replies, close code and reason are byte for byte those of autobahn's own parser."""
    frames, deflate = CASES[case] if case in CASES else LIMITED[case]
    suffix = "-small" if case in LIMITED else ""
    data = b"".join(frames)
    if chunk and len(data) > 20_000:
        pytest.skip("large frames in 3-byte writes take too long")
    fast = await aio(exchange(pair.port, f"/fast{suffix}", data, deflate, chunk))
    slow = await aio(exchange(pair.port, f"/autobahn{suffix}", data, deflate, chunk))
    assert fast == slow
    assert server_frames(fast)[0][-1][0] == 8  # it ended with the server's close frame


def test_classes_keeping_autobahns_hooks_take_the_fast_path() -> None:
    """wsapp's apps take the fast path; a class overriding a parsing hook does not."""
    assert EchoProtocol._keeps_autobahn_hooks()
    assert not AutobahnParsedEcho._keeps_autobahn_hooks()

    class StreamingEcho(EchoProtocol):
        def onMessageFrameData(self, payload: bytes) -> None:
            super().onMessageFrameData(payload)

    assert not StreamingEcho._keeps_autobahn_hooks()


@pytest.mark.parametrize("compression", [None, "deflate"])
@pytest_twisted.ensureDeferred
async def test_websockets_client_one_frame_per_send(server: Server, compression: Any) -> None:
    """A third-party client sending each request on its own gets every reply, in order."""
    messages = [f'{{"action":"echo","text":"{n}"}}' for n in range(200)]

    async def run() -> list[str]:
        url = server.url("/echo")
        async with websockets.connect(url, compression=compression) as ws:
            replies = []
            for message in messages:
                await ws.send(message)
                replies.append(await ws.recv())
            return replies  # type: ignore[return-value]

    assert await aio(run()) == messages


#: What the fast path assumes of autobahn: the attributes and methods it reads, sets or
#: calls, by the function of autobahn's where they appear.
AUTOBAHN_NAMES = {
    WebSocketProtocol._dataReceived: ["incomingOctetsWireLevel", "data", "consumeData"],
    WebSocketProtocol.processData: [
        "current_frame",
        "current_frame_masker",
        "applyMask",
        "onFrameBegin",
        "onFrameData",
        "onFrameEnd",
        "_perMessageCompress",
    ],
    WebSocketProtocol.onFrameBegin: [
        "inside_message",
        "_isMessageCompressed",
        "start_decompress_message",
        "utf8validateIncoming",
        "utf8validateIncomingCurrentMessage",
        "utf8validateLast",
        "_onMessageBegin",
        "_onMessageFrameBegin",
    ],
    WebSocketProtocol.onFrameData: [
        "decompress_message_data",
        "incomingOctetsWebSocketLevel",
        "incomingOctetsAppLevel",
    ],
    WebSocketProtocol.onFrameEnd: [
        "incomingWebSocketFrames",
        "incomingWebSocketMessages",
        "autoPingTimeoutCall",
        "autoPingRestartOnAnyTraffic",
        "_cancelAutoPingTimeoutCall",
        "end_decompress_message",
        "_onMessageEnd",
    ],
    WebSocketProtocol.onMessageFrameBegin: ["maxMessagePayloadSize", "maxFramePayloadSize"],
    WebSocketAdapterProtocol._onMessageEnd: ["onMessageEnd"],
}


def test_autobahn_internals_are_where_the_fast_path_expects() -> None:
    """Every autobahn internal wsapp.fastread reads or replaces exists where it was."""
    moved = [
        f"{function.__qualname__} no longer uses {name!r}"
        for function, names in AUTOBAHN_NAMES.items()
        for name in names
        if name not in function.__code__.co_names
    ]
    moved += [
        f"autobahn has no {name}"
        for name in STREAMING_HOOKS
        if name not in vars(WebSocketAdapterProtocol) and name not in vars(WebSocketProtocol)
    ]
    header = FrameHeader(1, True, 0, 3, b"mask")  # type: ignore[arg-type]
    moved += [
        f"FrameHeader has no {name}"
        for name in ("opcode", "fin", "rsv", "length", "mask")
        if not hasattr(header, name)
    ]
    if not issubclass(EchoProtocol, FastReceiveProtocol):
        moved.append("the apps no longer derive from FastReceiveProtocol")
    assert not moved, (
        "autobahn changed internals that wsapp/fastread.py relies on; adapt it before "
        "widening the pins in pyproject.toml: " + "; ".join(moved)
    )
