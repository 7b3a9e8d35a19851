"""
What a worker tells the others, and the ``/health`` and ``/metrics`` gathered from all.

Each worker listens on a private unix socket, ``RUN/PID.sock``, in a run directory the
supervisor owns (mode 0700); connecting there gets that worker's report (its health
document and its metrics text, as JSON) and the connection closes. The worker answering
``/health`` or ``/metrics`` reads every other worker's report, waiting at most
:data:`TIMEOUT` seconds: a worker that does not answer in time is listed as
``unreachable``. Unix sockets keep this working while Redis is down, which is when
``/health`` matters most.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import UNIXClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from ..metrics import Metrics

__all__ = [
    "ENVIRONMENT",
    "TIMEOUT",
    "WorkerSpec",
    "WorkersHealth",
    "WorkersMetrics",
    "gather",
    "mount",
    "serve",
]

#: The environment variable carrying a worker's :class:`WorkerSpec` (JSON).
ENVIRONMENT = "WSAPP_WORKER"
#: Seconds the answering worker waits for another worker's report.
TIMEOUT = 2.0

Report = dict[str, Any]


@dataclass(frozen=True)
class WorkerSpec:
    """What the supervisor tells a worker it starts."""

    #: Inherited listening sockets' file descriptors, by configuration key (``port``...).
    fds: Mapping[str, int]
    #: The supervisor's run directory, where each worker's report socket is.
    run: str
    #: How many workers the supervisor runs.
    count: int
    #: The supervisor's pid.
    supervisor: int

    def dumps(self) -> str:
        """This spec as the JSON put in :data:`ENVIRONMENT`."""
        return json.dumps(
            {"fds": dict(self.fds), "run": self.run, "count": self.count,
             "supervisor": self.supervisor}
        )  # fmt: skip

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> WorkerSpec | None:
        """The spec of this process if the supervisor started it, else None."""
        text = environ.get(ENVIRONMENT)
        if not text:
            return None
        data = json.loads(text)
        return cls({k: int(v) for k, v in data["fds"].items()}, data["run"],
                   int(data["count"]), int(data["supervisor"]))  # fmt: skip

    def socket_path(self, pid: int) -> str:
        """Where worker ``pid`` answers with its report."""
        return os.path.join(self.run, f"{pid}.sock")


class _Answer(Protocol):
    def __init__(self, report: Callable[[], Report]) -> None:
        self.report = report

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.write(json.dumps(self.report()).encode())
        transport.loseConnection()


def serve(reactor: Any, spec: WorkerSpec, report: Callable[[], Report]) -> Any:
    """Listen on this worker's report socket; return the listening port."""
    path = spec.socket_path(os.getpid())
    if os.path.exists(path):
        os.unlink(path)
    return reactor.listenUNIX(path, Factory.forProtocol(lambda: _Answer(report)), mode=0o600)


class _Reader(Protocol):
    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.done: Deferred[Report] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            self.done.callback(json.loads(b"".join(self.data)))
        except ValueError as error:
            self.done.errback(error)


async def _read(reactor: Any, path: str) -> Report:
    reader = _Reader()
    await connectProtocol(UNIXClientEndpoint(reactor, path, timeout=TIMEOUT), reader)
    reader.done.addTimeout(TIMEOUT, reactor)
    try:
        return await reader.done
    finally:
        if reader.transport is not None:
            reader.transport.abortConnection()


async def gather(reactor: Any, spec: WorkerSpec, local: Report) -> dict[int, Report | None]:
    """Every worker's report by pid, this one's being ``local``; None: no answer in time."""
    own = os.getpid()
    pids = sorted(
        int(entry.stem) for entry in Path(spec.run).glob("*.sock") if entry.stem.isdigit()
    )
    others = [pid for pid in pids if pid != own]
    results = await DeferredList(
        [Deferred.fromCoroutine(_read(reactor, spec.socket_path(pid))) for pid in others],
        consumeErrors=True,
    )
    reports: dict[int, Report | None] = {own: local}
    for pid, (ok, report) in zip(others, results, strict=True):
        reports[pid] = report if ok else None
    return dict(sorted(reports.items()))


class _Gathered(Resource):
    """A resource answered from every worker's report, asynchronously."""

    isLeaf = True
    content_type = b"application/json"

    def __init__(self, reactor: Any, spec: WorkerSpec, report: Callable[[], Report]) -> None:
        super().__init__()
        self.reactor = reactor
        self.spec = spec
        self.report = report

    def answer(self, reports: dict[int, Report | None]) -> tuple[int, bytes]:
        raise NotImplementedError

    def render_GET(self, request: Request) -> Any:
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def write(reports: dict[int, Report | None]) -> None:
            if gone:
                return
            code, body = self.answer(reports)
            request.setResponseCode(code)
            request.setHeader(b"content-type", self.content_type)
            request.setHeader(b"cache-control", b"no-store")
            request.write(body)
            request.finish()

        gathering = Deferred.fromCoroutine(gather(self.reactor, self.spec, self.report()))
        gathering.addCallback(write)
        return NOT_DONE_YET


class WorkersHealth(_Gathered):
    """
    ``/health`` over every worker: ``workers`` lists each one's pid and status (or
    ``unreachable``); ``ok`` when all of the supervisor's workers are, ``degraded`` (200)
    while some are not, 503 with the answering worker's status when none can serve.
    """

    def answer(self, reports: dict[int, Report | None]) -> tuple[int, bytes]:
        own = os.getpid()
        local = reports[own]["health"]  # type: ignore[index]
        workers, apps, connections = [], dict.fromkeys(local["apps"], 0), 0
        for pid, report in reports.items():
            health = report["health"] if report else None
            workers.append({"pid": pid, "status": health["status"] if health else "unreachable"})
            if health:
                connections += health["connections"]
                for path, app in health["apps"].items():
                    apps[path] = apps.get(path, 0) + app["users"]
        serving = sum(worker["status"] == "ok" for worker in workers)
        if serving == self.spec.count == len(workers):
            status = "ok"
        elif serving:
            status = "degraded"
        else:
            status = local["status"] if local["status"] != "ok" else "unavailable"
        document = {
            **local,
            "status": status,
            "pid": own,
            "connections": connections,
            "apps": {path: {"users": count} for path, count in apps.items()},
            "workers": workers,
        }
        return (200 if serving else 503), json.dumps(document).encode() + b"\n"


class WorkersMetrics(_Gathered):
    """``/metrics`` over every worker: each sample labelled with its worker's ``pid``."""

    content_type = b"text/plain; version=0.0.4; charset=utf-8"

    def answer(self, reports: dict[int, Report | None]) -> tuple[int, bytes]:
        registry = CollectorRegistry()
        registry.register(_Merged(reports))
        return 200, generate_latest(registry)


class _Merged:
    """A collector of the workers' parsed metrics, a ``pid`` label added to each sample."""

    def __init__(self, reports: dict[int, Report | None]) -> None:
        self.reports = reports

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "wsapp_worker_up", "1 for each worker that answered, 0 for one that did not",
            labels=["pid"],
        )  # fmt: skip
        merged: dict[str, Metric] = {}
        for pid, report in self.reports.items():
            up.add_metric([str(pid)], 0 if report is None else 1)
            if report is None:
                continue
            for family in text_string_to_metric_families(report["metrics"]):
                into = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "pid": str(pid)}
                    into.add_sample(sample.name, labels, sample.value)
        yield up
        yield from merged.values()


def local_report(health: Callable[[], Report], metrics: Metrics) -> Callable[[], Report]:
    """This worker's report: its own health document and metrics text."""

    def report() -> Report:
        return {
            "pid": os.getpid(),
            "health": health(),
            "metrics": generate_latest(metrics.registry).decode(),
        }

    return report


def mount(
    root: Resource, reactor: Any, spec: WorkerSpec, health: Callable[[], Report], metrics: Metrics
) -> Callable[[], Report]:
    """Serve the gathered ``/health`` and ``/metrics`` at ``root``; return the local report."""
    report = local_report(health, metrics)
    root.putChild(b"health", cast(IResource, WorkersHealth(reactor, spec, report)))
    root.putChild(b"metrics", cast(IResource, WorkersMetrics(reactor, spec, report)))
    return report
