"""What the server sends browsers over plain HTTP: wsapp.js, the pages, the dashboard's data."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import replace
from importlib.resources import files
from typing import Any

import pytest_twisted

from tests.conftest import Server, aio, connect
from wsapp.config import AppConfig, Config
from wsapp.config.schema import DashboardConfig

KEY = "k3y-for-the-test"


async def curl(server: Server, path: str, *options: str) -> tuple[int, dict[str, str], bytes]:
    """Fetch ``path`` with curl; return the status, the headers (lower-cased) and the body."""
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", "-i", "--max-time", "10", *options,
        f"http://127.0.0.1:{server.port}{path}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    assert process.returncode == 0, err
    head, _, body = out.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


@pytest_twisted.ensureDeferred
async def test_wsapp_js_is_a_javascript_module_with_an_etag(server: Server) -> None:
    """/wsapp.js is the package's file as text/javascript; its ETag makes a repeat a 304."""
    code, headers, body = await aio(curl(server, "/wsapp.js"))
    assert code == 200
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert body == files("wsapp").joinpath("web/wsapp.js").read_bytes()
    assert re.search(rb"^export function connect\(", body, re.MULTILINE)
    etag = headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    code, again, body = await aio(curl(server, "/wsapp.js", "-H", f"If-None-Match: {etag}"))
    assert (code, body, again["etag"]) == (304, b"", etag)
    code, _, body = await aio(curl(server, "/wsapp.js", "-H", 'If-None-Match: "other"'))
    assert code == 200 and body.startswith(b"//")
    code, headers, body = await aio(curl(server, "/wsapp.d.ts"))
    assert code == 200 and b"export declare function connect(" in body


@pytest_twisted.ensureDeferred
async def test_index_lists_the_mounted_apps_with_links_to_their_pages(server: Server) -> None:
    """/ names every mounted app; the counter and chat link to their pages; no dashboard link."""
    code, headers, body = await aio(curl(server, "/"))
    page = body.decode()
    assert code == 200 and headers["content-type"] == "text/html; charset=utf-8"
    for path in ("/counter", "/echo", "/chat", "/clock", "/channels"):
        assert f"<code>{path}</code>" in page
    assert 'href="counter.html?app=/counter"' in page
    assert 'href="chat.html?app=/chat"' in page
    assert "wsapp.apps.echo:EchoProtocol" in page
    assert '<p hidden id="dashboard-link">' in page
    assert not re.search(r"(?:https?|wss?):/|@import|url\(", page)


@pytest_twisted.ensureDeferred
async def test_pages_load_nothing_from_elsewhere(start_server: Any) -> None:
    """The chat and dashboard pages use only this server's files, and name the app to use."""
    server = start_server(Config(dashboard=DashboardConfig(key=KEY)))
    for path, app in (("/chat.html", 'data-chat-path="/chat"'), ("/dashboard", "")):
        code, _, body = await aio(curl(server, path))
        page = body.decode()
        assert code == 200, path
        assert app in page
        assert not re.search(r"(?:https?|wss?):/|@import|url\(", page), path
        for link in re.findall(r'(?:src|href)="([^"]*)"', page):
            assert link == "data:," or not re.match(r"[a-z]+:|//", link), link
            if link != "data:,":
                assert (await aio(curl(server, "/" + link)))[0] == 200, link


@pytest_twisted.ensureDeferred
async def test_dashboard_is_off_without_a_key(server: Server) -> None:
    """With dashboard.key empty, /dashboard and its data are 404."""
    for path in ("/dashboard", "/dashboard/data"):
        assert (await aio(curl(server, path)))[0] == 404


@pytest_twisted.ensureDeferred
async def test_dashboard_data_needs_the_key(start_server: Any) -> None:
    """The data answers 401 without the key or with a wrong one, and 400 for a bad 'after'."""
    server = start_server(Config(dashboard=DashboardConfig(key=KEY)))
    code, headers, _ = await aio(curl(server, "/dashboard/data"))
    assert code == 401 and headers["www-authenticate"].startswith("Bearer")
    code, _, _ = await aio(curl(server, "/dashboard/data", "-H", "Authorization: Bearer nope"))
    assert code == 401
    code, _, _ = await aio(curl(server, f"/dashboard/data?key={KEY}"))
    assert code == 401, "a key in the URL would end up in access logs"
    auth = f"Authorization: Bearer {KEY}"
    code, _, body = await aio(curl(server, "/dashboard/data?after=x", "-H", auth))
    assert code == 400 and b"'after'" in body


async def until_sampled(report: Any, process: str, after: int) -> int:
    """Ask for the data until a sample newer than ``after`` was taken (one a second)."""
    deadline = asyncio.get_running_loop().time() + 5
    while not (samples := (await report(after))["processes"][process]["samples"]):
        assert asyncio.get_running_loop().time() < deadline, "no sample was taken"
        await aio(asyncio.sleep(0.1))
    return int(samples[-1]["seq"])


@pytest_twisted.ensureDeferred
async def test_dashboard_data_has_rates_per_app_and_namespace(start_server: Any) -> None:
    """Counted messages, errors and publications come out as per-second rates of this process."""
    config = replace(Config(), dashboard=DashboardConfig(key=KEY))
    apps = {"/chat": AppConfig("wsapp.apps.chat:ChatProtocol")}
    server = start_server(replace(config, apps=apps))
    auth = ("-H", f"Authorization: Bearer {KEY}")

    async def report(after: int = 0) -> dict[str, Any]:
        code, headers, body = await aio(curl(server, f"/dashboard/data?after={after}", *auth))
        assert code == 200 and headers["content-type"] == "application/json"
        return json.loads(body)  # type: ignore[no-any-return]

    first = await report()
    process = first["process"]
    assert list(first["processes"]) == [process] and first["partial"] is False
    assert first["totals"]["processes"] == 1
    client = await connect(server.url("/chat"))
    await client.next_of("joined")
    last = await until_sampled(report, process, 0)
    for number in range(5):
        say = {"action": "say", "text": f"t{number}", "id": number}
        client.sendMessage(json.dumps(say).encode())
        await client.next_of("sent")
    client.sendMessage(b"{not json")
    await client.next_of("error")
    await until_sampled(report, process, last)
    sample = (await report(last))["processes"][process]["samples"][0]
    chat = sample["apps"]["/chat"]
    assert chat["connections"] == 1
    assert chat["in"] > 0 and chat["out"] > 0
    assert chat["errors"]["invalid-json"] > 0
    assert sample["namespaces"]["chat"]["channels"] == 1
    assert sample["namespaces"]["chat"]["subscribers"] == 1
    assert sample["namespaces"]["chat"]["publications"] > 0
    whole = (await report())["processes"][process]
    assert whole["errors"]["/chat"] == {"invalid-json": 1}
    newer = (await report(whole["last"]))["processes"][process]["samples"]
    assert all(sample["seq"] > whole["last"] for sample in newer)
    client.sendClose()
