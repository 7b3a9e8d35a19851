"""The page, /health and /metrics over plain HTTP, and the handshake access log."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
import websockets
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool, readBody

from tests.conftest import Server, Twistd, aio, connect, the_reactor
from wsapp.config import AppConfig, Config
from wsapp.exceptions import ConfigError
from wsapp.service import ServerService

# Twisted's readBody warns about the HTTP client's own transport; the body is read in full.
pytestmark = pytest.mark.filterwarnings("ignore:Using readBody:DeprecationWarning")


async def get(server: Server, path: str, agent: Agent | None = None) -> tuple[int, bytes, Any]:
    """GET ``path`` from the server; return the status, body and headers."""
    agent = agent or Agent(the_reactor())
    response = await agent.request(b"GET", f"http://127.0.0.1:{server.port}{path}".encode())
    body = await readBody(response)
    return response.code, body, response.headers


async def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Return every sample of /metrics by name and sorted labels."""
    code, body, headers = await get(server, "/metrics")
    assert code == 200
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Return one sample's value, 0 when it is absent."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def refused_handshake(server: Server, path: str) -> bytes:
    """Send an opening handshake of an unsupported WebSocket version; return the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 99\r\n\r\n".encode()
    )
    status = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    return status.strip()


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The text of every event logged by wsapp during the test."""
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_namespace", "").startswith("wsapp"):
            lines.append(event["log_format"].format(**event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


@pytest_twisted.ensureDeferred
async def test_the_counter_page_has_no_external_assets(server: Server) -> None:
    """GET /counter.html is the counter page, connecting to /counter, loading nothing else."""
    code, body, headers = await get(server, "/counter.html")
    page = body.decode()
    assert code == 200
    assert headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
    assert 'data-counter-path="/counter"' in page
    assert "users online" in page
    assert not re.search(r"(?:https?|wss?):/|@import|url\(", page)
    assert re.findall(r'(?:src|href)="([^"]*)"', page) == ["data:,"]  # no favicon request


@pytest_twisted.ensureDeferred
async def test_page_follows_the_counter_wherever_it_is_mounted(start_server: Any) -> None:
    """The page connects to the counter's configured path; without a counter it says so."""
    moved = start_server(
        Config(apps={"/apps/tally": AppConfig("wsapp.apps.counter:CounterProtocol")})
    )
    assert b'data-counter-path="/apps/tally"' in (await get(moved, "/counter.html"))[1]
    without = start_server(Config(apps={"/echo": AppConfig("wsapp.apps.echo:EchoProtocol")}))
    code, body, _ = await get(without, "/counter.html")
    assert code == 200 and b'data-counter-path=""' in body


@pytest.mark.parametrize("path", ["/health", "/metrics/app"])
def test_apps_cannot_be_mounted_over_health_or_metrics(path: str) -> None:
    """An app under /health or /metrics is a config error naming the app's key."""
    config = Config(port="tcp:0", apps={path: AppConfig("wsapp.apps.echo:EchoProtocol")})
    with pytest.raises(ConfigError, match=f"apps.{path}.*served by wsapp itself"):
        ServerService(config, source="wsapp.yaml", reactor=the_reactor())


@pytest_twisted.ensureDeferred
async def test_health_reports_status_uptime_and_users(server: Server) -> None:
    """/health answers 200 with the status, backend, uptime, connections and users per app."""
    clients = [await connect(server.url("/counter")) for _ in range(2)]
    await connect(server.url("/echo"))
    for client in clients:
        await client.next_of("state")
    code, body, headers = await get(server, "/health")
    report = json.loads(body)
    assert code == 200
    assert headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert report["status"] == "ok"
    assert report["backend"] == "memory"
    assert 0 <= report["uptime"] < 60
    assert report["connections"] == 3
    assert report["apps"] == {
        "/counter": {"users": 2},
        "/echo": {"users": 1},
        "/chat": {"users": 0},
        "/clock": {"users": 0},
        "/channels": {"users": 0},
    }


@pytest_twisted.ensureDeferred
async def test_health_answers_503_once_shutdown_begins(server: Server) -> None:
    """After stopService begins, /health on a kept-alive connection answers 503 "stopping"."""
    agent = Agent(the_reactor(), pool=HTTPConnectionPool(the_reactor(), persistent=True))
    assert (await get(server, "/health", agent))[0] == 200
    stopped = defer.maybeDeferred(server.service.stopService)
    code, body, _ = await get(server, "/health", agent)
    assert code == 503
    assert json.loads(body)["status"] == "stopping"
    await stopped
    await agent._pool.closeCachedConnections()


@pytest_twisted.ensureDeferred
async def test_metrics_follow_real_websocket_traffic(server: Server) -> None:
    """Handshakes, messages, bytes, broadcasts, errors and closes show up in /metrics."""
    before = await scrape(server)
    assert sample(before, "wsapp_connections", app="/counter") == 0
    first = await connect(server.url("/counter"))
    second = await connect(server.url("/counter"))
    while (await first.next_of("users"))["count"] != 2:
        pass
    first.sendMessage(b'{"action":"plus"}')
    await second.next_of("state")
    await second.next_of("state")
    first.sendMessage(b"{oops")
    assert (await first.next_of("error"))["error"] == "invalid-json"
    assert (await aio(refused_handshake(server, "/counter"))).startswith(b"HTTP/1.1 400 ")
    during = await scrape(server)
    assert sample(during, "wsapp_connections", app="/counter") == 2
    assert sample(during, "wsapp_handshakes_total", app="/counter", result="accepted") == 2
    assert sample(during, "wsapp_handshakes_total", app="/counter", result="rejected") == 1
    assert sample(during, "wsapp_messages_total", app="/counter", direction="in") == 2
    # state + users to the first, state + users twice to the second... and 1 error event
    sent = sample(during, "wsapp_messages_total", app="/counter", direction="out")
    assert sent == 2 + 3 + 2 + 1, sent
    received = sample(during, "wsapp_message_bytes_total", app="/counter", direction="in")
    assert received == len(b'{"action":"plus"}{oops')
    assert sample(during, "wsapp_message_bytes_total", app="/counter", direction="out") > 0
    # users after each join (1 + 2 recipients), then the plus (2 recipients)
    assert sample(during, "wsapp_broadcasts_total", app="/counter") == 3
    assert sample(during, "wsapp_broadcast_recipients_total", app="/counter") == 5
    assert sample(during, "wsapp_errors_total", app="/counter", code="invalid-json") == 1
    second.sendClose(code=4001)
    await second.factory.closed
    after = await scrape(server)
    assert sample(after, "wsapp_connections", app="/counter") == 1
    assert sample(after, "wsapp_closes_total", app="/counter", code="4001") == 1


@pytest_twisted.ensureDeferred
async def test_compression_ratio_of_deflate_connections(server: Server) -> None:
    """Compressible echoes through permessage-deflate give a ratio above 1 both ways."""
    message = "wsapp " * 2000

    async def echo_twice() -> None:
        async with websockets.connect(server.url("/echo"), compression="deflate") as websocket:
            for _ in range(2):
                await websocket.send(message)
                assert await websocket.recv() == message

    before = await scrape(server)
    assert sample(before, "wsapp_compression_ratio", app="/echo", direction="out") == 0
    await aio(echo_twice())
    samples = await scrape(server)
    assert sample(samples, "wsapp_compression_ratio", app="/echo", direction="out") > 10
    assert sample(samples, "wsapp_compression_ratio", app="/echo", direction="in") > 10
    assert sample(samples, "wsapp_messages_total", app="/echo", direction="out") == 2
    assert sample(samples, "wsapp_message_bytes_total", app="/echo", direction="out") == 2 * len(
        message
    )


@pytest_twisted.ensureDeferred
async def test_each_server_has_its_own_metrics(start_server: Any) -> None:
    """Two servers in one process count their own traffic only."""
    busy, idle = start_server(), start_server()
    await connect(busy.url("/counter"))
    busy_samples, idle_samples = await scrape(busy), await scrape(idle)
    assert sample(busy_samples, "wsapp_handshakes_total", app="/counter", result="accepted") == 1
    assert sample(idle_samples, "wsapp_handshakes_total", app="/counter", result="accepted") == 0


@pytest_twisted.ensureDeferred
async def test_each_handshake_is_logged(server: Server, logged: list[str]) -> None:
    """Accepted and refused handshakes each log the peer, path, status and extensions."""
    client = await connect(server.url("/counter"))
    port = client.transport.getHost().port
    await aio(refused_handshake(server, "/chat"))
    accepted = [line for line in logged if f"tcp4:127.0.0.1:{port} GET /counter 101" in line]
    assert len(accepted) == 1
    assert "permessage-deflate; server_max_window_bits=12" in accepted[0]
    refused = [line for line in logged if "GET /chat 400 (" in line]
    assert len(refused) == 1, logged


def test_installed_twistd_serves_page_health_and_metrics(twistd: Any) -> None:
    """The installed package's ``twistd wsapp`` serves its pages, /health and /metrics."""
    server: Twistd = twistd("--port", "tcp:0:interface=127.0.0.1")
    base = f"http://127.0.0.1:{server.port}"
    with urllib.request.urlopen(f"{base}/counter.html", timeout=10) as response:
        assert b'data-counter-path="/counter"' in response.read()
    with urllib.request.urlopen(f"{base}/wsapp.js", timeout=10) as response:
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
    with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
        assert json.loads(response.read())["status"] == "ok"
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        assert b'wsapp_connections{app="/counter"} 0.0' in response.read()


@pytest.mark.parametrize(
    ("port", "url"),
    [
        ("tcp:0:interface=127.0.0.1", "http://127.0.0.1:{port}/"),
        ("tcp6:0:interface=\\:\\:1", "http://[::1]:{port}/"),
        ("unix:{folder}/wsapp.sock", "unix:{folder}/wsapp.sock"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_serving_line_names_the_interface_given(
    port: str, url: str, tmp_path: Any, logged: list[str]
) -> None:
    """The "wsapp serving" line shows the interface or socket path the endpoint names."""
    config = Config(port=port.format(folder=tmp_path))
    service = ServerService(config, source="test", reactor=the_reactor())
    service.startService()
    try:
        assert service.port is not None
        number = getattr(service.port.getHost(), "port", None)
        expected = url.format(port=number, folder=tmp_path)
        apps = "/counter, /echo, /chat, /clock, /channels"
        assert f"wsapp serving {expected} (apps: {apps})" in logged
    finally:
        await defer.maybeDeferred(service.stopService)
