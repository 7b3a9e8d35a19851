"""Dispatch of actions (plain, Deferred, async) and the checks apps cannot skip, over loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping
from typing import Any

import pytest
import pytest_twisted
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from tests.conftest import LogCapture, Server, aio, connect
from tests.rawws import client_frame, open_raw, server_frames, status_of
from wsapp.config import AppConfig, Config, LimitsConfig
from wsapp.exceptions import MessageError
from wsapp.messages import INVALID_ARGUMENT, Request
from wsapp.server import ServerFactory, ServerProtocol


def outcome(request: Request, kind: str) -> Mapping[str, Any]:
    """The reply ``kind`` of action gives, or the error the request's ``fail`` asks for."""
    fail = request.fields.get("fail")
    if fail == "refuse":
        raise MessageError(INVALID_ARGUMENT, f"{kind} refused")
    if fail == "crash":
        raise RuntimeError(f"{kind} bug")
    return {"type": kind}


class App(ServerProtocol):
    """Actions of each kind: plain, returning a Deferred, and async."""

    def onOpen(self) -> None:
        self.waiting: list[tuple[Deferred[Any], Request]] = []

    def action_plain(self, request: Request) -> Mapping[str, Any]:
        return outcome(request, "plain")

    async def action_async(self, request: Request) -> Mapping[str, Any]:
        await deferLater(self.factory.reactor, 0)
        return outcome(request, "async")

    def action_unencodable(self, request: Request) -> Any:
        """A reply that is not JSON, returned as is or from a coroutine."""
        reply = {"type": "odd", "value": object()}
        if request.fields.get("kind") == "async":

            async def later() -> Mapping[str, Any]:
                return reply

            return later()
        return reply

    def action_later(self, request: Request) -> Deferred[Any]:
        waiting: Deferred[Any] = Deferred()
        self.waiting.append((waiting, request))
        return waiting

    def action_release(self, request: Request) -> Mapping[str, Any]:
        """Fire every Deferred returned by `later`, as its request asked."""
        waiting, self.waiting = self.waiting, []
        for deferred, earlier in waiting:
            try:
                deferred.callback(outcome(earlier, "later"))
            except Exception as error:
                deferred.errback(error)
        return {"type": "released", "count": len(waiting)}


@pytest.mark.parametrize("kind", ["plain", "async"])
@pytest_twisted.ensureDeferred
async def test_a_reply_that_cannot_be_encoded_is_an_internal_error(
    start_server: Any, log_events: LogCapture, kind: str
) -> None:
    """An action whose reply is not JSON gets internal-error with its id, logged once."""
    server = start_server(Config(apps={"/x": AppConfig("tests.test_dispatch:App")}))
    client = await connect(server.url("/x"))
    client.send_action("unencodable", kind=kind, id="odd")
    error = await client.next_event(timeout=2)
    assert (error["error"], error["id"]) == ("internal-error", "odd")
    client.send_action("plain", id="after")
    assert await client.next_event() == {"type": "plain", "id": "after"}
    assert len([event for event in log_events.events if "log_failure" in event]) == 1


class BareFactory(ServerFactory):
    """Records what reached the app's hooks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.received: list[bytes] = []
        self.closes = 0


class Bare(ServerProtocol):
    """Overrides every hook without calling super()."""

    factory: BareFactory
    factory_class = BareFactory

    def onConnect(self, request: ConnectionRequest) -> str | None:
        if "deny" in request.params:
            raise ConnectionDeny(403, "denied by the app")
        return None

    def onOpen(self) -> None:
        self.subscribe("news")
        self.send_event({"type": "hello"})

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.received.append(payload)
        if payload == b"bye":
            self.close_with(1000, "bye")
        else:
            self.send_event({"type": "got", "count": len(self.factory.received)})

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.closes += 1


class SkipsChecks:
    """A mixin with its own onConnect, not calling super()."""

    def onConnect(self, request: ConnectionRequest) -> str | None:
        return None


class MixedIn(SkipsChecks, Bare):
    """Takes onConnect from a mixin that is no ServerProtocol."""


def bare_config(protocol: str = "Bare", **limits: Any) -> Config:
    app = AppConfig(f"tests.test_dispatch:{protocol}", max_connections=1)
    return Config(
        apps={"/bare": app}, origins=("https://app.example",), limits=LimitsConfig(**limits)
    )


async def bare_client(server: Server) -> Any:
    client = await connect(server.url("/bare"))
    assert await client.next_event() == {"type": "hello"}
    return client


@pytest_twisted.ensureDeferred
async def test_each_kind_of_action_replies_with_the_request_id(
    start_server: Any, log_events: LogCapture
) -> None:
    """Plain, Deferred and async actions reply with the id; errors too; crashes are logged once."""
    server = start_server(Config(apps={"/x": AppConfig("tests.test_dispatch:App")}))
    client = await connect(server.url("/x"))
    for action in ("plain", "async"):
        client.send_action(action, id=f"{action}-ok")
        assert await client.next_event() == {"type": action, "id": f"{action}-ok"}
        client.send_action(action, id=f"{action}-refuse", fail="refuse")
        assert await client.next_event() == {
            "type": "error",
            "error": "invalid-argument",
            "detail": f"{action} refused",
            "id": f"{action}-refuse",
        }
    for fail in ("none", "refuse", "crash"):
        client.send_action("later", id=f"later-{fail}", fail=fail)
    client.send_action("plain", id="meanwhile")  # the Deferreds have not fired: no reply yet
    assert await client.next_event() == {"type": "plain", "id": "meanwhile"}
    assert log_events.errors() == []
    client.send_action("release", id="release")
    assert [await client.next_event() for _ in range(4)] == [
        {"type": "later", "id": "later-none"},
        {
            "type": "error",
            "error": "invalid-argument",
            "detail": "later refused",
            "id": "later-refuse",
        },
        {
            "type": "error",
            "error": "internal-error",
            "detail": "the server failed to handle this request",
            "id": "later-crash",
        },
        {"type": "released", "count": 3, "id": "release"},
    ]
    assert len(log_events.errors()) == 1 and "request failed" in log_events.errors()[0]
    for action in ("plain", "async"):
        client.send_action(action, id=f"{action}-crash", fail="crash")
        error = await client.next_event()
        assert (error["error"], error["id"]) == ("internal-error", f"{action}-crash")
    failures = [event for event in log_events.events if "log_failure" in event]
    assert [str(event["log_failure"].value) for event in failures] == [
        "later bug",
        "plain bug",
        "async bug",
    ]


@pytest_twisted.ensureDeferred
async def test_on_connect_without_super_still_checks_origin_and_limits(start_server: Any) -> None:
    """An app's onConnect cannot skip the origin check or max_connections, nor leak a slot."""
    server = start_server(bare_config())
    evil = {"Origin": "https://evil.example"}
    assert await aio(status_of(server.port, "/bare", evil)) == 403
    for _ in range(3):  # refused by the app after admission: each slot is given back
        assert await aio(status_of(server.port, "/bare?deny=1")) == 403
    first = await bare_client(server)
    assert await aio(status_of(server.port, "/bare")) == 503
    first.sendClose()
    await first.factory.closed
    assert await aio(status_of(server.port, "/bare", {"Origin": "https://app.example"})) == 101


@pytest_twisted.ensureDeferred
async def test_on_connect_from_a_mixin_still_checks_origin(start_server: Any) -> None:
    """An onConnect that a mixin contributes cannot skip the origin check either."""
    server = start_server(bare_config("MixedIn"))
    assert await aio(status_of(server.port, "/bare", {"Origin": "https://evil.example"})) == 403


@pytest_twisted.ensureDeferred
async def test_on_message_without_super_is_still_rate_limited(start_server: Any) -> None:
    """Requests over limits.rate never reach an app's own onMessage; abuse closes with 1008."""
    server = start_server(bare_config(rate=0.01, burst=3, abuse_limit=5))
    client = await bare_client(server)
    for text in (b"a", b"b", b"c", b"d"):
        client.sendMessage(text)
    assert [await client.next_event() for _ in range(4)] == [
        {"type": "got", "count": 1},
        {"type": "got", "count": 2},
        {"type": "got", "count": 3},
        {"type": "error", "error": "rate-limited", "detail": "too many requests; slow down"},
    ]
    for _ in range(10):
        client.sendMessage(b"more")
    _, code, _ = await client.factory.closed
    assert code == 1008
    assert server.factory("/bare").received == [b"a", b"b", b"c"]


async def frames_until_close(port: int, messages: list[bytes]) -> list[tuple[int, bytes]]:
    """Send ``messages`` in one write; return the server's frames up to its close frame."""
    status, reader, writer = await open_raw(port, "/bare")
    assert status == 101
    writer.write(b"".join(client_frame(message) for message in messages))
    received: list[tuple[int, bytes]] = []
    buffer = b""
    while not received or received[-1][0] != 8:
        buffer += await asyncio.wait_for(reader.read(65536), 5)
        frames, buffer = server_frames(buffer)
        received.extend(frames)
    writer.write(client_frame(b"\x03\xe8", 8))
    # the server has read everything sent before this close reply once TCP ends (by an abort)
    with contextlib.suppress(ConnectionResetError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return received


@pytest_twisted.ensureDeferred
async def test_no_message_reaches_an_app_once_closing_began(start_server: Any) -> None:
    """Messages arriving after the server sent its close frame do not reach the app's onMessage."""
    server = start_server(bare_config())
    frames = await aio(frames_until_close(server.port, [b"bye", b"after", b"after"]))
    assert [opcode for opcode, _ in frames] == [1, 8]
    assert json.loads(frames[0][1]) == {"type": "hello"}
    assert server.factory("/bare").received == [b"bye"]


@pytest_twisted.ensureDeferred
async def test_on_open_and_on_close_without_super_still_register_and_release(
    start_server: Any,
) -> None:
    """Without super() in onOpen/onClose a connection still joins and leaves the registry."""
    server = start_server(bare_config())
    factory = server.factory("/bare")
    for _ in range(2):  # max_connections is 1: the second is admitted after the first left
        client = await bare_client(server)
        (connection,) = list(factory.registry)
        assert connection.client_id and factory.hub.listeners("news") == 1
        client.sendClose()
        await client.factory.closed
        assert len(factory.registry) == 0 and factory.hub.listeners("news") == 0
    assert factory.closes == 2
