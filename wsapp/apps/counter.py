"""
The counter: a number every client sees and changes, and how many clients are online.

Requests: ``{"action": "plus"}``, ``{"action": "minus"}``, ``{"action": "add", "amount": K}``
and ``{"action": "get"}``. Events: ``{"type": "state", "value": N}`` and
``{"type": "users", "count": N}``, the format of the classic synchronization page.
The counter and the users count live in the factory's backend state, so every process
behind a load balancer serves the same ones (see :mod:`wsapp.backends`). The users count is
reported at most once per ``users_interval`` seconds: when thousands of clients connect at
once (after a restart, say), each gets a handful of ``users`` events, not one per other client.

A new client gets its ``state`` first, then ``users``; no client gets the same ``users``
count twice in a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, ClassVar

from ..client import ClientProtocol
from ..messages import Request, RequestId, with_id
from ..server import ServerFactory, ServerProtocol
from ..state import Throttle

__all__ = ["CounterClientProtocol", "CounterFactory", "CounterProtocol"]


def state_event(value: int) -> dict[str, Any]:
    return {"type": "state", "value": value}


def users_event(count: int) -> dict[str, Any]:
    return {"type": "users", "count": count}


class CounterFactory(ServerFactory):
    """Sends every counter and users change the backend reports to this process's clients."""

    #: Counter changes this process has broadcast.
    changes = 0
    #: The users count last broadcast to this process's clients (None: none yet).
    users: int | None = None

    @cached_property
    def users_throttle(self) -> Throttle:
        """Spaces this process's users reports ``users_interval`` seconds apart."""
        return Throttle(self.options["users_interval"])

    @cached_property
    def joining(self) -> dict[ServerProtocol, None]:
        """Connections not sent a state yet, in the order they opened: no users count yet."""
        return {}

    @cached_property
    def unaware(self) -> set[ServerProtocol]:
        """Connections sent a state but not yet :attr:`users`."""
        return set()

    def welcome(self, connection: ServerProtocol) -> None:
        """``connection`` was sent a state: from now on it gets the users count too."""
        if self.joining.pop(connection, False) is None:
            self.unaware.add(connection)

    def forget(self, connection: ServerProtocol) -> None:
        """``connection`` left."""
        self.joining.pop(connection, None)
        self.unaware.discard(connection)

    def counter_changed(self, value: int, exclude: ServerProtocol | None = None) -> None:
        self.changes += 1
        self.broadcast(state_event(value), exclude=exclude)
        for connection in list(self.joining):
            if connection is not exclude:
                self.welcome(connection)

    def count_users(self) -> None:
        """Report this process's users count, at most once per ``users_interval`` seconds."""
        delay = self.users_throttle.request(self.reactor.seconds())
        if delay == 0:
            self._report_users()
        elif delay is not None:
            self.reactor.callLater(delay, self._report_users)

    def _report_users(self) -> None:
        self.users_throttle.ran(self.reactor.seconds())
        self.state.report_users(len(self.registry))

    def users_changed(self, count: int) -> None:
        """
        Send ``count`` to every connection sent a state, unless it has that count already.

        A connection still joining gets a count later: its own join is reported after its
        first state was sent.
        """
        if count == self.users:
            for connection in self.unaware:
                connection.send_event(users_event(count))
            self.unaware.clear()
            return
        self.users = count
        self.unaware.clear()
        # Out of the registry for this one broadcast, still framed once for all the others.
        held = [connection for connection in self.joining if self.registry.discard(connection)]
        try:
            self.broadcast(users_event(count))
        finally:
            for connection in held:
                self.registry.add(connection)


class CounterProtocol(ServerProtocol):
    """
    The shared counter; option ``max_amount`` bounds ``add``, ``users_interval`` (seconds)
    is the shortest time between two ``users`` events (0: one per join and leave).
    """

    factory: CounterFactory
    factory_class = CounterFactory
    default_options: ClassVar[Mapping[str, Any]] = {"max_amount": 1000, "users_interval": 0.1}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        if options["max_amount"] < 1:
            raise ValueError("'max_amount' must be at least 1")
        if options["users_interval"] < 0:
            raise ValueError("'users_interval' must be 0 or more seconds")

    def onOpen(self) -> None:
        super().onOpen()
        self.factory.joining[self] = None
        changes = self.factory.changes
        reading = self.factory.state.counter_value()
        reading.addCallbacks(self._send_first_state, self.request_failed, callbackArgs=(changes,))
        reading.addCallback(lambda _: self.factory.count_users())

    def _send_first_state(self, value: int, changes: int) -> None:
        # A change broadcast while the backend was reading (Redis) reached this client
        # already and is at least as new as the value read: sending that would go back.
        if self.factory.changes == changes:
            self._send_state(value)

    def _send_state(self, value: int, request_id: RequestId | None = None) -> None:
        self.send_event(with_id(state_event(value), request_id))
        self.factory.welcome(self)

    def onLeave(self) -> None:
        self.factory.forget(self)
        self.factory.count_users()

    def action_plus(self, request: Request) -> None:
        self.change(1, request)

    def action_minus(self, request: Request) -> None:
        self.change(-1, request)

    def action_add(self, request: Request) -> None:
        bound = self.factory.options["max_amount"]
        self.change(request.integer("amount", low=-bound, high=bound), request)

    def action_get(self, request: Request) -> None:
        reading = self.factory.state.counter_value()
        reading.addCallbacks(
            self._send_state,
            self.request_failed,
            callbackArgs=(request.id,),
            errbackArgs=(request.id,),
        )

    def change(self, amount: int, request: Request | None = None) -> None:
        """
        Add ``amount`` to the counter; every client gets the new state, the sender's copy
        with the request's id. If the backend fails, the sender gets an error event.
        """
        request_id = None if request is None else request.id
        exclude = None if request_id is None else self
        changing = self.factory.state.counter_add(amount, exclude=exclude)
        if request_id is None:
            changing.addErrback(self.request_failed)
        else:
            changing.addCallbacks(
                self._send_state,
                self.request_failed,
                callbackArgs=(request_id,),
                errbackArgs=(request_id,),
            )


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
