"""Revocation and kicks across two servers sharing a real Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest
import pytest_twisted
import websockets
from websockets.exceptions import ConnectionClosed

from tests.conftest import RedisServer, aio
from tests.rawws import status_of
from wsapp.config import AppConfig, AuthConfig, Config, JwtConfig

SECRET = "cluster-secret-of-32-bytes-or-more"


def token(sub: str, jti: str, lifetime: float = 60) -> dict[str, str]:
    payload = {"sub": sub, "jti": jti, "exp": int(time.time() + lifetime)}
    return {"Authorization": f"Bearer {jwt.encode(payload, SECRET, 'HS256')}"}


async def closed_with(websocket: Any) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(5):
            while True:
                await websocket.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


@pytest_twisted.ensureDeferred
async def test_revoke_and_kick_on_one_server_close_connections_on_the_other(
    start_server: Any, redis_server: RedisServer
) -> None:
    """A revocation made on A closes B's connection and B refuses the token; so does a kick."""
    config = Config(
        apps={"/counter": AppConfig("wsapp.apps.counter:CounterProtocol")},
        backend=redis_server.url,
        auth=AuthConfig(jwt=JwtConfig(secret=SECRET)),
    )
    a, b = start_server(config), start_server(config)
    for server in (a, b):
        ready = server.service.identity.ready
        ready.addTimeout(10, server.service.reactor)
        await ready

    async def scenario() -> None:
        url = b.url("/counter")
        async with (
            websockets.connect(url, additional_headers=token("jo", "t-1")) as revoked,
            websockets.connect(url, additional_headers=token("kim", "t-2")) as kicked,
            websockets.connect(url, additional_headers=token("lee", "t-3")) as kept,
        ):
            loop = asyncio.get_running_loop()
            await a.service.identity.revoke("t-1", time.time() + 60).asFuture(loop)
            assert await closed_with(revoked) == (4003, "token revoked")
            assert await status_of(b.port, "/counter", token("jo", "t-1")) == 401
            assert await status_of(a.port, "/counter", token("jo", "t-1")) == 401
            await a.service.identity.kick("kim").asFuture(loop)
            assert await closed_with(kicked) == (4003, "user kicked")
            assert kept.close_code is None
            assert await status_of(b.port, "/counter", token("kim", "t-4")) == 101

    await aio(scenario())
    ttl = int(redis_server.command("PTTL", "wsapp:0:deny:jti:t-1").strip(b":\r\n"))
    assert 50_000 < ttl <= 60_000
