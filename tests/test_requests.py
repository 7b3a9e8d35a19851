"""Requests that once crashed a connection or lost their reply, over real sockets."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import websockets

from tests.conftest import LogCapture, Server, aio
from tests.rawws import client_frame, open_raw, server_frames

#: Requests whose JSON holds a lone surrogate escape, in an id, a key or a text.
LONE_SURROGATES = [
    ("/counter", r'{"action":"nosuch","id":"\udfff"}'),
    ("/counter", r'{"action":"plus","id":"\ud800"}'),
    ("/counter", r'{"action":"plus","id":"x\ud800\u0041"}'),
    ("/counter", r'{"action":"add","amount":1,"\udc00":2}'),
    ("/chat", r'{"action":"say","text":"a\udfffb","id":"m1"}'),
    ("/chat", r'{"action":"say","text":"\ude00\ud83d"}'),
]


#: Events the counter pushes to every client, which are nobody's reply without an id.
PUSHED = ("state", "users", "joined", "join", "leave")


async def exchange(url: str, *messages: str | bytes) -> list[Any]:
    """Send each message with websockets; return the reply to each (pushed events skipped)."""
    async with websockets.connect(url) as websocket:
        replies = []
        for message in messages:
            await websocket.send(message)
            while True:
                reply = await asyncio.wait_for(websocket.recv(), 5)
                if isinstance(reply, bytes):
                    break
                reply = json.loads(reply)
                if not (reply.get("type") in PUSHED and "id" not in reply):
                    break
            replies.append(reply)
        return replies


def assert_refused(error: Any) -> None:
    """``error`` is the invalid-json event a lone surrogate gets: no id, a detail naming it."""
    assert error["type"] == "error" and error["error"] == "invalid-json"
    assert "id" not in error and "surrogate" in error["detail"]


@pytest.mark.parametrize(
    "request_text", [text for path, text in LONE_SURROGATES if path == "/counter"]
)
@pytest_twisted.ensureDeferred
async def test_lone_surrogate_counter_request_changes_nothing(
    server: Server, request_text: str
) -> None:
    """A counter request with a lone surrogate is refused; the counter stays, the socket too."""
    error, after = await aio(
        exchange(server.url("/counter"), request_text, '{"action":"get","id":"g"}')
    )
    assert_refused(error)
    assert after == {"type": "state", "value": 0, "id": "g"}
    assert server.factory("/counter").hub.backend.integers["/counter"] == 0


async def chat_seen_by_peer(url: str, *messages: str) -> tuple[list[Any], Any]:
    """Send ``messages`` as :func:`exchange` does; return the replies and what a chat peer got."""
    async with websockets.connect(url) as peer:
        assert json.loads(await asyncio.wait_for(peer.recv(), 5))["type"] == "joined"
        replies = await exchange(url, *messages)
        while True:
            event = json.loads(await asyncio.wait_for(peer.recv(), 5))
            if event["type"] not in PUSHED:
                return replies, event


@pytest.mark.parametrize(
    "request_text", [text for path, text in LONE_SURROGATES if path == "/chat"]
)
@pytest_twisted.ensureDeferred
async def test_lone_surrogate_chat_text_reaches_nobody(server: Server, request_text: str) -> None:
    """A chat text with a lone surrogate is refused to its sender and relayed to nobody."""
    (error, sent), first = await aio(
        chat_seen_by_peer(server.url("/chat"), request_text, '{"action":"say","text":"ok","id":1}')
    )
    assert_refused(error)
    assert sent == {"type": "sent", "room": "lobby", "offset": 1, "id": 1}
    assert (first["type"], first["text"]) == ("chat", "ok")


@pytest_twisted.ensureDeferred
async def test_surrogate_pairs_are_ordinary_text(server: Server) -> None:
    """An escaped surrogate pair is one character: accepted in ids and relayed in texts."""
    pair = r'{"action":"say","text":"\ud83d\ude00","id":"\ud83d\ude01"}'
    (sent,), relayed = await aio(chat_seen_by_peer(server.url("/chat"), pair))
    assert sent == {"type": "sent", "room": "lobby", "offset": 1, "id": "\U0001f601"}
    assert (relayed["type"], relayed["text"]) == ("chat", "\U0001f600")


@pytest_twisted.ensureDeferred
async def test_echo_returns_surrogate_escapes_unchanged(server: Server) -> None:
    """Echo is not JSON: a text holding a lone surrogate escape, and binary, come back as sent."""
    text, binary = r'{"id":"\udfff"}', b"\xed\xbf\xbf"
    assert await aio(exchange(server.url("/echo"), text, binary)) == [{"id": "\udfff"}, binary]


@pytest_twisted.ensureDeferred
async def test_event_with_a_lone_surrogate_is_sent_escaped(server: Server) -> None:
    """An event the server builds with a lone surrogate goes out as JSON escaping it."""

    async def receive_broadcast() -> Any:
        async with websockets.connect(server.url("/clock")) as peer:
            await asyncio.wait_for(peer.recv(), 5)  # the clock's first time
            assert server.factory("/clock").broadcast({"type": "chat", "text": "a\udfff"}) == 1
            return await asyncio.wait_for(peer.recv(), 5)

    raw = await aio(receive_broadcast())
    assert raw == '{"type":"chat","text":"a\\udfff"}'
    assert json.loads(raw)["text"] == "a\udfff"


@pytest.mark.parametrize("nested", ["[" * 32000 + "]" * 32000, '{"a":' * 10000 + "1" + "}" * 10000])
@pytest_twisted.ensureDeferred
async def test_deep_nesting_is_invalid_json_and_not_logged(
    server: Server, log_events: LogCapture, nested: str
) -> None:
    """JSON nested too deeply to decode is the client's invalid-json, with no traceback logged."""
    replies = await aio(exchange(server.url("/counter"), *[nested] * 20, '{"action":"get","id":1}'))
    assert [reply["error"] for reply in replies[:-1]] == ["invalid-json"] * 20
    assert all("nested too deeply" in reply["detail"] for reply in replies[:-1])
    assert replies[-1] == {"type": "state", "value": 0, "id": 1}
    assert log_events.errors() == []


#: Requests a client has in flight when the server's close arrives, sent right after it.
IN_FLIGHT = 3


async def plus_through_shutdown(port: int, stop: Any) -> tuple[int, int]:
    """
    Send ``plus`` with an id every 20 ms; call ``stop()`` after 10 acks. When the server's
    close frame arrives, send IN_FLIGHT more requests, then the close reply.
    Return (acks received, requests sent).
    """
    status, reader, writer = await open_raw(port, "/counter")
    assert status == 101
    acks = sent = 0
    closing = False
    buffer = b""
    deadline = time.monotonic() + 15

    async def read_frames() -> list[tuple[int, bytes]]:
        nonlocal buffer
        try:
            buffer += await asyncio.wait_for(reader.read(65536), 0.02)
        except TimeoutError:
            pass
        except ConnectionResetError:
            reader.feed_eof()  # the server dropped TCP with our last requests unread
        frames, buffer = server_frames(buffer)
        return frames

    while not closing and sent < 500 and time.monotonic() < deadline:
        sent += 1
        writer.write(client_frame(json.dumps({"action": "plus", "id": sent}).encode()))
        for opcode, data in await read_frames():
            if opcode == 8:
                closing = True
            elif opcode == 1 and "id" in json.loads(data):
                acks += 1
                if acks == 10:
                    stop()
    assert closing, "the server did not close"
    for _ in range(IN_FLIGHT):
        sent += 1
        writer.write(client_frame(json.dumps({"action": "plus", "id": sent}).encode()))
    writer.write(client_frame(b"\x03\xe9", 8))
    while not reader.at_eof() and time.monotonic() < deadline:
        for opcode, data in await read_frames():
            if opcode == 1 and "id" in json.loads(data):
                acks += 1
    writer.close()
    return acks, sent


@pytest_twisted.ensureDeferred
async def test_requests_after_close_began_change_nothing(twistd: Any, tmp_path: Path) -> None:
    """Through a SIGTERM, the counter kept in the state file equals the requests acknowledged."""
    (tmp_path / "config.yaml").write_text(
        "port: tcp:0:interface=127.0.0.1\nstate_file: state.json\nshutdown: {grace_period: 3}\n"
    )
    process = twistd()
    acks, sent = await aio(
        plus_through_shutdown(process.port, lambda: process.process.send_signal(signal.SIGTERM))
    )
    assert await aio(asyncio.to_thread(process.process.wait, 10)) == -signal.SIGTERM
    saved = json.loads((tmp_path / "state.json").read_text())["counters"]["/counter"]
    assert 10 <= acks < sent
    assert saved == acks, process.output()
