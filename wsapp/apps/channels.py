"""
Channels for clients: subscribe with exact recovery, publish, history and presence.

Requests and their replies (each reply carries the request's ``id``):

- ``{"action": "subscribe", "channel": C}`` → ``{"type": "subscribed", "channel": C,
  "offset": N, "epoch": E, "recovered": false, "publications": []}``; with
  ``"since": {"offset": N, "epoch": E}`` the reply has ``"recovered": true`` and every
  publication after offset N, in order, or ``"recovered": false`` and none (history no
  longer reaches back, or the epoch changed);
- ``{"action": "unsubscribe", "channel": C}`` → ``{"type": "unsubscribed", "channel": C}``;
- ``{"action": "publish", "channel": C, "data": D}`` → every subscriber gets
  ``{"type": "publication", "channel": C, "offset": N, "data": D}``, the sender
  ``{"type": "published", "channel": C, "offset": N}``;
- ``{"action": "history", "channel": C, "limit": K}`` → ``{"type": "history", "channel": C,
  "offset": N, "epoch": E, "publications": [...]}``, the latest K, oldest first;
- ``{"action": "presence", "channel": C}`` → ``{"type": "presence", "channel": C,
  "clients": [{"client": ID, "info": {...}}]}``.

Subscribers of a namespace with ``join_leave`` get ``join`` and ``leave`` events, and
``{"type": "unrecovered", "channel": C, "offset": N, "epoch": E}`` if publications up to N
could not be delivered (the server lost them and history did not have them). A namespace
whose ``subscribe`` asks for a ``token`` (or a ``capability`` the connection token lacks)
takes a channel token as ``"token": T`` in subscribe, history and presence requests. Errors:
``permission-denied``, ``unknown-namespace``, ``invalid-argument``, ``limit-exceeded``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..channels import HistoryResult, check_channel_name, namespace_of, position_from
from ..config import NamespaceConfig
from ..exceptions import MessageError
from ..messages import INVALID_ARGUMENT, LIMIT_EXCEEDED, Request, encode
from ..server import ServerProtocol

__all__ = ["ChannelsProtocol"]


def _publications(result: HistoryResult) -> list[dict[str, Any]]:
    return [{"offset": item.offset, "data": item.data} for item in result.publications]


class ChannelsProtocol(ServerProtocol):
    """The channels wire protocol, with the permissions of each channel's namespace."""

    def _channel(self, request: Request) -> tuple[str, NamespaceConfig]:
        # a client's name, unlike the server's own, may not start with "$"
        channel = check_channel_name(
            request.fields.get("channel"), self.factory.channels.max_name_length
        )
        return channel, self.factory.channel_options(channel)

    async def _may(self, request: Request, what: str, channel: str) -> None:
        await self.factory.check_permission(self, what, channel, request.fields.get("token"))

    async def action_subscribe(self, request: Request) -> None:
        channel, options = self._channel(request)
        await self._may(request, "subscribe", channel)
        given = request.fields.get("since")
        since = None if given is None else position_from(given)
        if channel in self.subscriptions:
            raise MessageError(INVALID_ARGUMENT, f"already subscribed to {channel!r}")
        namespace = namespace_of(channel)
        in_namespace = sum(1 for name in self.subscriptions if namespace_of(name) == namespace)
        if in_namespace >= options.max_subscriptions:
            raise MessageError(LIMIT_EXCEEDED, "too many subscriptions in this namespace")
        if not options.recovery:
            since = None

        def reply(result: HistoryResult) -> None:
            recovered = since is not None and result.recovered
            event = {
                "type": "subscribed",
                "channel": channel,
                **result.position.as_dict(),
                "recovered": recovered,
                "publications": _publications(result) if recovered else [],
            }
            self.send_event(event if request.id is None else {**event, "id": request.id})

        await self.subscribe(channel, since=since, reply=reply)

    def action_unsubscribe(self, request: Request) -> Mapping[str, Any]:
        channel, _ = self._channel(request)
        if not self.unsubscribe(channel):
            raise MessageError(INVALID_ARGUMENT, f"not subscribed to {channel!r}")
        return {"type": "unsubscribed", "channel": channel}

    async def action_publish(self, request: Request) -> Mapping[str, Any]:
        channel, options = self._channel(request)
        await self._may(request, "publish", channel)
        if "data" not in request.fields:
            raise MessageError(INVALID_ARGUMENT, "'data' is missing")
        data = request.fields["data"]
        if len(encode({"data": data})) - 9 > options.max_data_size:
            raise MessageError(
                INVALID_ARGUMENT, f"'data' is larger than {options.max_data_size} bytes"
            )
        position = await self.factory.publish(channel, data)
        return {"type": "published", "channel": channel, "offset": position.offset}

    async def action_history(self, request: Request) -> Mapping[str, Any]:
        channel, options = self._channel(request)
        await self._may(request, "subscribe", channel)
        limit = (
            request.integer("limit", low=0, high=options.history_size)
            if "limit" in request.fields
            else options.history_size
        )
        result = await self.factory.hub.backend.history(channel, limit=limit)
        event = {"type": "history", "channel": channel, **result.position.as_dict()}
        return {**event, "publications": _publications(result)}

    async def action_presence(self, request: Request) -> Mapping[str, Any]:
        channel, options = self._channel(request)
        await self._may(request, "subscribe", channel)
        if not options.presence:
            raise MessageError(INVALID_ARGUMENT, f"{channel!r} has no presence")
        present = await self.factory.hub.backend.presence(channel)
        clients = [{"client": client, "info": info} for client, info in present.items()]
        return {"type": "presence", "channel": channel, "clients": clients}
