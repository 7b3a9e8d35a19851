"""The server base class: dispatch, error events, handshake decisions, over real sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_twisted
import websockets
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest

from tests.conftest import Server, aio, connect
from wsapp.config import AppConfig, Config
from wsapp.messages import Request
from wsapp.server import ServerProtocol


class GuardedProtocol(ServerProtocol):
    """Speaks two subprotocols, refuses clients without ?name=, and has a failing action."""

    subprotocols = ("greet.v2", "greet.v1")

    def onConnect(self, request: ConnectionRequest) -> str | None:
        if "name" not in request.params:
            raise ConnectionDeny(403, "a name is required")
        return super().onConnect(request)

    def action_hello(self, request: Request) -> None:
        self.send_event({"type": "hello", "to": request.text("to", max_length=20)})

    def action_crash(self, request: Request) -> None:
        raise RuntimeError("bug in a handler")


@pytest.fixture
def guarded(start_server: Any) -> Server:
    return start_server(Config(apps={"/greet": AppConfig("tests.test_server:GuardedProtocol")}))


BAD_INPUTS = [
    (b"\xc3\x28", False, "invalid-utf8"),
    (b'{"action":"plus"}', True, "binary-not-supported"),
    (b"{oops", False, "invalid-json"),
    (b"42", False, "invalid-request"),
    (b'{"no":"action"}', False, "invalid-request"),
    (b'{"action":"fly"}', False, "unknown-action"),
    (b'{"action":"add","amount":"many"}', False, "invalid-argument"),
]


@pytest_twisted.ensureDeferred
async def test_every_bad_input_gets_its_error_and_the_connection_stays_up(server: Server) -> None:
    """Each bad message is answered with its error code to the sender, who can go on."""
    client = await connect(server.url("/counter"))
    await client.next_of("users")
    for payload, is_binary, code in BAD_INPUTS:
        client.sendMessage(payload, isBinary=is_binary)
        event = await client.next_event()
        assert event["type"] == "error" and event["error"] == code, payload
        assert isinstance(event["detail"], str) and event["detail"]
        client.send_action("plus")
        assert (await client.next_event())["type"] == "state"
    assert server.factory("/counter").hub.backend.integers["/counter"] == len(BAD_INPUTS)


@pytest_twisted.ensureDeferred
async def test_errors_go_to_the_sender_only(server: Server) -> None:
    """Another client sees no error event when one client misbehaves."""
    bad = await connect(server.url("/counter"))
    other = await connect(server.url("/counter"))
    await bad.next_of("users")
    await bad.next_of("users")
    bad.sendMessage(b"{oops")
    assert (await bad.next_event())["error"] == "invalid-json"
    bad.send_action("plus")
    # the other client's next events: users count 2, then the state; never an error
    assert [(await other.next_event())["type"] for _ in range(3)] == ["state", "users", "state"]


@pytest_twisted.ensureDeferred
async def test_failing_handler_is_an_internal_error_not_a_crash(guarded: Server) -> None:
    """An exception in a handler is logged and answered with internal-error; the app goes on."""
    client = await connect(guarded.url("/greet?name=ann"))
    client.send_action("crash", id=1)
    assert await client.next_event() == {
        "type": "error",
        "error": "internal-error",
        "detail": "the server failed to handle this request",
        "id": 1,
    }
    client.send_action("hello", to="bob")
    assert await client.next_event() == {"type": "hello", "to": "bob"}


@pytest_twisted.ensureDeferred
async def test_on_connect_can_refuse_with_an_http_status(guarded: Server) -> None:
    """A ConnectionDeny raised in onConnect refuses the handshake with its status."""

    async def refused() -> int:
        with pytest.raises(websockets.InvalidStatus) as error:
            async with websockets.connect(guarded.url("/greet")):
                pass
        return error.value.response.status_code

    assert await aio(refused()) == 403
    assert len(guarded.factory("/greet").registry) == 0


@pytest_twisted.ensureDeferred
async def test_subprotocol_is_negotiated(guarded: Server) -> None:
    """The server picks its most preferred subprotocol among those the client offers."""

    async def negotiate(offered: list[str]) -> str | None:
        async with websockets.connect(
            guarded.url("/greet?name=ann"), subprotocols=offered
        ) as websocket:
            await websocket.send(json.dumps({"action": "hello", "to": "x"}))
            await websocket.recv()
            return websocket.subprotocol

    assert await aio(negotiate(["greet.v1"])) == "greet.v1"
    assert await aio(negotiate(["greet.v1", "greet.v2"])) == "greet.v2"


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_text_fails_an_echo_connection_with_1007(server: Server) -> None:
    """Apps that validate UTF-8 in the WebSocket layer (echo) close with 1007, per RFC 6455."""
    client = await connect(server.url("/echo"))
    client.sendMessage(b"\xc3\x28")
    _, code, _ = await client.factory.closed
    assert code == 1007
