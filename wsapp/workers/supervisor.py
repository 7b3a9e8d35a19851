"""
The supervisor of ``twistd wsapp --workers N``: N worker processes on the same sockets.

It opens every listening socket the configuration names (:mod:`~wsapp.workers.sockets`)
before ``twistd`` sheds privileges, then starts each worker as ``twistd -n wsapp`` with
the same options, its sockets as inherited file descriptors and a
:class:`~wsapp.workers.peers.WorkerSpec` in its environment. A worker that exits is
started again after a backoff. Stopping the supervisor (SIGTERM or SIGINT) sends SIGTERM
to every worker, their graceful shutdown, and waits for them; a second signal, or the
workers outliving ``shutdown.drain_period + shutdown.grace_period + KILL_AFTER``, kills them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..config import Config
from ..exceptions import ConfigError
from .logs import Relay
from .peers import ENVIRONMENT, WorkerSpec
from .sockets import listening_sockets

__all__ = ["KILL_AFTER", "Supervisor", "check_workers"]

log = Logger()

#: Seconds the workers get beyond their drain and grace periods before they are killed.
KILL_AFTER = 10.0
#: Backoff before restarting a worker: the first delay, the longest, and how long a worker
#: must have run for its next restart to start again from the first delay.
RESTART_DELAY, RESTART_DELAY_MAX, RESTART_RESET = 0.5, 30.0, 10.0
#: The first inherited file descriptor in a worker.
FIRST_FD = 3


def check_workers(config: Config, source: str) -> None:
    """Raise :class:`ConfigError` on ``workers`` if ``config`` cannot run that many."""
    if config.workers > 1 and not config.backend.startswith("redis://"):
        raise ConfigError(
            source, "workers", f"{config.workers} workers need a shared backend: set "
            f"backend to redis://HOST:PORT/DB (the {config.backend} backend is one process's)"
        )  # fmt: skip


@dataclass
class _Slot:
    """One worker's place: its sockets, and the process filling it now."""

    index: int
    sockets: dict[str, socket.socket]
    process: Any = None
    started: float = 0.0
    streak: int = 0
    restart: Any = None
    ended: list[Deferred[None]] = field(default_factory=list)


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: Supervisor, slot: _Slot) -> None:
        self.supervisor = supervisor
        self.slot = slot
        self.relay: Relay | None = None

    def connectionMade(self) -> None:
        transport: Any = self.transport
        self.relay = Relay(transport.pid)
        transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.records(data)

    def errReceived(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.lines(data)

    def processEnded(self, reason: Failure) -> None:
        if self.relay is not None:
            self.relay.flush()
        self.supervisor._ended(self.slot, self.relay.pid if self.relay else 0, reason.value)


class Supervisor(Service):
    """Runs ``config.workers`` workers (each a ``twistd -n wsapp ARGS``) on shared sockets."""

    def __init__(
        self, config: Config, argv: list[str], *, source: str = "config", reactor: Any = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        check_workers(config, source)
        self.config = config
        self.argv = list(argv)
        self.source = source
        self.reactor = reactor
        self.slots: list[_Slot] = []
        self.run: str = ""
        self.stopping = False
        self._failed = False
        self._previous: dict[int, Any] = {}

    @property
    def pids(self) -> list[int]:
        """The pids of the running workers."""
        return [slot.process.pid for slot in self.slots if slot.process is not None]

    def privilegedStartService(self) -> None:
        endpoints = {"port": self.config.port}
        if self.config.api.endpoint and (self.config.api.keys or self.config.api.keys_file):
            endpoints["api.endpoint"] = self.config.api.endpoint
        count = self.config.workers
        opened = {
            key: listening_sockets(description, count, self.source, key)
            for key, description in endpoints.items()
        }
        self.slots = [
            _Slot(index, {key: sockets[index] for key, sockets in opened.items()})
            for index in range(count)
        ]
        self.run = tempfile.mkdtemp(prefix="wsapp-workers-")
        super().privilegedStartService()

    def startService(self) -> None:
        super().startService()
        self.stopping = False
        listening = self.slots[0].sockets["port"]
        log.info(
            "wsapp serving {url} with {count} workers (supervisor pid {pid})",
            url=_url(listening, self.config), count=len(self.slots), pid=os.getpid(),
        )  # fmt: skip
        # after the reactor's own handlers, which it installs as it starts running
        self.reactor.callWhenRunning(self._watch_signals)
        for slot in self.slots:
            self._start(slot)

    def _watch_signals(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(signum)
            if callable(previous):  # an ignored SIGINT (a background job's) stays ignored
                self._previous[signum] = previous
                signal.signal(signum, self._signal)

    def _signal(self, signum: int, frame: Any) -> None:
        if self.stopping:
            log.warn("second signal: killing the workers")
            self.reactor.callFromThread(self._kill)
            return
        self._previous[signum](signum, frame)

    def _command(self) -> list[str]:
        command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
        command += ["--nodaemon", "--pidfile=", "--logger=wsapp.workers.logs.observer"]
        reactor = _reactor_name(self.reactor)
        if reactor:
            command.append(f"--reactor={reactor}")
        return [*command, "wsapp", *self.argv]

    def _start(self, slot: _Slot) -> None:
        slot.restart = None
        fds = {key: FIRST_FD + number for number, key in enumerate(slot.sockets)}
        spec = WorkerSpec(fds, self.run, len(self.slots), os.getpid())
        env = {**os.environ, ENVIRONMENT: spec.dumps(), "PYTHONUNBUFFERED": "1"}
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        for key, fd in fds.items():
            child_fds[fd] = slot.sockets[key].fileno()
        slot.started = self.reactor.seconds()
        slot.process = self.reactor.spawnProcess(
            _Worker(self, slot), sys.executable, self._command(), env=env,
            path=os.getcwd(), childFDs=child_fds,
        )  # fmt: skip
        log.info("worker {pid} started", pid=slot.process.pid)

    def _ended(self, slot: _Slot, pid: int, reason: Any) -> None:
        slot.process = None
        code, signum = getattr(reason, "exitCode", None), getattr(reason, "signal", None)
        status = f"killed by signal {signum}" if signum else f"exit status {code}"
        try:
            os.unlink(os.path.join(self.run, f"{pid}.sock"))
        except OSError:
            pass
        ended, slot.ended = slot.ended, []
        for waiting in ended:
            waiting.callback(None)
        if self.stopping:
            if signum == signal.SIGTERM or code == 0:
                log.info("worker {pid} stopped", pid=pid)
            else:
                self._failed = True
                log.warn("worker {pid} stopped ({status})", pid=pid, status=status)
            return
        lived = self.reactor.seconds() - slot.started
        slot.streak = 0 if lived >= RESTART_RESET else slot.streak + 1
        delay = min(RESTART_DELAY_MAX, RESTART_DELAY * 2 ** max(slot.streak - 1, 0))
        log.error(
            "worker {pid} exited ({status}); restarting it in {delay} s",
            pid=pid, status=status, delay=delay,
        )  # fmt: skip
        slot.restart = self.reactor.callLater(delay, self._start, slot)

    def stopService(self) -> Deferred[None]:
        self.stopping = True
        super().stopService()
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        waits = []
        for slot in self.slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            if slot.process is not None:
                ended: Deferred[None] = Deferred()
                slot.ended.append(ended)
                waits.append(ended)
                _send(slot.process, "TERM")
        shutdown = self.config.shutdown
        limit = shutdown.drain_period + shutdown.grace_period + KILL_AFTER
        killer = self.reactor.callLater(limit, self._kill)
        for waiting in waits:
            await waiting
        if killer.active():
            killer.cancel()
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._signal:
                signal.signal(signum, previous)
        for slot in self.slots:
            for listening in slot.sockets.values():
                _close_listening(listening)
        shutil.rmtree(self.run, ignore_errors=True)
        if not self._failed and getattr(self.reactor, "_exitSignal", None) is not None:
            # Every worker shut down: twistd exits 0 rather than by the signal it received.
            self.reactor._exitSignal = None

    def _kill(self) -> None:
        self._failed = True
        for slot in self.slots:
            if slot.process is not None:
                log.warn("killing worker {pid}", pid=slot.process.pid)
                _send(slot.process, "KILL")


def _send(process: Any, name: str) -> None:
    try:
        process.signalProcess(name)
    except (ProcessExitedAlready, OSError):
        pass


def _close_listening(listening: socket.socket) -> None:
    if listening.fileno() < 0:
        return
    if listening.family == socket.AF_UNIX:
        path = listening.getsockname()
        if path and os.path.exists(path):
            os.unlink(path)
    listening.close()


def _url(listening: socket.socket, config: Config) -> str:
    """The URL served on ``listening``: ``http://127.0.0.1:8000/``, say."""
    if listening.family == socket.AF_UNIX:
        return f"unix:{listening.getsockname()}"
    host, port = listening.getsockname()[:2]
    secure = config.port.startswith("ssl:") or bool(config.tls.certificate)
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if secure else 'http'}://{host}:{port}/"


def _reactor_name(reactor: Any) -> str | None:
    """The ``twistd --reactor`` name of ``reactor``, so every worker runs the same one."""
    from twisted.application.reactors import getReactorTypes

    module = type(reactor).__module__
    for kind in getReactorTypes():
        if kind.moduleName == module:
            return str(kind.shortName)
    return None
