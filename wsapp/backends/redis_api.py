"""
What the HTTP API keeps in Redis: publications made once per idempotency key, and the
registry of running processes.

Keys, under the backend's prefix ``wsapp:DB:`` (see :mod:`wsapp.backends.redis`):

- ``once:DIGEST``: the ``[offset, epoch]`` of the publication made with one idempotency key
  in one channel (``DIGEST`` a SHA-256 of both), set with ``SET PX`` in the same script as
  the publication, so two calls with the same key publish once;
- ``node:PROCESS``: one process's JSON report (connections, subscriptions, uptime, version),
  expiring unless the process refreshes it; ``nodes`` is a sorted set of the processes by
  the time their report expires, trimmed on every read.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail

from ..channels import Position
from .redis_scripts import PRELUDE, Script, to_json


class RedisBackend(Protocol):
    """What these functions use of :class:`wsapp.backends.redis.RedisBackend`."""

    def run(self, script: Script, *arguments: Any) -> Deferred[Any]: ...


__all__ = ["NODES", "ONCE", "nodes", "publish_once", "put_node"]

# ARGV: prefix, channel, data, size, ttl (ms), tag (JSON), fresh epoch, key, window (ms)
# -> {'[offset,"epoch"]', 1 if published now else 0}
ONCE_BODY = """
local once = prefix .. 'once:' .. ARGV[8]
local seen = redis.call('GET', once)
if seen then return {seen, 0} end
local position = publish(ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7])
local result = '[' .. string.format('%d', position[1]) .. ',' .. cjson.encode(position[2]) .. ']'
redis.call('SET', once, result, 'PX', ARGV[9])
return {result, 1}
"""

# ARGV: prefix, mode, then put: process, report (JSON), ttl (ms) -> 1;  list -> {report, ...}
NODES_BODY = """
local set = prefix .. 'nodes'
local now = now_ms()
if ARGV[2] == 'put' then
  redis.call('SET', prefix .. 'node:' .. ARGV[3], ARGV[4], 'PX', ARGV[5])
  redis.call('ZADD', set, now + tonumber(ARGV[5]), ARGV[3])
  redis.call('PEXPIRE', set, ARGV[5])
  return 1
end
redis.call('ZREMRANGEBYSCORE', set, '-inf', now)
local found = {}
for _, process in ipairs(redis.call('ZRANGE', set, 0, -1)) do
  local report = redis.call('GET', prefix .. 'node:' .. process)
  if report then found[#found + 1] = report end
end
return found
"""

ONCE = Script(PRELUDE + ONCE_BODY)
NODES = Script(PRELUDE + NODES_BODY)


def _digest(channel: str, key: str) -> str:
    return hashlib.sha256(f"{channel}\0{key}".encode()).hexdigest()


def publish_once(
    backend: RedisBackend,
    channel: str,
    data: Any,
    *,
    key: str,
    window: float,
    history_size: int,
    history_ttl: float,
) -> Deferred[tuple[Position, bool]]:
    """See :meth:`wsapp.backends.Backend.publish_once`."""
    try:
        encoded = to_json(data)
    except (TypeError, ValueError) as error:
        return fail(ValueError(f"publication data is not JSON: {error}"))
    ttl = round(history_ttl * 1000)
    arguments = (channel, encoded, history_size, ttl, '""', secrets.token_hex(4))
    running = backend.run(ONCE, *arguments, _digest(channel, key), round(window * 1000))

    def result(reply: list[Any]) -> tuple[Position, bool]:
        offset, epoch = json.loads(reply[0])
        return Position(int(offset), epoch), bool(int(reply[1]))

    return running.addCallback(result)


def put_node(
    backend: RedisBackend, node: str, report: Mapping[str, Any], ttl: float
) -> Deferred[None]:
    """See :meth:`wsapp.backends.Backend.put_node`."""
    putting = backend.run(NODES, "put", node, to_json(report), round(ttl * 1000))
    return putting.addCallback(lambda _: None)


def nodes(backend: RedisBackend) -> Deferred[list[dict[str, Any]]]:
    """See :meth:`wsapp.backends.Backend.nodes`."""
    listing = backend.run(NODES, "list")
    return listing.addCallback(lambda found: [json.loads(report) for report in found])
