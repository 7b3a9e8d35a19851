"""
The API's methods: each takes the request's JSON object and returns the answer's.

Bad parameters raise :class:`~wsapp.exceptions.MessageError` (``invalid-argument``,
``unknown-namespace``: HTTP 400); a backend that cannot be reached raises
:class:`~wsapp.exceptions.BackendUnavailableError` (503). Unknown parameters are refused,
so a misspelt one is not silently ignored.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..channels import HistoryResult, check_channel_name, namespace_of, position_from
from ..config import ChannelsConfig, NamespaceConfig
from ..exceptions import MessageError
from ..hub import Hub
from ..messages import INVALID_ARGUMENT, UNKNOWN_NAMESPACE
from .cluster import Cluster
from .server import NotImplementedApiError

__all__ = ["Methods"]

#: Most channels of one broadcast.
MAX_BROADCAST = 1000
#: Longest idempotency key, user id, jti or close reason, in characters.
MAX_TEXT = 256


def _fields(params: Mapping[str, Any], required: set[str], optional: set[str] = set()) -> None:  # noqa: B006
    missing = sorted(required - set(params))
    if missing:
        raise MessageError(INVALID_ARGUMENT, f"{missing[0]!r} is missing")
    unknown = sorted(set(params) - required - optional)
    if unknown:
        expected = ", ".join(sorted(required | optional))
        raise MessageError(INVALID_ARGUMENT, f"unknown field {unknown[0]!r} (expected: {expected})")


def _text(params: Mapping[str, Any], name: str) -> str:
    value = params[name]
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_TEXT:
        raise MessageError(
            INVALID_ARGUMENT, f"{name!r} must be a string of 1-{MAX_TEXT} characters"
        )
    return value


def _integer(params: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MessageError(INVALID_ARGUMENT, f"{name!r} must be an integer from {low} to {high}")
    return value


def _publications(result: HistoryResult) -> list[dict[str, Any]]:
    return [{"offset": item.offset, "data": item.data} for item in result.publications]


#: Seconds a token revoked without ``expire_at`` stays refused.
REVOKE_DEFAULT = 86400.0


class Methods:
    """The API methods over ``hub`` (and its backend), with ``channels``' namespaces."""

    def __init__(
        self,
        hub: Hub,
        channels: ChannelsConfig,
        cluster: Cluster,
        *,
        window: float,
        identity: Any = None,
    ) -> None:
        self.hub = hub
        #: The server's :class:`wsapp.identity.Identity` (revocation), if any.
        self.identity = identity
        self.backend = hub.backend
        self.channels = channels
        self.cluster = cluster
        self.window = window

    def by_name(self) -> dict[str, Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]]:
        """Every method by its URL name."""
        return {
            "publish": self.publish,
            "broadcast": self.broadcast,
            "history": self.history,
            "presence": self.presence,
            "presence_stats": self.presence_stats,
            "channels": self.list_channels,
            "info": self.info,
            "disconnect": self.disconnect,
            "unsubscribe": self.unsubscribe,
            "revoke_token": self.revoke_token,
        }

    def _channel(self, value: object) -> tuple[str, NamespaceConfig]:
        config = self.channels
        channel = check_channel_name(value, config.max_name_length)
        namespace = namespace_of(channel)
        if not namespace:
            return channel, config.default
        options = config.namespaces.get(namespace)
        if options is None:
            raise MessageError(UNKNOWN_NAMESPACE, f"no namespace {namespace!r}")
        return channel, options

    async def publish(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{channel, data, idempotency_key?}`` -> ``{offset, epoch}``."""
        _fields(params, {"channel", "data"}, {"idempotency_key"})
        channel, options = self._channel(params["channel"])
        size, ttl = options.history_size, options.history_ttl
        if "idempotency_key" in params:
            key = _text(params, "idempotency_key")
            position, _ = await self.backend.publish_once(
                channel,
                params["data"],
                key=key,
                window=self.window,
                history_size=size,
                history_ttl=ttl,
            )
        else:
            position = await self.hub.publish(
                channel, params["data"], history_size=size, history_ttl=ttl
            )
        return position.as_dict()

    async def broadcast(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """
        ``{channels: [C, ...], data}`` -> ``{responses: [...]}``, one per channel in order:
        ``{channel, offset, epoch}`` or ``{channel, error, detail}``.
        """
        _fields(params, {"channels", "data"})
        names = params["channels"]
        if not isinstance(names, list) or not 1 <= len(names) <= MAX_BROADCAST:
            raise MessageError(
                INVALID_ARGUMENT, f"'channels' must be a list of 1-{MAX_BROADCAST} names"
            )
        targets = [self._channel(name) for name in names]
        if len({channel for channel, _ in targets}) != len(targets):
            raise MessageError(INVALID_ARGUMENT, "'channels' names a channel twice")
        data = params["data"]
        publishing = [
            self.hub.publish(channel, data, history_size=o.history_size, history_ttl=o.history_ttl)
            for channel, o in targets
        ]
        responses: list[dict[str, Any]] = []
        for (channel, _), deferred in zip(targets, publishing, strict=True):
            try:
                position = await deferred
            except MessageError as error:
                responses.append({"channel": channel, "error": error.code, "detail": error.detail})
            else:
                responses.append({"channel": channel, **position.as_dict()})
        return {"responses": responses}

    async def history(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{channel, limit?, since?}`` -> ``{offset, epoch, publications, recovered?}``."""
        _fields(params, {"channel"}, {"limit", "since"})
        channel, options = self._channel(params["channel"])
        limit = options.history_size
        if "limit" in params:
            limit = _integer(params, "limit", 0, options.history_size)
        since = position_from(params["since"]) if "since" in params else None
        result = await self.backend.history(channel, since=since, limit=limit)
        answer = {**result.position.as_dict(), "publications": _publications(result)}
        if since is not None:
            answer["recovered"] = result.recovered
        return answer

    def _presence_channel(self, params: Mapping[str, Any]) -> str:
        _fields(params, {"channel"})
        channel, options = self._channel(params["channel"])
        if not options.presence:
            raise MessageError(INVALID_ARGUMENT, f"{channel!r} has no presence")
        return channel

    async def presence(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{channel}`` -> ``{clients: [{client, info}, ...]}``."""
        present = await self.backend.presence(self._presence_channel(params))
        return {"clients": [{"client": client, "info": info} for client, info in present.items()]}

    async def presence_stats(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{channel}`` -> ``{clients: N}``."""
        return {"clients": await self.backend.presence_count(self._presence_channel(params))}

    async def list_channels(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{pattern?}`` (a glob such as ``chat:*``) -> ``{channels: {C: {subscribers: N}}}``."""
        _fields(params, set(), {"pattern"})
        pattern = _text(params, "pattern") if "pattern" in params else "*"
        totals: dict[str, int] = {}
        for report in await self.cluster.reports():
            for channel, count in dict(report.get("channels") or {}).items():
                if fnmatch.fnmatchcase(channel, pattern):
                    totals[channel] = totals.get(channel, 0) + int(count)
        return {"channels": {name: {"subscribers": totals[name]} for name in sorted(totals)}}

    async def info(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{}`` -> ``{nodes: [...]}``, each: node, version, uptime, connections, channels."""
        _fields(params, set())
        nodes = [
            {**report, "channels": len(report.get("channels") or {})}
            for report in await self.cluster.reports()
        ]
        return {"nodes": nodes}

    async def disconnect(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{user, code?, reason?}``: close that user's connections on every process."""
        _fields(params, {"user"}, {"code", "reason"})
        notice: dict[str, Any] = {"op": "disconnect", "user": _text(params, "user")}
        notice["code"] = _integer(params, "code", 4000, 4999) if "code" in params else 4000
        reason = _text(params, "reason") if "reason" in params else "disconnected"
        if len(reason.encode()) > 123:
            raise MessageError(INVALID_ARGUMENT, "'reason' must fit in 123 bytes of UTF-8")
        notice["reason"] = reason
        await self.cluster.notify(notice)
        return {}

    async def unsubscribe(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """``{user, channel}``: unsubscribe that user's connections on every process."""
        _fields(params, {"user", "channel"})
        user = _text(params, "user")
        channel, _ = self._channel(params["channel"])
        await self.cluster.notify({"op": "unsubscribe", "user": user, "channel": channel})
        return {}

    async def revoke_token(self, params: Mapping[str, Any]) -> Mapping[str, Any]:
        """
        ``{jti, expire_at?}``: refuse the token with that id until ``expire_at`` (Unix time;
        default a day from now, so pass the token's ``exp``) and close its connections, on
        every process.
        """
        _fields(params, {"jti"}, {"expire_at"})
        token_id = _text(params, "jti")
        until = time.time() + REVOKE_DEFAULT
        if "expire_at" in params:
            until = _integer(params, "expire_at", 0, 1 << 53)
        if self.identity is None:
            raise NotImplementedApiError("this server keeps no identity to revoke tokens of")
        await self.identity.revoke(token_id, until)
        return {}
