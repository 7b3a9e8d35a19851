"""
The live dashboard's figures: every process's rates over the last minutes, as JSON.

With ``dashboard.key`` set, each process runs a :class:`Sampler` service: every ``interval``
seconds it turns its counts into per-second rates, keeps the last :data:`KEEP` samples and
stores them in the backend's registry of processes (:meth:`wsapp.backends.Backend.put_node`,
as ``dashboard:ID``) for :data:`TTL` intervals, so a process that stops disappears within
that time. With the memory backend the registry holds this process alone.

``GET /dashboard/data`` on any process (with ``Authorization: Bearer KEY``) answers::

    {"process": ID, "partial": false, "processes": {ID: {"host": H, "pid": P,
      "interval": S, "last": SEQ, "samples": [{"seq": N, "time": T, "apps": {PATH:
      {"connections": C, "in": R, "out": R, "broadcasts": R, "errors": {CODE: R}}},
      "namespaces": {NS: {"channels": C, "subscribers": C, "publications": R}}}, ...],
      "errors": {PATH: {CODE: TOTAL}}}, ...}, "totals": {"processes": N, "apps": {...},
      "namespaces": {...}, "errors": {...}}}

``processes`` holds every live process, this one (``ID``) first; ``R`` are per-second
rates since the sample before, ``T`` Unix seconds. ``?after=SEQ`` leaves out every
process's samples up to ``SEQ``, ``?after=ID:SEQ`` (repeatable) one process's. ``totals``
adds up each process's latest sample; a channel several processes listen to is counted by
each, so there a namespace's ``channels`` and ``publications`` are the most any process
saw. ``partial``: the registry cannot be read (Redis is unreachable), only this process is
shown. Namespaces are those of the channels a process's connections listen to (``""`` is
the default); their publications are counted from the channels' offsets.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .channels import namespace_of
from .exceptions import BackendUnavailableError
from .metrics import Metrics

__all__ = ["KEEP", "TTL", "After", "DashboardData", "Sampler", "parse_after", "totals"]

log = Logger()

#: Samples kept: five minutes at one a second.
KEEP = 300
#: How many intervals a process's stored samples outlive its last refresh.
TTL = 3
#: ``?after``: the sequence number for every process, and those given for single ones.
After = tuple[int, Mapping[str, int]]


class Sampler(Service):
    """This process's counts, sampled into per-second rates every ``interval`` and shared."""

    def __init__(
        self,
        metrics: Metrics,
        hub: Any,
        *,
        backend: Any = None,
        interval: float = 1.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.metrics = metrics
        self.hub = hub
        #: Where the samples are shared (the hub's backend unless given); None: not shared.
        self.backend = backend if backend is not None else getattr(hub, "backend", None)
        self.interval = interval
        self.reactor = reactor
        self.process: str = hub.origin if hub is not None else os.urandom(6).hex()
        self.samples: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self.seq = 0
        self._previous: tuple[float, dict[str, Any], dict[str, tuple[str, int]]] | None = None
        self._host = socket.gethostname()
        self._storing = False
        self._loop = LoopingCall(self.tick)
        self._loop.clock = reactor

    def _counts(self) -> dict[str, Any]:
        counted = ("in", "messages_in"), ("out", "messages_out"), ("broadcasts", "broadcasts")
        return {
            path: {name: getattr(app, field) for name, field in counted}
            | {"errors": dict(app.errors)}
            for path, app in list(self.metrics.apps.items())
        }

    def _offsets(self) -> dict[str, tuple[str, int]]:
        channels = list(getattr(self.hub, "channels", {}).items())
        positions = [(channel, entry.feed.position) for channel, entry in channels]
        return {channel: (at.epoch, at.offset) for channel, at in positions if at is not None}

    def sample(self, now: float | None = None) -> None:
        """Take a sample unless the last is less than half an interval old (the first: a base)."""
        now = self.reactor.seconds() if now is None else now
        previous = self._previous
        if previous is not None and now - previous[0] < self.interval / 2:
            return
        counts, offsets = self._counts(), self._offsets()
        self._previous = (now, counts, offsets)
        if previous is None:
            return
        elapsed = now - previous[0]
        self.seq += 1
        self.samples.append(
            {
                "seq": self.seq,
                "time": round(time.time(), 3),
                "apps": self._apps(counts, previous[1], elapsed),
                "namespaces": self._namespaces(offsets, previous[2], elapsed),
            }
        )

    def _apps(
        self, counts: Mapping[str, Any], before: Mapping[str, Any], elapsed: float
    ) -> dict[str, Any]:
        def rate(now: int, then: int) -> float:
            return round(max(0, now - then) / elapsed, 2)

        apps = {}
        for path, now in counts.items():
            then = before.get(path, {"in": 0, "out": 0, "broadcasts": 0, "errors": {}})
            errors = {
                code: rate(count, then["errors"].get(code, 0))
                for code, count in now["errors"].items()
            }
            apps[path] = {
                "connections": sum(1 for _ in self.metrics.apps[path].factory.registry),
                "in": rate(now["in"], then["in"]),
                "out": rate(now["out"], then["out"]),
                "broadcasts": rate(now["broadcasts"], then["broadcasts"]),
                "errors": {code: value for code, value in errors.items() if value},
            }
        return apps

    def _namespaces(
        self,
        offsets: Mapping[str, tuple[str, int]],
        before: Mapping[str, tuple[str, int]],
        elapsed: float,
    ) -> dict[str, Any]:
        namespaces: dict[str, dict[str, Any]] = {}
        for channel, entry in list(getattr(self.hub, "channels", {}).items()):
            figures = namespaces.setdefault(
                namespace_of(channel), {"channels": 0, "subscribers": 0, "publications": 0.0}
            )
            figures["channels"] += 1
            figures["subscribers"] += len(entry.members)
            now, then = offsets.get(channel), before.get(channel)
            if now is not None and then is not None and now[0] == then[0] and now[1] > then[1]:
                figures["publications"] += now[1] - then[1]
        for figures in namespaces.values():
            figures["publications"] = round(figures["publications"] / elapsed, 2)
        return namespaces

    def series(self) -> dict[str, Any]:
        """This process's figures as the data shows them: host, pid, samples, error totals."""
        return {
            "host": self._host,
            "pid": os.getpid(),
            "interval": self.interval,
            "last": self.seq,
            "samples": list(self.samples),
            "errors": {path: dict(app.errors) for path, app in list(self.metrics.apps.items())},
        }

    def tick(self) -> None:
        """Take a sample and store the series in the registry (unless the last store waits)."""
        self.sample()
        if self.backend is None or self._storing:
            return
        self._storing = True
        record = {"dashboard": self.process, **self.series()}
        storing = self.backend.put_node(f"dashboard:{self.process}", record, TTL * self.interval)
        storing.addErrback(_logged, "storing this process's samples")
        storing.addBoth(lambda _: setattr(self, "_storing", False))

    def report(self, after: After = (0, {})) -> Deferred[dict[str, Any]]:
        """Every live process's samples newer than ``after``, with the totals (see above)."""
        own = {self.process: self.series()}
        every, single = after

        def shown(records: list[dict[str, Any]], partial: bool = False) -> dict[str, Any]:
            processes = dict(own)
            for record in sorted(records, key=lambda r: str(r.get("dashboard"))):
                process = record.get("dashboard")
                if isinstance(process, str) and process not in processes:
                    processes[process] = {k: v for k, v in record.items() if k != "dashboard"}
            newer = {
                name: {**info, "samples": [s for s in info["samples"] if s["seq"] > seq]}
                for name, info in processes.items()
                for seq in [single.get(name, every)]
            }
            return {"process": self.process, "partial": partial, "processes": newer,
                    "totals": totals(processes)}  # fmt: skip

        def unread(failure: Failure) -> dict[str, Any]:
            _logged(failure, "reading the other processes' samples")
            return shown([], partial=True)

        reading = self.backend.nodes() if self.backend is not None else succeed([])
        return reading.addCallbacks(shown, unread)

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=True)

    def stopService(self) -> None:
        super().stopService()
        if self._loop.running:
            self._loop.stop()


def totals(processes: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The latest sample of every process added up, and the error totals."""
    apps: dict[str, dict[str, Any]] = {}
    namespaces: dict[str, dict[str, Any]] = {}
    errors: dict[str, dict[str, int]] = {}
    for info in processes.values():
        latest = info["samples"][-1] if info.get("samples") else {}
        for path, figures in latest.get("apps", {}).items():
            total = apps.setdefault(
                path, {"connections": 0, "in": 0.0, "out": 0.0, "broadcasts": 0.0, "errors": {}}
            )
            for name in ("connections", "in", "out", "broadcasts"):
                total[name] = round(total[name] + figures[name], 2)
            for code, rate in figures["errors"].items():
                total["errors"][code] = round(total["errors"].get(code, 0) + rate, 2)
        for name, figures in latest.get("namespaces", {}).items():
            total = namespaces.setdefault(
                name, {"channels": 0, "subscribers": 0, "publications": 0.0}
            )
            total["subscribers"] += figures["subscribers"]
            total["channels"] = max(total["channels"], figures["channels"])
            total["publications"] = max(total["publications"], figures["publications"])
        for path, counts in info.get("errors", {}).items():
            summed = errors.setdefault(path, {})
            for code, count in counts.items():
                summed[code] = summed.get(code, 0) + count
    return {"processes": len(processes), "apps": apps, "namespaces": namespaces, "errors": errors}


def _logged(failure: Failure, doing: str) -> None:
    if not failure.check(BackendUnavailableError):
        log.failure("dashboard: {doing} failed", failure, doing=doing)


def parse_after(values: list[bytes]) -> After:
    """``?after`` values (``SEQ`` or ``PROCESS:SEQ``); ValueError names what is wrong."""
    every, single = 0, {}
    for value in values:
        process, colon, number = value.decode("utf-8", "replace").rpartition(":")
        try:
            seq = int(number)
        except ValueError:
            raise ValueError("'after' must be an integer or PROCESS:INTEGER") from None
        if colon:
            single[process] = seq
        else:
            every = seq
    return every, single


class DashboardData(Resource):
    """``/dashboard/data``: the sampler's report, for the holder of ``key`` only."""

    isLeaf = True

    def __init__(self, sampler: Sampler, key: str) -> None:
        super().__init__()
        self.sampler = sampler
        self.key = key.encode()

    def render_GET(self, request: Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-store")
        given = request.getHeader(b"authorization") or b""
        if not hmac.compare_digest(given, b"Bearer " + self.key):
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Bearer realm="wsapp dashboard"')
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"401 Unauthorized: send Authorization: Bearer <dashboard.key>\n"
        try:
            after = parse_after(request.args.get(b"after") or [])
        except ValueError as error:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return f"400 Bad Request: {error}\n".encode()
        gone: list[Failure] = []
        request.notifyFinish().addErrback(gone.append)

        def answer(report: dict[str, Any] | Failure) -> None:
            if isinstance(report, Failure):
                log.failure("dashboard: answering failed", report)
                request.setResponseCode(500)
            elif not gone:
                request.setHeader(b"content-type", b"application/json")
                request.write(json.dumps(report).encode() + b"\n")
            if not gone:
                request.finish()

        self.sampler.report(after).addBoth(answer)
        return NOT_DONE_YET
