"""
Shared fixtures: servers on 127.0.0.1 port 0, wsapp and third-party clients, twistd.

Tests run on Twisted's asyncio reactor (``--reactor=asyncio``), so a Twisted test can
await the asyncio ``websockets`` client through :func:`aio`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from autobahn.twisted.websocket import connectWS
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, LogLevel, formatEvent, globalLogPublisher
from websockets.exceptions import ConnectionClosed
from zope.interface import provider

from wsapp.backends import PresenceChange
from wsapp.channels import Publication
from wsapp.client import ClientFactory, ClientProtocol
from wsapp.config import Config
from wsapp.service import ServerService

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
#: Where tests leave reports and screenshots; printed at the end of the run.
OUTPUT = Path(os.environ.get("WSAPP_TEST_OUTPUT", ROOT / "test-output"))
BIN = Path(sys.executable).parent


def the_reactor() -> Any:
    """The reactor pytest-twisted installed (imported late so it can install it first)."""
    from twisted.internet import reactor

    return reactor


def aio(coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
    """Run an asyncio coroutine on the reactor's loop and return its result as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


def sleep(seconds: float) -> Deferred[None]:
    return defer.Deferred.fromFuture(asyncio.ensure_future(asyncio.sleep(seconds)))


class Server:
    """A running wsapp server on 127.0.0.1 with a random port."""

    def __init__(self, service: ServerService) -> None:
        self.service = service
        assert service.port is not None
        self.port = service.port.getHost().port

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def factory(self, path: str) -> Any:
        return self.service.factories[path]


@pytest.fixture
def start_server() -> Iterator[Any]:
    """Start a server for a :class:`Config` (port forced to loopback 0); stopped after the test."""
    services: list[ServerService] = []

    def start(config: Config | None = None) -> Server:
        config = replace(config or Config(), port="tcp:0:interface=127.0.0.1")
        service = ServerService(config, source="test", reactor=the_reactor())
        service.startService()
        services.append(service)
        return Server(service)

    yield start
    for service in services:
        for factory in service.factories.values():
            for connection in factory.registry:
                connection.dropConnection(abort=True)
        pytest_twisted.blockon(defer.maybeDeferred(service.stopService))


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A wsapp server on wss:// with a certificate of a throwaway CA; yields (port, CA file)."""
    import trustme

    ca = trustme.CA()
    certificate = ca.issue_cert("localhost", "127.0.0.1")
    key_file = tmp_path / "server.pem"
    certificate.private_key_and_cert_chain_pem.write_to_path(str(key_file))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    config = replace(Config(), port=f"ssl:0:interface=127.0.0.1:privateKey={key_file}")
    service = ServerService(config, source="test", reactor=the_reactor())
    service.startService()
    yield Server(service).port, ca_file
    pytest_twisted.blockon(defer.maybeDeferred(service.stopService))


@pytest.fixture
def server(start_server: Any) -> Server:
    """A server with the default configuration."""
    return start_server()  # type: ignore[no-any-return]


class LogCapture:
    """The log events emitted while a test runs."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def messages(self, level: LogLevel = LogLevel.debug) -> list[str]:
        """Formatted messages at ``level`` or above."""
        return [
            formatEvent(event)
            for event in self.events
            if event.get("log_level", LogLevel.info) >= level
        ]

    def errors(self) -> list[str]:
        """Messages logged as errors or failures."""
        return [
            formatEvent(event)
            for event in self.events
            if "log_failure" in event
            or event.get("log_level") in (LogLevel.error, LogLevel.critical)
        ]


@pytest.fixture
def log_events() -> Iterator[LogCapture]:
    """Every log event emitted during the test."""
    capture = LogCapture()

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        capture.events.append(event)

    globalLogPublisher.addObserver(observe)
    yield capture
    globalLogPublisher.removeObserver(observe)


class RecordingClient(ClientProtocol):
    """A wsapp client that queues every JSON event it receives."""

    def onOpen(self) -> None:
        super().onOpen()
        self.events: defer.DeferredQueue[dict[str, Any]] = defer.DeferredQueue()
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        import json

        self.events.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"closed: {code} {reason}"))
        self.factory.closed.callback((wasClean, code, reason))

    async def next_event(self, timeout: float = 5) -> dict[str, Any]:
        """Return the next event, failing the test after ``timeout`` seconds."""
        waiting = self.events.get()
        waiting.addTimeout(timeout, the_reactor())
        return await waiting  # type: ignore[no-any-return]

    async def next_of(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        """Return the next event of type ``kind``, skipping others."""
        while True:
            event = await self.next_event(timeout)
            if event["type"] == kind:
                return event


async def connect(
    url: str, protocol: type[ClientProtocol] = RecordingClient, **options: Any
) -> Any:
    """Connect a wsapp client and wait until it is open."""
    factory = ClientFactory(url, protocol, reactor=the_reactor(), **options)
    factory.opened = Deferred()
    factory.closed = Deferred()
    connectWS(factory)
    opened = factory.opened
    opened.addTimeout(5, the_reactor())
    return await opened


class Twistd:
    """A ``twistd -n wsapp`` subprocess of the installed package, run outside the source tree."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.log = cwd / "twistd.out"
        self.process = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "wsapp", *args],
            cwd=cwd,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.port = self._wait_for_port()

    def _wait_for_port(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"wsapp serving https?://[\d.]+:(\d+)/", self.output())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"twistd exited with {self.process.returncode}:\n{self.output()}"
                )
            time.sleep(0.05)
        self.process.kill()
        raise RuntimeError(f"twistd did not start listening:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stop(self, timeout: float = 10) -> int:
        """Send SIGTERM and return the exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def run_twistd(cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``twistd -n wsapp ARGS`` to its end (a startup error, say) and capture its output."""
    return subprocess.run(
        [str(BIN / "twistd"), "-n", "--pidfile=", "wsapp", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def twistd(tmp_path: Path) -> Iterator[Any]:
    """Start ``twistd -n wsapp ARGS`` in a temporary folder; killed after the test."""
    started: list[Twistd] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Twistd:
        process = Twistd(list(args), tmp_path, env)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process.poll() is None:
            process.process.kill()
            process.process.wait()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the texts tests recorded as ``summary`` (the Autobahn TestSuite's tables)."""
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for name, text in getattr(report, "user_properties", ()):
                if name == "summary":
                    terminalreporter.write_sep("-", report.nodeid)
                    terminalreporter.write_line(text)


async def close_code(websocket: Any) -> int:
    """Read from a websockets client until the server closes; return the close code it sent."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await websocket.recv()
    assert closed.value.rcvd is not None
    return int(closed.value.rcvd.code)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """A ``redis-server`` on a free loopback port, persisting every write (AOF, fsync always)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self, timeout: float = 10) -> None:
        log = (self.folder / "redis.out").open("ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
             str(self.folder), "--save", "", "--appendonly", "yes", "--appendfsync", "always"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def command(self, *words: str) -> bytes:
        """Send one command (e.g. CONFIG SET) and return the raw reply."""
        request = b"".join(f"${len(w.encode())}\r\n{w}\r\n".encode() for w in words)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as connection:
            connection.sendall(f"*{len(words)}\r\n".encode() + request)
            return connection.recv(1024)

    def kill(self) -> None:
        """Kill -9: nothing is written after the last acknowledged command."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server for the test; killed afterwards."""
    server = RedisServer(tmp_path)
    yield server
    server.kill()


async def until(condition: Callable[[], object], timeout: float = 10, what: str = "") -> None:
    """Wait (checking every 10 ms) until ``condition()`` is true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or condition}")
        await sleep(0.01)


class RecordingListener:
    """A backend listener that records what it hears, in order."""

    def __init__(self) -> None:
        #: ``(channel, epoch, publication, tag)`` of every delivery.
        self.deliveries: list[tuple[str, str, Publication, str]] = []
        #: ``(channel, change)`` of every presence change.
        self.changes: list[tuple[str, PresenceChange]] = []
        self.reconnections = 0
        self.interruptions = 0

    def deliver(self, channel: str, epoch: str, publication: Publication, tag: str) -> None:
        self.deliveries.append((channel, epoch, publication, tag))

    def presence_changed(self, channel: str, change: PresenceChange) -> None:
        self.changes.append((channel, change))

    def reconnected(self) -> None:
        self.reconnections += 1

    def interrupted(self) -> None:
        self.interruptions += 1

    def data(self, channel: str) -> list[Any]:
        """The data delivered on ``channel``, in order."""
        return [publication.data for name, _, publication, _ in self.deliveries if name == channel]
