"""The HTTP API over loopback: methods, errors, limits, the emitters and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
import websockets
from twisted.internet.defer import Deferred

from tests.conftest import BIN, ROOT, Server, aio, connect, the_reactor
from wsapp.api import TwistedClient
from wsapp.api.server import transport_allowed
from wsapp.config import Config, from_mapping
from wsapp.exceptions import ApiError, ConfigError

KEY = "k" * 24
CONFIG = from_mapping({"api": {"keys": [KEY]}}, "test")


async def post(
    port: int,
    method: str,
    body: Any = None,
    *,
    key: str | None = KEY,
    raw: bytes | None = None,
    headers: dict[str, list[str]] | None = None,
    verb: str = "POST",
) -> tuple[int, Any]:
    """Call ``method`` over HTTP; return the status and the decoded JSON answer."""
    sent = {"authorization": [f"apikey {key}"]} if key is not None else {}
    data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
    response = await treq.request(
        verb, f"http://127.0.0.1:{port}/api/{method}", data=data,
        headers={**sent, **(headers or {})}, reactor=the_reactor(), persistent=False,
    )  # fmt: skip
    text = await treq.content(response)
    return response.code, json.loads(text)


async def python(*code_and_args: str) -> tuple[int, str, str]:
    """Run a plain Python process (no reactor); return its status, stdout and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *code_and_args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode(), err.decode()


EMIT = """
import json, sys
from wsapp.api import Client
with Client(sys.argv[1], sys.argv[2], timeout=5) as client:
    print(json.dumps([client.publish("news", {"n": n}) for n in range(3)]))
"""


@pytest_twisted.ensureDeferred
async def test_a_plain_python_process_publishes_to_websocket_subscribers(start_server: Any) -> None:
    """wsapp.api.Client in a process without a reactor publishes; subscribers get it in order."""
    server: Server = start_server(CONFIG)
    api = f"http://127.0.0.1:{server.port}/api/"

    async def scenario() -> tuple[list[Any], list[Any]]:
        async with websockets.connect(server.url("/channels")) as ws:
            await ws.send(json.dumps({"action": "subscribe", "channel": "news", "id": 1}))
            assert json.loads(await ws.recv())["type"] == "subscribed"
            status, out, err = await python("-c", EMIT, api, KEY)
            assert status == 0, err
            got = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(3)]
        return json.loads(out), got

    answers, got = await aio(scenario())
    assert [answer["offset"] for answer in answers] == [1, 2, 3]
    assert [event["data"] for event in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [event["offset"] for event in got] == [1, 2, 3]


@pytest_twisted.ensureDeferred
async def test_idempotency_key_publishes_once_and_answers_the_same(start_server: Any) -> None:
    """Two publishes with one idempotency key: one publication, the same answer twice."""
    server: Server = start_server(CONFIG)
    client = await connect(server.url("/channels"))
    client.sendMessage(json.dumps({"action": "subscribe", "channel": "once"}).encode())
    await client.next_of("subscribed")
    body = {"channel": "once", "data": "x", "idempotency_key": "order-17"}
    first = await post(server.port, "publish", body)
    second = await post(server.port, "publish", body)
    other = await post(server.port, "publish", {**body, "idempotency_key": "order-18"})
    assert first == second == (200, {"offset": 1, "epoch": first[1]["epoch"]})
    assert other[1]["offset"] == 2
    events = [await client.next_of("publication") for _ in range(2)]
    assert [event["offset"] for event in events] == [1, 2]


@pytest_twisted.ensureDeferred
async def test_errors_have_their_status_and_code(start_server: Any) -> None:
    """Bad key, method, verb, JSON and fields get 401/404/405/400 with a JSON error code."""
    port = start_server(CONFIG).port
    cases = [
        (await post(port, "publish", {"channel": "a", "data": 1}, key=None), 401, "unauthorized"),
        (await post(port, "publish", {"channel": "a", "data": 1}, key="x" * 24), 401,
         "unauthorized"),
        (await post(port, "nosuch"), 404, "unknown-method"),
        (await post(port, "info", verb="GET"), 405, "method-not-allowed"),
        (await post(port, "publish", raw=b"{not json"), 400, "invalid-json"),
        (await post(port, "publish", raw=b"[1]"), 400, "invalid-request"),
        (await post(port, "publish", {"channel": "a"}), 400, "invalid-argument"),
        (await post(port, "publish", {"channel": "a", "data": 1, "extra": 2}), 400,
         "invalid-argument"),
        (await post(port, "publish", {"channel": "$x", "data": 1}), 400, "invalid-argument"),
        (await post(port, "publish", {"channel": "no:x", "data": 1}), 400, "unknown-namespace"),
        (await post(port, "presence", {"channel": "plain"}), 400, "invalid-argument"),
        (await post(port, "history", {"channel": "chat:a", "limit": 101}), 400,
         "invalid-argument"),
        (await post(port, "disconnect", {"user": "u", "code": 1000}), 400, "invalid-argument"),
        (await post(port, "revoke_token", {"jti": 5}), 400, "invalid-argument"),
        (await post(port, "revoke_token", {"jti": "a", "expire_at": -1}), 400,
         "invalid-argument"),
    ]  # fmt: skip
    for (status, answer), expected_status, code in cases:
        assert (status, answer["error"]) == (expected_status, code), answer
        assert isinstance(answer["detail"], str) and answer["detail"]


@pytest_twisted.ensureDeferred
async def test_the_api_is_off_without_a_key(server: Server) -> None:
    """With no key configured, /api/ is not served at all (404 from the site)."""
    response = await treq.post(
        f"http://127.0.0.1:{server.port}/api/info", data=b"{}", reactor=the_reactor(),
        headers={"authorization": [f"apikey {KEY}"]}, persistent=False,
    )  # fmt: skip
    await treq.content(response)
    assert response.code == 404
    assert server.service.api is None


async def _raw_exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


@pytest_twisted.ensureDeferred
async def test_bodies_over_the_limit_are_refused_before_they_are_stored(
    start_server: Any,
) -> None:
    """A declared or chunked body over api.max_body_size gets 413 and the connection closes."""
    config = from_mapping({"api": {"keys": [KEY], "max_body_size": 1000}}, "test")
    port = start_server(config).port
    head = f"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: apikey {KEY}\r\n"
    declared = await aio(_raw_exchange(port, f"{head}Content-Length: 5000\r\n\r\n".encode()))
    assert declared.startswith(b"HTTP/1.1 413 ")
    assert json.loads(declared.split(b"\r\n\r\n", 1)[1])["error"] == "too-large"
    chunk = b"800\r\n" + b" " * 0x800 + b"\r\n"
    chunked = await aio(
        _raw_exchange(port, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode() + chunk)
    )
    assert chunked.startswith(b"HTTP/1.1 413 ")
    status, answer = await post(port, "publish", raw=b" " * 1000 + b'{"channel":"a","data":1}')
    assert (status, answer["error"]) == (413, "too-large")
    fits = await post(port, "publish", {"channel": "a", "data": "y" * 900})
    assert fits[0] == 200


@pytest_twisted.ensureDeferred
async def test_a_key_over_its_rate_gets_429(start_server: Any) -> None:
    """Past api.burst calls at once, a key is refused with 429 rate-limited."""
    config = from_mapping({"api": {"keys": [KEY], "rate": 0.001, "burst": 3}}, "test")
    port = start_server(config).port
    statuses = [(await post(port, "info"))[0] for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


def test_plain_http_only_on_loopback_unless_allowed() -> None:
    """The API refuses plain HTTP arriving on a non-loopback address unless TLS or allowed."""
    assert transport_allowed("127.0.0.1", False, False)
    assert transport_allowed("127.3.0.1", False, False)
    assert transport_allowed("::1", False, False)
    assert transport_allowed("::ffff:127.0.0.1", False, False)
    assert transport_allowed(None, False, False)  # a UNIX socket
    assert not transport_allowed("192.0.2.10", False, False)
    assert not transport_allowed("2001:db8::1", False, False)
    assert not transport_allowed("0.0.0.0", False, False)
    assert transport_allowed("192.0.2.10", True, False)
    assert transport_allowed("192.0.2.10", False, True)


@pytest_twisted.ensureDeferred
async def test_history_presence_broadcast_channels_and_info(start_server: Any) -> None:
    """The read methods answer from the backend and this process's subscribers."""
    server: Server = start_server(CONFIG)
    client = await connect(server.url("/channels"))
    client.sendMessage(json.dumps({"action": "subscribe", "channel": "chat:lobby"}).encode())
    await client.next_of("subscribed")
    port = server.port
    status, sent = await post(port, "broadcast", {"channels": ["chat:lobby", "chat:b"], "data": 7})
    assert status == 200
    assert [r["channel"] for r in sent["responses"]] == ["chat:lobby", "chat:b"]
    assert (await client.next_of("publication"))["data"] == 7
    status, history = await post(port, "history", {"channel": "chat:lobby", "limit": 5})
    assert (status, history["offset"], history["publications"]) == (
        200, 1, [{"offset": 1, "data": 7}],
    )  # fmt: skip
    since = {"offset": 0, "epoch": history["epoch"]}
    status, recovered = await post(port, "history", {"channel": "chat:lobby", "since": since})
    assert recovered["recovered"] is True and len(recovered["publications"]) == 1
    presence = (await post(port, "presence", {"channel": "chat:lobby"}))[1]
    assert len(presence["clients"]) == 1 and presence["clients"][0]["info"] == {}
    assert (await post(port, "presence_stats", {"channel": "chat:lobby"}))[1] == {"clients": 1}
    channels = (await post(port, "channels", {"pattern": "chat:*"}))[1]
    assert channels == {"channels": {"chat:lobby": {"subscribers": 1}}}
    assert (await post(port, "channels", {"pattern": "news*"}))[1] == {"channels": {}}
    info = (await post(port, "info"))[1]
    assert len(info["nodes"]) == 1
    node = info["nodes"][0]
    assert (node["connections"], node["subscriptions"], node["channels"]) == (1, 1, 1)
    assert node["version"] and node["uptime"] >= 0


@pytest_twisted.ensureDeferred
async def test_disconnect_and_unsubscribe_match_connections_by_user(start_server: Any) -> None:
    """disconnect closes the connections whose user.id matches; unsubscribe drops one channel."""
    config = replace(
        CONFIG, apps={**CONFIG.apps, "/users": replace(CONFIG.apps["/channels"],
                                                         protocol="tests.api_users:UserProtocol")},
    )  # fmt: skip
    server: Server = start_server(config)
    alice = await connect(server.url("/users?user=alice"))
    bob = await connect(server.url("/users?user=bob"))
    for client in (alice, bob):
        client.sendMessage(json.dumps({"action": "subscribe", "channel": "news"}).encode())
        await client.next_of("subscribed")
    assert (await post(server.port, "unsubscribe", {"user": "bob", "channel": "news"})) == (200, {})
    assert (await bob.next_of("unsubscribed"))["channel"] == "news"
    assert server.factory("/users").hub.listeners("news") == 1
    assert (await post(server.port, "disconnect", {"user": "alice", "code": 4009})) == (200, {})
    closed = bob.factory.closed
    alice.factory.closed.addTimeout(5, the_reactor())
    _, code, _ = await alice.factory.closed
    assert code == 4009
    assert not closed.called


@pytest_twisted.ensureDeferred
async def test_own_endpoint_serves_only_the_api(start_server: Any) -> None:
    """With api.endpoint, the API listens there and not under the main port's /api/."""
    config = replace(CONFIG, api=replace(CONFIG.api, endpoint="tcp:0:interface=127.0.0.1"))
    server: Server = start_server(config)
    assert server.service.api_port is not None
    own = server.service.api_port.getHost().port
    assert (await post(own, "info"))[0] == 200
    response = await treq.post(
        f"http://127.0.0.1:{server.port}/api/info", data=b"{}", reactor=the_reactor(),
        headers={"authorization": [f"apikey {KEY}"]}, persistent=False,
    )  # fmt: skip
    await treq.content(response)
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_twisted_client_calls_and_raises_api_errors(start_server: Any) -> None:
    """TwistedClient (treq) publishes and raises ApiError with the status and code."""
    server: Server = start_server(CONFIG)
    client = TwistedClient(f"http://127.0.0.1:{server.port}/api/", KEY, reactor=the_reactor())
    try:
        answer = await client.publish("tx", [1, 2])
        assert answer["offset"] == 1
        with pytest.raises(ApiError) as refused:
            await client.presence("tx")
        assert (refused.value.status, refused.value.code) == (400, "invalid-argument")
        wrong = TwistedClient(
            f"http://127.0.0.1:{server.port}/api", "z" * 20, reactor=the_reactor()
        )
        with pytest.raises(ApiError) as unauthorized:
            await wrong.info()
        await wrong.close()
        assert unauthorized.value.status == 401
    finally:
        await client.close()


def test_keys_file_and_config_errors_name_the_key(tmp_path: Path) -> None:
    """Keys come from api.keys_file too; a short key or a missing file is a one-line error."""
    from wsapp.api import read_keys

    keys = tmp_path / "keys"
    keys.write_text(f"# rotated monthly\n\n{'f' * 20}\n")
    config = from_mapping({"api": {"keys": [KEY], "keys_file": str(keys)}}, "c.yaml")
    assert read_keys(config, "c.yaml") == [KEY, "f" * 20]
    keys.write_text("short\n")
    with pytest.raises(ConfigError, match=r"^c.yaml: api.keys_file: line 1: "):
        read_keys(config, "c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml: api.keys\[0\]: "):
        from_mapping({"api": {"keys": ["short"]}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml: api.keys_file: no such file"):
        from_mapping({"api": {"keys_file": str(tmp_path / "none")}}, "c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml: api.endpoint: "):
        from_mapping({"api": {"endpoint": "nonsense"}}, "c.yaml")
    assert Config().api.keys == ()


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "wsapp-client"), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode or 0, out.decode(), err.decode()


@pytest_twisted.ensureDeferred
async def test_cli_publish_presence_info_and_subscribe_since(start_server: Any) -> None:
    """wsapp-client publish/presence/info use the API; subscribe --since prints what followed."""
    server: Server = start_server(CONFIG)
    api = f"http://127.0.0.1:{server.port}/api/"
    env = {"WSAPP_API_KEY": KEY, "WSAPP_API_URL": api}
    status, out, err = await aio(cli("publish", "chat:room", '{"text":"hi"}', env=env))
    assert status == 0, err
    first = json.loads(out)
    await aio(cli("publish", "chat:room", '{"text":"again"}', env=env))
    status, out, _ = await aio(cli("presence", "chat:room", env=env))
    assert (status, json.loads(out)) == (0, {"clients": []})
    status, out, _ = await aio(cli("info", "--api", api, "--api-key", KEY))
    assert status == 0 and json.loads(out)["nodes"][0]["version"]
    status, _, err = await aio(cli("info", env={"WSAPP_API_URL": api, "WSAPP_API_KEY": ""}))
    assert status == 2 and "WSAPP_API_KEY" in err
    status, _, err = await aio(cli("info", "--api-key", "q" * 20, env=env))
    assert status == 1 and err.count("\n") == 1 and "401 unauthorized" in err
    process = await aio(asyncio.create_subprocess_exec(
        str(BIN / "wsapp-client"), "subscribe", server.url("/channels"), "chat:room",
        "--since", f"{first['offset']}:{first['epoch']}", stdout=asyncio.subprocess.PIPE,
    ))  # fmt: skip
    try:
        line = await aio(asyncio.wait_for(process.stdout.readline(), 15))
        assert json.loads(line) == {
            "type": "publication", "channel": "chat:room", "offset": 2, "data": {"text": "again"},
        }  # fmt: skip
        await post(server.port, "publish", {"channel": "chat:room", "data": 3})
        line = await aio(asyncio.wait_for(process.stdout.readline(), 15))
        assert json.loads(line)["data"] == 3
    finally:
        process.kill()
        await aio(process.wait())


@pytest_twisted.ensureDeferred
async def test_revoke_token_closes_its_connections_and_refuses_it(start_server: Any) -> None:
    """revoke_token by jti closes that token's connection with 4003 and refuses it after."""
    from dataclasses import replace as with_fields

    from tests.test_identity import bearer, closed_with, jwt_config, status_of, token

    config = jwt_config()
    server: Server = start_server(with_fields(config, api=CONFIG.api))
    revoked, kept = token("ines", jti="r-1"), token("ines", jti="r-2")

    async def scenario() -> None:
        url = server.url("/counter")
        async with (
            websockets.connect(url, additional_headers=bearer(revoked)) as first,
            websockets.connect(url, additional_headers=bearer(kept)) as second,
        ):
            await first.recv()
            await second.recv()
            until = int(time.time()) + 60
            revoking = post(server.port, "revoke_token", {"jti": "r-1", "expire_at": until})
            loop = asyncio.get_running_loop()
            status, answer = await Deferred.fromCoroutine(revoking).asFuture(loop)
            assert (status, answer) == (200, {})
            assert await closed_with(first) == (4003, "token revoked")
            assert await status_of(server.port, "/counter", bearer(revoked)) == 401
            await second.send(json.dumps({"action": "get", "id": 1}))
            while json.loads(await asyncio.wait_for(second.recv(), 5)).get("id") != 1:
                pass

    await aio(scenario())
