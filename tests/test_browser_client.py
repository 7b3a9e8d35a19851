"""wsapp.js in Chromium against servers that misbehave, demand tokens, or see churn."""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import pytest
import pytest_twisted
from playwright.async_api import Browser

from tests.browser import client_page
from tests.conftest import aio, until
from tests.test_page import CHROMIUM, browser  # noqa: F401 (the fixture)
from wsapp.config import AppConfig, Config, LimitsConfig
from wsapp.messages import Request
from wsapp.server import ServerProtocol

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"
)


class TrickyProtocol(ServerProtocol):
    """Closes with the code asked for, sends what is not JSON, or never answers."""

    def action_close(self, request: Request) -> None:
        code = request.fields["code"]
        if code == "drop":
            self.dropConnection(abort=True)
        else:
            self.sendCloseFrame(code, b"as asked", isReply=False)

    def action_garbage(self, request: Request) -> Mapping[str, Any]:
        for payload in (b"{nope", b"[1, 2]", b"null", b'"text"'):
            self.sendMessage(payload)
        self.sendMessage(b"\x00\xff", isBinary=True)
        return {"type": "survived"}

    def action_silent(self, request: Request) -> None:
        return None


class TokenProtocol(ServerProtocol):
    """A stand-in for the identity wire format: authenticate first, refresh, close 4001."""

    heard: ClassVar[list[tuple[int, str, str | None]]] = []
    numbers = itertools.count(1)

    def onOpen(self) -> None:
        self.number = next(self.numbers)

    def dispatch(self, request: Request) -> None:
        self.heard.append((self.number, request.action, request.fields.get("token")))
        super().dispatch(request)

    def check(self, request: Request) -> Mapping[str, Any]:
        token = request.text("token", max_length=4096)
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        if claims["exp"] <= time.time():
            self.sendCloseFrame(4001, b"token expired", isReply=False)
        return {"type": "authenticated", "user": claims["sub"]}

    def action_authenticate(self, request: Request) -> Mapping[str, Any]:
        return self.check(request)

    def action_refresh(self, request: Request) -> Mapping[str, Any]:
        return self.check(request)

    def action_expire(self, request: Request) -> None:
        self.sendCloseFrame(4001, b"token expired", isReply=False)


def jwt(subject: str, lifetime: float) -> str:
    """An unsigned JWT-shaped token for ``subject`` expiring ``lifetime`` seconds from now."""

    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {"sub": subject, "exp": int(time.time() + lifetime)}
    return f"{part({'alg': 'none'})}.{part(claims)}.x"


def app_config(**apps: str) -> Config:
    """The given apps (name: protocol), requests unlimited in rate."""
    mounted = {f"/{name}": AppConfig(protocol) for name, protocol in apps.items()}
    return replace(Config(), apps=mounted, limits=LimitsConfig(rate=0.0))


@pytest_twisted.ensureDeferred
async def test_client_survives_any_close_code_invalid_json_and_silence(
    browser: Browser,  # noqa: F811
    start_server: Any,
) -> None:
    """After each close code the client reopens; bad messages are errors; silence times out."""
    server = start_server(app_config(tricky="tests.test_browser_client:TrickyProtocol"))
    page = await aio(client_page(browser, server.port))
    result = await aio(
        page.evaluate(
            """async () => {
            const client = wsapp.connect("/tricky");
            const states = [], errors = [], failures = [];
            client.on("state", (state, info) => states.push([state, info.code ?? null]));
            client.on("error", (error) => errors.push(error.code));
            await opened(client);
            for (const code of [1000, 1001, 1008, 1011, 3000, 4000, 4001, 4999, "drop"]) {
                await client.request({ action: "close", code }).catch((e) => failures.push(e.code));
                await opened(client);
            }
            const reply = await client.request({ action: "garbage" });
            const started = performance.now();
            const silent = await client.request({ action: "silent" }, { timeout: 400 })
                .then(() => "answered", (e) => e.code);
            const waited = performance.now() - started;
            const after = await client.request({ action: "garbage" });
            return { states, errors, failures, reply: reply.type, silent, waited,
                     after: after.type, pending: client.requests.pending.size };
        }"""
        )
    )
    closes = [code for state, code in result["states"] if state == "closed"]
    assert closes == [1000, 1001, 1008, 1011, 3000, 4000, 4001, 4999, 1006]
    assert result["failures"] == ["disconnected"] * 9
    assert result["reply"] == result["after"] == "survived"
    assert result["errors"].count("invalid-json") == 8  # four payloads, twice
    assert result["silent"] == "timeout" and 400 <= result["waited"] < 2000
    assert result["pending"] == 0
    assert page.errors == []  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_token_is_sent_first_refreshed_before_expiry_and_renewed_after_4001(
    browser: Browser,  # noqa: F811
    start_server: Any,
) -> None:
    """authenticate comes first; refresh before exp with getToken's; after 4001, a new one."""
    server = start_server(app_config(token="tests.test_browser_client:TokenProtocol"))
    # the class as the server imported it (this module may be loaded twice by name)
    app = server.factory("/token").protocol
    app.heard, app.numbers = [], itertools.count(1)
    first, second, third = jwt("ada", 3), jwt("ada", 3600), jwt("ada", 7200)
    page = await aio(client_page(browser, server.port))
    await aio(
        page.evaluate(
            """async ([first, next]) => {
            const queue = [...next];
            window.asked = 0;
            window.client = wsapp.connect("/token", {
                token: first,
                getToken: async () => (window.asked++, queue.shift()),
            });
            await opened(client);
        }""",
            [first, [second, third]],
        )
    )
    await until(lambda: (1, "refresh", second) in app.heard, 10, "a refresh")
    assert app.heard[:2] == [(1, "authenticate", first), (1, "refresh", second)]
    await aio(page.evaluate("client.request({action: 'expire'}).catch(() => {})"))
    await until(lambda: any(number == 2 for number, *_ in app.heard), 10, "reconnect")
    await aio(page.evaluate("opened(client)"))
    assert app.heard == [
        (1, "authenticate", first),
        (1, "refresh", second),
        (1, "expire", None),
        (2, "authenticate", third),
    ]
    assert await aio(page.evaluate("asked")) == 2


@pytest_twisted.ensureDeferred
async def test_thousands_of_subscribes_and_unsubscribes_leak_nothing(
    browser: Browser,  # noqa: F811
    start_server: Any,
) -> None:
    """4,000 subscribe/unsubscribe rounds leave the heap, the client and the server as before."""
    server = start_server(app_config(channels="wsapp.apps.channels:ChannelsProtocol"))
    page = await aio(client_page(browser, server.port))
    cdp = await aio(page.context.new_cdp_session(page))

    async def heap() -> int:
        await cdp.send("HeapProfiler.collectGarbage")
        return int((await cdp.send("Runtime.getHeapUsage"))["usedSize"])

    rounds = """async (count) => {
        window.client ||= wsapp.connect("/channels");
        await opened(client);
        for (let i = 0; i < count; i++) {
            const sub = await client.subscribe("churn" + (i % 10), () => {});
            sub.on("unrecovered", () => {});
            await sub.unsubscribe();
        }
        return [client.subscriptions.size, client.requests.pending.size, client.queue.length,
                [...client.listeners.values()].reduce((n, set) => n + set.size, 0)];
    }"""
    assert await aio(page.evaluate(rounds, 500)) == [0, 0, 0, 0]
    before = await aio(heap())
    assert await aio(page.evaluate(rounds, 4000)) == [0, 0, 0, 0]
    after = await aio(heap())
    assert after - before < 256 * 1024, f"the heap grew by {after - before} bytes"
    factory = server.factory("/channels")
    (connection,) = factory.registry
    assert connection.subscriptions == set()
    assert [name for name in factory.hub.channels if not name.startswith("$")] == []
