"""
What :mod:`wsapp.backends.redis` sends: Lua scripts (each change is one, applied
atomically) and the pub/sub frames they publish.

Every script starts with the same prelude (``ARGV[1]`` is the key prefix, ``wsapp:DB:``)
defining the shared steps: appending a publication to a channel and PUBLISHing its frame,
and counting a channel's presence. The key layout and frame format are described in
:mod:`wsapp.backends.redis`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from ..channels import Publication
from . import PresenceChange

__all__ = [
    "HISTORY",
    "INCREMENT",
    "KEEP",
    "PRESENCE",
    "PUBLISH",
    "Frame",
    "Script",
    "parse_frame",
    "to_json",
]

#: Seconds a channel's offset and epoch (and a presence count) outlive its last change.
KEEP = 86400

PRELUDE = f"""
local prefix = ARGV[1]
local KEEP = {KEEP * 1000}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Take or create the channel's epoch; a new one starts with an empty history.
local function epoch_of(channel, fresh)
  local meta = prefix .. 'meta:' .. channel
  if redis.call('HSETNX', meta, 'epoch', fresh) == 1 then
    redis.call('DEL', prefix .. 'history:' .. channel)
    redis.call('PEXPIRE', meta, KEEP)
    return fresh
  end
  return redis.call('HGET', meta, 'epoch')
end

-- Append data (JSON text) to the channel: history, expiries, then the frame to subscribers.
local function publish(channel, data, size, ttl, tag, fresh)
  local meta = prefix .. 'meta:' .. channel
  local stream = prefix .. 'history:' .. channel
  local epoch = epoch_of(channel, fresh)
  local offset = string.format('%d', redis.call('HINCRBY', meta, 'offset', 1))
  if size > 0 then
    redis.call('XADD', stream, 'MAXLEN', size, offset .. '-0', 'd', data, 't', now_ms())
    redis.call('PEXPIRE', stream, ttl > 0 and ttl or KEEP)
  else
    redis.call('DEL', stream)
  end
  redis.call('HSET', meta, 'ttl', ttl)
  redis.call('PEXPIRE', meta, math.max(ttl, KEEP))
  local frame = '[1,"p",' .. offset .. ',' .. cjson.encode(epoch) .. ',' .. tag .. ','
  frame = frame .. data .. ']'
  redis.call('PUBLISH', prefix .. 'channel:' .. channel, frame)
  return {{tonumber(offset), epoch}}
end

-- Count the channel's clients over all processes, forgetting processes whose entries expired.
local function present(channel)
  local set = prefix .. 'presence:' .. channel
  local total = 0
  for _, process in ipairs(redis.call('SMEMBERS', set)) do
    local n = redis.call('HLEN', prefix .. 'clients:' .. process .. ':' .. channel)
    if n == 0 then redis.call('SREM', set, process) else total = total + n end
  end
  return total
end

-- Publish a presence change (change: the frame's client, info, joined) and keep the count.
local function announce(channel, count, change)
  local key = prefix .. 'count:' .. channel
  if count == 0 then redis.call('DEL', key) else redis.call('SET', key, count, 'PX', KEEP) end
  local frame = '[1,"r",' .. string.format('%d', count) .. ',' .. change .. ']'
  redis.call('PUBLISH', prefix .. 'channel:' .. channel, frame)
end

local function recount(channel)
  local count = present(channel)
  local last = tonumber(redis.call('GET', prefix .. 'count:' .. channel) or '0')
  if count ~= last then announce(channel, count, 'null,null,true') end
  return count
end
"""

# ARGV: prefix, channel, data, size, ttl (ms), tag (JSON), fresh epoch -> {offset, epoch}
PUBLISH_BODY = """
return publish(ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], ARGV[7])
"""

# ARGV: prefix, key, amount, limit, channel ('': none), tag (JSON), fresh epoch
# -> {value} or {value, offset, epoch}
INCREMENT_BODY = """
local key = prefix .. 'integer:' .. ARGV[2]
local current = tonumber(redis.call('GET', key) or '0')
if not current then return redis.error_reply('not-an-integer ' .. key) end
local value = current + tonumber(ARGV[3])
if value > tonumber(ARGV[4]) or value < -tonumber(ARGV[4]) then
  return redis.error_reply('out-of-range')
end
value = redis.call('INCRBY', key, ARGV[3])
if ARGV[5] == '' then return {value} end
local position = publish(ARGV[5], string.format('%d', value), 1, 0, ARGV[6], ARGV[7])
return {value, position[1], position[2]}
"""

# ARGV: prefix, channel, fresh epoch, since offset ('': latest), since epoch, limit
# -> {offset, epoch, {offset1, data1, offset2, data2, ...}}
HISTORY_BODY = """
local channel = ARGV[2]
local epoch = epoch_of(channel, ARGV[3])
local stream = prefix .. 'history:' .. channel
local top = redis.call('HMGET', prefix .. 'meta:' .. channel, 'offset', 'ttl')
local offset = tonumber(top[1] or '0')
local ttl = tonumber(top[2] or '0')
local limit = tonumber(ARGV[6])
local entries = {}
local count = {}
if limit > 0 and ttl == 0 then count = {'COUNT', limit} end
if ARGV[4] == '' then
  if limit > 0 then
    local latest = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', limit)
    for i = #latest, 1, -1 do entries[#entries + 1] = latest[i] end
  end
else
  local since = tonumber(ARGV[4])
  local start = '-'
  if ARGV[5] == epoch and since <= offset and since >= 0 then
    start = string.format('%d', since + 1)
  end
  entries = redis.call('XRANGE', stream, start, '+', unpack(count))
end
local now = now_ms()
local found = {}
local expired = ttl > 0
for _, entry in ipairs(entries) do
  local fields = {}
  for i = 1, #entry[2], 2 do fields[entry[2][i]] = entry[2][i + 1] end
  expired = expired and tonumber(fields['t']) + ttl <= now
  if not expired and (limit == 0 or #found < 2 * limit) then
    found[#found + 1] = tonumber(string.match(entry[1], '^(%d+)'))
    found[#found + 1] = fields['d']
  end
end
return {offset, epoch, found}
"""

# ARGV: prefix, mode, channel, process, ttl (ms), then per mode:
#   add: client, info (JSON), change -> count;   remove: client, change -> count
#   count -> count;   list -> {client1, info1, ...}
#   beat -> {count, whether this process's entries still exist}
#   replace: client1, info1, ... (this process's entries; none: leave) -> count
PRESENCE_BODY = """
local mode, channel, process = ARGV[2], ARGV[3], ARGV[4]
local set = prefix .. 'presence:' .. channel
local own = prefix .. 'clients:' .. process .. ':' .. channel
if mode == 'add' then
  local new = redis.call('HSET', own, ARGV[6], ARGV[7])
  redis.call('PEXPIRE', own, ARGV[5])
  redis.call('SADD', set, process)
  redis.call('PEXPIRE', set, KEEP)
  local count = present(channel)
  if new == 1 then announce(channel, count, ARGV[8]) end
  return count
elseif mode == 'remove' then
  local removed = redis.call('HDEL', own, ARGV[6])
  local count = present(channel)
  if removed == 1 then announce(channel, count, ARGV[7]) end
  return count
elseif mode == 'count' then
  return present(channel)
elseif mode == 'list' then
  local found = {}
  for _, member in ipairs(redis.call('SMEMBERS', set)) do
    local entries = redis.call('HGETALL', prefix .. 'clients:' .. member .. ':' .. channel)
    if #entries == 0 then redis.call('SREM', set, member) end
    for _, value in ipairs(entries) do found[#found + 1] = value end
  end
  return found
elseif mode == 'beat' then
  local exists = redis.call('PEXPIRE', own, ARGV[5])
  if exists == 1 then redis.call('PEXPIRE', set, KEEP) end
  return {recount(channel), exists}
elseif mode == 'replace' then
  redis.call('DEL', own)
  if #ARGV > 5 then
    for i = 6, #ARGV, 200 do redis.call('HSET', own, unpack(ARGV, i, math.min(i + 199, #ARGV))) end
    redis.call('PEXPIRE', own, ARGV[5])
    redis.call('SADD', set, process)
    redis.call('PEXPIRE', set, KEEP)
  end
  return recount(channel)
end
return redis.error_reply('unknown mode ' .. mode)
"""


@dataclass(frozen=True)
class Script:
    """One Lua script: its text and the SHA-1 that EVALSHA names it by."""

    text: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.text.encode()).hexdigest())


PUBLISH = Script(PRELUDE + PUBLISH_BODY)
INCREMENT = Script(PRELUDE + INCREMENT_BODY)
HISTORY = Script(PRELUDE + HISTORY_BODY)
PRESENCE = Script(PRELUDE + PRESENCE_BODY)


Frame = tuple[str, Publication, str] | PresenceChange


def parse_frame(message: str | bytes) -> Frame:
    """Return what a pub/sub frame says: ``(epoch, publication, tag)`` or a presence change."""
    frame = json.loads(message)
    if not isinstance(frame, list) or len(frame) != 6 or type(frame[0]) is not int:
        raise ValueError("not a frame of format 1")
    version, kind, number, first, second, third = frame
    if version == 1 and kind == "p" and type(number) is int and number > 0:
        if isinstance(first, str) and isinstance(second, str):
            return first, Publication(number, third), second
    if version == 1 and kind == "r" and type(number) is int and number >= 0:
        if first is None and second is None:
            return PresenceChange(number)
        if isinstance(first, str) and isinstance(second, dict | None) and isinstance(third, bool):
            return PresenceChange(number, first, second, third)
    raise ValueError("not a frame of format 1")


def to_json(value: Any) -> str:
    """Compact JSON text of ``value``; raises TypeError or ValueError if it is not JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
