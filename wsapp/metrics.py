"""
Prometheus metrics of one server, in a registry of its own.

:class:`Metrics` holds the metric families; :meth:`Metrics.add_app` binds their labelled
children once per app, so the per-message path of :class:`~wsapp.server.ServerProtocol`
only calls ``inc`` on an :class:`AppMetrics` attribute. Open connections and compression
ratios are read from the apps when Prometheus scrapes, not counted per message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from twisted.web.resource import IResource

    from .server import ServerFactory

__all__ = ["AppMetrics", "Metrics", "metrics_resource"]

#: Buckets of the broadcast fan-out histogram: recipients of one broadcast.
FANOUT_BUCKETS = (0, 1, 10, 100, 1_000, 10_000, 100_000)


class Metrics:
    """Every metric of one server, registered in :attr:`registry` (not the global default)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.apps: dict[str, AppMetrics] = {}
        registry = self.registry
        self.handshakes = Counter(
            "wsapp_handshakes",
            "WebSocket opening handshakes, accepted or rejected",
            ["app", "result"],
            registry=registry,
        )
        self.messages = Counter(
            "wsapp_messages",
            "WebSocket messages received (in) and sent (out)",
            ["app", "direction"],
            registry=registry,
        )
        self.bytes = Counter(
            "wsapp_message_bytes",
            "Payload bytes of WebSocket messages, before compression",
            ["app", "direction"],
            registry=registry,
        )
        self.fanout = Histogram(
            "wsapp_broadcast_recipients",
            "Connections one broadcast was sent to (_count: broadcasts, _sum: messages)",
            ["app"],
            buckets=FANOUT_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "wsapp_errors",
            "Error events sent to clients, by error code",
            ["app", "code"],
            registry=registry,
        )
        self.closes = Counter(
            "wsapp_closes",
            "Closed WebSocket connections, by close code (none: no close frame)",
            ["app", "code"],
            registry=registry,
        )
        registry.register(_LiveCollector(self))

    def add_app(self, path: str, factory: ServerFactory) -> AppMetrics:
        """Bind the metrics of the app on ``path``, served by ``factory``."""
        app = AppMetrics(self, path, factory)
        self.apps[path] = app
        return app


class AppMetrics:
    """One app's labelled metric children, bound once; the protocol calls these."""

    def __init__(self, metrics: Metrics, path: str, factory: ServerFactory) -> None:
        self._metrics = metrics
        self.path = path
        self.factory = factory
        self.accepted = metrics.handshakes.labels(path, "accepted")
        self.rejected = metrics.handshakes.labels(path, "rejected")
        self.messages_in = metrics.messages.labels(path, "in")
        self.messages_out = metrics.messages.labels(path, "out")
        self.bytes_in = metrics.bytes.labels(path, "in")
        self.bytes_out = metrics.bytes.labels(path, "out")
        self.fanout = metrics.fanout.labels(path)
        #: Payload and wire bytes (out, in) of closed connections that used deflate.
        self.closed_deflate_octets = [0, 0, 0, 0]

    def error(self, code: str) -> None:
        """Count an error event with wsapp error ``code``."""
        self._metrics.errors.labels(self.path, code).inc()

    def closed(self, code: int | None, octets: tuple[int, int, int, int] | None) -> None:
        """Count a closed connection and keep its deflate byte counts, if it used deflate."""
        self._metrics.closes.labels(self.path, "none" if code is None else str(code)).inc()
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


class _LiveCollector(Collector):
    """Open connections and compression ratios, read from the apps at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        connections = GaugeMetricFamily(
            "wsapp_connections", "Open WebSocket connections", labels=["app"]
        )
        ratio = GaugeMetricFamily(
            "wsapp_compression_ratio",
            "Payload bytes per byte on the wire, over connections that negotiated "
            "permessage-deflate (messages sent uncompressed count 1:1)",
            labels=["app", "direction"],
        )
        for path, app in list(self._metrics.apps.items()):
            members = list(app.factory.registry)
            connections.add_metric([path], len(members))
            octets = list(app.closed_deflate_octets)
            for member in members:
                live = deflate_octets(member)
                if live is not None:
                    octets = [total + value for total, value in zip(octets, live, strict=True)]
            out_payload, out_wire, in_payload, in_wire = octets
            for direction, payload, wire in (
                ("out", out_payload, out_wire),
                ("in", in_payload, in_wire),
            ):
                if wire:
                    ratio.add_metric([path, direction], payload / wire)
        yield connections
        yield ratio


def metrics_resource(metrics: Metrics) -> IResource:
    """Return the Twisted resource serving ``metrics`` as Prometheus text."""
    # Imported here: prometheus_client.twisted imports the global reactor.
    from prometheus_client.twisted import MetricsResource

    return cast("IResource", MetricsResource(metrics.registry))
