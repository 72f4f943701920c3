"""The Lua scripts of the Redis backend: every operation that must be atomic runs in one.

Redis runs a script to completion before serving any other client, so offset assignment,
the ``XADD`` and the idempotency check of a produce cannot interleave with another gateway
process's. Scripts start with the ``#!lua`` line (Redis 7): Redis then refuses a writing
script *before* it runs when it is out of memory, instead of failing at its first write
and leaving a batch half written. Timestamps come from the Redis server's clock (``TIME``)
so that every gateway process stamps records from the same clock.

Scripts are sent with ``EVALSHA`` and loaded with ``SCRIPT LOAD`` when the server does not
know them yet (first use, or after a restart).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

Arg = str | bytes | int

PRODUCE = """#!lua
-- KEYS[1]: the topic's state hash; the other KEYS are streams and idempotency keys.
-- ARGV[1]: dedup window (ms); ARGV[2]: record count; ARGV[3]: the produce call's nonce;
-- then 7 values per record: stream key index, partition, idempotency key index (0: none),
-- has key (1/0), key, value, headers ('' when none).
-- Returns 4 integers per record: partition, offset, timestamp, duplicate (1/0).
-- An idempotency key remembers the nonce of the call that wrote it: when the same call is
-- sent again (its reply was lost), its own records are answered as written, not duplicate.
local state = KEYS[1]
local window = ARGV[1]
local count = tonumber(ARGV[2])
local nonce = ARGV[3]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local next_offset, last_ts, written, touched = {}, {}, {}, {}
local seen = {}
local out = {}
for i = 0, count - 1 do
  local base = 4 + i * 7
  local p = ARGV[base + 1]
  local idem = tonumber(ARGV[base + 2])
  local original = false
  if idem > 0 then
    original = redis.call('GET', KEYS[idem])
  end
  if original then
    local op, oo, ot, on = string.match(original, '^(%d+):(%d+):(%d+):?(.*)$')
    local duplicate = 1
    if not seen[idem] and on == nonce then
      duplicate = 0
    end
    seen[idem] = true
    out[#out + 1] = tonumber(op)
    out[#out + 1] = tonumber(oo)
    out[#out + 1] = tonumber(ot)
    out[#out + 1] = duplicate
  else
    if next_offset[p] == nil then
      local s = redis.call('HMGET', state, 'n' .. p, 't' .. p, 'b' .. p)
      next_offset[p] = tonumber(s[1] or '0')
      last_ts[p] = tonumber(s[2] or '0')
      written[p] = tonumber(s[3] or '0')
      touched[#touched + 1] = p
    end
    local offset = next_offset[p]
    -- Timestamps never go back within a partition: retention relies on it.
    local ts = math.max(now, last_ts[p])
    local key, value, headers = ARGV[base + 4], ARGV[base + 5], ARGV[base + 6]
    local entry = {'XADD', KEYS[tonumber(ARGV[base])], string.format('%d-1', offset),
      't', string.format('%d', ts), 'c', string.format('%d', written[p]), 'v', value}
    local size = #value
    if ARGV[base + 3] == '1' then
      entry[#entry + 1] = 'k'
      entry[#entry + 1] = key
      size = size + #key
    end
    if headers ~= '' then
      entry[#entry + 1] = 'h'
      entry[#entry + 1] = headers
    end
    redis.call(unpack(entry))
    next_offset[p] = offset + 1
    last_ts[p] = ts
    written[p] = written[p] + size
    if idem > 0 then
      local remembered = string.format('%s:%d:%d:%s', p, offset, ts, nonce)
      redis.call('SET', KEYS[idem], remembered, 'PX', window)
      seen[idem] = true
    end
    out[#out + 1] = tonumber(p)
    out[#out + 1] = offset
    out[#out + 1] = ts
    out[#out + 1] = 0
  end
end
for _, p in ipairs(touched) do
  redis.call('HSET', state, 'n' .. p, string.format('%d', next_offset[p]),
    't' .. p, string.format('%d', last_ts[p]), 'b' .. p, string.format('%d', written[p]))
end
return out
"""

POSITIONS = """#!lua
-- KEYS[1]: the topic's state hash; KEYS[2..]: the streams of the partitions in ARGV.
-- Returns start and end offset per partition, read at one instant.
local out = {}
for i = 1, #ARGV do
  local stop = tonumber(redis.call('HGET', KEYS[1], 'n' .. ARGV[i]) or '0')
  local first = redis.call('XRANGE', KEYS[i + 1], '-', '+', 'COUNT', 1)
  local start = stop
  if #first > 0 then
    start = tonumber(string.match(first[1][1], '^(%d+)-'))
  end
  out[#out + 1] = start
  out[#out + 1] = stop
end
return out
"""

RETAIN = """#!lua
-- KEYS[1]: the topic's state hash; KEYS[2]: one partition's stream.
-- ARGV: partition, retention ms (-1: none), size cap in bytes (-1: none).
-- A record is expired when older than the retention time or when the bytes written after
-- it exceed the cap. Timestamps and the written-before counter never decrease along the
-- stream, so the expired records are a prefix: a binary search over offsets finds its end
-- in O(log n) lookups, and XTRIM MINID removes it. Returns the number of records removed.
local p = ARGV[1]
local retention, cap = tonumber(ARGV[2]), tonumber(ARGV[3])
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first == 0 then
  return 0
end
local start = tonumber(string.match(first[1][1], '^(%d+)-'))
local s = redis.call('HMGET', KEYS[1], 'n' .. p, 'b' .. p)
local stop, written = tonumber(s[1] or '0'), tonumber(s[2] or '0')
local cutoff = -1
if retention >= 0 then
  local clock = redis.call('TIME')
  cutoff = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000) - retention
end
local floor_bytes = -1
if cap >= 0 then
  floor_bytes = written - cap
end
local function expired(offset)
  local id = string.format('%d-1', offset)
  local hit = redis.call('XRANGE', KEYS[2], id, id)
  if #hit == 0 then
    return true
  end
  local fields = hit[1][2]
  local ts, before = nil, nil
  for j = 1, #fields, 2 do
    if fields[j] == 't' then ts = tonumber(fields[j + 1]) end
    if fields[j] == 'c' then before = tonumber(fields[j + 1]) end
    if ts and before then break end
  end
  return (cutoff >= 0 and ts < cutoff) or (floor_bytes >= 0 and before < floor_bytes)
end
local lo, hi = start, stop
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  if expired(mid) then lo = mid + 1 else hi = mid end
end
if lo > start then
  redis.call('XTRIM', KEYS[2], 'MINID', string.format('%d-0', lo))
end
return lo - start
"""

CREATE_TOPIC = """#!lua
-- KEYS[1]: the topics hash. ARGV: name, spec JSON.
-- Registers the topic unless it exists; returns the existing spec, or false when created.
local existing = redis.call('HGET', KEYS[1], ARGV[1])
if existing then
  return existing
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return false
"""

PROBE = """#!lua
-- KEYS[1]: a scratch key. A write that succeeds means the server takes writes now: it is
-- reachable, not a read-only replica, not out of memory, not refusing writes after a
-- failed snapshot.
return redis.call('SET', KEYS[1], ARGV[1], 'PX', 60000)
"""


class Script:
    """One Lua script, run by its SHA1 and loaded on demand."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(
        self, client: aioredis.Redis, keys: Sequence[str], args: Sequence[Arg]
    ) -> Any:
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            # NOSCRIPT is answered before anything runs, so sending it again is safe.
            await self.load(client)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    async def load(self, client: aioredis.Redis) -> None:
        await client.script_load(self.source)

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Add the script to a pipeline (the caller loads it first if the reply is NOSCRIPT)."""
        pipe.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
