"""A connection's lifecycle: its start and end as autobahn's, timers, the access log."""

from __future__ import annotations

import io
import socket
import time
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
import txaio
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, formatTime, timeFormatRFC3339

from tests.conftest import LogCapture, Server, connect
from wsapp import accesslog
from wsapp.bench.wire import handshake_request
from wsapp.handshake import MIRRORED, source_digest
from wsapp.timers import BucketTimer

#: A masked client Close frame with code 1000.
CLOSE_1000 = bytes([0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xE8 ^ 2])


def test_autobahn_code_mirrored_by_wsapp_handshake_is_unchanged() -> None:
    """Each autobahn method wsapp.handshake mirrors has the source it was written from."""
    moved = [name for name, digest in MIRRORED.items() if source_digest(name) != digest]
    assert not moved, (
        "autobahn changed code that wsapp/handshake.py mirrors; compare the new source, "
        "adapt the override, then update its digest in MIRRORED: " + ", ".join(moved)
    )


def _state(connection: Any) -> dict[str, Any]:
    """A connection's attributes that are plain values, as autobahn leaves them."""
    plain = (bool, int, float, str, bytes, type(None))
    return {name: value for name, value in vars(connection).items() if isinstance(value, plain)}


@pytest_twisted.ensureDeferred
async def test_connections_start_as_autobahns_own_code_starts_them(server: Server) -> None:
    """With debug logging (autobahn's own methods) or without, an open connection is the same."""
    states = []
    for level in ("info", "debug"):
        txaio.set_global_log_level(level)
        try:
            client = await connect(server.url("/echo"))
        finally:
            txaio.set_global_log_level("info")
        (connection,) = server.factory("/echo").registry
        states.append(_state(connection))
        assert connection.openHandshakeTimeoutCall is None  # cancelled once open
        assert connection.utf8validator is not None
        client.sendClose()
        await client.factory.closed
    fast, autobahn = states
    # per handshake: the client key and port, the time, the id
    different = {
        "client_id",
        "peer",
        "_last_received",
        "http_request_data",
        "http_response_data",
        "_wskey",
    }
    assert fast.keys() == autobahn.keys()
    assert {k: v for k, v in fast.items() if k not in different} == {
        k: v for k, v in autobahn.items() if k not in different
    }


def _close_after_open(port: int, deflate: bool) -> tuple[bytes, bytes]:
    """Open /echo, send Close; return the server's response head and all it sent after."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(handshake_request("/echo", deflate))
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            assert chunk, "closed during the opening handshake"
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        sock.sendall(CLOSE_1000)
        while chunk := sock.recv(4096):  # until the server closes the TCP connection
            rest += chunk
        return head, rest


@pytest.mark.parametrize("deflate", [False, True])
@pytest_twisted.ensureDeferred
async def test_closing_handshake_is_answered_and_the_connection_closed(
    server: Server, log_events: LogCapture, deflate: bool
) -> None:
    """A client's Close gets the server's Close (same code), then the server closes TCP."""
    factory = server.factory("/echo")
    for _ in range(3):
        head, rest = await deferToThread(_close_after_open, server.port, deflate)
        assert head.startswith(b"HTTP/1.1 101 ")
        assert (b"permessage-deflate" in head) == deflate
        assert rest == b"\x88\x02\x03\xe8"
    assert not list(factory.registry)
    assert factory.countConnections == 0
    accepted = [m for m in log_events.messages() if " GET /echo 101 user: - extensions: " in m]
    assert len(accepted) == 3


def test_access_log_lines_are_literal_text() -> None:
    """Braces in a logged path are text, and the event keeps the line's parts as fields."""
    from twisted.logger import Logger

    events: list[dict[str, Any]] = []
    protocol = SimpleNamespace(
        peer="tcp4:127.0.0.1:5", http_request_path="/a{b}", http_request_uri="/a{b}?token=x"
    )
    original = accesslog.log
    accesslog.log = Logger(namespace="wsapp.server", observer=events.append)
    try:
        accesslog.accepted(protocol, "alice", "none")
        accesslog.refused(protocol, 403, "origin {not} allowed")
    finally:
        accesslog.log = original
    assert [formatEvent(event) for event in events] == [
        "tcp4:127.0.0.1:5 GET /a{b}?token=REDACTED 101 user: alice extensions: none",
        "tcp4:127.0.0.1:5 GET /a{b}?token=REDACTED 403 (origin {not} allowed)",
    ]
    assert events[0]["user"] == "alice" and events[1]["status"] == 403
    assert all(event["log_system"] == "wsapp.server#info" for event in events)


def test_twisteds_text_observer_uses_the_timestamp_cache() -> None:
    """textFileLogObserver (twistd's log) still looks formatTime up where wsapp replaced it."""
    from twisted.logger import textFileLogObserver

    accesslog.install_timestamp_cache()
    out = io.StringIO()
    before = accesslog._second.cache_info()
    textFileLogObserver(out)({"log_format": "x", "log_time": 1e9 + 1.5})
    after = accesslog._second.cache_info()
    assert after.hits + after.misses == before.hits + before.misses + 1, (
        "Twisted's text log observer no longer calls twisted.logger._file.formatTime; "
        "adapt wsapp/accesslog.py"
    )
    assert out.getvalue() == formatTime(1e9 + 1.5, timeFormatRFC3339) + " [-#-] x\n"


@pytest.mark.parametrize("format", [timeFormatRFC3339, "%H:%M:%S.%f", "%s"])
def test_cached_timestamps_are_twisteds_text(format: str) -> None:
    """The observers' timestamp cache gives Twisted's own text, within a second and across."""
    from twisted.logger import _file

    accesslog.install_timestamp_cache()
    assert _file.formatTime is accesslog._cached_format_time  # type: ignore[attr-defined]
    now = time.time()
    for when in (now, now + 0.25, now + 0.999, now + 1, 0.5, 1e9 + 0.75):
        assert accesslog._cached_format_time(when, format) == formatTime(when, format)
    assert accesslog._cached_format_time(None, format) == "-"
    assert accesslog._cached_format_time(now, None) == "-"


def test_bucket_timer_never_calls_early_and_forgets_cancelled_calls() -> None:
    """A call runs once, no sooner than asked and within one bucket; a cancelled one never."""
    clock = Clock()
    clock.advance(1000.03)
    timer = BucketTimer(clock, bucket=0.2)
    ran: list[tuple[str, float]] = []
    timer.call_later(1.0, lambda name: ran.append((name, clock.seconds())), "a")
    cancelled = timer.call_later(1.0, ran.append, "never")
    timer.call_later(0.5, lambda: ran.append(("b", clock.seconds())))
    cancelled.cancel()
    cancelled.cancel()
    for _ in range(30):
        clock.advance(0.05)
    assert [name for name, _ in ran] == ["b", "a"]
    (b_at, a_at) = (at for _, at in ran)
    assert 1000.53 <= b_at <= 1000.53 + 0.2 + 1e-9
    assert 1001.03 <= a_at <= 1001.03 + 0.2 + 1e-9
    assert not timer._buckets


def test_bucket_timer_runs_a_full_bucket_in_chunks() -> None:
    """A bucket of more calls than a chunk runs one chunk per reactor turn, in order."""
    clock = Clock()
    timer = BucketTimer(clock, bucket=0.2, chunk=2)
    ran: list[tuple[int, int]] = []

    def run(number: int) -> None:
        ran.append((number, len(clock.getDelayedCalls())))  # the next chunk, waiting

    for number in range(5):
        timer.call_later(0.1, run, number)
    clock.advance(0.2)
    assert ran == [(0, 1), (1, 1), (2, 1), (3, 1), (4, 0)]


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
EXT = "Sec-WebSocket-Extensions"
AUTOBAHN_OFFER = (
    "permessage-deflate; client_no_context_takeover; client_max_window_bits; "
    "server_max_window_bits=10"
)

#: Opening handshakes, well-formed and not, each as headers after the request line.
HANDSHAKES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "plain": ("GET /echo HTTP/1.1", []),
    "query": ("GET /echo?a=1&b=2&a=3 HTTP/1.1", []),
    "fragment": ("GET /echo#part HTTP/1.1", []),
    "post": ("POST /echo HTTP/1.1", []),
    "chrome deflate": ("", [(EXT, "permessage-deflate; client_max_window_bits")]),
    "firefox deflate": ("", [(EXT, "permessage-deflate")]),
    "autobahn deflate": ("", [(EXT, AUTOBAHN_OFFER)]),
    "bad deflate parameter": ("", [(EXT, "permessage-deflate; server_max_window_bits=99")]),
    "unknown extension": ("", [(EXT, "x-unknown; a=1, permessage-deflate")]),
    "extensions twice": ("", [(EXT, "permessage-deflate"), (EXT, "permessage-deflate")]),
    "listed origin": ("", [("Origin", "https://app.example")]),
    "unlisted origin": ("", [("Origin", "https://evil.example")]),
    "null origin": ("", [("Origin", "null")]),
    "origin without host": ("", [("Origin", "https://")]),
    "origin twice": ("", [("Origin", "https://app.example"), ("Origin", "https://app.example")]),
    "version 8": ("", [("Sec-WebSocket-Version", "8"), ("Sec-WebSocket-Origin", "https://app.example")]),
    "version 12": ("", [("Sec-WebSocket-Version", "12")]),
    "version not a number": ("", [("Sec-WebSocket-Version", "x")]),
    "version twice": ("", [("Sec-WebSocket-Version", "13"), ("Sec-WebSocket-Version", "13")]),
    "key too short": ("", [("Sec-WebSocket-Key", "abc==")]),
    "key bad character": ("", [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZ*==")]),
    "key twice": ("", [("Sec-WebSocket-Key", KEY), ("Sec-WebSocket-Key", KEY)]),
    "no key": ("", [("Sec-WebSocket-Key", None)]),  # type: ignore[list-item]
    "host with port": ("", [("Host", "127.0.0.1:8000")]),
    "host with a bad port": ("", [("Host", "127.0.0.1:x")]),
    "host twice": ("", [("Host", "a"), ("Host", "b")]),
    "subprotocols": ("", [("Sec-WebSocket-Protocol", "a, b")]),
    "subprotocol twice": ("", [("Sec-WebSocket-Protocol", "a, a")]),
    "upgrade among others": (
        "", [("Upgrade", "h2c, WebSocket"), ("Connection", "keep-alive, Upgrade")]
    ),
    "connection without upgrade": ("", [("Connection", "keep-alive")]),
}  # fmt: skip


def _request(name: str) -> bytes:
    line, changes = HANDSHAKES[name]
    headers: dict[str, list[str]] = {
        "Host": ["127.0.0.1"],
        "Upgrade": ["websocket"],
        "Connection": ["Upgrade"],
        "Sec-WebSocket-Version": ["13"],
        "Sec-WebSocket-Key": [KEY],
    }
    replaced: set[str] = set()
    for header, value in changes:
        values = headers.setdefault(header, [])
        if header not in replaced:
            values.clear()
            replaced.add(header)
        if value is not None:
            values.append(value)
    lines = [line or "GET /echo HTTP/1.1"]
    lines += [f"{header}: {value}" for header, values in headers.items() for value in values]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(port: int, request: bytes) -> bytes:
    """Send ``request`` (then a Close once open); return all the server sent until it closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                return received
            received += chunk
        if received.startswith(b"HTTP/1.1 101 "):
            sock.sendall(CLOSE_1000)
        while chunk := sock.recv(4096):
            received += chunk
        return received


@pytest.mark.parametrize("name", list(HANDSHAKES))
@pytest_twisted.ensureDeferred
async def test_every_handshake_is_answered_as_autobahns_own_code_answers_it(
    start_server: Any, name: str
) -> None:
    """Well-formed or not, a handshake gets the same bytes back, debug logging on or off
    (autobahn's own methods then run)."""
    from wsapp.config import Config

    server = start_server(Config(origins=("https://app.example",)))
    answers = []
    for level in ("info", "info", "debug"):  # the second one meets what the first one cached
        txaio.set_global_log_level(level)
        try:
            answers.append(await deferToThread(_answer, server.port, _request(name)))
        finally:
            txaio.set_global_log_level("info")
    first, again, autobahn = answers
    assert first.startswith(b"HTTP/1.1 ")
    assert first == again == autobahn
