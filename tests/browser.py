"""Helpers of the browser tests: a page with wsapp.js loaded, and screenshots."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, Page

from tests.conftest import OUTPUT
from tests.test_page import TIMEOUT

#: Loads wsapp.js into the page as window.wsapp; `opened(client)` waits for "open".
LOAD = """async () => {
    window.wsapp = await import("/wsapp.js");
    window.opened = (client) => new Promise((resolve) => {
        if (client.state === "open") return resolve();
        const stop = client.on("state", (state) => state === "open" && (stop(), resolve()));
    });
}"""


async def client_page(browser: Browser, port: int) -> Page:
    """A page of the server on ``port`` (its index) with wsapp.js loaded."""
    page = await browser.new_page(viewport={"width": 800, "height": 600})
    page.set_default_timeout(TIMEOUT * 1000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"http://127.0.0.1:{port}/", timeout=TIMEOUT * 1000)
    await page.evaluate(LOAD)
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def screenshot(page: Page, name: str) -> None:
    """Save a screenshot under test-output/browser/."""
    folder = OUTPUT / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=folder / name, full_page=True)


def port_of(service: Any) -> int:
    return int(service.port.getHost().port)
