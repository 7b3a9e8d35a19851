"""
The HTTP side of the server, next to the WebSocket apps on the same port.

- ``GET /``: an index of the mounted apps, linking to their pages.
- ``GET /counter.html``, ``GET /chat.html``: the counter and chat pages, connected to the
  first mounted app of their kind (``?app=PATH`` for another).
- ``GET /wsapp.js``, ``/wsapp.d.ts``: the browser client and its types; ``/vendor/...``:
  the dashboard's chart library. Each carries an ``ETag`` (``If-None-Match`` gets 304).
- ``GET /dashboard``, ``/dashboard/data``: the live dashboard (:mod:`wsapp.dashboard`),
  with ``dashboard.key`` set; 404 otherwise.
- ``GET /health``: JSON status; 200 while serving, 503 once shutdown has begun or while
  the backend (Redis) is unreachable, so a load balancer sends clients elsewhere.
- ``GET /metrics``: Prometheus text (:mod:`wsapp.metrics`).
"""

from __future__ import annotations

import hashlib
import html
import json
from collections.abc import Mapping
from importlib.resources import files
from typing import Any, Protocol, cast

from twisted.web import http
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from .apps.chat import ChatProtocol
from .apps.counter import CounterProtocol
from .backends import Backend
from .config import Config
from .dashboard import DashboardData, Sampler
from .exceptions import ConfigError
from .metrics import Metrics, metrics_resource
from .server import ServerFactory

__all__ = [
    "Folder",
    "HealthResource",
    "PageResource",
    "StaticResource",
    "app_path",
    "counter_path",
    "mount_operations",
]

#: Top-level URL names served here; no app may be mounted under them.
RESERVED = (
    "health",
    "metrics",
    "dashboard",
    "vendor",
    "wsapp.js",
    "wsapp.d.ts",
    "counter.html",
    "chat.html",
)
#: The pages of the apps that have one, by protocol class.
PAGES: tuple[tuple[type[Any], str], ...] = (
    (CounterProtocol, "counter.html"),
    (ChatProtocol, "chat.html"),
)
#: Files served as they are: URL path, package file, content type.
STATIC = (
    ("wsapp.js", "wsapp.js", "text/javascript; charset=utf-8"),
    ("wsapp.d.ts", "wsapp.d.ts", "text/plain; charset=utf-8"),
    ("vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.iife.min.js", "text/javascript"),
    ("vendor/uplot/uPlot.min.css", "vendor/uplot/uPlot.min.css", "text/css"),
    ("vendor/uplot/LICENSE", "vendor/uplot/LICENSE", "text/plain; charset=utf-8"),
)


class ServerStatus(Protocol):
    """What ``/health`` reports on: :class:`wsapp.service.ServerService` provides it."""

    @property
    def factories(self) -> Mapping[str, ServerFactory]: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def backend(self) -> Backend: ...

    @property
    def config(self) -> Config: ...

    def uptime(self) -> float: ...


def app_path(factories: Mapping[str, ServerFactory], kind: type[Any]) -> str | None:
    """Return the path of the first mounted app whose protocol is a ``kind``, or None."""
    for path, factory in factories.items():
        if issubclass(factory.protocol, kind):
            return path
    return None


def counter_path(factories: Mapping[str, ServerFactory]) -> str | None:
    """Return the path of the first mounted counter app, or None."""
    return app_path(factories, CounterProtocol)


def _read(name: str) -> bytes:
    return files("wsapp").joinpath(f"web/{name}").read_bytes()


class Folder(Resource):
    """A resource holding only children (the site root, an app's parent path): others are 404."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        # Resource's default answers with a class deprecated since Twisted 22.10.
        return notFound()


class StaticResource(Resource):
    """One unchanging body with its ``ETag``: a matching ``If-None-Match`` gets 304."""

    isLeaf = True

    def __init__(self, body: bytes, content_type: str) -> None:
        super().__init__()
        self.body = body
        self.content_type = content_type.encode()
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", self.content_type)
        # cached, but checked with the server each time: an upgrade is seen at once
        request.setHeader(b"cache-control", b"no-cache")
        if request.setETag(self.etag) == http.CACHED:
            return b""
        return self.body

    def render_HEAD(self, request: Request) -> bytes:
        return self.render_GET(request)


class PageResource(StaticResource):
    """A page of ``wsapp/web``, its ``{{name}}`` placeholders filled in (HTML-escaped)."""

    def __init__(self, page: str, **values: str) -> None:
        text = _read(page).decode("utf-8")
        for name, value in values.items():
            text = text.replace("{{" + name + "}}", html.escape(value))
        super().__init__(text.encode(), "text/html; charset=utf-8")


class _DashboardPage(PageResource):
    """The dashboard page at ``/dashboard``, with its data below it."""

    isLeaf = False

    def getChild(self, path: bytes, request: Request) -> IResource:
        return notFound()


def index_page(factories: Mapping[str, ServerFactory], dashboard: bool) -> StaticResource:
    """The index at ``/``: every mounted app, with a link to its page if it has one."""
    rows = []
    for path, factory in factories.items():
        name = f"{factory.protocol.__module__}:{factory.protocol.__qualname__}"
        page = next((page for kind, page in PAGES if issubclass(factory.protocol, kind)), None)
        label = f"<code>{html.escape(path)}</code>"
        link = f'<a href="{page}?app={html.escape(path)}">{label}</a>' if page else label
        rows.append(f"<li>{link} {html.escape(name)}</li>")
    text = _read("index.html").decode("utf-8")
    text = text.replace("{{apps}}", "\n".join(rows) or "<li>no apps are mounted</li>")
    text = text.replace("{{dashboard}}", "" if dashboard else " hidden")
    return StaticResource(text.encode(), "text/html; charset=utf-8")


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
    root: Resource,
    server: ServerStatus,
    metrics: Metrics,
    *,
    source: str = "config",
    reactor: Any = None,
) -> Sampler | None:
    """
    Serve the pages, files, dashboard, ``/health`` and ``/metrics`` beside the apps; return
    the dashboard's sampler (a service for the caller to start), None without the dashboard.
    """
    for path in server.factories:
        top = path.strip("/").split("/")[0]
        if top in RESERVED:
            raise ConfigError(
                source, f"apps.{path}", f"/{top} is served by wsapp itself; mount the app elsewhere"
            )
    factories = server.factories
    dashboard_key = server.config.dashboard.key
    root.putChild(b"", cast(IResource, index_page(factories, bool(dashboard_key))))
    for kind, page in PAGES:
        resource = PageResource(page, app_path=app_path(factories, kind) or "")
        root.putChild(page.encode(), cast(IResource, resource))
    for url, name, content_type in STATIC:
        _put(root, url, StaticResource(_read(name), content_type))
    sampler = None
    if dashboard_key:
        hub = next((factory.hub for factory in factories.values()), None)
        dashboard = _DashboardPage("dashboard.html")
        sampler = Sampler(metrics, hub, backend=server.backend, reactor=reactor)
        data = DashboardData(sampler, dashboard_key)
        dashboard.putChild(b"data", cast(IResource, data))
        root.putChild(b"dashboard", cast(IResource, dashboard))
    root.putChild(b"health", cast(IResource, HealthResource(server)))
    root.putChild(b"metrics", metrics_resource(metrics))
    return sampler


def _put(root: Resource, url: str, resource: Resource) -> None:
    *parents, leaf = url.encode().split(b"/")
    for name in parents:
        child = root.children.get(name)
        if child is None:
            child = Folder()
            root.putChild(name, cast(IResource, child))
        root = child
    root.putChild(leaf, cast(IResource, resource))
