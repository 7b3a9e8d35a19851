"""The counter page in a real headless Chromium (Debian's), driven by playwright."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted
from playwright.async_api import Browser, Page, async_playwright, expect
from twisted.internet import defer

from tests.conftest import OUTPUT, aio, the_reactor
from wsapp.config import Config
from wsapp.service import ServerService

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Seconds the page may take to show what the test expects.
TIMEOUT = 15

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"
)


@contextmanager
def chromium(*flags: str) -> Iterator[Browser]:
    """A headless Chromium (Debian's) with ``CHROMIUM_FLAGS`` and ``flags``, closed after."""

    async def launch() -> tuple[Any, Browser]:
        driver = await async_playwright().start()
        launched = await driver.chromium.launch(
            executable_path=CHROMIUM, args=[*CHROMIUM_FLAGS, *flags], timeout=TIMEOUT * 1000
        )
        return driver, launched

    driver, launched = pytest_twisted.blockon(aio(launch()))
    try:
        yield launched
    finally:

        async def close() -> None:
            await launched.close()
            await driver.stop()

        pytest_twisted.blockon(aio(close()))


@pytest.fixture
def browser() -> Iterator[Browser]:
    """A headless Chromium for one test."""
    with chromium() as launched:
        yield launched


@pytest.fixture
def servers() -> Iterator[list[ServerService]]:
    """Services the test started; stopped afterwards."""
    started: list[ServerService] = []
    yield started
    for service in started:
        if service.running:
            pytest_twisted.blockon(stop(service))


def start(servers: list[ServerService], port: int = 0) -> ServerService:
    """Start a server with the default apps on 127.0.0.1:``port``."""
    config = replace(Config(), port=f"tcp:{port}:interface=127.0.0.1")
    service = ServerService(config, source="test", reactor=the_reactor())
    service.startService()
    servers.append(service)
    return service


def stop(service: ServerService) -> defer.Deferred[Any]:
    """Stop listening and cut every connection, as when the server process ends."""
    stopped = defer.maybeDeferred(service.stopService)
    for factory in service.factories.values():
        for connection in factory.registry:
            connection.dropConnection(abort=True)
    return stopped


async def open_page(browser: Browser, url: str) -> Page:
    page = await browser.new_page(viewport={"width": 800, "height": 600})
    await page.goto(url, timeout=TIMEOUT * 1000)
    return page


async def shows(page: Page, value: str, users: str, connection: str = "connected") -> None:
    """Wait until the page shows ``value``, ``users`` and the connection state."""
    timeout = TIMEOUT * 1000
    await expect(page.locator(".value")).to_have_text(value, timeout=timeout)
    await expect(page.locator(".users")).to_have_text(users, timeout=timeout)
    await expect(page.locator(".connection")).to_have_text(connection, timeout=timeout)


async def screenshot(page: Page, name: str) -> None:
    folder = OUTPUT / "page"
    folder.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=folder / name)


async def counts_down(page: Page) -> None:
    """Wait until the reconnect countdown goes down with the clock, three readings in a row."""
    await page.wait_for_function(
        """() => {
            const seen = (window.countdownSeen ||= { readings: [] });
            const text = document.querySelector(".connection").textContent;
            const found = text.match(/reconnecting in (\\d+\\.\\d) s/);
            if (!found) return !(seen.readings = []);
            seen.readings.push([performance.now() / 1000, Number(found[1])]);
            const last = seen.readings.slice(-3);
            return last.length === 3 && last.slice(1).every(([time, value], index) => {
                const [before, shown] = last[index];
                const drop = shown - value;
                return drop > 0 && Math.abs(drop - (time - before)) < 0.25;
            });
        }""",
        polling=150,
        timeout=TIMEOUT * 1000,
    )


@pytest_twisted.ensureDeferred
async def test_two_pages_share_the_counter_and_survive_a_restart(
    browser: Browser, servers: list[ServerService]
) -> None:
    """Two pages sync clicks and users; after a restart on the same port the page reconnects."""
    service = start(servers)
    assert service.port is not None
    port = service.port.getHost().port
    url = f"http://127.0.0.1:{port}/counter.html"
    first = await aio(open_page(browser, url))
    second = await aio(open_page(browser, url))
    for page in (first, second):
        await aio(shows(page, "0", "2 users online"))

    await aio(first.click(".plus"))
    for page in (first, second):
        await aio(shows(page, "1", "2 users online"))
    assert service.factories["/counter"].hub.backend.integers["/counter"] == 1
    await aio(screenshot(first, "counter-two-users.png"))

    await aio(second.close())
    await aio(shows(first, "1", "1 user online"))

    await stop(service)
    await aio(
        expect(first.locator(".connection")).to_contain_text("reconnecting", timeout=TIMEOUT * 1000)
    )
    assert await aio(first.locator(".plus").is_disabled())
    await aio(screenshot(first, "counter-reconnecting.png"))
    await aio(counts_down(first))

    restarted = start(servers, port)
    restarted.factories["/counter"].hub.backend.integers["/counter"] = 42
    await aio(shows(first, "42", "1 user online"))
    await aio(first.click(".minus"))
    await aio(shows(first, "41", "1 user online"))
    assert restarted.factories["/counter"].hub.backend.integers["/counter"] == 41
    await aio(screenshot(first, "counter-after-restart.png"))
