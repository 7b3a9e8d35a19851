"""The dashboard of two twistd processes on one Redis: each shows both; a killed one drops out."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
import websockets
from playwright.async_api import Browser, expect

from tests.browser import screenshot
from tests.conftest import RedisServer, Twistd, aio, sleep, until
from tests.test_api import KEY as API_KEY
from tests.test_api import post
from tests.test_page import CHROMIUM, TIMEOUT, browser  # noqa: F401 (the fixture)
from wsapp.config import from_mapping

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)
KEY = "dashboard-cluster-key"
#: How long a killed process's samples may outlive it: their TTL (wsapp.dashboard.TTL
#: intervals of 1 s), plus a poll and a refresh.
GONE_WITHIN = 3.0 + 2.0


@contextmanager
def two_processes(folder: Path, redis: RedisServer) -> Iterator[tuple[Twistd, Twistd]]:
    """Processes A and B on ``redis`` with the chat, the API and the dashboard; killed after."""
    config = folder / "config.yaml"
    config.write_text(json.dumps({
        "port": "tcp:0:interface=127.0.0.1", "backend": redis.url, "limits": {"rate": 0},
        "api": {"keys": [API_KEY]}, "dashboard": {"key": KEY},
        "apps": {"/chat": "wsapp.apps.chat:ChatProtocol"},
    }))  # fmt: skip
    processes: list[Twistd] = []
    try:
        for name in ("a", "b"):
            (folder / name).mkdir()
            processes.append(Twistd(["--config", str(config)], folder / name))
        yield processes[0], processes[1]
    finally:
        for process in processes:
            if process.process.poll() is None:
                process.process.kill()
                process.process.wait()


async def data(port: int, query: str = "") -> dict[str, Any]:
    """The dashboard data of the process on ``port``."""
    response = await treq.get(
        f"http://127.0.0.1:{port}/dashboard/data{query}",
        headers={"authorization": [f"Bearer {KEY}"]},
        timeout=10,
    )
    assert response.code == 200, await response.text()
    return await response.json()  # type: ignore[no-any-return]


def busiest(info: dict[str, Any], figure: str) -> float:
    """The highest rate of ``figure`` of the chat in a process's samples."""
    return max((sample["apps"]["/chat"][figure] for sample in info["samples"]), default=0.0)


async def load(talker_url: str, listener_url: str, stop: asyncio.Event, count: int) -> int:
    """
    Say up to ``count`` texts in the lobby through ``talker_url`` (about a hundred a second)
    while a client of ``listener_url`` hears them, until ``stop``; return how many were said.
    """
    sent = 0
    async with websockets.connect(listener_url) as listener:
        while json.loads(await listener.recv())["type"] != "joined":
            pass
        async with websockets.connect(talker_url) as talker:
            while json.loads(await talker.recv())["type"] != "joined":
                pass
            deadline = asyncio.get_running_loop().time() + 30
            while sent < count and not stop.is_set():
                assert asyncio.get_running_loop().time() < deadline, "the load took too long"
                await talker.send(json.dumps({"action": "say", "text": f"load {sent}", "id": sent}))
                while json.loads(await talker.recv()).get("id") != sent:
                    pass
                sent += 1
                while json.loads(await asyncio.wait_for(listener.recv(), 10))["type"] != "chat":
                    pass
                await asyncio.sleep(0.01)  # paced: a few seconds of load, not a flood
    return sent


@asynccontextmanager
async def running(talker: Twistd, listener: Twistd, count: int) -> AsyncIterator[asyncio.Event]:
    """Run :func:`load` from ``talker`` to ``listener`` meanwhile; stopped on leaving."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(load(talker.url("/chat"), listener.url("/chat"), stop, count))
    try:
        yield stop
    finally:
        stop.set()
        assert await aio(asyncio.wait_for(task, 20)) > 0


async def connected(*processes: Twistd) -> None:
    for process in processes:
        await until(lambda p=process: "Connected to redis" in p.output(), what="Redis")


@needs_redis
@pytest_twisted.ensureDeferred
async def test_each_process_shows_every_process_and_a_killed_one_drops_out(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A shows B's rates under load (B never polled) and its own; B killed: gone within the TTL."""
    with two_processes(tmp_path, redis_server) as (a, b):
        await connected(a, b)
        async with running(b, a, 300) as stop:
            deadline = time.monotonic() + 20
            while True:
                report = await data(a.port)
                mine = report["process"]
                others = [pid for pid in report["processes"] if pid != mine]
                if others and busiest(report["processes"][others[0]], "in") > 0:
                    if busiest(report["processes"][mine], "out") > 0:
                        break
                shown = list(report["processes"])
                assert time.monotonic() < deadline, f"B's load never showed on A: {shown}"
                await sleep(0.2)
            stop.set()
        theirs = others[0]
        assert list(report["processes"]) == [mine, theirs] and not report["partial"]
        assert report["processes"][mine]["pid"] == a.process.pid
        assert report["processes"][theirs]["pid"] == b.process.pid
        assert busiest(report["processes"][mine], "broadcasts") > 0  # the listener on A
        assert report["totals"]["processes"] == 2
        from_b = await data(b.port)
        assert from_b["process"] == theirs and set(from_b["processes"]) == {mine, theirs}
        newer = await data(a.port, f"?after={theirs}:{report['processes'][theirs]['last']}")
        last = report["processes"][theirs]["last"]
        assert all(s["seq"] > last for s in newer["processes"][theirs]["samples"])
        assert newer["processes"][mine]["samples"][0]["seq"] == 1  # all of A's
        status, info = await post(a.port, "info")
        assert status == 200 and len(info["nodes"]) == 2, "dashboard samples are not nodes"

        b.process.kill()
        killed = time.monotonic()
        while theirs in (report := await data(a.port))["processes"]:
            assert time.monotonic() - killed < GONE_WITHIN, "the killed process stayed"
            await sleep(0.1)
        assert list(report["processes"]) == [mine] and report["totals"]["processes"] == 1

        redis_server.kill()
        deadline = time.monotonic() + 10
        while not (report := await data(a.port))["partial"]:
            assert time.monotonic() < deadline, "Redis down was not reported"
            await sleep(0.1)
        assert list(report["processes"]) == [mine] and report["processes"][mine]["samples"]


SECTIONS = """() => {
    const sections = [...document.querySelectorAll("[data-process]")];
    const figure = (section, name) => Number(section.querySelector(
        `tr[data-name='/chat'] [data-figure='${name}']`)?.textContent);
    return sections.length === 2 && sections.every((s) => figure(s, "out") > 0)
        && sections.some((s) => figure(s, "in") > 0)
        && sections.some((s) => figure(s, "broadcasts") > 0);
}"""


@needs_redis
@pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed")
@pytest_twisted.ensureDeferred
async def test_the_page_shows_a_section_per_process_with_its_rates(
    browser: Browser,  # noqa: F811
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """A's page draws A's and B's sections with nonzero rates under B's load; B killed: one."""
    with two_processes(tmp_path, redis_server) as (a, b):
        await connected(a, b)
        page = await aio(browser.new_page(viewport={"width": 1100, "height": 900}))
        page.set_default_timeout(TIMEOUT * 1000)
        await aio(page.goto(f"http://127.0.0.1:{a.port}/dashboard"))
        await aio(page.fill("#key", KEY))
        await aio(page.click("#key-form button"))
        async with running(b, a, 2000):
            await aio(page.wait_for_function(SECTIONS))
            connections = page.locator("#totals tr[data-name='/chat'] [data-figure='connections']")
            await aio(expect(connections).to_have_text("2"))
            await aio(
                page.wait_for_function("document.querySelectorAll('.chart canvas').length === 14")
            )
            await aio(screenshot(page, "dashboard-two-processes.png"))
        b.process.kill()
        await aio(
            page.wait_for_function(
                "document.querySelectorAll('[data-process]').length === 1",
                timeout=(GONE_WITHIN + 2) * 1000,
            )
        )
        assert await aio(page.locator("#totals").is_hidden())


@pytest_twisted.ensureDeferred
async def test_one_process_on_memory_shows_itself_and_names_a_bad_after(
    start_server: Any,
) -> None:
    """On memory: the data holds this process alone, sampled unpolled; info lists one node."""
    config = from_mapping({"dashboard": {"key": KEY}, "api": {"keys": [API_KEY]}}, "test")
    server = start_server(config)
    await until(lambda: server.service.sampler.seq >= 2, what="two samples, nobody polling")
    report = await data(server.port)
    mine = report["process"]
    assert list(report["processes"]) == [mine] and not report["partial"]
    assert [s["seq"] for s in report["processes"][mine]["samples"]][:2] == [1, 2]
    assert report["totals"]["processes"] == 1
    assert (await data(server.port, f"?after={mine}:1"))["processes"][mine]["samples"][0][
        "seq"
    ] == 2
    assert (await data(server.port, "?after=other:5"))["processes"][mine]["samples"][0]["seq"] == 1
    for query in ("?after=x", f"?after={mine}:y"):
        response = await treq.get(
            f"http://127.0.0.1:{server.port}/dashboard/data{query}",
            headers={"authorization": [f"Bearer {KEY}"]},
        )
        assert response.code == 400
        assert "'after' must be an integer or PROCESS:INTEGER" in await response.text()
    status, info = await post(server.port, "info")
    assert status == 200 and [node["node"] for node in info["nodes"]] == [mine]
