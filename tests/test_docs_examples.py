"""
Every code example of the tutorial and the how-to guides runs as written.

Examples are the ``code-block`` directives of ``docs/tutorial`` and ``docs/howto``, found
by their ``:name:``; each test writes them to a folder and runs them against real servers
on loopback (``twistd``, Redis, nginx and HAProxy as Debian ships them), changing only
ports, paths and waits as each test says.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import trustme
import websocket
from twisted.internet.threads import deferToThread

from tests.conftest import BIN, ROOT, Server, aio, free_port, run_twistd
from tests.test_page import CHROMIUM, browser  # noqa: F401 (the fixture)

DOCS = ROOT / "docs"
BLOCK = re.compile(r"^\.\. code-block:: (\S+)\n((?:   :\w+:.*\n)*)\n((?:(?:   .*)?\n)+)", re.M)


def blocks(*folders: str) -> dict[str, str]:
    """The code blocks of the pages in ``folders``, by ``:name:`` (a nameless one is '')."""
    found: dict[str, str] = {}
    for folder in folders:
        for page in sorted((DOCS / folder).glob("*.rst")):
            for match in BLOCK.finditer(page.read_text()):
                options = dict(re.findall(r":(\w+): (.*)", match.group(2)))
                body = re.sub(r"^   ", "", match.group(3), flags=re.M).rstrip() + "\n"
                found[options.get("name", f"{page.name}: unnamed")] = body
    return found


EXAMPLES = blocks("tutorial", "howto")
#: The examples the tests below run; a new example needs a test and its name here.
RUN = {
    *("tutorial-serve", "tutorial-counter-client"),
    *("tutorial-shout-py", "tutorial-shout-yaml", "tutorial-shout-serve"),
    *("tutorial-shout-client", "tutorial-channels-yaml", "tutorial-channels-py"),
    *("tutorial-tokens-yaml", "tutorial-tokens-mint", "tutorial-tokens-client"),
    "tutorial-tokens-page",
    *("tutorial-production-yaml", "tutorial-production-run", "howto-clients-blocking"),
    *("howto-clients-reconnecting", "howto-systemd-unit", "howto-nginx-site"),
    *("howto-haproxy-wsapp", "howto-haproxy-cfg", "howto-redis-workers", "howto-tls-yaml"),
    *("howto-tls-check", "howto-publish-yaml", "howto-publish-notify", "howto-publish-flask"),
    *("howto-publish-celery", "howto-testing-py", "howto-workers-run"),  # test_workers.py
}


def test_every_example_has_a_test() -> None:
    """Each code block of the tutorial and how-to guides is named and run by a test here."""
    assert set(EXAMPLES) == RUN


def write(folder: Path, name: str, text: str) -> Path:
    (folder / name).write_text(text)
    return folder / name


def python(code: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done


def console(block: str, port: int, cwd: Path) -> None:
    """Run each ``$`` command of a console block and compare what it prints with the block."""
    for command, expected in re.findall(r"^\$ (.*)\n((?:(?!\$ ).*\n)*)", block, re.M):
        command = command.replace(".venv/bin/", f"{BIN}/").replace(":8000", f":{port}")
        done = subprocess.run(
            shlex.split(command), capture_output=True, text=True, timeout=30, cwd=cwd
        )
        assert done.stdout + done.stderr == expected, command


def http_get(url: str, timeout: float = 5) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_for(condition: Any, timeout: float = 20, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = condition()
        except OSError:
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


# --- tutorial ---


def test_serve_command_is_the_readmes_and_serves_every_app(tmp_path: Path, twistd: Any) -> None:
    """The tutorial's first command is the README's; its twistd part serves the shipped apps."""
    block = EXAMPLES["tutorial-serve"]
    assert block.strip() in (ROOT / "README.md").read_text()
    shutil.copy(ROOT / "config.yaml", tmp_path)
    port = free_port()
    args = shlex.split(block.split("&&")[1].replace("8000", str(port)))
    assert args[:3] == [".venv/bin/twistd", "-n", "wsapp"]
    server = twistd(*args[3:])
    line = f"wsapp serving http://0.0.0.0:{port}/ (apps: /counter, /echo, /chat, /clock, /channels)"
    assert line in server.output()
    assert line.replace(str(port), "8000") in (DOCS / "tutorial/counter.rst").read_text()
    console(EXAMPLES["tutorial-counter-client"], port, tmp_path)


def test_own_app(tmp_path: Path, twistd: Any) -> None:
    """shout.py and shout.yaml serve /shout: publications to all, the reply, the length check."""
    write(tmp_path, "shout.py", EXAMPLES["tutorial-shout-py"])
    write(tmp_path, "shout.yaml", EXAMPLES["tutorial-shout-yaml"])
    args = shlex.split(EXAMPLES["tutorial-shout-serve"])[3:]
    server = twistd(*args, "--port", "tcp:0:interface=127.0.0.1")
    listener = websocket.create_connection(server.url("/shout"), timeout=5)
    console(EXAMPLES["tutorial-shout-client"], server.port, tmp_path)
    publication = {"type": "publication", "channel": "shouts", "offset": 1, "data": {"text": "HI"}}
    assert json.loads(listener.recv()) == publication
    listener.send(json.dumps({"action": "shout", "text": "x" * 101}))
    assert json.loads(listener.recv())["error"] == "invalid-argument"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    failed = run_twistd(elsewhere, "--config", str(tmp_path / "shout.yaml"))
    assert failed.returncode == 1
    assert "apps./shout.protocol: cannot import 'shout': No module named 'shout'" in failed.stderr


def test_channels_tutorial_prints_what_it_says(tmp_path: Path, twistd: Any) -> None:
    """news.py against channels.yaml prints the offsets, publications and exact recovery shown."""
    write(tmp_path, "channels.yaml", EXAMPLES["tutorial-channels-yaml"])
    server = twistd("--config", "channels.yaml", "--port", "tcp:0:interface=127.0.0.1")
    code = EXAMPLES["tutorial-channels-py"].replace(":8000", f":{server.port}")
    page = (DOCS / "tutorial/channels.rst").read_text()
    printed = re.search(r"It prints::\n\n((?:   .*\n)+)", page)
    assert printed is not None
    assert python(code, tmp_path).stdout == re.sub(r"^   ", "", printed.group(1), flags=re.M)


def test_tokens(tmp_path: Path, twistd: Any) -> None:
    """try_tokens.py prints what the page says: 401, each permission's answer, refreshed."""
    write(tmp_path, "tokens.yaml", EXAMPLES["tutorial-tokens-yaml"])
    write(tmp_path, "mint.py", EXAMPLES["tutorial-tokens-mint"])
    server = twistd("--config", "tokens.yaml", "--port", "tcp:0:interface=127.0.0.1")
    code = EXAMPLES["tutorial-tokens-client"].replace(":8000", f":{server.port}")
    page = (DOCS / "tutorial/tokens.rst").read_text()
    printed = re.search(r"It prints::\n\n((?:   .*\n)+)", page)
    assert printed is not None
    assert python(code, tmp_path).stdout == re.sub(r"^   ", "", printed.group(1), flags=re.M)
    assert "?token=REDACTED" in server.output() and "?token=ey" not in server.output()


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed")
@pytest_twisted.ensureDeferred
async def test_tokens_page_authenticates_in_chromium(
    tmp_path: Path,
    twistd: Any,
    browser: Any,  # noqa: F811 (the fixture)
) -> None:
    """team.html in Chromium fetches a minted token, authenticates first, and counts as alice."""
    write(tmp_path, "tokens.yaml", EXAMPLES["tutorial-tokens-yaml"])
    mint = write(tmp_path, "mint.py", EXAMPLES["tutorial-tokens-mint"])
    server = twistd("--config", "tokens.yaml", "--port", "tcp:0:interface=127.0.0.1")
    spec = importlib.util.spec_from_file_location("docs_mint", mint)
    assert spec is not None and spec.loader is not None
    minted = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(minted)
    origin = f"http://127.0.0.1:{server.port}"
    fetched: list[str] = []

    async def scenario() -> None:
        page = await browser.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))

        async def token(route: Any) -> None:  # the web application's token endpoint
            fetched.append(minted.connection_token("alice"))
            await route.fulfill(body=fetched[-1], content_type="text/plain")

        await page.route(f"{origin}/token", token)
        await page.goto(f"{origin}/")  # the page is written on the server's origin, as if served
        await page.set_content(EXAMPLES["tutorial-tokens-page"])
        await page.wait_for_function("document.getElementById('state').textContent === 'open'")
        await page.wait_for_function("document.getElementById('value').textContent === '0'")
        await page.click("#plus")
        await page.wait_for_function("document.getElementById('value').textContent === '1'")
        await page.close()
        assert errors == []

    await aio(scenario())
    assert len(fetched) == 1
    assert "authenticated as alice" in server.output()


def test_production_run_drains_on_sigterm(tmp_path: Path) -> None:
    """The daemon serves /health, refuses other origins, drains with 503 on SIGTERM, exits."""
    port = free_port()
    config = EXAMPLES["tutorial-production-yaml"].replace("tcp:8000", f"tcp:{port}")
    assert "drain_period: 10 " in config
    write(tmp_path, "production.yaml", config.replace("drain_period: 10 ", "drain_period: 2 "))
    start, health, stop = EXAMPLES["tutorial-production-run"].splitlines()
    subprocess.run(start.replace(".venv/bin/", f"{BIN}/"), shell=True, cwd=tmp_path, check=True)
    pid = int(wait_for(lambda: (tmp_path / "wsapp.pid").read_text(), what="pid file"))
    try:
        health = health.replace(":8000", f":{port}")
        shown = wait_for(lambda: subprocess.run(health, shell=True, capture_output=True).stdout)
        assert json.loads(shown)["status"] == "ok"
        url = f"ws://127.0.0.1:{port}/counter"
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            websocket.create_connection(url, timeout=5, origin="https://elsewhere.example")
        assert refused.value.status_code == 403
        client = websocket.create_connection(url, timeout=5, origin="https://example.com")
        subprocess.run(stop, shell=True, cwd=tmp_path, check=True)
        assert wait_for(lambda: http_get(f"http://127.0.0.1:{port}/health")[0] == 503)
        client.settimeout(10)
        opcode, data = client.recv_data(control_frame=True)
        while opcode != websocket.ABNF.OPCODE_CLOSE:
            opcode, data = client.recv_data(control_frame=True)
        assert int.from_bytes(data[:2], "big") == 1001
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="daemon exit")
    finally:
        if Path(f"/proc/{pid}").exists():
            subprocess.run(["kill", "-9", str(pid)])


NEWS_CONFIG = """port: 8000
apps:
  /channels: wsapp.apps.channels:ChannelsProtocol
channels:
  namespaces:
    news: {publish: anyone, history_size: 10}
"""


@pytest.mark.skipif(not shutil.which(CHROMIUM), reason="Debian's chromium is not installed")
@pytest_twisted.ensureDeferred
async def test_javascript_reference_page_in_chromium(
    tmp_path: Path,
    twistd: Any,
    browser: Any,  # noqa: F811 (the fixture)
) -> None:
    """The JavaScript reference's page opens, subscribes, publishes and shows its publication."""
    example = blocks("reference")["reference-javascript-page"]
    write(tmp_path, "news.yaml", NEWS_CONFIG)
    server = twistd("--config", "news.yaml", "--port", "tcp:0:interface=127.0.0.1")
    listener = websocket.create_connection(server.url("/channels"), timeout=5)
    listener.send(json.dumps({"action": "subscribe", "channel": "news:today", "id": 1}))
    assert json.loads(listener.recv())["type"] == "subscribed"

    async def scenario() -> str:
        page = await browser.new_page()
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        await page.goto(f"http://127.0.0.1:{server.port}/")
        await page.set_content(example)
        await page.wait_for_function("document.querySelectorAll('#news li').length === 1")
        shown = await page.inner_text("#news")
        assert await page.inner_text("#state") == "open"
        await page.close()
        assert errors == []
        return shown

    assert await aio(scenario()) == "1: hello from the page"
    publication = {"type": "publication", "channel": "news:today", "offset": 1}
    assert json.loads(listener.recv()) == {**publication, "data": {"title": "hello from the page"}}


# --- how-to guides ---


@pytest_twisted.ensureDeferred
async def test_blocking_client(server: Server, tmp_path: Path) -> None:
    """The blocking example prints what it says: state, reply, 5, and what the watcher saw."""
    code = EXAMPLES["howto-clients-blocking"].replace(":8000", f":{server.port}")
    done = await deferToThread(python, code, tmp_path)
    assert done.stdout.splitlines() == [
        "{'type': 'state', 'value': 0}",
        "{'type': 'state', 'value': 1, 'id': 1}",
        "5",
        "[0, 1, 2, 3, 4, 5]",
    ]


@pytest_twisted.ensureDeferred
async def test_reconnecting_client(server: Server, tmp_path: Path) -> None:
    """The reconnecting example connects, shows the counter, adds one and stops cleanly."""
    code = EXAMPLES["howto-clients-reconnecting"].replace(":8000", f":{server.port}")
    assert "task.deferLater(reactor, 60)" in code  # shortened: nobody restarts the server here
    code = code.replace("task.deferLater(reactor, 60)", "task.deferLater(reactor, 1)")
    done = await deferToThread(python, code, tmp_path)
    assert done.stdout.splitlines() == ["connected", "counter is 0", "counter is 1"]
    assert server.factory("/counter").hub.backend.integers["/counter"] == 1


def test_systemd_unit_command_serves_and_stops_on_its_kill_signal(tmp_path: Path) -> None:
    """The unit's ExecStart serves from its folder, logs to stdout, and stops on SIGTERM."""
    unit = EXAMPLES["howto-systemd-unit"]
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert settings["KillSignal"] == "SIGTERM"
    config = (
        (ROOT / "config.yaml")
        .read_text()
        .replace("port: tcp:8000", "port: tcp:0:interface=127.0.0.1")
    )
    write(tmp_path, "config.yaml", config)
    command = settings["ExecStart"].replace("/srv/wsapp/.venv/bin/", f"{BIN}/")
    command = command.replace("/srv/wsapp", str(tmp_path))
    log = (tmp_path / "journal").open("w")
    process = subprocess.Popen(shlex.split(command), cwd=tmp_path, stdout=log, stderr=log)
    try:
        wait_for(lambda: "wsapp serving" in (tmp_path / "journal").read_text(), what="serving")
        process.send_signal(signal.SIGTERM)
        assert process.wait(int(settings["TimeoutStopSec"].rstrip("s"))) == -signal.SIGTERM
    finally:
        process.kill()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: Any) -> dict[str, Path]:
    """A CA and a certificate for 127.0.0.1, as PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1", "example.com")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    leaf.private_key_pem.write_to_path(str(folder / "privkey.pem"))
    for blob in leaf.cert_chain_pems:
        blob.write_to_path(str(folder / "fullchain.pem"), append=True)
    leaf.private_key_and_cert_chain_pem.write_to_path(str(folder / "both.pem"))
    return {name: folder / f"{name}.pem" for name in ("ca", "privkey", "fullchain", "both")}


def through_proxy(port: int, certificate: dict[str, Path]) -> websocket.WebSocket:
    """Open wss://127.0.0.1:PORT/counter trusting the test CA; check the first event."""
    ws = websocket.create_connection(
        f"wss://127.0.0.1:{port}/counter", timeout=5, sslopt={"ca_certs": str(certificate["ca"])}
    )
    assert json.loads(ws.recv()) == {"type": "state", "value": 0}
    return ws


def proxy(command: list[str], port: int, tmp_path: Path) -> subprocess.Popen[bytes]:
    log = (tmp_path / "proxy.log").open("wb")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: ssl.get_server_certificate(("127.0.0.1", port), timeout=1), what="proxy")
    except AssertionError:
        process.kill()
        raise AssertionError((tmp_path / "proxy.log").read_text()) from None
    return process


@pytest.mark.skipif(not shutil.which("nginx"), reason="nginx: installed by .ci/setup --test")
def test_nginx_site(tmp_path: Path, twistd: Any, certificate: dict[str, Path]) -> None:
    """Through the nginx site, a wss:// client reaches the counter, TLS ended by nginx."""
    server = twistd("--port", "tcp:0:interface=127.0.0.1")
    port = free_port()
    site = EXAMPLES["howto-nginx-site"].replace("listen 443", f"listen 127.0.0.1:{port}")
    site = site.replace("127.0.0.1:8001", f"127.0.0.1:{server.port}")
    site = site.replace("/etc/ssl/wsapp/", f"{certificate['ca'].parent}/")
    conf = f"""daemon off; pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log;
events {{}}
http {{ access_log off; client_body_temp_path {tmp_path}; proxy_temp_path {tmp_path};
{site}
}}"""
    write(tmp_path, "nginx.conf", conf)
    process = proxy(
        ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], port, tmp_path
    )
    try:
        through_proxy(port, certificate).close()
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.skipif(not shutil.which("haproxy"), reason="haproxy: installed by .ci/setup --test")
def test_haproxy_with_proxy_protocol(
    tmp_path: Path, twistd: Any, certificate: dict[str, Path]
) -> None:
    """Through HAProxy, wsapp sees the client's own address; without the header, nothing."""
    config = EXAMPLES["howto-haproxy-wsapp"].replace(":8001:", ":0:")
    write(tmp_path, "config.yaml", config)
    server = twistd("--config", "config.yaml")
    port = free_port()
    cfg = EXAMPLES["howto-haproxy-cfg"].replace("bind :443", f"bind 127.0.0.1:{port}")
    cfg = cfg.replace("127.0.0.1:8001", f"127.0.0.1:{server.port}")
    cfg = cfg.replace("/etc/haproxy/wsapp.pem", str(certificate["both"]))
    write(tmp_path, "haproxy.cfg", cfg)
    process = proxy(["haproxy", "-db", "-f", str(tmp_path / "haproxy.cfg")], port, tmp_path)
    try:
        ws = through_proxy(port, certificate)
        client = ws.sock.getsockname()[1]
        wait_for(lambda: f"tcp4:127.0.0.1:{client} GET /counter 101" in server.output())
        ws.close()
        with pytest.raises(websocket.WebSocketException):
            websocket.create_connection(server.url("/counter"), timeout=5)
    finally:
        process.terminate()
        process.wait(10)


def test_redis_workers_share_the_counter(tmp_path: Path, redis_server: Any) -> None:
    """Two daemons from the loop share one Redis: a change on one reaches a client of the other."""
    ports = [free_port(), free_port()]
    loop = EXAMPLES["howto-redis-workers"].replace(".venv/bin/", f"{BIN}/")
    loop = loop.replace("8001 8002", " ".join(map(str, ports)))
    loop = loop.replace("redis://127.0.0.1:6379/0", redis_server.url)
    subprocess.run(loop, shell=True, cwd=tmp_path, check=True, timeout=60)
    pids = [tmp_path / f"wsapp-{port}.pid" for port in ports]
    try:
        for port in ports:
            wait_for(lambda port=port: http_get(f"http://127.0.0.1:{port}/health")[0] == 200)
        first, second = (
            websocket.create_connection(f"ws://127.0.0.1:{p}/counter", timeout=5) for p in ports
        )
        for ws in (first, second):
            assert json.loads(ws.recv()) == {"type": "state", "value": 0}
        first.send(json.dumps({"action": "plus"}))
        while (event := json.loads(second.recv()))["type"] != "state":
            pass
        assert event == {"type": "state", "value": 1}
    finally:
        for pid in pids:
            if pid.exists():
                subprocess.run(["kill", "-TERM", pid.read_text().strip()])


def test_tls_with_own_certificate(
    tmp_path: Path, twistd: Any, certificate: dict[str, Path]
) -> None:
    """The tls: files serve wss://, and the openssl check shows the certificate's subject."""
    config = EXAMPLES["howto-tls-yaml"].replace("/etc/ssl/wsapp/", f"{certificate['ca'].parent}/")
    write(tmp_path, "config.yaml", config.replace("tcp:8443", "tcp:0:interface=127.0.0.1"))
    server = twistd("--config", "config.yaml")
    assert f"wsapp serving https://127.0.0.1:{server.port}/" in server.output()
    through_proxy(server.port, certificate).close()
    check = EXAMPLES["howto-tls-check"].replace(":8443", f":{server.port}")
    shown = subprocess.run(check, shell=True, capture_output=True, text=True, timeout=30)
    assert shown.stdout.startswith("subject=") and "issuer=" in shown.stdout


API_KEY = "howto-publish-key-0123456789"


def test_publish_from_flask_and_celery(tmp_path: Path, twistd: Any) -> None:
    """A Flask view and a Celery task publish through the API once per key; clients only read."""
    files = {"config.yaml": "yaml", "notify.py": "notify", "app.py": "flask", "tasks.py": "celery"}
    for name, example in files.items():
        write(tmp_path, name, EXAMPLES[f"howto-publish-{example}"])
    write(tmp_path, "api-keys.txt", f"# the publishers' key\n{API_KEY}\n")
    server = twistd("--config", "config.yaml", "--port", "tcp:0:interface=127.0.0.1")
    reader = websocket.create_connection(server.url("/channels"), timeout=5)
    reader.send(json.dumps({"action": "subscribe", "channel": "news:articles", "id": 1}))
    assert json.loads(reader.recv())["type"] == "subscribed"
    api = f"http://127.0.0.1:{server.port}/api/"
    environment = {"WSAPP_API_URL": api, "WSAPP_API_KEY": API_KEY}
    setup = f"import os; os.environ.update({environment!r});"
    post = "import app; c = app.app.test_client(); article = {'id': 7, 'title': 'hi'};"
    post += "print([(r.status_code, r.get_json()) for r in (c.post('/articles', json=article),"
    post += " c.post('/articles', json=article))])"
    done = python(setup + post, tmp_path)
    assert done.stdout == "[(201, {'published': 1}), (201, {'published': 1})]\n"
    publication = {"type": "publication", "channel": "news:articles", "offset": 1}
    assert json.loads(reader.recv()) == {**publication, "data": {"title": "hi"}}
    task = "import tasks; print(tasks.announce.apply(args=(8, 'there')).get())"
    assert python(setup + task, tmp_path).stdout == "2\n"
    assert json.loads(reader.recv()) == {**publication, "offset": 2, "data": {"title": "there"}}
    reader.send(json.dumps({"action": "publish", "channel": "news:articles", "data": 1}))
    assert json.loads(reader.recv())["error"] == "permission-denied"
    refused = setup + "import notify, wsapp.api; key = 'wrong-key-0123456789';"
    refused += "notify.API = wsapp.api.Client(os.environ['WSAPP_API_URL'], key)\n"
    refused += "try: notify.publish('news:articles', 1)\n"
    refused += "except wsapp.api.ApiError as error: print(error.status, error.code)"
    assert python(refused, tmp_path).stdout == "401 unauthorized\n"


def test_pytest_twisted_example_passes(tmp_path: Path) -> None:
    """test_shout.py passes in its own pytest run, beside shout.py."""
    write(tmp_path, "shout.py", EXAMPLES["tutorial-shout-py"])
    write(tmp_path, "test_shout.py", EXAMPLES["howto-testing-py"])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_shout.py"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
