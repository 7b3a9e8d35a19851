"""
:class:`Client`: the HTTP API from plain, blocking Python (no reactor), on the standard
library's :mod:`http.client`.

One keep-alive connection per client, guarded by a lock, so one client may be shared by
threads (calls then take turns). A call that finds the kept connection closed by the
server before any answer is sent again once on a new connection; give ``publish`` an
``idempotency_key`` to make such a repeat publish only once.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from ..exceptions import ApiError, ClientTimeoutError, ConnectError

__all__ = ["Client"]


def _split(url: str) -> tuple[str, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the API URL must be http:// or https://, got {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return parts.scheme, parts.hostname, port, path


class Client:
    """
    Calls the API at ``url`` (e.g. ``http://127.0.0.1:8000/api/``) with ``key``.

    Each call waits at most ``timeout`` seconds (:class:`ClientTimeoutError`); no
    connection is :class:`ConnectError`; an error answer is :class:`ApiError`.
    """

    def __init__(
        self, url: str, key: str, *, timeout: float = 10.0, tls: ssl.SSLContext | None = None
    ) -> None:
        self.scheme, self.host, self.port, self.path = _split(url)
        self.url = url
        self.timeout = timeout
        self._headers = {
            "authorization": f"apikey {key}",
            "content-type": "application/json",
        }
        self._tls = tls
        self._lock = threading.Lock()
        self._connection: http.client.HTTPConnection | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            context = self._tls or ssl.create_default_context()
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout, context=context
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def call(self, method: str, **params: Any) -> Any:
        """Call ``method`` with ``params``; return the answer's JSON."""
        body = json.dumps(params, ensure_ascii=False, separators=(",", ":")).encode()
        with self._lock:
            status, text = self._exchange(method, body)
        try:
            answer = json.loads(text)
        except ValueError:
            raise ApiError(
                status, "invalid-response", text[:200].decode(errors="replace")
            ) from None
        if status != 200:
            found = answer if isinstance(answer, dict) else {}
            raise ApiError(status, str(found.get("error", "")), str(found.get("detail", "")))
        return answer

    def _exchange(self, method: str, body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            reused = self._connection is not None
            connection = self._connection or self._connect()
            self._connection = connection
            try:
                connection.request("POST", self.path + method, body, self._headers)
                response = connection.getresponse()
                text = response.read()
            except TimeoutError:
                self.close()
                raise ClientTimeoutError(
                    f"no answer from {self.url} within {self.timeout} s"
                ) from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as error:
                self.close()
                if reused and attempt == 1:
                    continue  # the server closed the kept connection: once more on a new one
                raise ConnectError(f"{self.url}: {error}") from None
            except (OSError, http.client.HTTPException) as error:
                self.close()
                raise ConnectError(f"cannot reach {self.url}: {error}") from None
            if response.will_close:
                self.close()
            return response.status, text
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the kept connection (the next call opens another)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the methods ---

    def publish(self, channel: str, data: Any, *, idempotency_key: str | None = None) -> Any:
        """Publish ``data`` to ``channel``; return ``{"offset": N, "epoch": E}``."""
        extra = {} if idempotency_key is None else {"idempotency_key": idempotency_key}
        return self.call("publish", channel=channel, data=data, **extra)

    def broadcast(self, channels: Sequence[str], data: Any) -> Any:
        """Publish ``data`` to each of ``channels``; return ``{"responses": [...]}``."""
        return self.call("broadcast", channels=list(channels), data=data)

    def history(
        self, channel: str, *, limit: int | None = None, since: dict[str, Any] | None = None
    ) -> Any:
        """Return ``channel``'s position and publications (the latest, or after ``since``)."""
        extra: dict[str, Any] = {} if limit is None else {"limit": limit}
        if since is not None:
            extra["since"] = since
        return self.call("history", channel=channel, **extra)

    def presence(self, channel: str) -> Any:
        """Return ``{"clients": [{"client": ID, "info": {...}}, ...]}``."""
        return self.call("presence", channel=channel)

    def presence_stats(self, channel: str) -> Any:
        """Return ``{"clients": N}``."""
        return self.call("presence_stats", channel=channel)

    def channels(self, pattern: str | None = None) -> Any:
        """Return the active channels with their subscriber counts (matching ``pattern``)."""
        return self.call("channels", **({} if pattern is None else {"pattern": pattern}))

    def info(self) -> Any:
        """Return ``{"nodes": [...]}``: every process's connections, uptime and version."""
        return self.call("info")

    def disconnect(self, user: str, *, code: int | None = None, reason: str | None = None) -> Any:
        """Close every connection of ``user`` on every process."""
        extra: dict[str, Any] = {} if code is None else {"code": code}
        if reason is not None:
            extra["reason"] = reason
        return self.call("disconnect", user=user, **extra)

    def unsubscribe(self, user: str, channel: str) -> Any:
        """Unsubscribe every connection of ``user`` from ``channel`` on every process."""
        return self.call("unsubscribe", user=user, channel=channel)

    def revoke_token(self, jti: str, *, expire_at: int | None = None) -> Any:
        """Revoke the token with id ``jti``."""
        return self.call(
            "revoke_token", jti=jti, **({} if expire_at is None else {"expire_at": expire_at})
        )
