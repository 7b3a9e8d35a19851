"""wsapp's reactor: found by twistd, the default of ``twistd wsapp``, and as Twisted's epoll."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from twisted.application.reactors import IReactorInstaller
from twisted.internet import epollreactor, posixbase
from twisted.plugin import getPlugins

from tests.conftest import BIN, Twistd
from wsapp.reactor import WsappReactor


def test_reactor_plugin_is_installed(tmp_path: Path) -> None:
    """``twistd -r wsapp`` finds the reactor in the installed package's plugins."""
    found = {plugin.shortName: plugin for plugin in getPlugins(IReactorInstaller)}
    assert found["wsapp"].moduleName == "wsapp.reactor"
    listed = subprocess.run(
        [str(BIN / "twistd"), "--help-reactors"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # outside the source tree: the installed package's plugins
    )
    assert "wsapp" in listed.stdout


def test_twistd_wsapp_uses_it_by_default(twistd: Any) -> None:
    """Without ``-r``, ``twistd wsapp`` runs on :class:`WsappReactor` and serves."""
    server: Twistd = twistd("--port", "tcp:0:interface=127.0.0.1")
    assert "reactor class: wsapp.reactor.WsappReactor." in server.output()
    assert server.stop() == -signal.SIGTERM  # twistd ends with the signal it stopped on
    assert "Server Shut Down." in server.output()


@pytest.mark.parametrize(
    ("name", "reactor"),
    [
        ("epoll", "twisted.internet.epollreactor.EPollReactor"),
        ("wsapp", "wsapp.reactor.WsappReactor"),
    ],
)
def test_twistd_r_chooses_the_reactor(tmp_path: Path, name: str, reactor: str) -> None:
    """``twistd -r NAME wsapp`` keeps the reactor twistd was told to install."""
    log = tmp_path / "twistd.out"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "-r", name, "wsapp", "--port", "tcp:0"],
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "wsapp serving" not in log.read_text() and time.monotonic() < deadline:
            assert process.poll() is None, log.read_text()
            time.sleep(0.05)
        assert f"reactor class: {reactor}." in log.read_text()
    finally:
        process.terminate()
        process.wait(10)


#: A protocol whose dataReceived fails: the reactor logs it with the connection's system
#: and drops the connection, as Twisted's epoll reactor does.
FAILING = """
import socket, sys
from twisted.internet import protocol
from twisted.python import log
from wsapp.reactor import install

reactor = install()
log.startLogging(sys.stdout, setStdout=False)

class Failing(protocol.Protocol):
    def dataReceived(self, data):
        log.msg("got data")
        raise ValueError("bad " + data.decode())

    def connectionLost(self, reason):
        print("LOST", reason.type.__name__, flush=True)
        reactor.stop()

factory = protocol.Factory.forProtocol(Failing)
port = reactor.listenTCP(0, factory, interface="127.0.0.1")

def client():
    sock = socket.create_connection(("127.0.0.1", port.getHost().port))
    sock.sendall(b"input")
    reactor.addSystemEventTrigger("after", "shutdown", sock.close)

reactor.callWhenRunning(client)
reactor.callLater(20, reactor.stop)
reactor.run()
"""


def test_failing_protocol_is_logged_and_disconnected() -> None:
    """An exception in ``dataReceived`` is logged with its system, then the connection lost."""
    done = subprocess.run(
        [sys.executable, "-c", FAILING], capture_output=True, text=True, timeout=60
    )
    assert "LOST ValueError" in done.stdout, done.stdout + done.stderr
    (line,) = [line for line in done.stdout.splitlines() if "Unhandled Error" in line]
    assert "[Failing,0,127.0.0.1]" in line
    assert "ValueError: bad input" in done.stdout
    # the one difference from EPollReactor: legacy log.msg has no per-event system
    assert "[-] got data" in done.stdout


def test_epoll_internals_are_where_the_reactor_expects() -> None:
    """The event handling wsapp.reactor copies is still Twisted's, names for names."""
    copied = set(posixbase._PollLikeMixin._doReadOrWrite.__code__.co_names)
    assert copied == {
        "_POLL_DISCONNECTED",
        "_POLL_IN",
        "_reads",
        "CONNECTION_DONE",
        "CONNECTION_LOST",
        "fileno",
        "_NO_FILEDESC",
        "doRead",
        "_POLL_OUT",
        "doWrite",
        "BaseException",
        "sys",
        "exc_info",
        "log",
        "err",
        "_disconnectSelectable",
    }, "Twisted's _doReadOrWrite changed: compare wsapp.reactor.WsappReactor._handle with it"
    polling = set(epollreactor.EPollReactor.doPoll.__code__.co_names)
    assert polling == {
        "_poller",
        "poll",
        "len",
        "_selectables",
        "OSError",
        "errno",
        "EINTR",
        "_doReadOrWrite",
        "KeyError",
        "log",
        "callWithLogger",
    }, "Twisted's EPollReactor.doPoll changed: compare WsappReactor.doPoll with it"
    assert issubclass(WsappReactor, epollreactor.EPollReactor)
