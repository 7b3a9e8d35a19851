"""
What the API needs of every process: reports for ``info`` and ``channels``, and notices.

:class:`Cluster` is a service of each server with the API on. Every ``interval`` seconds
it stores this process's report (connections, subscriptions by channel, uptime, version)
in the backend, expiring after three intervals, so a process that died drops out. It also
listens to the server channel ``$wsapp:api``, where the ``disconnect`` and ``unsubscribe``
methods publish notices that every process (this one too) carries out on its own
connections, matched by their ``user.id``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..backends import PresenceChange
from ..channels import Position, Publication
from ..exceptions import BackendUnavailableError
from ..hub import Hub
from ..version import __version__

__all__ = ["CONTROL", "Cluster"]

log = Logger()

#: The server channel of the API's notices to every process.
CONTROL = "$wsapp:api"


class Served(Protocol):
    """What the cluster reads of the server: its apps' factories and its uptime."""

    @property
    def factories(self) -> Mapping[str, Any]: ...

    def uptime(self) -> float: ...


class _Member:
    """The cluster's place among a channel's listeners (the hub groups them by factory)."""

    def __init__(self, factory: Cluster) -> None:
        self.factory = factory


class Cluster(Service):
    """This process's report and notices, through ``hub``'s backend."""

    def __init__(
        self, hub: Hub, server: Served, *, interval: float = 1.0, reactor: Any = None
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.hub = hub
        self.server = server
        self.interval = interval
        self.reactor = reactor
        #: This process's name in reports.
        self.node = hub.origin
        self.listening = False
        self._member = _Member(self)
        self._reporter = LoopingCall(self.report_now)
        self._reporter.clock = reactor
        self._retry: Any = None

    # --- reports ---

    def report(self) -> dict[str, Any]:
        """This process's report, as it is now."""
        channels = {
            name: len(entry.members)
            for name, entry in self.hub.channels.items()
            if not name.startswith("$") and entry.members
        }
        return {
            "node": self.node,
            "version": __version__,
            "uptime": round(self.server.uptime(), 3),
            "connections": sum(len(f.registry) for f in self.server.factories.values()),
            "subscriptions": sum(channels.values()),
            "channels": channels,
        }

    def report_now(self) -> Deferred[None]:
        """Store this process's report in the backend (failures wait for the next one)."""
        putting = self.hub.backend.put_node(self.node, self.report(), 3 * self.interval)
        return putting.addErrback(_background)

    async def reports(self) -> list[dict[str, Any]]:
        """Every live process's report, this one's as it is now, sorted by node."""
        reports = await self.hub.backend.nodes()  # the dashboard's samples have no "node"
        found = {report["node"]: report for report in reports if "node" in report}
        found[self.node] = self.report()
        return [found[node] for node in sorted(found, key=str)]

    # --- notices ---

    def notify(self, notice: Mapping[str, Any]) -> Deferred[Position]:
        """Publish ``notice`` to every process (this one included)."""
        if not self.hub.backend.available:
            raise BackendUnavailableError()
        return self.hub.publish(CONTROL, dict(notice))

    def channel_publication(
        self, channel: str, publication: Publication, members: list[Any]
    ) -> None:
        notice = publication.data
        if not isinstance(notice, dict):
            return
        user = notice.get("user")
        for factory in self.server.factories.values():
            for connection in list(factory.registry):
                identity = getattr(connection, "user", None)
                if identity is None or getattr(identity, "id", None) != user:
                    continue
                if notice.get("op") == "disconnect":
                    connection.close_with(notice.get("code", 4000), notice.get("reason", ""))
                elif notice.get("op") == "unsubscribe" and connection.unsubscribe(
                    notice.get("channel")
                ):
                    connection.send_event({"type": "unsubscribed", "channel": notice["channel"]})

    def channel_lost(self, channel: str, position: Position, members: list[Any]) -> None:
        """Notices are not kept: one lost while Redis was away is not replayed."""

    def channel_presence(self, channel: str, change: PresenceChange, members: list[Any]) -> None:
        """The notice channel has no presence."""

    def _listen(self) -> None:
        self._retry = None
        if not self.hub.backend.available:
            # the hub would wait for good on a subscription that fails at once
            self._retry = self.reactor.callLater(self.interval / 10, self._listen)
            return
        listening = Deferred.fromCoroutine(self.hub.subscribe(CONTROL, self._member))

        def listened(_: object) -> None:
            self.listening = True

        def failed(failure: Failure) -> None:
            _background(failure)
            if self.running:
                self._retry = self.reactor.callLater(self.interval, self._listen)

        listening.addCallbacks(listened, failed)

    # --- service ---

    def startService(self) -> None:
        super().startService()
        self._reporter.start(self.interval, now=True)
        self._listen()

    def stopService(self) -> None:
        super().stopService()
        if self._reporter.running:
            self._reporter.stop()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self.hub.unsubscribe(CONTROL, self._member)
        self.listening = False


def _background(failure: Failure) -> None:
    if not failure.check(BackendUnavailableError):
        log.failure("API: storing this process's report failed", failure)
