"""
The live dashboard's figures: this process's rates over the last minutes, as JSON.

``GET /dashboard/data`` (with ``Authorization: Bearer KEY``, the ``dashboard.key``)
answers::

    {"process": ID, "processes": {ID: {"host": H, "pid": P, "interval": S, "last": SEQ,
      "samples": [{"seq": N, "time": T, "apps": {PATH: {"connections": C, "in": R,
      "out": R, "broadcasts": R, "errors": {CODE: R}}}, "namespaces": {NS: {"channels": C,
      "subscribers": C, "publications": R}}}, ...],
      "errors": {PATH: {CODE: TOTAL}}}}}

``R`` are per-second rates since the sample before, ``T`` Unix seconds; with ``?after=SEQ``
only newer samples come. Samples are taken when the data is asked for, at most one per
``interval``, and the last :data:`KEEP` are kept: nothing is sampled while nobody looks.
Namespaces are those of the channels this process's connections listen to (``""`` is the
default namespace); their publications are counted from the channels' offsets.
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

from twisted.web.resource import Resource
from twisted.web.server import Request

from .channels import namespace_of
from .metrics import Metrics

__all__ = ["KEEP", "DashboardData", "Sampler"]

#: Samples kept: five minutes at one a second.
KEEP = 300


class Sampler:
    """This process's counts, sampled into per-second rates on demand."""

    def __init__(self, metrics: Metrics, hub: Any, *, interval: float = 1.0) -> None:
        self.metrics = metrics
        self.hub = hub
        self.interval = interval
        self.process = hub.origin if hub is not None else os.urandom(6).hex()
        self.samples: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self.seq = 0
        self._previous: tuple[float, dict[str, Any], dict[str, tuple[str, int]]] | None = None

    def _counts(self) -> dict[str, Any]:
        return {
            path: {
                "in": app.messages_in,
                "out": app.messages_out,
                "broadcasts": app.broadcasts,
                "errors": dict(app.errors),
            }
            for path, app in list(self.metrics.apps.items())
        }

    def _offsets(self) -> dict[str, tuple[str, int]]:
        offsets = {}
        for channel, entry in list(getattr(self.hub, "channels", {}).items()):
            position = entry.feed.position
            if position is not None:
                offsets[channel] = (position.epoch, position.offset)
        return offsets

    def sample(self, now: float | None = None) -> None:
        """Take a sample if ``interval`` has passed since the last one (the first is a base)."""
        now = time.monotonic() if now is None else now
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

    def report(self, after: int = 0) -> dict[str, Any]:
        """This process's samples newer than ``after``, keyed by its process id."""
        self.sample()
        errors = {path: dict(app.errors) for path, app in list(self.metrics.apps.items())}
        process = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "interval": self.interval,
            "last": self.seq,
            "samples": [sample for sample in self.samples if sample["seq"] > after],
            "errors": errors,
        }
        return {"process": self.process, "processes": {self.process: process}}


class DashboardData(Resource):
    """``/dashboard/data``: the sampler's report, for the holder of ``key`` only."""

    isLeaf = True

    def __init__(self, sampler: Sampler, key: str) -> None:
        super().__init__()
        self.sampler = sampler
        self.key = key.encode()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        given = request.getHeader(b"authorization") or b""
        if not hmac.compare_digest(given, b"Bearer " + self.key):
            request.setResponseCode(401)
            request.setHeader(b"www-authenticate", b'Bearer realm="wsapp dashboard"')
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"401 Unauthorized: send Authorization: Bearer <dashboard.key>\n"
        try:
            after = int((request.args.get(b"after") or [b"0"])[0])
        except ValueError:
            request.setResponseCode(400)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"400 Bad Request: 'after' must be an integer\n"
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(self.sampler.report(after)).encode() + b"\n"
