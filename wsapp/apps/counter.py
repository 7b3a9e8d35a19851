"""
The counter: a number every client sees and changes, and how many clients are online.

Requests: ``{"action": "plus"}``, ``{"action": "minus"}``, ``{"action": "add", "amount": K}``
and ``{"action": "get"}``. Events: ``{"type": "state", "value": N}`` and
``{"type": "users", "count": N}``, the format of the classic synchronization page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..client import ClientProtocol
from ..messages import Request, with_id
from ..server import ServerProtocol

__all__ = ["CounterClientProtocol", "CounterProtocol"]


def state_event(value: int) -> dict[str, Any]:
    return {"type": "state", "value": value}


def users_event(count: int) -> dict[str, Any]:
    return {"type": "users", "count": count}


class CounterProtocol(ServerProtocol):
    """The shared counter; option ``max_amount`` bounds ``add``."""

    default_options: ClassVar[Mapping[str, Any]] = {"max_amount": 1000}

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        if options["max_amount"] < 1:
            raise ValueError("'max_amount' must be at least 1")

    def onOpen(self) -> None:
        super().onOpen()
        self.send_event(state_event(self.factory.counter.value))
        self.factory.broadcast(users_event(len(self.factory.registry)))

    def onLeave(self) -> None:
        self.factory.broadcast(users_event(len(self.factory.registry)))

    def action_plus(self, request: Request) -> None:
        self.change(1, request)

    def action_minus(self, request: Request) -> None:
        self.change(-1, request)

    def action_add(self, request: Request) -> None:
        bound = self.factory.options["max_amount"]
        self.change(request.integer("amount", low=-bound, high=bound), request)

    def action_get(self, request: Request) -> None:
        self.send_event(with_id(state_event(self.factory.counter.value), request.id))

    def change(self, amount: int, request: Request | None = None) -> None:
        """Add ``amount`` to the counter and send the new state to every client."""
        self.publish(state_event(self.factory.counter.add(amount)), request)


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
