"""
Chat with rooms: each room is a channel ``chat:ROOM`` with history and presence.

Every client is in the room of option ``room`` (``lobby``) from the start. Requests:

- ``{"action": "join", "room": R}`` → ``{"type": "joined", "room": R, "client": ID,
  "messages": [...], "members": [...]}``: this client's id (and ``"user"``, its user id),
  the room's history (oldest first) and who is there;
- ``{"action": "leave", "room": R}`` → ``{"type": "left", "room": R}``;
- ``{"action": "say", "text": T, "room": R}`` (``room`` defaults to option ``room``) →
  every other member gets ``{"type": "chat", "room": R, "text": T, "client": ID, "user":
  USER}`` (``user``, the sender's user id, only from an authenticated connection); a
  request with an ``id`` is acknowledged as ``{"type": "sent", "room": R, "offset": N}``.

Members get ``{"type": "join" | "leave", "room": R, "client": ID, "info": {...}}`` when
someone enters or leaves (``info`` is ``{"user": USER, "info": {...}}`` for a user). The
namespace's options in ``channels.namespaces`` (``chat`` in
the shipped config) say who may join and say, and what history keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from twisted.internet.defer import Deferred

from ..backends import PresenceChange
from ..channels import HistoryResult, Publication
from ..exceptions import MessageError
from ..messages import INVALID_ARGUMENT, Request
from ..server import ServerFactory, ServerProtocol

__all__ = ["ChatFactory", "ChatProtocol"]


class ChatFactory(ServerFactory):
    """Shapes the rooms' publications and presence changes as chat events."""

    def room_of(self, channel: str) -> str:
        return channel.partition(":")[2]

    def publication_event(self, channel: str, publication: Publication) -> Mapping[str, Any]:
        return {"type": "chat", "room": self.room_of(channel), **publication.data}

    def channel_presence(self, channel: str, change: PresenceChange, members: list[Any]) -> None:
        if change.client is not None:
            kind = "join" if change.joined else "leave"
            event = {"type": kind, "room": self.room_of(channel), "client": change.client}
            self.send_to(members, {**event, "info": change.info or {}}, channel)


class ChatProtocol(ServerProtocol):
    """
    Rooms of texts; option ``max_length`` bounds a text, ``room`` is the room every client
    starts in ("" for none), ``namespace`` the channel namespace of the rooms.
    """

    factory: ChatFactory
    factory_class = ChatFactory
    default_options: ClassVar[Mapping[str, Any]] = {
        "max_length": 4000,
        "room": "lobby",
        "namespace": "chat",
    }

    def onOpen(self) -> None:
        room = self.factory.options["room"]
        if room:
            joining = self.once_available(lambda: Deferred.fromCoroutine(self.join(room)))
            Deferred.fromCoroutine(joining).addErrback(self.request_failed)

    def channel(self, request: Request | str) -> str:
        room = request if isinstance(request, str) else request.fields.get("room")
        if room is None and not isinstance(request, str):
            room = self.factory.options["room"]
        if not isinstance(room, str) or not room:
            raise MessageError(INVALID_ARGUMENT, "'room' must be a non-empty string")
        return f"{self.factory.options['namespace']}:{room}"

    async def join(self, room: str, request: Request | None = None) -> None:
        """Enter ``room``: the client gets its history and members, then its live texts."""
        channel = self.channel(room)
        options = self.factory.channel_options(channel)
        token = None if request is None else request.fields.get("token")
        await self.factory.check_permission(self, "subscribe", channel, token)
        if channel in self.subscriptions:
            raise MessageError(INVALID_ARGUMENT, f"already in room {room!r}")
        members = {}
        if options.presence:
            members = await self.factory.hub.backend.presence(channel)

        def reply(result: HistoryResult) -> None:
            messages = [
                {**publication.data, "offset": publication.offset}
                for publication in result.publications
            ]
            event: dict[str, Any] = {"type": "joined", "room": room, "client": self.client_id}
            if self.user is not None:
                event["user"] = self.user.id
            event["messages"] = messages
            event["members"] = [
                {"client": client, "info": info} for client, info in members.items()
            ]
            if request is not None and request.id is not None:
                event["id"] = request.id
            self.send_event(event)

        await self.subscribe(channel, latest=options.history_size, reply=reply)

    async def action_join(self, request: Request) -> None:
        room = self.channel(request).partition(":")[2]
        await self.join(room, request)

    def action_leave(self, request: Request) -> Mapping[str, Any]:
        channel = self.channel(request)
        if not self.unsubscribe(channel):
            raise MessageError(INVALID_ARGUMENT, "not in that room")
        return {"type": "left", "room": channel.partition(":")[2]}

    async def action_say(self, request: Request) -> Mapping[str, Any] | None:
        text = request.text("text", max_length=self.factory.options["max_length"])
        channel = self.channel(request)
        await self.factory.check_permission(self, "publish", channel)
        data: dict[str, Any] = {"text": text, "client": self.client_id}
        if self.user is not None:
            data["user"] = self.user.id
        position = await self.factory.publish(channel, data, exclude=self)
        if request.id is None:
            return None
        return {"type": "sent", "room": channel.partition(":")[2], "offset": position.offset}
