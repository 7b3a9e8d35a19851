"""
The counter: a number every client sees and changes, and how many clients are online.

Requests: ``{"action": "plus"}``, ``{"action": "minus"}``, ``{"action": "add", "amount": K}``
and ``{"action": "get"}``. Events: ``{"type": "state", "value": N}`` and
``{"type": "users", "count": N}``, the format of the classic synchronization page.

On the channels core, the counter is a bounded integer on the backend whose every change
is published on the app's server channel ``$counter:PATH``, and the users count is that
channel's presence, so every process behind a load balancer serves the same ones. A new
client gets ``state`` first, then ``users``, and never the same users count twice in a
row. The users count is sent at most once per ``users_interval`` seconds: when thousands of
clients connect at once, each gets a handful of ``users`` events, not one per other client.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, ClassVar

from twisted.internet.defer import Deferred

from ..backends import PresenceChange
from ..channels import Position, Publication
from ..client import ClientProtocol
from ..messages import Request
from ..server import ServerFactory, ServerProtocol
from ..state import SAFE_INTEGER, Throttle

__all__ = ["CounterClientProtocol", "CounterFactory", "CounterProtocol"]


def state_event(value: int) -> dict[str, Any]:
    return {"type": "state", "value": value}


def users_event(count: int) -> dict[str, Any]:
    return {"type": "users", "count": count}


class CounterFactory(ServerFactory):
    """The counter's channel, and the users count sent to this process's clients."""

    #: The latest users count heard, and the one last sent.
    users = 0

    @property
    def channel(self) -> str:
        """The server channel carrying the counter's changes and presence."""
        return f"$counter:{self.name}"

    @cached_property
    def users_throttle(self) -> Throttle:
        """Spaces this process's users events ``users_interval`` seconds apart."""
        return Throttle(self.options["users_interval"])

    def publication_event(self, channel: str, publication: Publication) -> Mapping[str, Any]:
        return state_event(publication.data)

    def channel_publication(
        self, channel: str, publication: Publication, members: list[Any]
    ) -> None:
        for member in members:
            member.seen_state = True
        super().channel_publication(channel, publication, members)

    def lost_event(self, channel: str, position: Position) -> None:
        return None  # the latest value follows: the channel's history holds it

    def channel_presence(self, channel: str, change: PresenceChange, members: list[Any]) -> None:
        self.users = change.count
        delay = self.users_throttle.request(self.reactor.seconds())
        if delay == 0:
            self.send_users()
        elif delay is not None:
            self.reactor.callLater(delay, self.send_users)

    def send_users(self) -> None:
        """Send the latest users count to every client that has had its first one."""
        count = self.users
        behind = [
            connection
            for connection in self.registry
            if connection.users_sent is not None and connection.users_sent != count
        ]
        if not behind:
            self.users_throttle.skipped()
            return
        self.users_throttle.ran(self.reactor.seconds())
        for connection in behind:
            connection.users_sent = count
        self.send_to(behind, users_event(count), self.channel)


class CounterProtocol(ServerProtocol):
    """
    The shared counter; option ``max_amount`` bounds ``add``, ``users_interval`` (seconds)
    is the shortest time between two ``users`` events (0: one per join and leave).
    """

    factory: CounterFactory
    factory_class = CounterFactory
    default_options: ClassVar[Mapping[str, Any]] = {"max_amount": 1000, "users_interval": 0.1}
    #: Whether a state event reached this client; the users count last sent to it (-1:
    #: none yet, None: not before its first state).
    seen_state = False
    users_sent: int | None = None

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        if options["max_amount"] < 1:
            raise ValueError("'max_amount' must be at least 1")
        if options["users_interval"] < 0:
            raise ValueError("'users_interval' must be 0 or more seconds")

    def onOpen(self) -> None:
        Deferred.fromCoroutine(self._start()).addErrback(self.request_failed)

    async def _start(self) -> None:
        factory = self.factory
        # told if the backend is unreachable; the first state follows when it is back
        if not await self.once_available(lambda: self.subscribe(factory.channel)):
            return
        value = await self._value()
        if not self.seen_state:
            # a change that reached this client meanwhile is at least as new as the value read
            self.seen_state = True
            self.send_event(state_event(value))
        # from now on this client gets the users count: its own arrival is the first change
        self.users_sent = -1
        await factory.hub.backend.presence_add(factory.channel, self.client_id, {})
        if not self._opened:  # closed meanwhile: onLeave ran before the entry existed
            self.onLeave()

    async def _value(self) -> int:
        backend = self.factory.hub.backend
        value, _ = await backend.increment(self.factory.name, 0, limit=SAFE_INTEGER)
        return value

    def onLeave(self) -> None:
        removing = self.factory.hub.backend.presence_remove(self.factory.channel, self.client_id)
        removing.addErrback(lambda _: None)  # a lost backend's entries expire

    def action_plus(self, request: Request) -> Any:
        return self.change(1, request)

    def action_minus(self, request: Request) -> Any:
        return self.change(-1, request)

    def action_add(self, request: Request) -> Any:
        bound = self.factory.options["max_amount"]
        return self.change(request.integer("amount", low=-bound, high=bound), request)

    async def action_get(self, request: Request) -> Mapping[str, Any]:
        return state_event(await self._value())

    async def change(self, amount: int, request: Request | None = None) -> Mapping[str, Any] | None:
        """
        Add ``amount`` to the counter; every client gets the new state. With a request id,
        the sender's copy is the reply, carrying the id, in the order of everyone's.
        """
        request_id = None if request is None else request.id
        exclude = None if request_id is None else self
        factory = self.factory
        value, _ = await factory.hub.increment(
            factory.name, amount, limit=SAFE_INTEGER, channel=factory.channel, exclude=exclude
        )
        return None if request_id is None else state_event(value)


class CounterClientProtocol(ClientProtocol):
    """A counter client: keeps ``value`` and ``users`` current and sends the actions."""

    value: int | None = None
    users: int | None = None

    def event_state(self, event: dict[str, Any]) -> None:
        self.value = event["value"]

    def event_users(self, event: dict[str, Any]) -> None:
        self.users = event["count"]

    def plus(self) -> None:
        self.send_action("plus")

    def minus(self) -> None:
        self.send_action("minus")

    def add(self, amount: int) -> None:
        self.send_action("add", amount=amount)
