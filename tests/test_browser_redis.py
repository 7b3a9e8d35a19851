"""A page's subscription across a restart of its process, with two processes on one Redis."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import websockets
from playwright.async_api import Browser

from tests.browser import client_page, screenshot
from tests.conftest import RedisServer, Twistd, aio, free_port
from tests.test_page import CHROMIUM, TIMEOUT, browser  # noqa: F401 (the fixture)

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None or shutil.which("redis-server") is None,
    reason="Debian's chromium or redis-server is not installed",
)

CONFIG = """
backend: {redis}
apps:
  /channels: wsapp.apps.channels:ChannelsProtocol
channels:
  namespaces:
    news: {{publish: anyone, history_size: 100, history_ttl: 300.0}}
shutdown: {{grace_period: 1.0}}
"""


async def publish(url: str, texts: list[str]) -> None:
    """Publish each text to news:live through the server at ``url``, one after the other."""
    async with websockets.connect(url) as client:
        for number, text in enumerate(texts):
            request = {"action": "publish", "channel": "news:live", "data": text, "id": number}
            await client.send(json.dumps(request))
            reply = json.loads(await client.recv())
            assert reply.get("type") == "published", reply


@pytest_twisted.ensureDeferred
async def test_subscription_survives_a_restart_and_gets_what_was_published_meanwhile(
    browser: Browser,  # noqa: F811
    twistd: Any,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Publications through B while A restarts reach A's page once each, in order, after."""
    config = tmp_path / "wsapp.yaml"
    config.write_text(CONFIG.format(redis=redis_server.url))
    port = free_port()
    first: Twistd = twistd("--config", str(config), "--port", f"tcp:{port}:interface=127.0.0.1")
    other: Twistd = twistd("--config", str(config), "--port", "tcp:0:interface=127.0.0.1")
    page = await aio(client_page(browser, port))
    await aio(
        page.evaluate(
            """async () => {
            window.received = [];
            window.states = [];
            window.unrecovered = [];
            window.client = wsapp.connect("/channels");
            client.on("state", (state) => states.push(state));
            const sub = await client.subscribe("news:live", (pub) => {
                received.push([pub.offset, pub.data]);
                document.body.textContent = received.map(([, data]) => data).join(" ");
            });
            sub.on("unrecovered", (event) => unrecovered.push(event));
        }"""
        )
    )
    await aio(publish(other.url("/channels"), ["b1", "b2", "b3"]))
    await aio(page.wait_for_function("received.length === 3", timeout=TIMEOUT * 1000))

    first.stop()
    await aio(page.wait_for_function("client.state !== 'open'", timeout=TIMEOUT * 1000))
    meanwhile = [f"m{number}" for number in range(1, 21)]
    await aio(publish(other.url("/channels"), meanwhile))
    twistd("--config", str(config), "--port", f"tcp:{port}:interface=127.0.0.1")
    await aio(page.wait_for_function("received.length >= 23", timeout=30 * 1000))
    await aio(publish(other.url("/channels"), ["after"]))
    await aio(page.wait_for_function("received.length >= 24", timeout=TIMEOUT * 1000))

    received = await aio(page.evaluate("received"))
    assert [data for _, data in received] == ["b1", "b2", "b3", *meanwhile, "after"]
    offsets = [offset for offset, _ in received]
    assert offsets == list(range(offsets[0], offsets[0] + 24))
    assert await aio(page.evaluate("unrecovered")) == []
    states = await aio(page.evaluate("states"))
    assert states[-1] == "open" and "closed" in states
    await aio(screenshot(page, "recovered-after-restart.png"))
