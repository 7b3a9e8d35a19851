"""
The HTTP side of the server, next to the WebSocket apps on the same port.

- ``GET /``: the counter page (``wsapp/web/counter.html``), connected to the counter app.
- ``GET /health``: JSON status; 200 while serving, 503 once shutdown has begun or while
  the backend (Redis) is unreachable, so a load balancer sends clients elsewhere.
- ``GET /metrics``: Prometheus text (:mod:`wsapp.metrics`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from importlib.resources import files
from typing import Any, Protocol, cast

from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from .apps.counter import CounterProtocol
from .backends import Backend
from .exceptions import ConfigError
from .metrics import Metrics, metrics_resource
from .server import ServerFactory

__all__ = ["Folder", "HealthResource", "PageResource", "counter_path", "mount_operations"]

#: Top-level URL names served here; no app may be mounted under them.
RESERVED = ("health", "metrics")


class ServerStatus(Protocol):
    """What ``/health`` reports on: :class:`wsapp.service.ServerService` provides it."""

    @property
    def factories(self) -> Mapping[str, ServerFactory]: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def backend(self) -> Backend: ...

    def uptime(self) -> float: ...


def counter_path(factories: Mapping[str, ServerFactory]) -> str | None:
    """Return the path of the first mounted counter app, or None."""
    for path, factory in factories.items():
        if issubclass(factory.protocol, CounterProtocol):
            return path
    return None


class Folder(Resource):
    """A resource holding only children (the site root, an app's parent path): others are 404."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        # Resource's default answers with a class deprecated since Twisted 22.10.
        return notFound()


class PageResource(Resource):
    """The counter page, connecting to the counter app on ``path`` (None: no counter)."""

    isLeaf = True

    def __init__(self, path: str | None) -> None:
        super().__init__()
        template = files("wsapp").joinpath("web/counter.html").read_text(encoding="utf-8")
        self.body = template.replace("{{counter_path}}", html.escape(path or "")).encode()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        return self.body


class HealthResource(Resource):
    """
    JSON status of the server: 200 while serving (``ok``); 503 while shutting down
    (``stopping``) or while the backend is unreachable (``backend-unavailable``).
    """

    isLeaf = True

    def __init__(self, status: ServerStatus) -> None:
        super().__init__()
        self.status = status

    def report(self) -> dict[str, Any]:
        """Return the status document."""
        users = {path: len(factory.registry) for path, factory in self.status.factories.items()}
        backend = self.status.backend
        if self.status.stopping:
            status = "stopping"
        elif not backend.available:
            status = "backend-unavailable"
        else:
            status = "ok"
        return {
            "status": status,
            "backend": backend.address,
            "uptime": round(self.status.uptime(), 3),
            "connections": sum(users.values()),
            "apps": {path: {"users": count} for path, count in users.items()},
        }

    def render_GET(self, request: Request) -> bytes:
        report = self.report()
        request.setResponseCode(200 if report["status"] == "ok" else 503)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(report).encode() + b"\n"


def mount_operations(
    root: Resource, server: ServerStatus, metrics: Metrics, *, source: str = "config"
) -> None:
    """Serve the page, ``/health`` and ``/metrics`` from ``root``, beside the apps."""
    for path in server.factories:
        top = path.strip("/").split("/")[0]
        if top in RESERVED:
            raise ConfigError(
                source, f"apps.{path}", f"/{top} is served by wsapp itself; mount the app elsewhere"
            )
    root.putChild(b"", cast(IResource, PageResource(counter_path(server.factories))))
    root.putChild(b"health", cast(IResource, HealthResource(server)))
    root.putChild(b"metrics", metrics_resource(metrics))
