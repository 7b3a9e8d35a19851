"""
Chat: ``{"action": "say", "text": "..."}`` reaches every other client as
``{"type": "chat", "text": "..."}``; a request with an ``id`` is acknowledged to its sender.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ..messages import Request, with_id
from ..server import ServerProtocol

__all__ = ["ChatProtocol"]


class ChatProtocol(ServerProtocol):
    """Relays each text to all other clients; option ``max_length`` bounds a text."""

    default_options: ClassVar[Mapping[str, Any]] = {"max_length": 4000}

    def action_say(self, request: Request) -> None:
        text = request.text("text", max_length=self.factory.options["max_length"])
        published = self.factory.state.publish({"type": "chat", "text": text}, exclude=self)
        reply = None if request.id is None else with_id({"type": "sent"}, request.id)
        self.reply_when(published, reply, request.id)
