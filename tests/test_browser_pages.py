"""The chat and dashboard pages in Chromium: rooms shared by two pages, rates under load."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from typing import Any

import pytest
import pytest_twisted
import websockets
from playwright.async_api import Browser, Page, expect

from tests.browser import screenshot
from tests.conftest import aio
from tests.test_page import CHROMIUM, TIMEOUT, browser  # noqa: F401 (the fixture)
from wsapp.config import Config, LimitsConfig
from wsapp.config.schema import DashboardConfig

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"
)
KEY = "dashboard-test-key"


async def chat_page(chromium: Browser, port: int, width: int = 390) -> Page:
    """The chat page on a phone-sized screen, once it is in the lobby."""
    page = await chromium.new_page(viewport={"width": width, "height": 700})
    page.set_default_timeout(TIMEOUT * 1000)
    await page.goto(f"http://127.0.0.1:{port}/chat.html")
    await expect(page.locator("#status")).to_have_text("in lobby")
    return page


async def say(page: Page, text: str) -> None:
    await page.fill("#message", text)
    await page.click("#send")


@pytest_twisted.ensureDeferred
async def test_two_chat_pages_see_each_others_posts_and_presence(
    browser: Browser,  # noqa: F811
    start_server: Any,
) -> None:
    """Two pages in a room list each other, see each other's posts live, and the history."""
    server = start_server()
    first = await aio(chat_page(browser, server.port))
    await aio(say(first, "before anyone came"))
    second = await aio(chat_page(browser, server.port))
    for page in (first, second):
        await aio(expect(page.locator("#members li")).to_have_count(2))
    await aio(expect(second.locator("#members")).to_contain_text("(you)"))
    await aio(expect(second.locator("#messages li")).to_have_count(1))
    await aio(expect(second.locator("#messages li")).to_contain_text(["before anyone came"]))

    await aio(say(second, "hello from the second"))
    await aio(say(first, "hi <b>second</b>"))
    expected = ["before anyone came", "hello from the second", "hi <b>second</b>"]
    for page in (first, second):
        await aio(expect(page.locator("#messages li")).to_have_count(3))
        await aio(expect(page.locator("#messages li")).to_contain_text(expected))
    await aio(expect(first.locator("#messages li.mine")).to_have_count(2))
    await aio(expect(second.locator("#messages li.mine")).to_have_count(1))
    assert await aio(first.locator("#messages b").count()) == 0, "a text became markup"
    await aio(screenshot(first, "chat-first.png"))
    await aio(screenshot(second, "chat-second.png"))

    await aio(second.fill("#room", "garden"))
    await aio(second.click("#join"))
    await aio(expect(second.locator("#status")).to_have_text("in garden"))
    await aio(expect(first.locator("#members li")).to_have_count(1))
    await aio(expect(second.locator("#messages li")).to_have_count(0))
    await aio(say(first, "only the lobby hears this"))
    await aio(expect(first.locator("#messages li")).to_have_count(4))
    await aio(say(second, "only the garden hears this"))
    await aio(expect(second.locator("#messages li")).to_have_count(1))
    assert await aio(first.locator("#messages li").count()) == 4


async def load(url: str, seconds: float, stop: asyncio.Event) -> int:
    """Say texts in the lobby from two clients until ``stop`` or ``seconds``; return how many."""
    sent = 0
    async with websockets.connect(url) as talker, websockets.connect(url) as listener:
        reading = asyncio.ensure_future(drain(listener))
        deadline = asyncio.get_running_loop().time() + seconds
        while not stop.is_set() and asyncio.get_running_loop().time() < deadline and sent < 5000:
            await talker.send(json.dumps({"action": "say", "text": f"load {sent}", "id": sent}))
            while json.loads(await talker.recv()).get("id") != sent:
                pass
            sent += 1
            if sent % 20 == 0:
                await talker.send('{"action": "nope"}')
        await listener.close()
        await reading
    return sent


async def drain(client: Any) -> None:
    """Read what ``client`` is sent until it closes."""
    async for _ in client:
        pass


@pytest_twisted.ensureDeferred
async def test_dashboard_shows_nonzero_rates_while_a_load_runs(
    browser: Browser,  # noqa: F811
    start_server: Any,
) -> None:
    """With the key entered, the dashboard shows the chat's messages and errors per second."""
    config = replace(Config(), dashboard=DashboardConfig(key=KEY), limits=LimitsConfig(rate=0))
    server = start_server(config)
    page = await aio(browser.new_page(viewport={"width": 1000, "height": 900}))
    page.set_default_timeout(TIMEOUT * 1000)
    await aio(page.goto(f"http://127.0.0.1:{server.port}/dashboard"))
    await aio(expect(page.locator("#key-form")).to_be_visible())
    await aio(page.fill("#key", "wrong"))
    await aio(page.click("#key-form button"))
    await aio(expect(page.locator("#status")).to_have_text("wrong key"))
    await aio(page.fill("#key", KEY))
    await aio(page.click("#key-form button"))
    stop = asyncio.Event()
    running = asyncio.ensure_future(load(server.url("/chat"), 30, stop))
    try:
        chat = page.locator("[data-process] tr[data-name='/chat']")
        for figure in ("in", "out", "broadcasts", "errors"):
            await aio(
                page.wait_for_function(
                    """([figure]) => {
                        const row = document.querySelector("[data-process] tr[data-name='/chat']");
                        const cell = row && row.querySelector(`[data-figure='${figure}']`);
                        return cell !== null && Number(cell.textContent) > 0;
                    }""",
                    arg=[figure],
                )
            )
        await aio(expect(chat.locator("[data-figure='connections']")).to_have_text("2"))
        lobby = page.locator("[data-process] tr[data-name='chat']")
        await aio(expect(lobby.locator("[data-figure='subscribers']")).to_have_text("2"))
        await aio(expect(lobby.locator("[data-figure='publications']")).not_to_have_text("0"))
        await aio(expect(page.locator(".chart canvas")).to_have_count(7))
        await aio(screenshot(page, "dashboard-under-load.png"))
    finally:
        stop.set()
        sent = await aio(asyncio.wait_for(running, 10))
    assert sent > 0
