"""The HTTP API of two twistd processes on one Redis; Redis down; malformed frames counted."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest_twisted
import treq

from tests.conftest import ROOT, RedisServer, Twistd, aio, connect, sleep, the_reactor, until
from tests.test_api import KEY, post, python
from wsapp.config import from_mapping

EMIT = """
import json, sys
from wsapp.api import Client
one, two = (Client(f"http://127.0.0.1:{port}/api/", sys.argv[3]) for port in sys.argv[1:3])
body = {"channel": "orders", "data": {"id": 9}, "idempotency_key": "order-9"}
print(json.dumps([one.call("publish", **body), two.call("publish", **body), one.info(),
                  two.channels("feed-*")]))
"""


def _config(folder: Path, redis: RedisServer) -> Path:
    path = folder / "config.yaml"
    path.write_text(json.dumps({
        "port": "tcp:0:interface=127.0.0.1", "backend": redis.url, "api": {"keys": [KEY]},
        "apps": {"/channels": "wsapp.apps.channels:ChannelsProtocol",
                 "/users": "tests.api_users:UserProtocol"},
    }))  # fmt: skip
    return path


@pytest_twisted.ensureDeferred
async def test_two_processes_share_idempotency_channels_info_and_disconnect(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """On one Redis: a key publishes once via either process; info, channels and disconnect
    cover both processes."""
    config = str(_config(tmp_path, redis_server))
    env = {"PYTHONPATH": str(ROOT)}
    processes = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        processes.append(Twistd(["--config", config], tmp_path / name, env))
    try:
        await _share(*processes)
    finally:
        for process in processes:
            process.process.kill()
            process.process.wait()


async def _share(one: Twistd, two: Twistd) -> None:
    for process in (one, two):
        await until(lambda p=process: "Connected to redis" in p.output(), what="Redis")
    listener = await connect(two.url("/users?user=carol"))
    listener.sendMessage(json.dumps({"action": "subscribe", "channel": "orders"}).encode())
    await listener.next_of("subscribed")
    for channel in ("feed-a", "feed-b"):
        listener.sendMessage(json.dumps({"action": "subscribe", "channel": channel}).encode())
        await listener.next_of("subscribed")

    deadline = time.monotonic() + 10
    while len((await post(one.port, "info"))[1]["nodes"]) < 2:  # the reports of both
        assert time.monotonic() < deadline, "the second process never reported"
        await sleep(0.05)
    status, out, err = await aio(python("-c", EMIT, str(one.port), str(two.port), KEY))
    assert status == 0, err
    first, second, info, channels = json.loads(out)
    assert first == second and first["offset"] == 1
    event = await listener.next_of("publication")
    assert (event["channel"], event["offset"]) == ("orders", 1)
    assert sorted(node["connections"] for node in info["nodes"]) == [0, 1]
    assert channels == {"channels": {"feed-a": {"subscribers": 1}, "feed-b": {"subscribers": 1}}}
    assert (await post(one.port, "disconnect", {"user": "carol"})) == (200, {})
    closed = listener.factory.closed
    closed.addTimeout(10, the_reactor())
    _, code, _ = await closed
    assert code == 4000


@pytest_twisted.ensureDeferred
async def test_redis_down_is_503_and_malformed_frames_are_counted(
    start_server: Any, redis_server: RedisServer
) -> None:
    """A plain PUBLISH on a channel wsapp listens to is counted in /metrics; Redis down: 503."""
    config = from_mapping({"api": {"keys": [KEY]}, "backend": redis_server.url}, "test")
    server = start_server(replace(config))
    await until(lambda: server.service.backend.available, what="Redis")
    client = await connect(server.url("/channels"))
    client.sendMessage(json.dumps({"action": "subscribe", "channel": "news"}).encode())
    await client.next_of("subscribed")
    assert redis_server.command("PUBLISH", "wsapp:0:channel:news", "hello") == b":1\r\n"
    await until(lambda: server.service.backend.malformed == 1, what="the malformed count")
    response = await treq.get(
        f"http://127.0.0.1:{server.port}/metrics", reactor=the_reactor(), persistent=False
    )
    text = (await treq.content(response)).decode()
    assert "wsapp_backend_malformed_messages_total 1.0" in text
    assert 'wsapp_api_requests_total{method="publish",status="200"}' not in text
    assert (await post(server.port, "publish", {"channel": "news", "data": 1}))[0] == 200
    redis_server.kill()
    await until(lambda: not server.service.backend.available, what="Redis lost")
    status, answer = await post(server.port, "publish", {"channel": "news", "data": 2})
    assert (status, answer["error"]) == (503, "backend-unavailable")
    response = await treq.get(
        f"http://127.0.0.1:{server.port}/metrics", reactor=the_reactor(), persistent=False
    )
    text = (await treq.content(response)).decode()
    assert 'wsapp_api_requests_total{method="publish",status="503"} 1.0' in text
