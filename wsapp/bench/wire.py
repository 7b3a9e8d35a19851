"""
The load generator's client side: raw non-blocking sockets on one epoll loop.

Client frames are masked in advance; only frame headers of what the server sends are
parsed (counting messages, answering pings), so a delivery costs the client a few
microseconds. Also reads a server process's CPU time and memory from ``/proc``.
"""

from __future__ import annotations

import base64
import os
import select
import socket
import sys
import time
from collections.abc import Callable

__all__ = [
    "CLOSE_FRAME",
    "Connection",
    "Loop",
    "handshake_request",
    "masked_frame",
    "server_cpu",
    "server_rss",
]

HOST = "127.0.0.1"
DEFLATE_OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
MASK = b"\x37\xfa\x21\x3d"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: One receive buffer for every socket: recv() would allocate its full size on each call.
SCRATCH = bytearray(65536)
SCRATCH_VIEW = memoryview(SCRATCH)


def masked_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A final client frame carrying ``payload`` (under 64 KiB), masked with MASK."""
    size = len(payload)
    assert size < 65536
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    if size < 126:
        return bytes([0x80 | opcode, 0x80 | size]) + MASK + body
    return bytes([0x80 | opcode, 0x80 | 126]) + size.to_bytes(2, "big") + MASK + body


#: The client's Close frame: status 1000 (normal closure).
CLOSE_FRAME = masked_frame((1000).to_bytes(2, "big"), 8)


def handshake_request(path: str, deflate: bool) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (
        (
            f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Origin: http://127.0.0.1\r\n"
        ).encode()
        + b"Sec-WebSocket-Key: "
        + key
        + b"\r\n"
        + (DEFLATE_OFFER if deflate else b"")
        + b"\r\n"
    )


def server_cpu(pid: int) -> float:
    """Seconds of CPU (user + system) process ``pid`` has used."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def server_rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class Connection:
    """One client socket: handshake, then frames counted by :meth:`read`."""

    __slots__ = (
        "buffer",
        "close_received",
        "closed",
        "deflate",
        "eof",
        "fd",
        "messages",
        "open",
        "received",
        "sock",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buffer = bytearray()
        self.open = False
        self.closed = False
        self.deflate = False
        self.messages = 0
        #: Bytes read from the socket (the handshake response included).
        self.received = 0
        #: The server's Close frame arrived; the server closed the TCP connection.
        self.close_received = False
        self.eof = False

    def read(self) -> int:
        """Read what arrived; return how many complete data messages it finished."""
        try:
            size = self.sock.recv_into(SCRATCH)
        except BlockingIOError:
            return 0
        except OSError:
            size = 0
        if not size:
            self.closed = self.eof = True
            return 0
        self.received += size
        buffer = self.buffer
        length = SCRATCH[1] & 0x7F
        if (
            not buffer
            and self.open
            and length < 126
            and size == 2 + length
            and SCRATCH[0] & 0xF < 3
        ):
            # the common case: exactly one small data frame arrived
            done = SCRATCH[0] >> 7
            self.messages += done
            return done
        buffer += SCRATCH_VIEW[:size]
        if not self.open:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return 0
            head = bytes(buffer[:end]).lower()
            if not head.startswith(b"http/1.1 101"):
                raise RuntimeError(f"handshake refused: {head[:60]!r}")
            self.deflate = b"permessage-deflate" in head
            self.open = True
            del buffer[: end + 4]
        return self.parse()

    def parse(self) -> int:
        buffer = self.buffer
        size = len(buffer)
        pos = done = 0
        while size - pos >= 2:
            first, length = buffer[pos], buffer[pos + 1] & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            end = pos + head + length
            if end > size:
                break
            opcode = first & 0x0F
            if opcode < 3:
                done += first >> 7
            elif opcode == 9:
                self.sock.send(masked_frame(bytes(buffer[pos + head : end]), 10))
            elif opcode == 8:
                self.closed = self.close_received = True
            pos = end
        del buffer[:pos]
        self.messages += done
        return done


class Loop:
    """An epoll loop over client connections to port ``port`` on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.epoll = select.epoll()
        self.connections: dict[int, Connection] = {}
        #: Connections closed by the server before they opened, and replaced.
        self.retried = 0

    def connect(self, path: str, deflate: bool) -> Connection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((HOST, self.port))
        sock.setblocking(False)
        sock.send(handshake_request(path, deflate))
        connection = Connection(sock)
        self.connections[connection.fd] = connection
        self.epoll.register(connection.fd, select.EPOLLIN)
        return connection

    def close(self, connection: Connection) -> None:
        self.connections.pop(connection.fd, None)
        try:
            self.epoll.unregister(connection.fd)
        except (OSError, ValueError):
            pass
        connection.sock.close()

    def poll(self, timeout: float, on_read: Callable[[Connection, int], None]) -> int:
        """Wait up to ``timeout`` s; call ``on_read(connection, messages)`` for each readable."""
        events = self.epoll.poll(timeout, 4096)
        connections = self.connections
        for fd, _ in events:
            connection = connections.get(fd)
            if connection is not None:
                on_read(connection, connection.read())
        return len(events)

    def open_many(self, count: int, path: str, deflate: bool, deadline: float) -> None:
        """
        Open ``count`` more connections, at most 20 handshakes at a time.

        A connection the server closes before it opens (its opening-handshake timeout
        under load) is replaced, up to ``count`` times.
        """
        pending: set[Connection] = set()
        started = retried = 0
        report = time.monotonic() + 10

        def on_read(connection: Connection, messages: int) -> None:
            nonlocal retried
            if connection.closed:
                pending.discard(connection)
                self.close(connection)
                retried += 1
                if retried > count:
                    raise RuntimeError("the server closed too many connections while opening")
                pending.add(self.connect(path, deflate))
            elif connection.open:
                pending.discard(connection)

        while started < count or pending:
            while started < count and len(pending) < 20:
                pending.add(self.connect(path, deflate))
                started += 1
            self.poll(0.05, on_read)
            now = time.monotonic()
            if now > deadline:
                raise RuntimeError(f"opened only {started - len(pending)} of {count} in time")
            if now > report:
                report = now + 10
                print(f"    opened {started - len(pending):,} of {count:,}", file=sys.stderr)
        self.retried += retried

    def settle(self, quiet: float, deadline: float) -> None:
        """Read until nothing has arrived for ``quiet`` seconds (or the deadline passes)."""
        while time.monotonic() < deadline:
            if not self.poll(quiet, lambda connection, messages: None):
                return
