"""
The blocking client's frame reading: whatever a server sends and however TCP splits it.

A raw server on 127.0.0.1 answers the upgrade and writes generated frames (text and
binary in one frame or fragmented, 7-, 16- and 64-bit lengths, pings between fragments)
in chunks of generated sizes, then a close; the client must deliver exactly the messages
sent, answer every ping in order, and echo the close. Frames the client must refuse
(oversized, masked, invalid UTF-8, a new message inside a fragmented one) close the
connection with the code RFC 6455 gives, after delivering what came before them.
"""

from __future__ import annotations

import json
import socket
import threading
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Opcode
from websockets.protocol import OPEN
from websockets.uri import parse_uri
from websockets.utils import accept_key

import wsapp
from wsapp.client.link import Link
from wsapp.client.transport import Transport
from wsapp.exceptions import ConnectionClosedError


def frame(
    opcode: int, payload: bytes, fin: bool = True, masked: bool = False, rsv1: bool = False
) -> bytes:
    """One server frame (unmasked unless ``masked``), with the shortest length encoding."""
    size = len(payload)
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 0x10000:
        header = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    return header + (b"\0\0\0\0" if masked else b"") + payload


def read_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, unmasked payload) of each complete client frame in ``data``."""
    frames, position = [], 0
    while len(data) - position >= 6:
        first, second = data[position], data[position + 1]
        size, start = second & 0x7F, position + 2
        if size == 126:
            size, start = int.from_bytes(data[start : start + 2], "big"), start + 2
        elif size == 127:
            size, start = int.from_bytes(data[start : start + 8], "big"), start + 8
        mask, start = data[start : start + 4], start + 4
        if start + size > len(data):
            break
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(data[start : start + size]))
        frames.append((first & 0x0F, payload))
        position = start + size
    return frames


class RawServer:
    """Accepts one connection, answers its upgrade, writes ``chunks``, records what it gets
    up to the client's close frame."""

    def __init__(self, chunks: list[bytes], deflate: bool = False) -> None:
        self.deflate = deflate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.chunks = chunks
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        self.listener.close()
        with connection:
            connection.settimeout(10)
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(4096)
            key = next(
                line.split(b":", 1)[1].strip()
                for line in request.split(b"\r\n")
                if line.lower().startswith(b"sec-websocket-key:")
            )
            accept = accept_key(key.decode()).encode()
            extension = (
                b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                b"server_max_window_bits=12\r\n"
                if self.deflate
                else b""
            )
            connection.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                + accept
                + b"\r\n"
                + extension
                + b"\r\n"
            )
            for chunk in self.chunks:
                connection.sendall(chunk)
            # Read until the client's close frame, then close TCP, as servers do first.
            while not any(opcode == 0x8 for opcode, _ in read_frames(self.received)):
                try:
                    data = connection.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                self.received += data


# A message: (opcode, payload) sent in 1-3 frames, with a ping after the first if asked,
# compressed (where deflate was negotiated) if asked.
texts = st.one_of(
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3).map(json.dumps),
    st.text(max_size=300),
    st.sampled_from(["é" * 70_000, "x" * 125, "y" * 126, "z" * 65_535]),
)
messages = st.tuples(
    st.one_of(
        texts.map(lambda text: (0x1, text.encode())),
        st.binary(max_size=300).map(lambda data: (0x2, data)),
    ),
    st.integers(1, 3),
    st.one_of(st.none(), st.binary(max_size=125)),
    st.sampled_from(["plain", "deflate", "deflate, final block"]),
)


def deflated(payload: bytes, final: bool = False) -> bytes:
    """``payload`` compressed as a permessage-deflate message on its own (12-bit window,
    as the client asks), ending with a final block if asked (RFC 7692 allows both)."""
    compressor = zlib.compressobj(wbits=-12)
    if final:
        return compressor.compress(payload) + compressor.flush(zlib.Z_FINISH)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


def build(items: list[Any], deflate: bool = False) -> tuple[bytes, list[Any], list[bytes]]:
    """Frames for ``items``, and the messages and ping payloads the client should see."""
    stream, expected, pings = b"", [], []
    for (opcode, payload), parts, ping, kind in items:
        compressed = kind != "plain" and deflate
        sent = deflated(payload, kind.endswith("final block")) if compressed else payload
        cut = [len(sent) * index // parts for index in range(parts + 1)]
        for index in range(parts):
            stream += frame(
                opcode if index == 0 else 0x0,
                sent[cut[index] : cut[index + 1]],
                fin=index == parts - 1,
                rsv1=compressed and index == 0,
            )
            if index == 0 and ping is not None:
                stream += frame(0x9, ping)
                pings.append(ping)
        if opcode == 0x2:
            expected.append(payload)
        else:
            text = payload.decode()
            try:
                expected.append(json.loads(text))
            except ValueError:
                expected.append(text)
    return stream, expected, pings


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut into pieces of ``sizes`` (cycled); one piece if ``sizes`` is empty."""
    if not sizes:
        return [data]
    pieces, position, index = [], 0, 0
    while position < len(data):
        size = sizes[index % len(sizes)]
        pieces.append(data[position : position + size])
        position += size
        index += 1
    return pieces


def receive_all(url: str, deflate: bool = False, **options: Any) -> tuple[list[Any], int | None]:
    """Every message until the connection closes, and the close code (in another thread,
    since the test's thread may be the reactor's)."""
    outcome: list[Any] = []

    def body() -> None:
        received = []
        try:
            with wsapp.connect(url, timeout=5, compression=deflate, **options) as ws:
                assert ws.deflate == deflate
                while True:
                    try:
                        received.append(ws.recv(timeout=5))
                    except ConnectionClosedError as closed:
                        outcome.append((received, closed.code))
                        return
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(30)
    assert outcome, "the client did not finish within 30 s"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]  # type: ignore[no-any-return]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(messages, max_size=6),
    st.lists(st.integers(1, 9), max_size=3) | st.lists(st.integers(1000, 70_000), max_size=2),
    st.booleans(),
)
def test_every_message_arrives_however_tcp_splits_it(
    items: list[Any], sizes: list[int], deflate: bool
) -> None:
    """Messages arrive as sent and in order, pings are answered in order, the close echoed."""
    stream, expected, pings = build(items, deflate)
    close = frame(0x8, (1000).to_bytes(2, "big") + b"done")
    server = RawServer(split(stream + close, sizes), deflate)
    received, code = receive_all(server.url, deflate)
    server.thread.join(10)
    assert received == expected
    assert code == 1000
    sent = read_frames(server.received)
    assert [payload for opcode, payload in sent if opcode == 0xA] == pings
    assert [opcode for opcode, _ in sent if opcode != 0xA] == [0x8]


@pytest.mark.parametrize(
    ("bad", "code", "deflate"),
    [
        (frame(0x1, b"x" * 5000), 1009, False),  # over max_message_size
        (frame(0x1, b"{}", masked=True), 1002, False),  # servers must not mask
        (frame(0x1, b"\xff\xfe"), 1007, False),  # not UTF-8
        (frame(0x1, b"a", fin=False) + frame(0x1, b"b"), 1002, False),  # a message in a message
        (frame(0x0, b"c"), 1002, False),  # a continuation of nothing
        (frame(0x1, b"{}", rsv1=True), 1002, False),  # RSV1 without deflate
        (frame(0x1, b"\xff\xff\xff", rsv1=True), 1002, True),  # not deflate data
        (frame(0x1, deflated(b"x" * 5000), rsv1=True), 1009, True),  # inflates too large
        (frame(0x1, deflated(b"\xff\xfe"), rsv1=True), 1007, True),  # inflates to bad UTF-8
    ],
)
@pytest.mark.parametrize("sizes", [[], [1], [3, 1]])
def test_a_bad_frame_closes_after_what_came_before(
    bad: bytes, code: int, deflate: bool, sizes: list[int]
) -> None:
    """The messages before a bad frame arrive; then the client closes with the RFC's code."""
    before = frame(0x1, b'{"n": 1}') + frame(0x2, b"\x00" * 200)
    if deflate:
        before += frame(0x1, deflated(b'{"n": 2}'), rsv1=True)
    server = RawServer(split(before + bad + frame(0x1, b"after"), sizes), deflate)
    received, closed = receive_all(server.url, deflate, max_message_size=4096)
    server.thread.join(10)
    assert received == [{"n": 1}, b"\x00" * 200, *([{"n": 2}] if deflate else [])]
    assert closed == code
    sent = read_frames(server.received)
    assert [(opcode, payload[:2]) for opcode, payload in sent] == [(0x8, code.to_bytes(2, "big"))]


def open_protocol(deflate: bool) -> ClientProtocol:
    """An open client protocol with a 4 KiB message limit, with deflate negotiated if asked."""
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1/"), state=OPEN, max_size=4096)
    if deflate:
        protocol.extensions = [PerMessageDeflate(True, False, 12, 15)]
    return protocol


def parsed_by_websockets(data: bytes, deflate: bool) -> tuple[list[Any], list[tuple[int, bytes]]]:
    """The messages and client frames that ``websockets``' own parser makes of ``data``."""
    protocol = open_protocol(deflate)
    protocol.receive_data(data)
    messages: list[Any] = []
    parts: list[bytes] = []
    for event in protocol.events_received():
        if event.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            parts.append(event.data)
            if event.opcode is not Opcode.CONT:
                binary = event.opcode is Opcode.BINARY
            if event.fin:
                payload, parts = b"".join(parts), []
                try:
                    messages.append(payload if binary else json.loads(payload.decode()))
                except ValueError:
                    messages.append(payload.decode())
    return messages, read_frames(b"".join(protocol.data_to_send()))


chunkings = st.lists(st.integers(1, 9), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(messages, max_size=5),
    st.sampled_from(
        [
            b"",
            frame(0x9, b"p" * 125),
            frame(0x8, b"\x03\xe8"),
            frame(0x1, b"x" * 70),
            frame(0x1, b"\xff\xff", rsv1=True),
            frame(0x1, deflated(b"y" * 5000), rsv1=True),
        ]
    ),
    chunkings,
    st.booleans(),
)
def test_reads_split_anywhere_parse_as_websockets_parses_them(
    items: list[Any], last: bytes, sizes: list[int], deflate: bool
) -> None:
    """Fed in pieces of any size, a connection delivers what websockets' parser delivers
    from the whole, and sends the same frames (pongs, the close answer)."""
    stream, _, _ = build(items, deflate)
    stream += last
    expected_messages, expected_frames = parsed_by_websockets(stream, deflate)
    protocol = open_protocol(deflate)
    left, right = socket.socketpair()
    with left, right:
        link = Link(Transport(left), protocol, b"", 0)
        with link.lock:
            for piece in split(stream, sizes):
                link._receive(piece)
        assert list(link.inbox) == expected_messages
        assert read_frames(b"".join(link.outgoing)) == expected_frames
