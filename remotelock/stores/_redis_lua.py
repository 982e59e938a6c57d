"""The Lua scripts behind RedisStore: each primitive is one atomic step on the server.

Every key of one lock shares a hash tag (``<prefix>:{<key>}:...``), so each script
touches a single Cluster slot. Per lock key:

- ``lock``   the holder's token; its PX expiry *is* the lease (the server's clock).
- ``fence``  a counter behind the fencing tokens; never expires, so tokens keep rising.
- ``queue``  sorted set of waiting tokens by arrival (microseconds): who is next.
- ``alive``  sorted set of the same tokens by the time (ms) a waiter counts as gone
             if it has not come back: a crashed waiter cannot block the queue.
- ``wake:<token>``  one waiter's wake-up list; a release pushes to every waiter's
             list and each waiter blocks on its own (BLPOP), so none can steal
             another's signal and all of them re-check ``skip_if`` at once.

Scripts need Redis >= 6 (TIME before writes, float BLPOP timeouts).
"""

from __future__ import annotations

from typing import Final

# Shared helpers, prepended to the scripts that need them.
_WAKE: Final = """
local function wake(list)
  redis.call('RPUSH', list, 1)
  redis.call('LTRIM', list, -1, -1)
  redis.call('PEXPIRE', list, 5000)
end
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000), t[1] * 1000000 + t[2]
end
"""

# KEYS[1] lock, KEYS[2] fence, KEYS[3] queue, KEYS[4] alive
# ARGV[1] token, ARGV[2] lease in ms, ARGV[3] waiter grace in ms, ARGV[4] wake-list prefix
# Takes the lock if it is free and no earlier waiter is queued (or `token` is first),
# bumping the fence in the same step. Re-acquiring with the holding token is idempotent.
# returns: the fencing token (> 0) if `token` holds the lock now; otherwise `token` is
#          queued and the reply is minus the holder's remaining lease in ms (0 if free
#          but another waiter is first in line).
ACQUIRE_SCRIPT: Final[str] = (
    _WAKE
    + """
local token = ARGV[1]
local holder = redis.call('GET', KEYS[1])
if holder == token then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]))
end
if not holder and redis.call('EXISTS', KEYS[3]) == 0 then  -- free, nobody waiting
  redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
  return redis.call('INCR', KEYS[2])
end
local now, now_us = now_ms()
local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
for _, waiter in ipairs(gone) do
  redis.call('ZREM', KEYS[3], waiter)
  redis.call('ZREM', KEYS[4], waiter)
end
local head = redis.call('ZRANGE', KEYS[3], 0, 0)[1]
if not holder then
  if not head or head == token then
    redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
    if head then
      redis.call('ZREM', KEYS[3], token)
      redis.call('ZREM', KEYS[4], token)
    end
    return redis.call('INCR', KEYS[2])
  end
  wake(ARGV[4] .. head)  -- free, but not our turn: make sure the first in line knows
end
redis.call('ZADD', KEYS[3], 'NX', now_us, token)
redis.call('ZADD', KEYS[4], now + tonumber(ARGV[3]), token)
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[4], ARGV[3])
if not holder then
  return 0
end
return -math.max(redis.call('PTTL', KEYS[1]), 0)
"""
)

# KEYS[1] lock, KEYS[2] queue, KEYS[3] alive
# ARGV[1] token, ARGV[2] wake-list prefix
# Deletes the lock only if `token` holds it, then wakes every queued waiter. A token
# that does not hold it is taken out of the queue instead (it stopped waiting).
# returns: 1 if released, 0 if `token` did not hold the lock.
RELEASE_SCRIPT: Final[str] = (
    _WAKE
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return 0
end
redis.call('DEL', KEYS[1])
for _, waiter in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  wake(ARGV[2] .. waiter)
end
return 1
"""
)

# KEYS[1] lock
# ARGV[1] token, ARGV[2] lease in ms
# returns: 1 if `token` holds the lock and its lease was reset, else 0.
EXTEND_SCRIPT: Final[str] = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS[1] lock, KEYS[2] queue, KEYS[3] alive
# ARGV[1] token, ARGV[2] wake-list prefix
# Takes `token` out of the queue (it gave up or no longer needs the lock). If it was
# first in line and the lock is free, the next waiter is woken: its turn has come.
# returns: 1 if `token` was queued, else 0.
LEAVE_SCRIPT: Final[str] = (
    _WAKE
    + """
local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
local queued = redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', ARGV[2] .. ARGV[1])
if head == ARGV[1] and redis.call('EXISTS', KEYS[1]) == 0 then
  local next_head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if next_head then
    wake(ARGV[2] .. next_head)
  end
end
return queued
"""
)

# KEYS[1] queue, KEYS[2] alive
# ARGV[1] token, ARGV[2] waiter grace in ms
# A waiter blocked for a long time says it is still there (keeps its place in line).
# returns: 1 if `token` is still queued, 0 if it was dropped (it re-queues on its next try).
REFRESH_SCRIPT: Final[str] = (
    _WAKE
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local now = now_ms()
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""
)

# KEYS[1] lock, KEYS[2] queue
# ARGV[1] wake-list prefix
# Deletes the lock whoever holds it (an operator breaking a stuck lock); wakes waiters.
# returns: 1 if a lock was there, else 0.
FORCE_RELEASE_SCRIPT: Final[str] = (
    _WAKE
    + """
local held = redis.call('DEL', KEYS[1])
for _, waiter in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  wake(ARGV[1] .. waiter)
end
return held
"""
)

SCRIPTS: Final = {
    "acquire": ACQUIRE_SCRIPT,
    "release": RELEASE_SCRIPT,
    "extend": EXTEND_SCRIPT,
    "leave": LEAVE_SCRIPT,
    "refresh": REFRESH_SCRIPT,
    "force_release": FORCE_RELEASE_SCRIPT,
}

__all__ = [
    "ACQUIRE_SCRIPT",
    "EXTEND_SCRIPT",
    "FORCE_RELEASE_SCRIPT",
    "LEAVE_SCRIPT",
    "REFRESH_SCRIPT",
    "RELEASE_SCRIPT",
    "SCRIPTS",
]
