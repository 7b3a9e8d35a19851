"""Connection tokens over loopback: users in presence and chat, bad tokens, expiry, refresh."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import jwt
import pytest
import pytest_twisted
import websockets
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed

from tests.conftest import LogCapture, Server, aio, until
from tests.rawws import status_of
from wsapp.channels import Position
from wsapp.config import (
    AppConfig,
    AuthConfig,
    ChannelsConfig,
    Config,
    JwtConfig,
    LimitsConfig,
    NamespaceConfig,
)
from wsapp.identity import NOTICES
from wsapp.tokens import TokenError, TokenVerifier

SECRET = "test-secret-of-32-bytes-or-more!"
APPS = {
    "/channels": AppConfig("wsapp.apps.channels:ChannelsProtocol"),
    "/chat": AppConfig("wsapp.apps.chat:ChatProtocol"),
    "/counter": AppConfig("wsapp.apps.counter:CounterProtocol"),
}
NAMESPACES = {
    "room": NamespaceConfig(presence=True, join_leave=True),
    "members": NamespaceConfig(subscribe="authenticated", publish="authenticated"),
    "orders": NamespaceConfig(subscribe="capability", publish="capability"),
    "private": NamespaceConfig(subscribe="token"),
    "chat": NamespaceConfig(publish="anyone", history_size=10, presence=True, join_leave=True),
}


def jwt_config(**auth: Any) -> Config:
    """The apps above with HS256 connection tokens and no request rate limit."""
    return Config(
        apps=APPS,
        auth=AuthConfig(jwt=JwtConfig(secret=SECRET, audience="wsapp"), **auth),
        channels=ChannelsConfig(namespaces=NAMESPACES),
        limits=LimitsConfig(rate=0.0),
    )


def token(sub: str = "alice", *, lifetime: float = 60, key: Any = SECRET, **claims: Any) -> str:
    """A connection token for ``sub`` expiring in ``lifetime`` seconds."""
    payload = {"sub": sub, "aud": "wsapp", "exp": int(time.time() + lifetime), **claims}
    algorithm = claims.pop("alg", "HS256")
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm)


async def request(websocket: Any, action: str, **fields: Any) -> dict[str, Any]:
    """Send a request with an id; return the event answering it."""
    await websocket.send(json.dumps({"action": action, "id": 7, **fields}))
    while True:
        event = json.loads(await asyncio.wait_for(websocket.recv(), 5))
        if event.get("id") == 7:
            return event  # type: ignore[no-any-return]


async def closed_with(websocket: Any, timeout: float = 5) -> tuple[int, str]:
    """Read until the server closes (within ``timeout``); return its close code and reason."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                await websocket.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


@pytest.fixture
def server(start_server: Any) -> Server:
    return start_server(jwt_config())  # type: ignore[no-any-return]


@pytest_twisted.ensureDeferred
async def test_token_user_reaches_presence_joins_and_access_log(
    server: Server, log_events: LogCapture
) -> None:
    """A Bearer and a ?token= user appear in presence and join events; the log redacts."""
    alice = token("alice", info={"name": "Alice"})

    async def scenario() -> None:
        url = server.url("/channels")
        async with websockets.connect(url, additional_headers=bearer(alice)) as first:
            await request(first, "subscribe", channel="room:1")
            async with websockets.connect(f"{url}?token={token('bob')}") as second:
                await request(second, "subscribe", channel="room:1")
                own = json.loads(await asyncio.wait_for(first.recv(), 5))
                assert own["type"] == "join"
                assert own["info"] == {"user": "alice", "info": {"name": "Alice"}}
                join = json.loads(await asyncio.wait_for(first.recv(), 5))
                assert join["type"] == "join" and join["info"] == {"user": "bob", "info": {}}
                present = await request(second, "presence", channel="room:1")
                users = sorted(entry["info"]["user"] for entry in present["clients"])
                assert users == ["alice", "bob"]
                assert present["clients"][0]["info"]["info"] in ({"name": "Alice"}, {})

    await aio(scenario())
    lines = [line for line in log_events.messages() if " 101 " in line]
    assert any("user: alice" in line for line in lines), lines
    assert any("token=REDACTED" in line and "user: bob" in line for line in lines), lines
    assert not any(token("bob").split(".")[1] in line for line in log_events.messages())


BAD_TOKENS = {
    "malformed": "not.a.token",
    "wrong signature": token(key="another-secret-of-32-bytes-or-so"),
    "expired": token(lifetime=-60),
    "not yet valid": token(nbf=int(time.time() + 3600)),
    "wrong audience": token(aud="someone-else"),
    "no exp": jwt.encode({"sub": "alice", "aud": "wsapp"}, SECRET, "HS256"),
    "no sub": token(sub=None),
    "alg none": jwt.encode({"sub": "alice", "aud": "wsapp", "exp": 2**40}, None, "none"),
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
@pytest_twisted.ensureDeferred
async def test_bad_token_refused_with_401_nothing_counted(
    server: Server, log_events: LogCapture, kind: str
) -> None:
    """Each kind of bad token gets 401 at the handshake; nothing counted, no token logged."""
    bad = BAD_TOKENS[kind]
    assert await aio(status_of(server.port, "/counter", bearer(bad))) == 401
    assert await aio(status_of(server.port, f"/counter?token={bad}")) == 401
    factory = server.factory("/counter")
    assert len(factory.registry) == 0 and factory.guard.limiter.total == 0
    refusals = [line for line in log_events.messages() if "token refused" in line]
    assert len(refusals) == 2, refusals
    assert not any(bad in line for line in log_events.messages() if len(bad) > 12)


@pytest_twisted.ensureDeferred
async def test_first_message_authenticates_a_browser_style_connection(server: Server) -> None:
    """Without a header, requests wait for authenticate; then the chat app opens as the user."""

    async def scenario() -> None:
        async with websockets.connect(server.url("/chat")) as websocket:
            refused = await request(websocket, "say", text="early")
            assert refused["error"] == "not-authenticated"
            assert len(server.factory("/chat").registry) == 0
            done = await request(websocket, "authenticate", token=token("carol"))
            assert done["type"] == "authenticated" and done["user"] == "carol"
            joined = json.loads(await asyncio.wait_for(websocket.recv(), 5))
            assert joined["type"] == "joined" and joined["user"] == "carol"
            async with websockets.connect(
                server.url("/chat"), additional_headers=bearer(token("dave"))
            ) as other:
                assert json.loads(await asyncio.wait_for(other.recv(), 5))["type"] == "joined"
                await other.send(json.dumps({"action": "say", "text": "hi"}))
                seen = []
                while not seen or seen[-1]["type"] != "chat":
                    seen.append(json.loads(await asyncio.wait_for(websocket.recv(), 5)))
                assert {"user": "dave", "info": {}} in [e.get("info") for e in seen]
                assert seen[-1]["user"] == "dave" and seen[-1]["text"] == "hi"

    await aio(scenario())


@pytest_twisted.ensureDeferred
async def test_first_message_with_a_bad_token_gets_an_error_and_4002(server: Server) -> None:
    """A bad authenticate token: invalid-token, close 4002, no presence or users change."""
    counter = server.factory("/counter")

    async def scenario() -> None:
        async with websockets.connect(server.url("/chat")) as websocket:
            refused = await request(websocket, "authenticate", token=token(lifetime=-5))
            assert refused["error"] == "invalid-token" and "expired" in refused["detail"]
            code, reason = await closed_with(websocket)
            assert code == 4002 and "expired" in reason
        async with websockets.connect(server.url("/counter")) as websocket:
            await websocket.send(json.dumps({"action": "authenticate", "token": "x.y.z"}))
            assert (await closed_with(websocket))[0] == 4002

    await aio(scenario())
    presence = await server.factory("/chat").hub.backend.presence("chat:lobby")
    assert presence == {} and len(counter.registry) == 0
    await until(lambda: counter.guard.limiter.total == 0, 5)


@pytest_twisted.ensureDeferred
async def test_no_authenticate_in_time_closes_with_4002(start_server: Any) -> None:
    """A connection that never authenticates is closed with 4002 at the handshake timeout."""
    config = jwt_config()
    server = start_server(
        replace(config, limits=replace(config.limits, open_handshake_timeout=0.5))
    )

    async def scenario() -> tuple[int, str]:
        async with websockets.connect(server.url("/counter")) as websocket:
            return await closed_with(websocket)

    assert await aio(scenario()) == (4002, "not authenticated in time")


@pytest_twisted.ensureDeferred
async def test_anonymous_allowed_when_configured(start_server: Any) -> None:
    """With auth.anonymous a connection without a token opens at once, with no user."""
    server = start_server(jwt_config(anonymous=True))

    async def scenario() -> None:
        async with websockets.connect(server.url("/channels")) as websocket:
            refused = await request(websocket, "subscribe", channel="members:x")
            assert refused["error"] == "permission-denied"
            assert (await request(websocket, "subscribe", channel="room:x"))["type"] == "subscribed"

    await aio(scenario())


@pytest_twisted.ensureDeferred
async def test_two_second_token_closes_with_4001_unless_refreshed(server: Server) -> None:
    """At exp an unrefreshed connection gets 4001; one refreshed in time stays open past it."""

    async def scenario() -> None:
        url = server.url("/channels")
        short = token("erin", lifetime=2)
        async with (
            websockets.connect(url, additional_headers=bearer(short)) as stale,
            websockets.connect(url, additional_headers=bearer(short)) as fresh,
        ):
            started = time.monotonic()
            wrong = await request(fresh, "refresh", token=token("mallory", lifetime=60))
            assert wrong["error"] == "invalid-token"
            bad = await request(fresh, "refresh", token="garbage")
            assert bad["error"] == "invalid-token"
            refreshed = await request(fresh, "refresh", token=token("erin", lifetime=60))
            assert refreshed["type"] == "refreshed" and refreshed["expires"] > time.time() + 50
            assert await closed_with(stale) == (4001, "token expired")
            assert time.monotonic() - started > 0.5
            # the refreshed one still answers after the first token's exp
            assert (await request(fresh, "subscribe", channel="room:x"))["type"] == "subscribed"

    await aio(scenario())


@pytest_twisted.ensureDeferred
async def test_namespace_permissions_by_user_capability_and_channel_token(server: Server) -> None:
    """authenticated, capability and token namespaces admit whom they say; refusals keep nothing."""
    hub = server.factory("/channels").hub

    async def scenario() -> None:
        url = server.url("/channels")
        user = bearer(token("frank", channels=["orders:eu-*"]))
        async with websockets.connect(url, additional_headers=user) as websocket:
            assert (await request(websocket, "subscribe", channel="members:x"))[
                "type"
            ] == "subscribed"
            ok = await request(websocket, "subscribe", channel="orders:eu-1")
            assert ok["type"] == "subscribed"
            published = await request(websocket, "publish", channel="orders:eu-1", data=1)
            assert published["type"] == "published"
            for channel in ("orders:us-1", "private:frank"):
                refused = await request(websocket, "subscribe", channel=channel)
                assert refused["error"] == "permission-denied", refused
                assert hub.listeners(channel) == 0
            refused = await request(websocket, "publish", channel="orders:us-1", data=1)
            assert refused["error"] == "permission-denied"
            for channel_token, allowed in [
                (token("frank", channel="private:frank"), True),
                (token("grace", channel="private:frank"), False),
                (token("frank", channel="private:other"), False),
                (token("frank", channel="private:frank", lifetime=-5), False),
            ]:
                answer = await request(
                    websocket, "subscribe", channel="private:frank", token=channel_token
                )
                assert (answer["type"] == "subscribed") is allowed, answer
            capability = token("frank", channel="orders:us-1")
            answer = await request(websocket, "subscribe", channel="orders:us-1", token=capability)
            assert answer["type"] == "subscribed"

    await aio(scenario())


@pytest_twisted.ensureDeferred
async def test_revoke_and_kick_close_connections_and_refuse_handshakes(server: Server) -> None:
    """revoke(jti) closes its connections with 4003 and refuses it after; kick closes a user's."""
    identity = server.service.identity
    revoked, kept = token("hana", jti="t-1"), token("hana", jti="t-2")

    async def scenario() -> None:
        url = server.url("/counter")
        async with (
            websockets.connect(url, additional_headers=bearer(revoked)) as first,
            websockets.connect(url, additional_headers=bearer(kept)) as second,
            websockets.connect(url, additional_headers=bearer(token("ivan"))) as other,
        ):
            loop = asyncio.get_running_loop()
            await identity.revoke("t-1", time.time() + 60).asFuture(loop)
            assert await closed_with(first) == (4003, "token revoked")
            assert await status_of(server.port, "/counter", bearer(revoked)) == 401
            await identity.kick("hana").asFuture(loop)
            assert await closed_with(second) == (4003, "user kicked")
            await other.send(json.dumps({"action": "add", "amount": 1}))
            assert other.close_code is None
        assert await status_of(server.port, "/counter", bearer(kept)) == 101

    await aio(scenario())


@pytest_twisted.ensureDeferred
async def test_missed_notices_recheck_open_connections_against_the_deny_list(
    server: Server,
) -> None:
    """After notices were lost, connections whose token is denied by now are closed, not others."""
    identity = server.service.identity
    revoked, kept = token("jo", jti="m-1"), token("jo", jti="m-2")

    async def scenario() -> None:
        url = server.url("/counter")
        async with (
            websockets.connect(url, additional_headers=bearer(revoked)) as first,
            websockets.connect(url, additional_headers=bearer(kept)) as second,
        ):
            await first.recv()
            await second.recv()
            loop = asyncio.get_running_loop()
            # the deny-list has it, but this process never heard the notice
            await identity.backend.deny("jti:m-1", time.time() + 60).asFuture(loop)
            identity.channel_lost(NOTICES, Position(5, "e"), [identity])
            assert await closed_with(first) == (4003, "token revoked")
            await second.send(json.dumps({"action": "get", "id": 3}))
            while json.loads(await asyncio.wait_for(second.recv(), 5)).get("id") != 3:
                pass

    await aio(scenario())


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.lists(st.text(alphabet="ABCDEFabcdef0123456789-_=", max_size=60), max_size=4).map(
            ".".join
        ),
        st.dictionaries(st.text(max_size=5), st.none() | st.integers() | st.text(max_size=5)).map(
            lambda claims: jwt.encode(claims, SECRET, "HS256")
        ),
    )
)
def test_generated_tokens_only_ever_raise_token_error(text: str) -> None:
    """Any generated token is either accepted or refused with TokenError, never a crash."""
    verifier = TokenVerifier(JwtConfig(secret=SECRET))
    outcome: list[Any] = []
    verifier.verify(text).addBoth(outcome.append)
    assert len(outcome) == 1
    if not isinstance(outcome[0], dict):
        assert outcome[0].check(TokenError), outcome[0]
