"""The Lua scripts of waiting on a RedisStore lock: keeping places, looking, listening.

Apart from :mod:`remotelock.stores.redis.lua` (a lock's own steps: acquire, release,
extend, leave), and on the same layout (see there): a waiter's store keeps its places
in line (``refresh``), looks at the lock when a wake-up may have been missed
(``peek``), and a plain ``wait`` asks releases to ring the bell (``listen``).
"""

from __future__ import annotations

from typing import Final

from .prelude_lua import PRELUDE, READERS_LUA

# KEYS   the lock's base name of each waiter (one Cluster slot: the caller groups them)
# ARGV[1] waiter grace in ms; ARGV[1 + i] the token waiting on KEYS[i]
# Waiters say they are still there (keep their places in line during long waits): a
# store keeps all its waiters' places with one call (per slot), however many wait.
# A lock found free with waiters in line had no release to wake them (it was handed
# to a waiter that died, or its holder's lease ran out): the dead are dropped and the
# first live waiter is told its turn has come (not while shared leases hold it: their
# last release lets the first in line in).
# returns: for each waiter, 1 if it is still queued, 0 if not (dropped, or handed the
#          lock).
REFRESH_SCRIPT: Final[str] = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local grace = tonumber(ARGV[1])
local kept, lines = {}, {}
for i, base in ipairs(KEYS) do
  kept[i] = 0
  if redis.call('ZSCORE', base .. ':queue', ARGV[i + 1]) then
    redis.call('ZADD', base .. ':alive', now + grace, ARGV[i + 1])
    kept[i] = 1
    lines[base] = true
  end
end
for base in pairs(lines) do
  local queue, alive = base .. ':queue', base .. ':alive'
  local ttls, addr, watchers = base .. ':ttls', base .. ':addr', base .. ':watchers'
  for _, name in ipairs({queue, alive, ttls, addr, watchers}) do
    redis.call('PEXPIRE', name, grace)
  end
  local reading = redis.call('ZCOUNT', base .. ':readers', '(' .. now, '+inf')
  if reading == 0 and redis.call('EXISTS', base .. ':lock') == 0 then
    for _, dead in ipairs(redis.call('ZRANGEBYSCORE', alive, '-inf', now)) do
      redis.call('ZREM', queue, dead)
      redis.call('ZREM', alive, dead)
      redis.call('HDEL', ttls, dead)
      redis.call('HDEL', addr, dead)
      redis.call('SREM', watchers, dead)
    end
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if head then
      local own = redis.call('HGET', addr, head)
      if own then  -- the channel, without the mark of one whose subscribers do not count
        redis.pcall('PUBLISH', (string.gsub(own, '^~', '')), 't' .. base .. ':bell ' .. head)
      end
      redis.pcall('PUBLISH', base .. ':bell', 't' .. head)
    end
  end
end
return kept
"""

# KEYS[1] the lock's base name
# ARGV[1] the waiting token ('' if none)
# A waiter's look at the lock when a wake-up may have been missed (its subscription
# started after it queued) or cannot come (no subscriber): was the lock handed to it?
# A watcher learns whether it still is one: if so, no release came since it queued.
# returns: {holder token or '', fencing counter, remaining lease in ms, how many shared
#          leases hold the key when no holder does (it is not free while any do), 1 if
#          the token is a watcher in line else 0}
PEEK_SCRIPT: Final[str] = (
    PRELUDE
    + """
local holder = redis.call('GET', LOCK)
local watching = ARGV[1] ~= '' and redis.call('SISMEMBER', WATCHERS, ARGV[1]) or 0
if not holder then
  local now = now_ms()
  return {'', 0, 0, redis.call('ZCOUNT', READERS, '(' .. int(now), '+inf'), watching}
end
return {holder, tonumber(redis.call('GET', FENCE)) or 0, redis.call('PTTL', LOCK), 0, watching}
"""
)

# KEYS[1] the lock's base name
# ARGV[1] the longest the caller will wait, in ms
# A caller of the plain `wait` (which does not queue) asks releases to ring the bell
# for as long as it may wait, and learns who holds the lock and for how long still.
# Shared leases hold it too: then the wait lasts until the last of them ends (their
# last release rings the bell).
# returns: {the holder's remaining lease in ms, its token ('' for readers)}, or
#          {-1, ''} if free.
LISTEN_SCRIPT: Final[str] = (
    PRELUDE
    + READERS_LUA
    + """
local holder = redis.call('GET', LOCK)
local left = redis.call('PTTL', LOCK)
if not holder then
  local now = now_ms()
  local last = readers_until(now)
  if not last then
    return {-1, ''}
  end
  holder, left = '', last - now
end
if left == -1 then  -- a lock without expiry (not set by us): wait for the caller's bound
  left = tonumber(ARGV[1])
end
listen_for(math.min(left, tonumber(ARGV[1])))
return {left, holder}
"""
)


WAIT_SCRIPTS: Final = {"refresh": REFRESH_SCRIPT, "peek": PEEK_SCRIPT, "listen": LISTEN_SCRIPT}

__all__ = ["LISTEN_SCRIPT", "PEEK_SCRIPT", "REFRESH_SCRIPT", "WAIT_SCRIPTS"]
