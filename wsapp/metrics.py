"""
Prometheus metrics of one server, in a registry of its own.

The protocol counts into plain integer attributes of its app's :class:`AppMetrics`; a
collector turns them into Prometheus counters and gauges when ``/metrics`` is scraped.
A ``prometheus_client`` counter takes a lock on every ``inc``, which costs more than the
rest of a small message's accounting; these integers are only ever written on the
reactor thread, and the scraping thread only reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from twisted.web.resource import IResource


__all__ = ["ApiMetrics", "AppMetrics", "Metrics", "deflate_octets", "metrics_resource"]


class Served(Protocol):
    """What the metrics read of an app's factory: its open connections."""

    @property
    def registry(self) -> Iterable[Any]: ...


class AppMetrics:
    """What one app counts; the protocol and factory add to these attributes directly."""

    def __init__(self, path: str, factory: Served) -> None:
        self.path = path
        self.factory = factory
        self.accepted = 0
        self.rejected = 0
        self.messages_in = 0
        self.messages_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.broadcasts = 0
        self.broadcast_recipients = 0
        #: Error events sent, by wsapp error code.
        self.errors: dict[str, int] = {}
        #: Closed connections, by close code ("none": no close frame).
        self.closes: dict[str, int] = {}
        #: Payload and wire bytes (out, out on the wire, in, in on the wire) of closed
        #: connections that used permessage-deflate.
        self.closed_deflate_octets = [0, 0, 0, 0]

    def error(self, code: str) -> None:
        """Count an error event with wsapp error ``code``."""
        self.errors[code] = self.errors.get(code, 0) + 1

    def closed(self, code: int | None, octets: tuple[int, int, int, int] | None) -> None:
        """Count a closed connection and keep its deflate byte counts, if it used deflate."""
        key = "none" if code is None else str(code)
        self.closes[key] = self.closes.get(key, 0) + 1
        if octets is not None:
            for index, value in enumerate(octets):
                self.closed_deflate_octets[index] += value


def deflate_octets(protocol: Any) -> tuple[int, int, int, int] | None:
    """
    Return a deflate connection's payload and wire bytes: out, out on the wire, in, in on
    the wire; None without permessage-deflate. Autobahn counts these on every connection.
    """
    if protocol._perMessageCompress is None:
        return None
    stats = protocol.trafficStats
    return (
        stats.outgoingOctetsAppLevel,
        stats.outgoingOctetsWebSocketLevel,
        stats.incomingOctetsAppLevel,
        stats.incomingOctetsWebSocketLevel,
    )


class ApiMetrics:
    """What the HTTP API counts: calls by method and HTTP status."""

    def __init__(self) -> None:
        #: Calls by (method, status); unknown method names count as ``unknown``.
        self.requests: dict[tuple[str, int], int] = {}

    def count(self, method: str, status: int) -> None:
        """Count one call of ``method`` answered with ``status``."""
        key = (method, status)
        self.requests[key] = self.requests.get(key, 0) + 1


class Metrics(Collector):
    """Every app's metrics, collected into :attr:`registry` (not the global default)."""

    def __init__(self) -> None:
        self.apps: dict[str, AppMetrics] = {}
        self.api = ApiMetrics()
        #: The backend, whose ``malformed`` count (if it keeps one) is exported.
        self.backend: Any = None
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def add_app(self, path: str, factory: Served) -> AppMetrics:
        """Return the metrics of the app on ``path``, served by ``factory``."""
        app = AppMetrics(path, factory)
        self.apps[path] = app
        return app

    def collect(self) -> Iterator[Metric]:
        """Read every app's counts (called by the registry, in the scraping thread)."""
        families = {
            "connections": GaugeMetricFamily(
                "wsapp_connections", "Open WebSocket connections", labels=["app"]
            ),
            "handshakes": CounterMetricFamily(
                "wsapp_handshakes",
                "WebSocket opening handshakes, accepted or rejected",
                labels=["app", "result"],
            ),
            "messages": CounterMetricFamily(
                "wsapp_messages",
                "WebSocket messages received (in) and sent (out), broadcast copies included",
                labels=["app", "direction"],
            ),
            "bytes": CounterMetricFamily(
                "wsapp_message_bytes",
                "Payload bytes of WebSocket messages, before compression",
                labels=["app", "direction"],
            ),
            "broadcasts": CounterMetricFamily(
                "wsapp_broadcasts", "Broadcasts to an app's connections", labels=["app"]
            ),
            "recipients": CounterMetricFamily(
                "wsapp_broadcast_recipients",
                "Connections the broadcasts were sent to (their fan-out)",
                labels=["app"],
            ),
            "errors": CounterMetricFamily(
                "wsapp_errors",
                "Error events sent to clients, by error code",
                labels=["app", "code"],
            ),
            "closes": CounterMetricFamily(
                "wsapp_closes",
                "Closed WebSocket connections, by close code (none: no close frame)",
                labels=["app", "code"],
            ),
            "ratio": GaugeMetricFamily(
                "wsapp_compression_ratio",
                "Payload bytes per byte on the wire, over connections that negotiated "
                "permessage-deflate (messages sent uncompressed count 1:1)",
                labels=["app", "direction"],
            ),
        }
        for path, app in list(self.apps.items()):
            _add_app(families, path, app)
        yield from families.values()
        yield from self._collect_server()

    def _collect_server(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "wsapp_api_requests",
            "HTTP API calls, by method and status",
            labels=["method", "status"],
        )
        for (method, status), count in dict(self.api.requests).items():
            requests.add_metric([method, str(status)], count)
        yield requests
        malformed = getattr(self.backend, "malformed", None)
        if malformed is not None:
            yield CounterMetricFamily(
                "wsapp_backend_malformed_messages",
                "Messages on wsapp's pub/sub channels that were not frames (ignored)",
                value=malformed,
            )


def _add_app(families: dict[str, Any], path: str, app: AppMetrics) -> None:
    members = list(app.factory.registry)
    families["connections"].add_metric([path], len(members))
    families["handshakes"].add_metric([path, "accepted"], app.accepted)
    families["handshakes"].add_metric([path, "rejected"], app.rejected)
    families["messages"].add_metric([path, "in"], app.messages_in)
    families["messages"].add_metric([path, "out"], app.messages_out)
    families["bytes"].add_metric([path, "in"], app.bytes_in)
    families["bytes"].add_metric([path, "out"], app.bytes_out)
    families["broadcasts"].add_metric([path], app.broadcasts)
    families["recipients"].add_metric([path], app.broadcast_recipients)
    for code, count in dict(app.errors).items():
        families["errors"].add_metric([path, code], count)
    for code, count in dict(app.closes).items():
        families["closes"].add_metric([path, code], count)
    octets = list(app.closed_deflate_octets)
    for member in members:
        live = deflate_octets(member)
        if live is not None:
            octets = [total + value for total, value in zip(octets, live, strict=True)]
    out_payload, out_wire, in_payload, in_wire = octets
    for direction, payload, wire in (("out", out_payload, out_wire), ("in", in_payload, in_wire)):
        if wire:
            families["ratio"].add_metric([path, direction], payload / wire)


def metrics_resource(metrics: Metrics) -> IResource:
    """Return the Twisted resource serving ``metrics`` as Prometheus text."""
    # Imported here: prometheus_client.twisted imports the global reactor.
    from prometheus_client.twisted import MetricsResource

    return cast("IResource", MetricsResource(metrics.registry))
