"""The Lua scripts behind RedisStore's shared (reader) leases: one atomic step each.

The rules are :mod:`remotelock.stores.readers`'. Per key, beside the lock's own keys
(derived from the same base name ``<prefix>:{<key>}``, so one Cluster slot):

- ``:readers``   sorted set: reader token -> the end of its lease (ms, the server's
  clock). Expired readers are dropped by the next step that looks at them; the set
  expires a second after its last lease, so crashed readers leave nothing for long.
- ``:rfences``   hash: reader token -> its fencing token (a retry returns the same one);
  it expires with ``:readers``.
- ``:wmark``     the writers' mark: set by an exclusive acquire that readers refused,
  its ``PX`` expiry is the end of their last lease plus
  :data:`~remotelock.stores.readers.WRITER_GRACE`; while it lives no new reader
  enters. A writer that gets the lock deletes it, and so does the last waiter leaving
  the queue (no writer waits any more).
- ``:rreleased`` sorted set: readers that gave their lease back in the last minute, so
  that a repeated release (a retry after a lost reply) returns 1, as for permits
  (the same Lua, :data:`~remotelock.stores.redis.permit_lua.RECALL`).

Fencing tokens come from the lock's own ``:fence`` (``next_fence`` in
:mod:`~remotelock.stores.redis.prelude_lua`): shared and exclusive acquisitions draw
from one sequence, and it keeps rising after the state is gone as the lock's does. A
reader keeps ``:fence`` at least ``fence_retention`` past the end of the last lease.

Wake-ups use the lock's bell. Writers refused by readers are queued waiters, so the
last reader's release hands the lock to the first in line exactly as an exclusive
release does (``g`` message), or rings ``r`` for plain waiters (``:listen``). Readers
are not queued: a refused reader (or ``wait_shared``) sets ``:listen``, so that the
exclusive release rings for it too; a reader's wait never lasts past the exclusive
lease or the mark.
"""

from __future__ import annotations

from typing import Final

from .permit_lua import PERMIT_HOLDERS_SCRIPT
from .prelude_lua import PRELUDE, READERS_LUA

_KEEP: Final = """
-- The readers' keys live a second past their last lease, :fence `retain` ms past it.
local function keep_readers(now, retain)
  local last = tonumber(redis.call('ZRANGE', READERS, -1, -1, 'WITHSCORES')[2])
  local ttl = math.max(last - now, 1) + 1000
  redis.call('PEXPIRE', READERS, int(ttl))
  redis.call('PEXPIRE', RFENCES, int(ttl))
  if redis.call('PTTL', FENCE) < ttl + retain then
    redis.call('PEXPIRE', FENCE, int(ttl + retain))
  end
end
-- Until when no reader may enter (ms from now): the exclusive lease or the writers'
-- mark, whichever ends later; 0 if a reader may enter now, -1 for a lock without
-- expiry (not set by us).
local function closed_for()
  local held, marked = redis.call('PTTL', LOCK), redis.call('PTTL', WMARK)
  if held == -1 then
    return -1
  elseif held >= 0 then  -- held, if only for a last millisecond
    return math.max(held, marked, 1)
  end
  return math.max(marked, 0)
end
"""

# KEYS[1] the lock's base name
# ARGV[1] token, ARGV[2] lease in ms, ARGV[3] fence retention in ms
# Takes a shared lease if no exclusive lease holds the key and no writer's mark is
# live; a token that holds one gets it renewed and its fencing token again (a retry
# after a lost reply), mark or not. A refused caller may wait: until the lease or the
# mark ends (and a second more) the exclusive release rings the bell.
# returns: the fencing token (> 0); or, refused, minus the ms until a reader may enter
#          (< 0), or 0 if that is unknown (a lock without expiry).
ACQUIRE_SHARED_SCRIPT: Final[str] = (
    PRELUDE
    + READERS_LUA
    + _KEEP
    + """
local token, lease, retain = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local ends = redis.call('ZSCORE', READERS, token)
local fence = ends and tonumber(ends) > now and tonumber(redis.call('HGET', RFENCES, token))
if fence then
  redis.call('ZADD', READERS, now + lease, token)
  keep_readers(now, retain)
  return fence
end
local closed = closed_for()
if closed < 0 then
  return 0
elseif closed > 0 then
  listen_for(closed)
  return -closed
end
readers_until(now)  -- drop the readers that ran out
fence = next_fence(lease, retain)
redis.call('ZADD', READERS, now + lease, token)
redis.call('HSET', RFENCES, token, int(fence))
redis.call('ZREM', RRELEASED, token)  -- its earlier release, if any, is history now
keep_readers(now, retain)
return fence
"""
)

# KEYS[1] the lock's base name
# ARGV[1] token, ARGV[2] waiter grace in ms, ARGV[3] fence retention in ms
# Gives back `token`'s shared lease. The last live one lets the writers in: the lock
# goes to the first in line (as an exclusive release hands it over), or plain waiters
# hear `r`; with nobody left in line, the writers' mark goes too. A token that gave
# its lease back in the last minute gets 1 again; one whose lease ran out, or was
# dropped by a force-release, never gave it back: 0.
# returns: 1 if released (now or by this token's previous call), else 0.
RELEASE_SHARED_SCRIPT: Final[str] = (
    PRELUDE
    + READERS_LUA
    + """
local token = ARGV[1]
local now = now_ms()
local ends = redis.call('ZSCORE', READERS, token)
if not ends then
  return remembered(RRELEASED, token, now) and 1 or 0
end
redis.call('ZREM', READERS, token)
redis.call('HDEL', RFENCES, token)
if not readers_until(now) and redis.call('EXISTS', LOCK) == 0 then
  hand_over(tonumber(ARGV[2]), tonumber(ARGV[3]))
  if redis.call('EXISTS', QUEUE) == 0 then  -- no writer in line: none to hold back for
    redis.call('DEL', WMARK)
  end
end
if tonumber(ends) <= now then
  return 0
end
remember(RRELEASED, token, now)
return 1
"""
)

# KEYS[1] the lock's base name
# ARGV[1] token, ARGV[2] lease in ms, ARGV[3] fence retention in ms
# returns: 1 if `token` holds a shared lease and it was reset, else 0.
EXTEND_SHARED_SCRIPT: Final[str] = (
    PRELUDE
    + READERS_LUA
    + _KEEP
    + """
local now = now_ms()
local ends = redis.call('ZSCORE', READERS, ARGV[1])
if not ends or tonumber(ends) <= now then
  return 0
end
redis.call('ZADD', READERS, now + tonumber(ARGV[2]), ARGV[1])
keep_readers(now, tonumber(ARGV[3]))
return 1
"""
)

# KEYS[1] the lock's base name
# ARGV[1] the longest the caller will wait, in ms
# A reader about to wait without a refusal to learn from (and a waiting reader's look
# when a wake-up may have been missed): may a reader enter now? If not, the exclusive
# release rings the bell while the caller may wait.
# returns: ms until a reader may enter (the exclusive lease's or the mark's end, or
#          the caller's bound for a lock without expiry), or -1 if one may now.
LISTEN_SHARED_SCRIPT: Final[str] = (
    PRELUDE
    + READERS_LUA
    + _KEEP
    + """
local closed = closed_for()
if closed == 0 then
  return -1
elseif closed < 0 then
  closed = tonumber(ARGV[1])
end
listen_for(math.min(closed, tonumber(ARGV[1])))
return closed
"""
)

READER_SCRIPTS: Final = {
    "acquire_shared": ACQUIRE_SHARED_SCRIPT,
    "release_shared": RELEASE_SHARED_SCRIPT,
    "extend_shared": EXTEND_SHARED_SCRIPT,
    "listen_shared": LISTEN_SHARED_SCRIPT,
    "shared_holders": PERMIT_HOLDERS_SCRIPT,  # KEYS[1] :readers, a set of the same shape
}

__all__ = [
    "ACQUIRE_SHARED_SCRIPT",
    "EXTEND_SHARED_SCRIPT",
    "LISTEN_SHARED_SCRIPT",
    "READER_SCRIPTS",
    "RELEASE_SHARED_SCRIPT",
]
