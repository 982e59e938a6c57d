"""The Lua scripts behind RedisStore: each primitive is one atomic step on the server.

Every key of one lock shares a hash tag (``<prefix>:{<key>}:...``), so each script
touches a single Cluster slot. The lock scripts get one key, ``KEYS[1]``: the lock's
base name ``<prefix>:{<key>}``, from which they derive (same hash tag, same slot):

- ``:lock``   the holder's token; its PX expiry *is* the lease (the server's clock).
- ``:fence``  a counter behind the fencing tokens; never expires, so tokens keep rising.
- ``:queue``  sorted set of waiting tokens by arrival (microseconds): who is next.
- ``:alive``  sorted set of the same tokens by the time (ms) a waiter counts as gone
  if it has not come back: a crashed waiter cannot block the line for long.
- ``:watch``  set of waiters that want to hear of every release (callers with
  ``skip_if``: after any release they may not need the lock at all).
- ``:ttls``   hash: the lease (ms) each waiter asked for.
- ``:wake:<token>``  one waiter's wake-up list, which it blocks on (BLPOP), so no
  waiter can steal another's signal.

Passing one name instead of seven keeps every call small: the arguments of a command
are encoded one by one on the client, and the uncontended cycle is two such calls.
A release wakes waiters it only learns of from the queue anyway, so the scripts could
not declare every key they touch in advance.

A release does not just wake the first waiter in line: it **hands the lock over**,
setting the waiter's token as holder and pushing ``g<fence>:<lease ms>`` into its list,
so the new holder starts without another round trip. That handed-over lease is at
most the waiter grace: if the waiter died in line, the lock comes free again soon; a
live one renews it to its full lease straight away. Watchers get ``1``.

Scripts need Redis >= 6 (TIME before writes, float BLPOP timeouts).
"""

from __future__ import annotations

from typing import Final

# Shared names and helpers, prepended to the lock scripts (KEYS[1] the base name).
_PRELUDE: Final = """
local BASE = KEYS[1]
local LOCK, FENCE, QUEUE = BASE .. ':lock', BASE .. ':fence', BASE .. ':queue'
local ALIVE, WATCH, TTLS = BASE .. ':alive', BASE .. ':watch', BASE .. ':ttls'
local WAKE = BASE .. ':wake:'
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000), t[1] * 1000000 + t[2]
end
local function wake(waiter, message)
  local list = WAKE .. waiter
  redis.call('RPUSH', list, message)
  redis.call('LTRIM', list, -1, -1)
  redis.call('PEXPIRE', list, 5000)
end
local function forget(waiter)
  redis.call('ZREM', QUEUE, waiter)
  redis.call('ZREM', ALIVE, waiter)
  redis.call('SREM', WATCH, waiter)
  redis.call('HDEL', TTLS, waiter)
end
local function prune(now)
  for _, waiter in ipairs(redis.call('ZRANGEBYSCORE', ALIVE, '-inf', now)) do
    forget(waiter)
  end
end
-- The lock is free: give it to the first live waiter, and tell every watcher.
local function hand_over(grace)
  if redis.call('EXISTS', QUEUE, WATCH) == 0 then  -- nobody waits: the common case
    return
  end
  prune(now_ms())
  local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
  if head then
    local lease = math.min(tonumber(redis.call('HGET', TTLS, head)) or grace, grace)
    redis.call('SET', LOCK, head, 'PX', lease)
    local fence = redis.call('INCR', FENCE)
    forget(head)
    wake(head, 'g' .. fence .. ':' .. lease)
  end
  for _, watcher in ipairs(redis.call('SMEMBERS', WATCH)) do
    wake(watcher, '1')
  end
end
local function keep_queue(ms)
  redis.call('PEXPIRE', QUEUE, ms)
  redis.call('PEXPIRE', ALIVE, ms)
  redis.call('PEXPIRE', WATCH, ms)
  redis.call('PEXPIRE', TTLS, ms)
end
"""

# KEYS[1] the lock's base name
# ARGV[1] token, ARGV[2] lease in ms, ARGV[3] waiter grace in ms
# Takes the lock if it is free and no earlier waiter is queued (or `token` is first),
# bumping the fence in the same step. Re-acquiring with the holding token is idempotent
# (and claims a lock handed over to `token`: its lease is reset to the full length).
# returns: the fencing token (> 0) if `token` holds the lock now; otherwise `token` is
#          queued and the reply is minus the holder's remaining lease in ms (0 if free
#          but another waiter is first in line).
ACQUIRE_SCRIPT: Final[str] = (
    _PRELUDE
    + """
local token = ARGV[1]
local holder = redis.call('GET', LOCK)
if holder == token then
  redis.call('PEXPIRE', LOCK, ARGV[2])
  return tonumber(redis.call('GET', FENCE))
end
if not holder and redis.call('EXISTS', QUEUE) == 0 then  -- free, nobody waiting
  redis.call('SET', LOCK, token, 'PX', ARGV[2])
  return redis.call('INCR', FENCE)
end
local now, now_us = now_ms()
prune(now)
local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
if not holder then
  if not head or head == token then
    redis.call('SET', LOCK, token, 'PX', ARGV[2])
    forget(token)
    return redis.call('INCR', FENCE)
  end
  wake(head, '1')  -- free, but not our turn: make sure the first in line knows
end
redis.call('ZADD', QUEUE, 'NX', now_us, token)
redis.call('ZADD', ALIVE, now + tonumber(ARGV[3]), token)
redis.call('HSET', TTLS, token, ARGV[2])
keep_queue(ARGV[3])
if not holder then
  return 0
end
return -math.max(redis.call('PTTL', LOCK), 0)
"""
)

# KEYS[1] the lock's base name
# ARGV[1] token, ARGV[2] waiter grace in ms
# Frees the lock only if `token` holds it, and hands it over to the first waiter in
# line. A token that does not hold it is taken out of the queue instead.
# returns: 1 if released, 0 if `token` did not hold the lock.
RELEASE_SCRIPT: Final[str] = (
    _PRELUDE
    + """
if redis.call('GET', LOCK) ~= ARGV[1] then
  forget(ARGV[1])
  return 0
end
redis.call('DEL', LOCK)
hand_over(tonumber(ARGV[2]))
return 1
"""
)

# KEYS[1] lock (the full ``...:lock`` name: the renewer's call, kept minimal)
# ARGV[1] token, ARGV[2] lease in ms
# returns: 1 if `token` holds the lock and its lease was reset, else 0.
EXTEND_SCRIPT: Final[str] = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] the lock's base name
# ARGV[1] token, ARGV[2] waiter grace in ms
# Takes `token` out of the queue (it gave up, or no longer needs the lock). If the lock
# was handed to it meanwhile, it is passed on to the next waiter; if it was first in
# line and the lock is free, the next waiter is woken: its turn has come.
# returns: 1 if `token` was queued or held the lock, else 0.
LEAVE_SCRIPT: Final[str] = (
    _PRELUDE
    + """
local token = ARGV[1]
redis.call('DEL', WAKE .. token)
if redis.call('GET', LOCK) == token then
  redis.call('DEL', LOCK)
  hand_over(tonumber(ARGV[2]))
  return 1
end
local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
local queued = redis.call('ZSCORE', QUEUE, token)
forget(token)
if head == token and redis.call('EXISTS', LOCK) == 0 then
  local next_head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
  if next_head then
    wake(next_head, '1')
  end
end
if queued then
  return 1
end
return 0
"""
)

# KEYS[1] the lock's base name
# ARGV[1] token, ARGV[2] waiter grace in ms, ARGV[3] "1" to also watch every release
# A waiter says it is still there (keeps its place in line during a long wait), and
# may ask to be woken by every release, not only when its turn comes.
# returns: 1 if `token` is still queued, 0 if it was dropped (it re-queues on its next try).
REFRESH_SCRIPT: Final[str] = (
    _PRELUDE
    + """
if not redis.call('ZSCORE', QUEUE, ARGV[1]) then
  return 0
end
local now = now_ms()
redis.call('ZADD', ALIVE, now + tonumber(ARGV[2]), ARGV[1])
if ARGV[3] == '1' then
  redis.call('SADD', WATCH, ARGV[1])
end
keep_queue(ARGV[2])
return 1
"""
)

# KEYS[1] the lock's base name
# ARGV[1] waiter grace in ms
# Frees the lock whoever holds it (an operator breaking a stuck lock) and hands it over.
# returns: 1 if a lock was there, else 0.
FORCE_RELEASE_SCRIPT: Final[str] = (
    _PRELUDE
    + """
local held = redis.call('DEL', LOCK)
hand_over(tonumber(ARGV[1]))
return held
"""
)

# -- counted permits -------------------------------------------------------------------
#
# Per key, beside the lock's keys (same hash tag): ``permits`` (sorted set: holder token
# -> lease end in ms), ``pfences`` (hash: token -> its fencing token), ``plimit`` (the
# limit its holders use), ``pcounter`` (fencing counter, never expires) and ``pwake``
# (list: one signal per freed permit, so one waiter wakes per permit).

_PERMIT_PRELUDE: Final = """
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end
local function prune(now)
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    redis.call('ZREM', KEYS[1], gone)
    redis.call('HDEL', KEYS[2], gone)
  end
end
-- The permit keys live as long as the last permit (the counter lives on).
local function keep(now)
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')[2]
  if last then
    local ttl = math.max(1, tonumber(last) - now) + 1000
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
    redis.call('PEXPIRE', KEYS[3], ttl)
  end
end
"""

# KEYS[1] permits, KEYS[2] pfences, KEYS[3] plimit, KEYS[4] pcounter
# ARGV[1] token, ARGV[2] lease in ms, ARGV[3] limit
# Takes one of `limit` permits if one is free; idempotent for a token that holds one.
# returns: the fencing token (> 0); or, all taken, minus the ms until the first permit
#          runs out (<= 0); or an error "LIMIT <n>" if the holders use another limit.
ACQUIRE_PERMIT_SCRIPT: Final[str] = (
    _PERMIT_PRELUDE
    + """
local now = now_ms()
prune(now)
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
  keep(now)
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
    return -math.max(tonumber(first) - now, 0)
  end
end
redis.call('SET', KEYS[3], ARGV[3])
local fence = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], fence)
keep(now)
return fence
"""
)

# KEYS[1] permits, KEYS[2] pfences, KEYS[3] pwake
# ARGV[1] token
# Gives back `token`'s permit and wakes one waiter.
# returns: 1 if released; 0 if `token` held none, or its lease had already run out.
RELEASE_PERMIT_SCRIPT: Final[str] = (
    _PERMIT_PRELUDE
    + """
local ends = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not ends then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[3], 1)
redis.call('LTRIM', KEYS[3], -100, -1)
redis.call('PEXPIRE', KEYS[3], 5000)
if tonumber(ends) <= now_ms() then
  return 0
end
return 1
"""
)

# KEYS[1] permits, KEYS[2] pfences, KEYS[3] plimit
# ARGV[1] token, ARGV[2] lease in ms
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
keep(now)
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

SCRIPTS: Final = {
    "acquire": ACQUIRE_SCRIPT,
    "release": RELEASE_SCRIPT,
    "extend": EXTEND_SCRIPT,
    "leave": LEAVE_SCRIPT,
    "refresh": REFRESH_SCRIPT,
    "force_release": FORCE_RELEASE_SCRIPT,
    "acquire_permit": ACQUIRE_PERMIT_SCRIPT,
    "release_permit": RELEASE_PERMIT_SCRIPT,
    "extend_permit": EXTEND_PERMIT_SCRIPT,
    "permit_holders": PERMIT_HOLDERS_SCRIPT,
}

__all__ = [
    "ACQUIRE_PERMIT_SCRIPT",
    "ACQUIRE_SCRIPT",
    "EXTEND_PERMIT_SCRIPT",
    "EXTEND_SCRIPT",
    "FORCE_RELEASE_SCRIPT",
    "LEAVE_SCRIPT",
    "PERMIT_HOLDERS_SCRIPT",
    "REFRESH_SCRIPT",
    "RELEASE_PERMIT_SCRIPT",
    "RELEASE_SCRIPT",
    "SCRIPTS",
]
