"""
:class:`TwistedClient`: the HTTP API from Twisted programs, on treq.

The same methods as :class:`wsapp.api.Client`, each returning a Deferred that fires with
the answer's JSON or fails with the same :mod:`wsapp.exceptions`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import treq
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import ConnectError as TwistedConnectError
from twisted.internet.error import ConnectingCancelledError
from twisted.web.client import HTTPConnectionPool

from ..exceptions import ApiError, ClientTimeoutError, ConnectError
from .client import _split

__all__ = ["TwistedClient"]


class TwistedClient:
    """Calls the API at ``url`` with ``key`` from the reactor; ``timeout`` per call."""

    def __init__(self, url: str, key: str, *, timeout: float = 10.0, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        _split(url)  # checks the URL
        self.url = url if url.endswith("/") else url + "/"
        self.timeout = timeout
        self.reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self._headers: dict[bytes | str, list[bytes | str]] = {
            "authorization": [f"apikey {key}"],
            "content-type": ["application/json"],
        }

    def call(self, method: str, **params: Any) -> Deferred[Any]:
        """Call ``method`` with ``params``; fire with the answer's JSON."""
        return Deferred.fromCoroutine(self._call(method, params))

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        body = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            response = await treq.post(
                self.url + method,
                data=body,
                headers=self._headers,
                timeout=self.timeout,
                pool=self.pool,
                reactor=self.reactor,
            )
            text = await treq.content(response)
        except (TimeoutError, ConnectingCancelledError):
            raise ClientTimeoutError(f"no answer from {self.url} within {self.timeout} s") from None
        except (TwistedConnectError, OSError) as error:
            raise ConnectError(f"cannot reach {self.url}: {error}") from None
        try:
            answer = json.loads(text)
        except ValueError:
            raise ApiError(
                response.code, "invalid-response", text[:200].decode(errors="replace")
            ) from None
        if response.code != 200:
            found = answer if isinstance(answer, dict) else {}
            raise ApiError(response.code, str(found.get("error", "")), str(found.get("detail", "")))
        return answer

    def close(self) -> Deferred[None]:
        """Close the kept connections."""
        closing: Deferred[None] = self.pool.closeCachedConnections()
        return closing

    def publish(
        self, channel: str, data: Any, *, idempotency_key: str | None = None
    ) -> Deferred[Any]:
        """Publish ``data`` to ``channel``; fire with ``{"offset": N, "epoch": E}``."""
        extra = {} if idempotency_key is None else {"idempotency_key": idempotency_key}
        return self.call("publish", channel=channel, data=data, **extra)

    def broadcast(self, channels: Sequence[str], data: Any) -> Deferred[Any]:
        """Publish ``data`` to each of ``channels``."""
        return self.call("broadcast", channels=list(channels), data=data)

    def history(self, channel: str, **params: Any) -> Deferred[Any]:
        """``channel``'s position and publications (``limit``, ``since`` as in the API)."""
        return self.call("history", channel=channel, **params)

    def presence(self, channel: str) -> Deferred[Any]:
        """``channel``'s presence."""
        return self.call("presence", channel=channel)

    def presence_stats(self, channel: str) -> Deferred[Any]:
        """How many clients are present in ``channel``."""
        return self.call("presence_stats", channel=channel)

    def channels(self, pattern: str | None = None) -> Deferred[Any]:
        """The active channels with their subscriber counts."""
        return self.call("channels", **({} if pattern is None else {"pattern": pattern}))

    def info(self) -> Deferred[Any]:
        """Every process's connections, uptime and version."""
        return self.call("info")

    def disconnect(self, user: str, **params: Any) -> Deferred[Any]:
        """Close every connection of ``user`` (``code``, ``reason`` as in the API)."""
        return self.call("disconnect", user=user, **params)

    def unsubscribe(self, user: str, channel: str) -> Deferred[Any]:
        """Unsubscribe every connection of ``user`` from ``channel``."""
        return self.call("unsubscribe", user=user, channel=channel)

    def revoke_token(self, jti: str, **params: Any) -> Deferred[Any]:
        """Revoke the token with id ``jti``."""
        return self.call("revoke_token", jti=jti, **params)
