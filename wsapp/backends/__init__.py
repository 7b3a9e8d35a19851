"""
Where the state shared by an app's clients lives: this process, or Redis for several.

A :class:`Backend` is a Twisted service (a child of :class:`wsapp.service.ServerService`)
that gives each mounted app an :class:`AppState`. The app's factory talks only to its
``AppState``, so protocols and apps are the same on every backend:

- ``memory`` (:mod:`wsapp.backends.memory`): the pure :mod:`wsapp.state` objects in this
  process, optionally kept in a state file across restarts. Results are already-fired
  Deferreds and a publish is a direct local fan-out.
- ``redis://host:port/db`` (:mod:`wsapp.backends.redis`): the counter and the users count
  in Redis, and events published on one channel per app, so every ``twistd wsapp``
  process behind a load balancer serves the same app.

An :class:`AppState` reports what happened, in the order the backend applied it, to its
:class:`StateListener` (the app's :class:`~wsapp.server.ServerFactory`), which sends the
events to the clients of this process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["AppState", "Backend", "StateListener", "make_backend"]


class StateListener(Protocol):
    """What an :class:`AppState` calls on this process; ``exclude`` is a connection or None."""

    def broadcast(self, event: Mapping[str, Any], *, exclude: Any = None) -> int:
        """Encode ``event`` once and send it to every local connection but ``exclude``."""

    def fan_out(self, payload: bytes, exclude: Any = None) -> int:
        """Send an already encoded event to every local connection but ``exclude``."""

    def counter_changed(self, value: int, exclude: Any = None) -> None:
        """The app's counter is now ``value``."""

    def users_changed(self, count: int) -> None:
        """``count`` clients are now connected to the app, over all processes."""


class AppState(ABC):
    """The shared state of one app, as seen from one process."""

    def __init__(self, listener: StateListener) -> None:
        self.listener = listener

    @abstractmethod
    def publish(self, event: Mapping[str, Any], *, exclude: Any = None) -> Deferred[None] | None:
        """
        Send ``event`` to every client of the app on every process, except ``exclude``.

        Returns None when the event was already sent (memory), else a Deferred that fires
        once it was sent here or fails with :class:`~wsapp.exceptions.BackendUnavailableError`.
        """

    @abstractmethod
    def counter_value(self) -> Deferred[int]:
        """Return the counter's value."""

    @abstractmethod
    def counter_add(self, amount: int, *, exclude: Any = None) -> Deferred[int]:
        """
        Add ``amount`` atomically and tell every process's listener the new value.

        The Deferred fires with the new value right after the listener of this process was
        told (so a reply to ``exclude`` comes after the broadcast, in the same order), or
        fails with :class:`~wsapp.exceptions.StateError` or
        :class:`~wsapp.exceptions.BackendUnavailableError`.
        """

    @abstractmethod
    def report_users(self, local: int) -> None:
        """This process now has ``local`` clients; every listener hears the new total."""


class Backend(Service, ABC):
    """A Twisted service holding the state of every app of one server."""

    #: Where the state lives, as ``/health`` names it: ``memory`` or the Redis URL.
    address = "memory"

    @property
    def available(self) -> bool:
        """Whether the state can be read and changed right now."""
        return True

    @abstractmethod
    def app(self, name: str, listener: StateListener) -> AppState:
        """Return the state of the app mounted as ``name`` (its URL path)."""


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
