"""Raw WebSocket tools for abuse tests: hand-made handshakes and frames over asyncio streams."""

from __future__ import annotations

import asyncio
import base64
import os
import struct

KEY = base64.b64encode(b"0123456789abcdef").decode()


def upgrade_request(path: str, headers: dict[str, str] | None = None) -> bytes:
    """The opening handshake request for ``path``, with extra ``headers``."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in (headers or {}).items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_raw(
    port: int, path: str = "/counter", headers: dict[str, str] | None = None
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """Send a handshake and read the response head; return its status and the stream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(upgrade_request(path, headers))
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return int(head.split(b" ", 2)[1]), reader, writer


async def status_of(
    port: int, path: str = "/counter", headers: dict[str, str] | None = None
) -> int:
    """The HTTP status the server answers a handshake with; the connection is then closed."""
    status, _, writer = await open_raw(port, path, headers)
    writer.close()
    return status


def client_frame(payload: bytes, opcode: int = 1, *, rsv1: bool = False) -> bytes:
    """One final, masked client frame."""
    head = bytes([0x80 | (0x40 if rsv1 else 0) | opcode])
    length = len(payload)
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 1 << 16:
        head += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", length)
    mask = os.urandom(4)
    return head + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def server_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split unmasked, unfragmented server frames off ``data``; return them and the rest."""
    frames, rest = server_frame_heads(data)
    return [(first & 0x0F, payload) for first, payload in frames], rest


def server_frame_heads(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """As :func:`server_frames`, with each frame's whole first octet (FIN, RSV, opcode)."""
    frames = []
    start = 0
    while len(data) - start >= 2:
        length, offset = data[start + 1] & 0x7F, start + 2
        if length == 126:
            if len(data) - start < 4:
                break
            length, offset = struct.unpack_from("!H", data, start + 2)[0], start + 4
        elif length == 127:
            if len(data) - start < 10:
                break
            length, offset = struct.unpack_from("!Q", data, start + 2)[0], start + 10
        if len(data) < offset + length:
            break
        frames.append((data[start], data[offset : offset + length]))
        start = offset + length
    return frames, data[start:]
