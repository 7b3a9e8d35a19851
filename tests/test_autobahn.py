"""
The Autobahn TestSuite (run by kosoku) against ``twistd -n wsapp`` and against wsapp's client.

The two full runs take minutes each and are marked ``slow``; the short ones run a few cases.
Reports go to ``test-output/autobahn/servers`` and ``.../clients``; the summary tables are
printed at the end of the pytest run.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from zope.interface import provider

from tests.autobahn_client import run_cases
from tests.autobahn_report import CaseResult, failure_report, read_results, summary
from tests.conftest import BIN, OUTPUT, ROOT, sleep, the_reactor
from wsapp.apps.echo import EchoClientProtocol
from wsapp.client import ClientProtocol

#: Cases kosoku runs at once against the server (it is one process, like twistd).
SERVER_PARALLELISM = 4
#: Case connections wsapp's client keeps open at once against the fuzzingserver.
CLIENT_CONCURRENCY = 4
#: Bound of one full run: it took 22 and 28 minutes on 2 cores shared with other runs.
SUITE_TIMEOUT = 40 * 60
#: A few cases from every chapter, for the quick runs.
SAMPLE = ["1.1.1", "2.10", "3.2", "4.1.3", "5.15", "6.4.1", "7.1.4", "7.7.1", "9.1.1", "12.1.1"]
SAMPLE += ["13.3.1", "13.7.1"]


def fresh(folder: Path) -> Path:
    """Empty ``folder`` (reports of an earlier run must not count) and return it."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def include(cases: list[str]) -> list[str]:
    return [argument for case in cases for argument in ("-i", case)]


def judge(title: str, folder: Path, record_property: Any, started: float) -> list[CaseResult]:
    """Record the summary of the reports in ``folder`` and fail on any case that did not pass."""
    results = read_results(folder)
    heading = f"{title}: {len(results)} cases in {time.monotonic() - started:.0f} s"
    record_property("summary", summary(heading, results, folder))
    failures = failure_report(results)
    if failures:
        pytest.fail(f"{title}: {failures}", pytrace=False)
    return results


def run_against_server(url: str, folder: Path, cases: list[str]) -> None:
    """Run kosoku's fuzzingclient against ``url``; it writes its reports to ``folder``."""
    command = [str(BIN / "kosoku"), url, "-p", str(SERVER_PARALLELISM), "-o", str(folder)]
    run = subprocess.run(
        [*command, *include(cases)], capture_output=True, text=True, timeout=SUITE_TIMEOUT
    )
    # kosoku exits 1 when a case fails (judged from the reports), anything else is an error.
    assert run.returncode in (0, 1), f"kosoku failed ({run.returncode}):\n{run.stderr}"


def check_twistd(server: Any) -> None:
    """The server is still up, logged no traceback and shuts down on SIGTERM."""
    assert server.process.poll() is None, f"twistd exited:\n{server.output()}"
    assert "Traceback" not in server.output(), server.output()
    assert server.stop() in (0, -signal.SIGTERM)
    assert "Server Shut Down." in server.output()


def shipped_twistd(twistd: Any) -> Any:
    """``twistd -n wsapp`` with the project's config.yaml, on a free loopback port."""
    config = str(ROOT / "config.yaml")
    return twistd("--config", config, "--port", "tcp:0:interface=127.0.0.1")


@pytest.mark.slow
def test_server_passes_the_whole_testsuite(twistd: Any, record_property: Any) -> None:
    """``twistd -n wsapp`` with the shipped config passes every case on /echo, deflate on."""
    server = shipped_twistd(twistd)
    folder = fresh(OUTPUT / "autobahn" / "servers")
    started = time.monotonic()
    run_against_server(server.url("/echo"), folder, [])
    assert server.process.poll() is None, f"twistd exited during the run:\n{server.output()}"
    judge("wsapp server (twistd -n wsapp, /echo)", folder, record_property, started)
    check_twistd(server)


def test_server_passes_sample_cases(twistd: Any, record_property: Any) -> None:
    """A few cases of every chapter pass against ``twistd -n wsapp``'s echo app."""
    server = shipped_twistd(twistd)
    folder = fresh(OUTPUT / "autobahn" / "servers-sample")
    started = time.monotonic()
    run_against_server(server.url("/echo"), folder, SAMPLE)
    assert server.process.poll() is None, f"twistd exited during the run:\n{server.output()}"
    results = judge("wsapp server, sample", folder, record_property, started)
    assert [result.case_id for result in results] == SAMPLE
    check_twistd(server)


class Fuzzingserver:
    """``kosoku -m fuzzingserver`` on a free loopback port, writing reports to ``folder``."""

    def __init__(self, folder: Path, cases: list[str]) -> None:
        self.folder = folder
        self.log = folder.parent / f"{folder.name}.log"
        command = [str(BIN / "kosoku"), "-m", "fuzzingserver", "127.0.0.1:0", "-o", str(folder)]
        self.process = subprocess.Popen(
            [*command, *include(cases)],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self.url = f"ws://127.0.0.1:{self._wait_for_port()}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def _wait_for_port(self, timeout: float = 20) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"listening on ws://[\d.]+:(\d+)", self.output())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"kosoku fuzzingserver did not start:\n{self.output()}")

    async def finished(self, timeout: float = 120) -> int:
        """Wait until it has written its reports and exited; return its exit code."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, f"kosoku did not exit:\n{self.output()}"
            await sleep(0.1)
        return self.process.returncode


@pytest.fixture
def fuzzingserver() -> Iterator[Any]:
    """Start kosoku's fuzzingserver for some cases; killed after the test if still running."""
    started: list[Fuzzingserver] = []

    def start(folder: Path, cases: list[str] | None = None) -> Fuzzingserver:
        server = Fuzzingserver(fresh(folder), cases or [])
        started.append(server)
        return server

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


@pytest.fixture
def logged_failures() -> Iterator[list[str]]:
    """Failures (tracebacks) logged through Twisted's logger during the test."""
    failures: list[str] = []

    @provider(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            failures.append(f"{formatEvent(event)}\n{event['log_failure'].getTraceback()}")

    globalLogPublisher.addObserver(observe)
    yield failures
    globalLogPublisher.removeObserver(observe)


async def run_client(
    server: Fuzzingserver, protocol: type[ClientProtocol] = EchoClientProtocol
) -> int:
    """Run a wsapp client through every case ``server`` serves; wait for its reports."""
    cases = Deferred.fromCoroutine(
        run_cases(
            server.url,
            "wsapp",
            reactor=the_reactor(),
            concurrency=CLIENT_CONCURRENCY,
            protocol=protocol,
        )
    )
    cases.addTimeout(SUITE_TIMEOUT, the_reactor())
    count: int = await cases
    assert await server.finished() in (0, 1), server.output()
    return count


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_client_passes_the_whole_testsuite(
    fuzzingserver: Any, logged_failures: list[str], record_property: Any
) -> None:
    """wsapp's EchoClientProtocol and ClientFactory, offering deflate, pass every case."""
    server = fuzzingserver(OUTPUT / "autobahn" / "clients")
    started = time.monotonic()
    count = await run_client(server)
    results = judge("wsapp client (EchoClientProtocol)", server.folder, record_property, started)
    assert len(results) == count
    assert not logged_failures, "\n".join(logged_failures)


@pytest_twisted.ensureDeferred
async def test_client_passes_sample_cases(
    fuzzingserver: Any, logged_failures: list[str], record_property: Any
) -> None:
    """A few cases of every chapter pass with wsapp's echo client."""
    server = fuzzingserver(OUTPUT / "autobahn" / "clients-sample", SAMPLE)
    started = time.monotonic()
    assert await run_client(server) == len(SAMPLE)
    results = judge("wsapp client, sample", server.folder, record_property, started)
    assert [result.case_id for result in results] == SAMPLE
    assert not logged_failures, "\n".join(logged_failures)


class SilentClient(ClientProtocol):
    """Echoes nothing: fails every case that expects an echo."""


@pytest_twisted.ensureDeferred
async def test_failed_case_is_reported_with_its_reason(
    fuzzingserver: Any, tmp_path: Path, record_property: Any
) -> None:
    """A client that does not echo fails, and the report names the case and the reason."""
    server = fuzzingserver(tmp_path / "silent", ["1.1.1", "2.1"])
    await run_client(server, SilentClient)
    results = read_results(server.folder)
    assert [(result.case_id, result.passed) for result in results] == [
        ("1.1.1", False),
        ("2.1", True),
    ]
    report = failure_report(results)
    assert report.startswith("1 of 2 cases failed:\n1.1.1: Send text message with payload 0.")
    assert "behavior FAILED: Actual events differ from any expected." in report
    table = summary("silent client", results, server.folder)
    assert re.search(r"^1 Framing\s+1\s+0\s+0\s+0\s+1$", table, re.MULTILINE), table
