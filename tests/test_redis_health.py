"""What ``/health`` and the log say while Redis is unreachable, with a real redis-server."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.web.client import Agent, readBody

from tests.conftest import Server, Twistd, sleep, the_reactor
from tests.test_backend_redis import RedisServer
from wsapp.config import Config

# Twisted's readBody warns about the HTTP client's own transport; the body is read in full.
pytestmark = pytest.mark.filterwarnings("ignore:Using readBody:DeprecationWarning")

#: Seconds within which /health follows Redis going away or coming back.
FOLLOWS = 10
RETRY = re.compile(r"Redis (\S+) unreachable \(([^)]+)\); retrying in (\d+\.\d) s$")


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server for the test; killed afterwards."""
    server = RedisServer(tmp_path)
    yield server
    server.kill()


async def health_becomes(server: Server, code: int) -> dict[str, Any]:
    """GET /health every 0.05 s until it answers ``code`` (within :data:`FOLLOWS` s)."""
    agent = Agent(the_reactor())
    deadline = time.monotonic() + FOLLOWS
    while True:
        url = f"http://127.0.0.1:{server.port}/health".encode()
        response = await agent.request(b"GET", url)
        body = await readBody(response)
        if response.code == code:
            return json.loads(body)  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"/health stayed {response.code}: {body!r}"
        await sleep(0.05)


def get_health(port: int) -> tuple[int, dict[str, Any]]:
    """GET /health from a twistd process; return the status and the report."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest_twisted.ensureDeferred
async def test_health_is_503_naming_redis_while_it_is_down(
    start_server: Any, redis: RedisServer
) -> None:
    """Redis killed: /health answers 503 backend-unavailable naming it; restarted: 200 again."""
    server = start_server(Config(backend=redis.url))
    assert (await health_becomes(server, 200))["status"] == "ok"
    redis.kill()
    report = await health_becomes(server, 503)
    assert (report["status"], report.get("backend")) == ("backend-unavailable", redis.url)
    assert report["apps"]["/counter"] == {"users": 0}
    redis.start()
    report = await health_becomes(server, 200)
    assert (report["status"], report.get("backend")) == ("ok", redis.url)


def test_redis_down_at_startup_logs_one_line_per_retry(twistd: Any, redis: RedisServer) -> None:
    """Started with Redis down, twistd logs each retry once, delay rounded; /health is 503."""
    redis.kill()
    server: Twistd = twistd("--port", "tcp:0:interface=127.0.0.1", "--backend", redis.url)
    code, report = get_health(server.port)
    assert (code, report["status"]) == (503, "backend-unavailable")
    assert report["backend"] == redis.url
    seen: list[tuple[float, str]] = []  # when each retry line showed up, and the line
    deadline = time.monotonic() + 30
    while len(seen) < 4:
        assert time.monotonic() < deadline, server.output()
        lines = [line for line in server.output().splitlines() if "unreachable" in line]
        seen += [(time.monotonic(), line) for line in lines[len(seen) :]]
        time.sleep(0.02)
    assert "Scheduling retry" not in server.output()
    delays = []
    for _, line in seen:
        found = RETRY.search(line)
        assert found, line
        assert found.group(1, 2) == (redis.url, "Connection refused")
        delays.append(float(found.group(3)))
    # One retry after the other: the lines are at least the announced delays apart.
    slack = 0.05 * len(seen) + 0.1
    assert seen[-1][0] - seen[0][0] >= sum(delays[:-1]) - slack, (seen, delays)
    redis.start()
    while "Connected to " + redis.url not in server.output():
        assert time.monotonic() < deadline + 10, server.output()
        time.sleep(0.02)
    assert get_health(server.port)[0] == 200
