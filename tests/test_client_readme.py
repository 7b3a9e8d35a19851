"""The README's client examples run as written (pointed at a test server)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest_twisted
from twisted.internet.threads import deferToThread

from tests.conftest import ROOT, Server


def clients_examples() -> list[str]:
    section = (ROOT / "README.md").read_text().split("\n## Clients\n")[1].split("\n## ")[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def run_example(code: str, server: Server) -> subprocess.CompletedProcess[str]:
    code = code.replace("ws://127.0.0.1:8000", f"ws://127.0.0.1:{server.port}")
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


@pytest_twisted.ensureDeferred
async def test_blocking_example(server: Server) -> None:
    """The blocking example prints what it says: state, reply, 5, and what the watcher saw."""
    blocking, _ = clients_examples()
    done = await deferToThread(run_example, blocking, server)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "{'type': 'state', 'value': 0}",
        "{'type': 'state', 'value': 1, 'id': 1}",
        "5",
        "[0, 1, 2, 3, 4, 5]",
    ]


@pytest_twisted.ensureDeferred
async def test_reconnecting_example(server: Server) -> None:
    """The reconnecting example connects, shows the counter, adds one and stops cleanly."""
    _, reconnecting = clients_examples()
    assert "task.deferLater(reactor, 60)" in reconnecting
    shortened = reconnecting.replace("task.deferLater(reactor, 60)", "task.deferLater(reactor, 1)")
    done = await deferToThread(run_example, shortened, server)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["connected", "counter is 0", "counter is 1"]
    assert server.factory("/counter").hub.backend.integers["/counter"] == 1
