"""The Lua every lock script of RedisStore starts with: the key's names and the helpers.

Kept apart from the scripts so that both script modules, the exclusive lock's
(:mod:`remotelock.stores.redis.lua`) and the shared leases'
(:mod:`remotelock.stores.redis.reader_lua`), can build on the same text: a hand-over,
a fencing token or a writers' mark is written once and means the same in both. The
scripts get one key, ``KEYS[1]``: the lock's base name ``<prefix>:{<key>}``; every
name below is derived from it, so all of them share one hash tag (one Cluster slot).
See :mod:`remotelock.stores.redis.lua` for the layout.

Every script defines the helpers it includes on each call (a closure each), so the
helpers of shared leases are kept apart (:data:`READERS_LUA`): the exclusive lock's
uncontended steps never define them.
"""

from __future__ import annotations

from typing import Final

from ..readers import WRITER_GRACE
from .permit_lua import RECALL

RELEASED_MS: Final = 60_000
"""How long a release is remembered, so that its repeat (a retry) still returns 1."""

HANDOVER_MS: Final = 3_000
"""The longest a lock waits for the first waiter in line: the lease a release hands to
it, and the turn it gets when the lock is free (see ``whose_turn``). A live waiter
claims either at once (renewing a handed lease to its full length); one that died in
line since it last kept its place (within ``waiter_grace``) holds the line up this long
at most, whatever the grace: a long grace keeps waiting quiet without making a dead
waiter costly."""

CORE: Final[str] = f"""
local BASE = KEYS[1]
local LOCK, FENCE, QUEUE = BASE .. ':lock', BASE .. ':fence', BASE .. ':queue'
local ALIVE, TTLS, LISTEN = BASE .. ':alive', BASE .. ':ttls', BASE .. ':listen'
local RELEASED, BELL, ADDR = BASE .. ':released', BASE .. ':bell', BASE .. ':addr'
local READERS, WMARK, TURN = BASE .. ':readers', BASE .. ':wmark', BASE .. ':turn'
local WINDOW, WATCHERS = BASE .. ':window', BASE .. ':watchers'
local RELEASED_MS, HANDOVER_MS = {RELEASED_MS}, {HANDOVER_MS}
-- Integers as Redis arguments and messages (tostring would write 1.75e+15).
local function int(x)
  return string.format('%.0f', x)
end
local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000), t[1] * 1000000 + t[2]
end
-- A new fencing token: the server's clock in microseconds, or the key's last token + 1
-- if that is larger (see the module docs). The :fence key keeps it until `retain` ms
-- after the end of the lease of `lease` ms.
local function next_fence(lease, retain)
  local _, now_us = now_ms()
  local fence = math.max((tonumber(redis.call('GET', FENCE)) or 0) + 1, now_us)
  redis.call('SET', FENCE, int(fence), 'PX', int(tonumber(lease) + retain))
  return fence
end
-- `token` holds the lock from now on, under a new fencing token. An earlier release
-- by the same token is history then: its repeat must not count as a success.
local function take(token, lease, retain)
  redis.call('SET', LOCK, token, 'PX', lease)
  if redis.call('GET', RELEASED) == token then
    redis.call('DEL', RELEASED)
  end
  return next_fence(lease, retain)
end
"""
"""The names and the helpers that take a lock: what every fast path needs. A script's
uncontended path runs right after it, before the closures of :data:`REST` are made
(each costs the server time on every call)."""

REST: Final[str] = """
-- A wake-up is a hint: if this user may not publish (ACL channels), the step goes on.
local function ring(message)
  redis.pcall('PUBLISH', BELL, message)
end
-- Tell the waiter `head` (`said` is a 'g' or 't' message but its token) on its
-- doorbell's own channel, so that only its process wakes (one channel serves all its
-- keys: the token is named with the key's bell there), and on the key's bell for
-- those who hear every change.
local function tell(head, said)
  local addr = redis.call('HGET', ADDR, head)
  if addr then
    addr = string.gsub(addr, '^~', '')
    redis.pcall('PUBLISH', addr, said .. BELL .. ' ' .. head)
  end
  ring(said .. head)
end
local function forget(waiter)
  redis.call('ZREM', QUEUE, waiter)
  redis.call('ZREM', ALIVE, waiter)
  redis.call('HDEL', TTLS, waiter)
  redis.call('HDEL', ADDR, waiter)
  redis.call('SREM', WATCHERS, waiter)
end
-- A release answers the watchers (`skip_if` callers that only wait to hear of one):
-- they leave the line now, so that none is handed the lock only to give it back and
-- none has to leave by a script of its own. The release's message tells them when it
-- was sent (after they queued: they know they are out). One that still needs the
-- lock queues again at its old place.
local function answer()
  for _, watcher in ipairs(redis.call('SMEMBERS', WATCHERS)) do
    forget(watcher)
  end
end
local function prune(now)
  for _, waiter in ipairs(redis.call('ZRANGEBYSCORE', ALIVE, '-inf', now)) do
    forget(waiter)
  end
end
-- A waiter whose process no longer listens cannot come for the lock: its doorbell's
-- channel has no subscriber (the process died, or lost its connection). Only a channel
-- its process was already listening on when it queued counts ('~' before the channel:
-- not yet, or on a Cluster, where each node counts its own subscribers only), and only
-- after a second in line; a waiter that left no channel polls, and is never gone.
local function gone(waiter, now_us)
  local addr = redis.call('HGET', ADDR, waiter)
  if not addr or string.sub(addr, 1, 1) == '~' then
    return false
  end
  local since = tonumber(redis.call('ZSCORE', QUEUE, waiter))
  return since ~= nil and now_us - since > 1000000
    and redis.call('PUBSUB', 'NUMSUB', addr)[2] == 0
end
-- The first waiter in line that may still come for the lock; the gone ones leave.
local function first_live(now_us)
  local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
  while head and gone(head, now_us) do
    forget(head)
    head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
  end
  return head
end
-- The lock is free: give it to the first live waiter, and ring the bell (one message).
local function hand_over(grace, retain)
  if redis.call('EXISTS', QUEUE, LISTEN) == 0 then  -- nobody waits: the common case
    return
  end
  local now, now_us = now_ms()
  answer()
  prune(now)
  local head = first_live(now_us)
  if head then
    local asked = tonumber(redis.call('HGET', TTLS, head)) or grace
    local lease = math.min(asked, grace, HANDOVER_MS)
    redis.call('DEL', WMARK)  -- a writer is in: no reader waits behind it any more
    local fence = take(head, lease, retain)
    tell(head, 'g' .. int(fence) .. ':' .. int(lease) .. ':')
    forget(head)
  else
    ring('r' .. int(now_us))
  end
end
-- The lock is free: whose turn is it, and for how many ms more? `token` (the caller)
-- needs no turn when it is first in line (nor anyone when nobody is). The first in
-- line is told (a 't' message) and has HANDOVER_MS to come for the lock; one that did
-- not (it died in line, or lost its way) is passed over, since its place in line may
-- be kept for a long grace. :turn names the waiter told last, by its place in line
-- ("<deadline ms>:<arrival>:<token>": a token that queues again is a new turn).
local function whose_turn(now, token)
  while true do
    local first = redis.call('ZRANGE', QUEUE, 0, 0, 'WITHSCORES')
    local head = first[1]
    while head and head ~= token and gone(head, now * 1000) do
      forget(head)
      first = redis.call('ZRANGE', QUEUE, 0, 0, 'WITHSCORES')
      head = first[1]
    end
    if not head or head == token then
      return head, 0
    end
    local place, deadline = first[2] .. ':' .. head, nil
    local turn = redis.call('GET', TURN)
    local colon = turn and string.find(turn, ':', 1, true)
    if colon and string.sub(turn, colon + 1) == place then
      deadline = tonumber(string.sub(turn, 1, colon - 1))
    else
      deadline = now + HANDOVER_MS
      redis.call('SET', TURN, int(deadline) .. ':' .. place, 'PX', 2 * HANDOVER_MS)
    end
    if deadline > now then
      tell(head, 't')
      return head, deadline - now
    end
    forget(head)  -- its turn came and went: the next in line
  end
end
local function keep_queue(ms)
  for _, name in ipairs({QUEUE, ALIVE, TTLS, ADDR, WATCHERS}) do
    redis.call('PEXPIRE', name, ms)
  end
end
"""
"""The helpers of a line of waiters (after :data:`CORE`)."""

PRELUDE: Final[str] = CORE + REST
"""Names and helpers, prepended to every lock script (``KEYS[1]`` the base name)."""

READERS_LUA: Final[str] = (
    f"""
local RFENCES, RRELEASED = BASE .. ':rfences', BASE .. ':rreleased'
local WRITER_GRACE_MS = {round(WRITER_GRACE * 1000)}
-- Someone may wait up to `ms` more: releases ring the bell until a second after that.
local function listen_for(ms)
  local keep = ms + 1000
  if redis.call('PTTL', LISTEN) < keep then
    redis.call('SET', LISTEN, '1', 'PX', int(keep))
  end
end
-- The shared leases: those that ran out are dropped, and the reply is when the last of
-- the others ends (ms, the server's clock), or nil if none is left.
local function readers_until(now)
  for _, gone in ipairs(redis.call('ZRANGEBYSCORE', READERS, '-inf', now)) do
    redis.call('ZREM', READERS, gone)
    redis.call('HDEL', RFENCES, gone)
  end
  return tonumber(redis.call('ZRANGE', READERS, -1, -1, 'WITHSCORES')[2])
end
-- A writer was refused by readers whose last lease ends at `last`: no new reader may
-- enter until then and the writer's grace more. A mark only ever grows.
local function mark_writer(now, last)
  local left = last - now + WRITER_GRACE_MS
  if redis.call('PTTL', WMARK) < left then
    redis.call('SET', WMARK, '1', 'PX', int(left))
  end
end
"""
    + RECALL
)
"""Helpers of the steps that deal with shared leases, after :data:`PRELUDE`. Kept out
of it so that the uncontended exclusive cycle defines none of them: the acquire script
includes them after its fast path."""

__all__ = ["CORE", "HANDOVER_MS", "PRELUDE", "READERS_LUA", "RELEASED_MS", "REST"]
