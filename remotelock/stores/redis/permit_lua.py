"""The Lua scripts behind RedisStore's counted permits (one atomic step each).

Per key, beside the lock's keys (same hash tag, one Cluster slot):

- ``permits``   sorted set: holder token -> lease end (ms, the server's clock).
- ``pfences``   hash: token -> its fencing token.
- ``plimit``    the limit the holders use.
- ``pcounter``  the key's last permit fencing token: ``max(last + 1, TIME in µs)``, as
  the lock's ``:fence`` (see :mod:`remotelock.stores.redis.lua` for why that keeps
  tokens rising once it is gone, and what breaks it); it expires ``fence_retention``
  after the end of the last lease.
- ``pwait``     present while a refused caller may be waiting: a release rings the
  bell (``p`` on the lock's channel ``<prefix>:{<key>}:bell``) only then.
- ``preleased`` sorted set: token -> when it gave its permit back (kept a minute, the
  last 1000): a repeated release by that token returns 1, so a retry after a lost reply
  is not mistaken for a lost permit.
"""

from __future__ import annotations

from typing import Final

PRELEASED_MS: Final = 60_000
PRELEASED_KEPT: Final = 1000

RECALL: Final = f"""
-- Releases remembered in the sorted set `set` (token -> when, ms; the last
-- {PRELEASED_KEPT}, for a minute): a repeated release by a token that gave its lease
-- back in the last minute returns 1 again (its first reply was lost).
local function remember(set, token, now)
  redis.call('ZADD', set, now, token)
  redis.call('ZREMRANGEBYSCORE', set, '-inf', now - {PRELEASED_MS})
  redis.call('ZREMRANGEBYRANK', set, 0, -{PRELEASED_KEPT + 1})
  redis.call('PEXPIRE', set, {PRELEASED_MS})
end
local function remembered(set, token, now)
  local at = redis.call('ZSCORE', set, token)
  return at and now - tonumber(at) < {PRELEASED_MS}
end
"""
"""The release memory of permits and shared leases (appended to their preludes)."""

_PERMIT_PRELUDE: Final = """
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000), t[1] * 1000000 + t[2]
end
-- Integers as Redis arguments (tostring would write 1.75e+15).
local function int(x)
  return string.format('%.0f', x)
end
local function prune(now)
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    redis.call('ZREM', KEYS[1], gone)
    redis.call('HDEL', KEYS[2], gone)
  end
end
-- The permit keys live as long as the last permit; the counter KEYS[4] `retain` ms more.
local function keep(now, retain)
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
  if last then
    local ttl = math.max(1, tonumber(last) - now) + 1000
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
    redis.call('PEXPIRE', KEYS[3], ttl)
    redis.call('PEXPIRE', KEYS[4], int(ttl + retain))
  end
end
-- Someone may wait up to `ms` from now: releases ring the bell until a little after.
local function listening(key, ms)
  local keep_ms = ms + 1000
  if redis.call('PTTL', key) < keep_ms then
    redis.call('SET', key, '1', 'PX', keep_ms)
  end
end
"""

# KEYS[1] permits, KEYS[2] pfences, KEYS[3] plimit, KEYS[4] pcounter, KEYS[5] pwait,
# KEYS[6] preleased
# ARGV[1] token, ARGV[2] lease in ms, ARGV[3] limit, ARGV[4] fence retention in ms
# Takes one of `limit` permits if one is free; idempotent for a token that holds one.
# A refused caller waits at most until the first permit runs out: until then (and a
# second more) releases ring the bell.
# returns: the fencing token (> 0); or, all taken, minus the ms until the first permit
#          runs out (<= 0); or an error "LIMIT <n>" if the holders use another limit.
ACQUIRE_PERMIT_SCRIPT: Final[str] = (
    _PERMIT_PRELUDE
    + """
local now, now_us = now_ms()
local retain = tonumber(ARGV[4])
prune(now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
  keep(now, retain)
  return tonumber(redis.call('HGET', KEYS[2], ARGV[1]))
end
local count = redis.call('ZCARD', KEYS[1])
if count > 0 then
  local held = tonumber(redis.call('GET', KEYS[3]))
  if held and held ~= tonumber(ARGV[3]) then
    return redis.error_reply('LIMIT ' .. held)
  end
  if count >= tonumber(ARGV[3]) then
    local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
    local left = math.max(tonumber(first) - now, 0)
    listening(KEYS[5], left)
    return -left
  end
end
redis.call('SET', KEYS[3], ARGV[3])
local fence = math.max((tonumber(redis.call('GET', KEYS[4])) or 0) + 1, now_us)
redis.call('SET', KEYS[4], int(fence))  -- its expiry: keep(), below
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], int(fence))
redis.call('ZREM', KEYS[6], ARGV[1])  -- its earlier release, if any, is history now
keep(now, retain)
return fence
"""
)

# KEYS[1] permits, KEYS[2] pfences, KEYS[3] pwait, KEYS[4] preleased
# ARGV[1] token, ARGV[2] the key's bell channel
# Gives back `token`'s permit and, if someone may be waiting, rings the bell. A repeated
# release by a token that gave its permit back in the last minute returns 1 again (its
# first reply was lost); a token whose permit ran out never gave it back: 0.
# returns: 1 if released (now or by this token's previous call); 0 if `token` held
#          none, or its lease had already run out.
RELEASE_PERMIT_SCRIPT: Final[str] = (
    _PERMIT_PRELUDE
    + RECALL
    + """
local now = now_ms()
local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not ends then
  return remembered(KEYS[4], ARGV[1], now) and 1 or 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.pcall('PUBLISH', ARGV[2], 'p')  -- a hint: a user without channel rights goes on
end
if tonumber(ends) <= now then
  return 0
end
remember(KEYS[4], ARGV[1], now)
return 1
"""
)

# KEYS[1] permits, KEYS[2] pfences, KEYS[3] plimit, KEYS[4] pcounter
# ARGV[1] token, ARGV[2] lease in ms, ARGV[3] fence retention in ms
# returns: 1 if `token` holds a permit and its lease was reset, else 0.
EXTEND_PERMIT_SCRIPT: Final[str] = (
    _PERMIT_PRELUDE
    + """
local now = now_ms()
local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not ends or tonumber(ends) <= now then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
keep(now, tonumber(ARGV[3]))
return 1
"""
)

# KEYS[1] permits
# returns: the tokens holding a permit now, oldest lease end first.
PERMIT_HOLDERS_SCRIPT: Final[str] = (
    _PERMIT_PRELUDE
    + """
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms(), '+inf')
"""
)

# KEYS[1] permits, KEYS[2] pfences, KEYS[3] plimit, KEYS[4] pwait
# ARGV[1] the longest the caller will wait, in ms
# A caller about to wait without a refusal to learn from asks releases to ring the bell
# while it may wait, and learns when the first permit runs out.
# returns: {ms until the first permit runs out, the limit}, or {-1, 0} if a permit is
#          free now.
LISTEN_PERMIT_SCRIPT: Final[str] = (
    _PERMIT_PRELUDE
    + """
local now = now_ms()
prune(now)
local count = redis.call('ZCARD', KEYS[1])
local limit = tonumber(redis.call('GET', KEYS[3]))
if count == 0 or (limit and count < limit) then
  return {-1, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2]
local left = math.max(tonumber(first) - now, 0)
listening(KEYS[4], math.min(left, tonumber(ARGV[1])))
return {left, limit or count}
"""
)

PERMIT_SCRIPTS: Final = {
    "acquire_permit": ACQUIRE_PERMIT_SCRIPT,
    "release_permit": RELEASE_PERMIT_SCRIPT,
    "extend_permit": EXTEND_PERMIT_SCRIPT,
    "permit_holders": PERMIT_HOLDERS_SCRIPT,
    "listen_permit": LISTEN_PERMIT_SCRIPT,
}

__all__ = [
    "ACQUIRE_PERMIT_SCRIPT",
    "EXTEND_PERMIT_SCRIPT",
    "LISTEN_PERMIT_SCRIPT",
    "PERMIT_HOLDERS_SCRIPT",
    "PERMIT_SCRIPTS",
    "PRELEASED_KEPT",
    "PRELEASED_MS",
    "RECALL",
    "RELEASE_PERMIT_SCRIPT",
]
