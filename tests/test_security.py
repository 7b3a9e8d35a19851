"""Size, rate and connection limits, origin and token checks, over loopback."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted
import websockets
from autobahn.websocket.types import ConnectionRequest
from websockets.exceptions import InvalidStatus

from tests.conftest import LogCapture, Server, aio, close_code, connect, sleep
from tests.rawws import open_raw, status_of, upgrade_request
from wsapp.apps.counter import CounterProtocol
from wsapp.config import AppConfig, AuthConfig, Config, LimitsConfig

MiB = 1 << 20


def with_limits(**limits: Any) -> Config:
    return Config(limits=LimitsConfig(**limits))


async def counter_client(server: Server) -> Any:
    client = await connect(server.url("/counter"))
    await client.next_of("users")
    return client


async def refused_status(url: str, **options: Any) -> int:
    """The HTTP status a websockets client's handshake is refused with."""
    return (await refusal(url, **options)).status_code


async def refusal(url: str, **options: Any) -> Any:
    """The HTTP response a websockets client's handshake is refused with."""
    with pytest.raises(InvalidStatus) as refused:
        async with websockets.connect(url, **options):
            pass
    return refused.value.response


async def close_code_after_sending(url: str, message: str | bytes, **options: Any) -> int:
    """Send ``message`` with a websockets client; return the server's close code."""
    async with websockets.connect(url, **options) as websocket:
        await websocket.send(message)
        return await close_code(websocket)


@pytest_twisted.ensureDeferred
async def test_oversized_message_closes_with_1009_others_unaffected(
    server: Server, log_events: LogCapture
) -> None:
    """A message over max_message_size closes its sender with 1009, logged; others go on."""
    bystander = await counter_client(server)
    url = server.url("/counter")
    assert await aio(close_code_after_sending(url, "x" * (64 * 1024 + 1), compression=None)) == 1009
    assert any("1009" in message for message in log_events.messages())
    bystander.send_action("plus")
    assert await bystander.next_of("state") == {"type": "state", "value": 1}
    assert len(server.factory("/counter").registry) == 1


@pytest_twisted.ensureDeferred
async def test_deflate_bomb_closes_with_1009_without_inflating(server: Server) -> None:
    """16 MiB of zeros deflated to a few KiB is stopped at the 64 KiB message limit."""
    url = server.url("/counter")
    assert await aio(close_code_after_sending(url, b"\0" * (16 * MiB))) == 1009
    bystander = await counter_client(server)
    bystander.send_action("minus")
    assert await bystander.next_of("state") == {"type": "state", "value": -1}


@pytest_twisted.ensureDeferred
async def test_echo_accepts_16_mib_by_default(server: Server) -> None:
    """The echo app's defaults take the Autobahn TestSuite's largest message (16 MiB)."""

    async def echo() -> bytes:
        async with websockets.connect(server.url("/echo"), max_size=17 * MiB) as websocket:
            await websocket.send(b"\x01" * (16 * MiB))
            return await websocket.recv()  # type: ignore[return-value]

    assert await aio(echo()) == b"\x01" * (16 * MiB)


@pytest_twisted.ensureDeferred
async def test_rate_limit_refuses_then_closes_abuser_others_unaffected(
    start_server: Any, log_events: LogCapture
) -> None:
    """Over the rate a client gets rate-limited errors, then 1008; a polite client goes on."""
    server = start_server(with_limits(rate=0.5, burst=5, abuse_limit=20))
    polite = await counter_client(server)
    abuser = await counter_client(server)
    for _ in range(10):
        abuser.send_action("plus")
    events = [await abuser.next_event() for _ in range(10)]
    states = [event for event in events if event["type"] == "state"]
    errors = [event for event in events if event["type"] == "error"]
    assert 5 <= len(states) <= 6 and errors and len(states) + len(errors) == 10
    assert {event["error"] for event in errors} == {"rate-limited"}
    value = server.factory("/counter").hub.backend.integers["/counter"]
    assert value == len(states)
    for _ in range(40):
        abuser.send_action("plus")
    _, code, _ = await abuser.factory.closed
    assert code == 1008
    assert any("request rate" in message for message in log_events.messages())
    polite.send_action("minus", id="polite")
    reply = await polite.next_of("state")
    while reply.get("id") != "polite":
        reply = await polite.next_of("state")
    assert reply == {"type": "state", "value": value - 1, "id": "polite"}


@pytest_twisted.ensureDeferred
async def test_global_connection_limit_refuses_with_503(start_server: Any) -> None:
    """Past limits.max_connections the handshake gets 503 and the users count stays."""
    server = start_server(with_limits(max_connections=2))
    first = await counter_client(server)
    await counter_client(server)
    assert await aio(status_of(server.port, "/chat")) == 503
    assert await aio(refused_status(server.url("/counter"))) == 503
    assert len(server.factory("/counter").registry) == 2
    assert server.factory("/counter").guard.limiter.total == 2
    first.sendClose()
    await first.factory.closed
    third = await counter_client(server)
    assert third.state == third.STATE_OPEN


@pytest_twisted.ensureDeferred
async def test_app_connection_limit_refuses_with_503(start_server: Any) -> None:
    """Past an app's max_connections its handshakes get 503; other apps still open."""
    apps = dict(Config().apps)
    apps["/counter"] = replace(apps["/counter"], max_connections=1)
    server = start_server(Config(apps=apps))
    watcher = await counter_client(server)
    assert await aio(status_of(server.port, "/counter")) == 503
    assert await aio(status_of(server.port, "/chat")) == 101
    watcher.send_action("get")
    assert await watcher.next_event() == {"type": "state", "value": 0}  # no users event between


@pytest_twisted.ensureDeferred
async def test_per_address_limit_refuses_with_429(start_server: Any) -> None:
    """Past max_connections_per_address the handshake gets 429 before any state changes."""
    server = start_server(with_limits(max_connections_per_address=2))
    watcher = await counter_client(server)
    status, _, writer = await aio(open_raw(server.port))
    assert status == 101
    assert (await watcher.next_of("users"))["count"] == 2
    assert await aio(refused_status(server.url("/counter"))) == 429
    assert await aio(status_of(server.port, "/clock")) == 429
    watcher.send_action("get")
    assert await watcher.next_event() == {"type": "state", "value": 0}
    assert len(server.factory("/counter").registry) == 2
    writer.close()


@pytest_twisted.ensureDeferred
async def test_origin_allow_list(start_server: Any) -> None:
    """Browsers from unlisted origins get 403; listed ones and clients without Origin connect."""
    server = start_server(Config(origins=("https://app.example", "https://*.trusted.example")))
    url = server.url("/counter")
    assert await aio(refused_status(url, origin="https://evil.example")) == 403
    assert await aio(status_of(server.port, headers={"Origin": "null"})) == 403
    for origin in ["https://app.example", "https://a.trusted.example"]:
        assert await aio(status_of(server.port, headers={"Origin": origin})) == 101
    client = await counter_client(server)  # wsapp's client sends no Origin
    assert client.state == client.STATE_OPEN


@pytest_twisted.ensureDeferred
async def test_hybi_08_handshake_cannot_bypass_the_origin_check(start_server: Any) -> None:
    """Version 8 (origin in Sec-WebSocket-Origin) is refused, whatever origin it names."""
    server = start_server(Config(origins=("https://app.example",)))
    for origin in ["https://evil.example", "https://app.example"]:
        request = upgrade_request("/counter", {"Sec-WebSocket-Origin": origin})
        request = request.replace(b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8")
        reader, writer = await aio(asyncio.open_connection("127.0.0.1", server.port))
        writer.write(request)
        head = await aio(asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5))
        writer.close()
        assert head.startswith(b"HTTP/1.1 400 "), origin
    assert len(server.factory("/counter").registry) == 0
    # The same handshake in version 13 with a listed Origin opens.
    assert await aio(status_of(server.port, headers={"Origin": "https://app.example"})) == 101


@pytest_twisted.ensureDeferred
async def test_token_required(start_server: Any) -> None:
    """With auth.tokens: no token 401, wrong 403, query or Bearer token opens; counts unchanged."""
    server = start_server(Config(auth=AuthConfig(tokens=("s3cret",))))
    url = server.url("/counter")
    watcher = await connect(url + "?token=s3cret")
    assert (await watcher.next_of("users"))["count"] == 1
    missing = await aio(refusal(url))
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
    assert await aio(refused_status(url + "?token=wrong")) == 403
    assert await aio(status_of(server.port, headers={"Authorization": "Bearer nope"})) == 403

    async def bearer() -> list[Any]:
        headers = {"Authorization": "Bearer s3cret"}
        async with websockets.connect(url, additional_headers=headers) as websocket:
            return [json.loads(await websocket.recv()) for _ in range(2)]

    assert await aio(bearer()) == [{"type": "state", "value": 0}, {"type": "users", "count": 2}]
    assert await watcher.next_of("users") == {"type": "users", "count": 2}
    assert await watcher.next_of("users") == {"type": "users", "count": 1}
    assert len(server.factory("/counter").registry) == 1


class HeaderAuthCounter(CounterProtocol):
    """A counter whose own check lets in requests carrying ``X-User: alice``."""

    def authorize(self, request: ConnectionRequest, token: str | None) -> bool:
        return request.headers.get("x-user") == "alice"


@pytest_twisted.ensureDeferred
async def test_overridden_authorize_decides(start_server: Any) -> None:
    """A protocol's own ``authorize`` replaces the token list."""
    apps = {"/custom": AppConfig("tests.test_security:HeaderAuthCounter")}
    server = start_server(Config(apps=apps))
    assert await aio(status_of(server.port, "/custom", {"X-User": "alice"})) == 101
    assert await aio(status_of(server.port, "/custom", {"X-User": "mallory"})) == 401
    await sleep(0.05)
    assert len(server.factory("/custom").registry) == 0
    assert server.factory("/custom").guard.limiter.total == 0
