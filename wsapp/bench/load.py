"""
The load generator: raw non-blocking sockets on one epoll loop, frames masked in advance.

``python -m wsapp.bench.load WORKLOAD --port PORT --server-pid PID [options]`` runs one
workload against a server already listening on 127.0.0.1, prints progress on stderr and
one JSON object on stdout. It parses only frame headers (counting messages, answering
pings), so its CPU per message stays well below any server's; it reports its own CPU time
and the server's (``/proc/PID/stat``) over the measured interval.
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import os
import select
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

HOST = "127.0.0.1"
DEFLATE_OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
MASK = b"\x37\xfa\x21\x3d"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: One receive buffer for every socket: recv() would allocate its full size on each call.
SCRATCH = bytearray(65536)
SCRATCH_VIEW = memoryview(SCRATCH)


def masked_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A final client frame carrying ``payload`` (under 126 bytes), masked with MASK."""
    assert len(payload) < 126
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + MASK + body


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

    __slots__ = ("buffer", "closed", "deflate", "fd", "messages", "open", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buffer = bytearray()
        self.open = False
        self.closed = False
        self.deflate = False
        self.messages = 0

    def read(self) -> int:
        """Read what arrived; return how many complete data messages it finished."""
        try:
            size = self.sock.recv_into(SCRATCH)
        except BlockingIOError:
            return 0
        except OSError:
            size = 0
        if not size:
            self.closed = True
            return 0
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
                self.closed = True
            pos = end
        del buffer[:pos]
        self.messages += done
        return done


class Loop:
    """An epoll loop over client connections."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.connections: dict[int, Connection] = {}
        #: Connections closed by the server before they opened, and replaced.
        self.retried = 0

    def connect(self, path: str, deflate: bool) -> Connection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect((HOST, PORT))
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
            if time.monotonic() > deadline:
                raise RuntimeError(f"opened only {started - len(pending)} of {count} in time")
        self.retried += retried

    def settle(self, quiet: float, deadline: float) -> None:
        """Read until nothing has arrived for ``quiet`` seconds (or the deadline passes)."""
        while time.monotonic() < deadline:
            if not self.poll(quiet, lambda connection, messages: None):
                return


def progress(text: str) -> None:
    print(f"    {text}", file=sys.stderr, flush=True)


class Measure:
    """Client and server CPU, and wall time, from :meth:`start` to :meth:`stop`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def start(self) -> None:
        self.wall, self.cpu = time.monotonic(), time.process_time()
        self.server = server_cpu(self.pid)

    def stop(self, delivered: int) -> dict[str, float]:
        wall = time.monotonic() - self.wall
        server = server_cpu(self.pid) - self.server
        client = time.process_time() - self.cpu
        return {
            "seconds": wall,
            "delivered": delivered,
            "server_cpu_us_per_message": server * 1e6 / max(delivered, 1),
            "server_cpu_percent": 100 * server / wall,
            "client_cpu_percent": 100 * client / wall,
        }


def echo(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """``clients`` connections each keep ``inflight`` echo requests outstanding."""
    deadline = time.monotonic() + args.timeout
    loop.open_many(args.clients, "/echo", args.deflate, deadline)
    frame = masked_frame(b'{"action":"echo","text":"' + b"x" * 24 + b'"}')
    measure = Measure(args.server_pid)
    done = 0

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal done
        if connection.closed:
            raise RuntimeError("the server closed an echo connection")
        if messages:
            done += messages
            connection.sock.send(frame * messages)

    for connection in loop.connections.values():
        connection.sock.send(frame * args.inflight)
    measure.start()
    end = time.monotonic() + args.duration
    while time.monotonic() < end and done < args.max_messages:
        loop.poll(0.1, on_read)
    result = measure.stop(done)
    result["per_second"] = done / result["seconds"]
    progress(f"{result['per_second']:,.0f} round trips/s")
    return result


def handshakes(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """Open connections to /echo, ``clients`` at a time; each closes once it is open."""
    measure = Measure(args.server_pid)
    done = failed = 0

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal done, failed
        if connection.open:
            done += 1
            loop.close(connection)
        elif connection.closed:
            failed += 1
            loop.close(connection)

    measure.start()
    end = time.monotonic() + args.duration
    while time.monotonic() < end and done < args.max_messages:
        while len(loop.connections) < args.clients:
            loop.connect("/echo", args.deflate)
        loop.poll(0.1, on_read)
    result = measure.stop(done)
    result["per_second"] = done / result["seconds"]
    result["failed"] = failed
    progress(f"{result['per_second']:,.0f} handshakes/s, {failed} failed")
    return result


def memory(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """Server RSS per connection that has echoed one message and then stays idle."""
    deadline = time.monotonic() + args.timeout
    frame = masked_frame(b'{"type":"state","value":1234}')

    def echo_once(count: int) -> None:
        before = len(loop.connections)
        loop.open_many(count, "/echo", args.deflate, deadline)
        fresh = list(loop.connections.values())[before:]
        for connection in fresh:
            connection.sock.send(frame)
        while sum(c.messages for c in fresh) < count and time.monotonic() < deadline:
            loop.poll(0.1, lambda connection, messages: None)

    echo_once(10)  # warm up: first-use allocations are not per connection
    for connection in list(loop.connections.values()):
        loop.close(connection)
    time.sleep(0.3)
    base = server_rss(args.server_pid)
    echo_once(args.clients)
    time.sleep(0.5)
    grown = server_rss(args.server_pid) - base
    result = {"connections": args.clients, "bytes_per_connection": grown / args.clients}
    progress(f"{grown / args.clients / 1024:.1f} KiB per connection")
    return result


def fanout(args: argparse.Namespace, loop: Loop) -> dict[str, Any]:
    """Per tier of connected counter clients: one ``plus`` at a time, timed until all have it."""
    plus = masked_frame(b'{"action":"plus"}')
    results: dict[str, Any] = {}
    rounds = waiting = 0

    def on_read(connection: Connection, messages: int) -> None:
        nonlocal waiting
        if connection.closed:
            raise RuntimeError("the server closed a counter connection")
        if messages:
            if connection.messages > rounds:
                raise RuntimeError("a client got more messages than broadcasts were sent")
            if connection.messages == rounds:
                waiting -= 1

    for tier in args.tiers:
        deadline = time.monotonic() + args.timeout
        loop.open_many(tier - len(loop.connections), "/counter", args.deflate, deadline)
        loop.settle(0.3, deadline)
        connections = list(loop.connections.values())
        for connection in connections:
            connection.messages = 0
        sender = connections[0]
        measure = Measure(args.server_pid)
        latencies: list[float] = []
        measure.start()
        rounds = 0
        end = min(time.monotonic() + args.duration, deadline)
        while time.monotonic() < end and rounds < args.max_messages:
            rounds += 1
            waiting = tier
            started = time.perf_counter()
            sender.sock.send(plus)
            while waiting:
                loop.poll(1.0, on_read)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"broadcast to {tier} clients timed out")
            latencies.append(time.perf_counter() - started)
        result = measure.stop(rounds * tier)
        latencies.sort()
        result.update(
            clients=tier,
            broadcasts=rounds,
            per_second=rounds * tier / result["seconds"],
            latency_median_ms=statistics.median(latencies) * 1e3,
            latency_p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        )
        result["reconnected"] = loop.retried
        results[str(tier)] = result
        progress(
            f"{tier} clients: median {result['latency_median_ms']:.2f} ms, "
            f"p99 {result['latency_p99_ms']:.2f} ms, {result['per_second']:,.0f} deliveries/s"
        )
    return results


WORKLOADS = {"echo": echo, "handshakes": handshakes, "memory": memory, "fanout": fanout}
PORT = 0


def main(argv: list[str] | None = None) -> None:
    global PORT
    parser = argparse.ArgumentParser(prog="python -m wsapp.bench.load")
    parser.add_argument("workload", choices=sorted(WORKLOADS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--inflight", type=int, default=1)
    parser.add_argument("--tiers", type=lambda text: [int(n) for n in text.split(",")])
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--max-messages", type=int, default=10_000_000)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    PORT = args.port
    loop = Loop()
    try:
        result = WORKLOADS[args.workload](args, loop)
    except (OSError, RuntimeError) as error:
        if isinstance(error, OSError) and error.errno not in (errno.ECONNREFUSED, errno.EPIPE):
            raise
        result = {"error": str(error)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
