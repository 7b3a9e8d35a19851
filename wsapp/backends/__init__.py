"""
Where channels live: this process, or Redis shared by several processes.

A :class:`Backend` is a Twisted service (a child of :class:`wsapp.service.ServerService`)
with one small, topic-shaped contract that every app uses through the
:class:`~wsapp.hub.Hub`: publish to a channel (getting the publication's position),
say which channels this process wants to hear, read a channel's history, keep presence
entries, and increment a bounded integer atomically (publishing its new value). Every
method returns a Deferred; a backend that cannot be reached fails it with
:class:`~wsapp.exceptions.BackendUnavailableError`.

- ``memory`` (:mod:`wsapp.backends.memory`): :class:`~wsapp.channels.ChannelLog` objects in
  this process, optionally keeping the counters in a state file across restarts; every
  Deferred has fired when the call returns, and a publication has been delivered by then.
- ``redis://host:port/db`` (:mod:`wsapp.backends.redis`): streams, presence hashes and
  pub/sub in Redis, so every ``twistd wsapp`` process behind a load balancer serves the
  same channels.

What a backend hears on the channels this process subscribed to goes to its
:class:`BackendListener`, in the order the backend applied it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from ..channels import HistoryResult, Position, Publication
from .local_api import LocalApiState

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Backend", "BackendListener", "PresenceChange", "make_backend"]


@dataclass(frozen=True)
class PresenceChange:
    """A channel's presence changed: ``client`` joined or left (None: a recount)."""

    count: int
    client: str | None = None
    info: Mapping[str, Any] | None = None
    joined: bool = True


class BackendListener(Protocol):
    """What a backend tells this process (the :class:`~wsapp.hub.Hub` listens)."""

    def deliver(self, channel: str, epoch: str, publication: Publication, tag: str) -> None:
        """A publication of a channel this process subscribed to; ``tag`` as published."""

    def presence_changed(self, channel: str, change: PresenceChange) -> None:
        """A subscribed channel's presence changed (on any process)."""

    def reconnected(self) -> None:
        """Pub/sub was interrupted and is back: publications may have been missed."""

    def interrupted(self) -> None:
        """Pub/sub was lost: what is published now arrives only after :meth:`reconnected`."""


class Backend(Service, ABC):
    """The channels of one server, as seen from this process."""

    #: Who hears publications and presence changes; set once by the hub.
    listener: BackendListener | None = None
    _awaiting: list[Deferred[None]] | None = None

    @property
    @abstractmethod
    def address(self) -> str:
        """What ``/health`` names the backend: ``memory`` or the Redis URL."""

    @property
    def available(self) -> bool:
        """Whether requests can be served now."""
        return True

    def when_available(self) -> Deferred[None]:
        """A Deferred that fires once requests can be served (at once if they can now)."""
        if self.available:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        if self._awaiting is None:
            self._awaiting = []
        self._awaiting.append(waiting)
        return waiting

    def became_available(self) -> None:
        """Called by a backend when it can serve requests again: fires :meth:`when_available`."""
        waiting, self._awaiting = self._awaiting or [], None
        for deferred in waiting:
            deferred.callback(None)

    @abstractmethod
    def publish(
        self,
        channel: str,
        data: Any,
        *,
        history_size: int = 0,
        history_ttl: float = 0.0,
        tag: str = "",
    ) -> Deferred[Position]:
        """
        Append ``data`` (JSON) to ``channel`` and deliver it to every subscribed process.

        History keeps the last ``history_size`` publications for ``history_ttl`` seconds (0:
        until pushed out). ``tag`` travels with the publication to the listeners.
        """

    @abstractmethod
    def subscribe(self, channel: str) -> Deferred[None]:
        """Deliver ``channel``'s publications to this process from when the Deferred fires."""

    @abstractmethod
    def unsubscribe(self, channel: str) -> Deferred[None]:
        """Stop delivering ``channel`` to this process."""

    @abstractmethod
    def history(
        self, channel: str, *, since: Position | None = None, limit: int = 0
    ) -> Deferred[HistoryResult]:
        """
        Return ``channel``'s position with what followed ``since`` (see
        :func:`wsapp.channels.recover`), or without ``since`` its latest ``limit``
        publications.
        """

    @abstractmethod
    def presence_add(
        self, channel: str, client: str, info: Mapping[str, Any], *, announce: bool = False
    ) -> Deferred[int]:
        """
        Enter ``client`` (with public ``info``) in ``channel``'s presence; return the count.

        Every subscribed process hears a :class:`PresenceChange` when the count changes, and
        with ``announce`` also who joined. Entries of a process that dies expire.
        """

    @abstractmethod
    def presence_remove(
        self, channel: str, client: str, *, announce: bool = False
    ) -> Deferred[int]:
        """Remove ``client`` from ``channel``'s presence; return the count."""

    @abstractmethod
    def presence(self, channel: str) -> Deferred[dict[str, Mapping[str, Any]]]:
        """Return ``channel``'s presence: each client's info, by client id."""

    @abstractmethod
    def presence_count(self, channel: str) -> Deferred[int]:
        """Return how many clients are present in ``channel``."""

    @abstractmethod
    def increment(
        self, key: str, amount: int, *, limit: int, channel: str = "", tag: str = ""
    ) -> Deferred[tuple[int, Position | None]]:
        """
        Add ``amount`` to the integer ``key`` unless that leaves ``[-limit, limit]`` (fail
        with :class:`~wsapp.exceptions.StateError`); with ``channel``, publish the new value
        there in the same atomic step (history: the latest value). Return the value and the
        publication's position.
        """

    def deny(self, key: str, until: float) -> Deferred[None]:
        """Put ``key`` on the deny-list (shared by every process) until Unix time ``until``."""
        raise NotImplementedError(f"{type(self).__name__} keeps no deny-list")

    def denied(self, key: str) -> Deferred[bool]:
        """Whether ``key`` is on the deny-list now."""
        raise NotImplementedError(f"{type(self).__name__} keeps no deny-list")

    # --- for the HTTP API; the defaults keep their state in this process ---

    def publish_once(
        self,
        channel: str,
        data: Any,
        *,
        key: str,
        window: float,
        history_size: int = 0,
        history_ttl: float = 0.0,
    ) -> Deferred[tuple[Position, bool]]:
        """
        Publish as :meth:`publish` does, unless ``key`` was used on ``channel`` in the last
        ``window`` seconds: return the position of the publication made with it, and
        whether this call made it.
        """
        return self._api_state().publish_once(
            lambda: self.publish(channel, data, history_size=history_size, history_ttl=history_ttl),
            (channel, key),
            window,
        )

    def put_node(self, node: str, report: Mapping[str, Any], ttl: float) -> Deferred[None]:
        """Keep this process's ``report`` (a JSON object) under ``node`` for ``ttl`` seconds."""
        return self._api_state().put_node(node, report, ttl)

    def nodes(self) -> Deferred[list[dict[str, Any]]]:
        """Return the reports of every process whose report has not expired."""
        return self._api_state().nodes()

    def _api_state(self) -> LocalApiState:
        state: LocalApiState | None = self.__dict__.get("_local_api")
        if state is None:
            state = self.__dict__["_local_api"] = LocalApiState()
        return state


def make_backend(config: Config, *, reactor: Any = None) -> Backend:
    """
    Return the backend ``config.backend`` names, not yet started.

    Raises :class:`~wsapp.exceptions.StateFileError` if the memory backend's state file
    is unusable.
    """
    if config.backend == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(
            state_file=config.state_file or None, interval=config.state_interval, reactor=reactor
        )
    from ..config import redis_address
    from .redis import RedisBackend

    host, port, db = redis_address(config.backend)
    return RedisBackend(host, port, db, reactor=reactor)
