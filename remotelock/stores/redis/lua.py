"""The Lua scripts behind RedisStore: each primitive is one atomic step on the server.

Every key of one lock shares a hash tag (``<prefix>:{<key>}:...``), so each script
touches a single Cluster slot. The lock scripts get one key, ``KEYS[1]``: the lock's
base name ``<prefix>:{<key>}``, from which they derive (same hash tag, same slot):

- ``:lock``   the holder's token; its PX expiry *is* the lease (the server's clock).
- ``:fence``  the key's last fencing token (see "Fencing tokens" below); it expires
  ``fence_retention`` after the end of the lease it was last written with.
- ``:queue``  sorted set of waiting tokens by arrival (microseconds): who is next.
- ``:alive``  sorted set of the same tokens by the time (ms) a waiter counts as gone
  if it has not come back: a crashed waiter cannot block the line for long.
- ``:ttls``   hash: the lease (ms) each waiter asked for.
- ``:addr``   hash: the channel of each waiter's doorbell (its process's subscriber).
- ``:watchers`` the tokens in line that wait only to hear of the next release
  (``skip_if`` callers): a release takes them all out of line (they need not leave).
- ``:listen`` present while a caller of the plain ``wait`` (not queued) may be waiting:
  releases ring the bell for it too.
- ``:turn``   while the lock is free with waiters in line: whose turn it is, until
  when (a first waiter that does not come for the lock in time is passed over).
- ``:released`` the token of the key's last release (for a minute): a repeated release
  by that token returns 1, so a retry after a lost reply is not mistaken for a lost lock.
- ``:readers``, ``:rfences``, ``:wmark``, ``:rreleased`` the key's shared (reader)
  leases, and the mark of a writer they refused: see
  :mod:`remotelock.stores.redis.reader_lua`. The exclusive acquire reads them in the
  same step, so a key is held by one writer or by readers, never both.

Wake-ups are pub/sub messages on the channel ``<prefix>:{<key>}:bell`` (inside the hash
tag too). A store keeps one subscriber connection per process and hands each message
to its local waiters (see :mod:`remotelock.stores.redis.bells`). A message for one
waiter (``g`` and ``t`` below) also goes to its doorbell's own channel (``:addr``):
a process whose waiters only wait for their turn subscribes to that channel alone, so
a hand-over wakes the one process it concerns, not every process in line. Messages are hints: a
waiter never sleeps past its timeout or the holder's lease, so a lost message costs
time, never correctness. The scripts publish only when someone may listen (a queue or
``:listen`` exists): an uncontended release publishes nothing. They publish with
``redis.pcall``: a user whose ACL allows no channels still releases (its waits poll).

- ``g<fence>:<lease ms>:<token>`` a release **handed the lock over** to ``<token>``, the
  first waiter in line: the script made it the holder, so the new holder starts without
  another round trip. That lease is at most the waiter grace: if the waiter died in
  line, the lock comes free again soon; a live one renews it straight away. Every
  local waiter that wants to hear of each release (``skip_if`` callers) wakes too.
- ``r<microseconds>`` a release with nobody in line to hand the lock to (for watchers,
  plain waiters and readers), with the server's clock when it was made: a watcher that
  queued before that was taken out of line by it (``r`` alone: a release within a
  barging window while no watcher waits). A ``g`` message tells watchers the same by
  its fencing token, which is at least the server's clock.
- ``t<token>`` the lock is free and ``<token>`` is first in line: its turn has come
  (for ``HANDOVER_MS``: then the next in line may take it).
- ``w<ms>:<token>`` bounded barging: ``<token>``, first in line, is handed the lock by
  the first release after the holder's window; it looks at the lock within ``<ms>``
  at the latest, in case nobody takes the lock back (no round trip before that).

Passing one name instead of several keeps every call small: the arguments of a command
are encoded one by one on the client, and the uncontended cycle is two such calls.
A release hands over to a waiter it only learns of from the queue anyway, so the
scripts could not declare every key they touch in advance.

Fencing tokens come from the server's clock and the key's last token:
``fence = max(last + 1, TIME in microseconds)``. Every key a script writes has a TTL,
so a lock key leaves nothing behind for good: the ``:fence`` key lives on for
``fence_retention`` (default a day) after the end of the lease it was written with,
refreshed on every new token, re-acquire and extend. While it exists, tokens count up
from it (two acquires in one microsecond, or a clock that stepped back, still get a
larger token); once it is gone (expired, evicted, deleted, or lost in a restart without
persistence) the next token is the clock itself, larger than every earlier token of
the key, since each of those was at most the clock reading when it was handed out.
What breaks it: the server's clock stepping back by more than the time since the key's
last token was handed out, while the key's state is gone: at least ``fence_retention``
plus the lease when the key expired on its own, any amount after a restart without
persistence or a deletion by hand. Tokens are integers below 2**53 (exact in Lua's
doubles) until the year 2255; scripts write them with ``%.0f``, never ``tostring``.

Scripts need Redis >= 6 (TIME before writes: effects replication).
"""

from __future__ import annotations

from typing import Final

from .permit_lua import PERMIT_SCRIPTS
from .prelude_lua import CORE, PRELUDE, READERS_LUA, RELEASED_MS, REST
from .reader_lua import READER_SCRIPTS
from .wait_lua import LISTEN_SCRIPT, PEEK_SCRIPT, REFRESH_SCRIPT, WAIT_SCRIPTS

# KEYS[1] the lock's base name
# ARGV[1] token, ARGV[2] lease in ms, ARGV[3] waiter grace in ms, ARGV[4] fence
#         retention in ms (how long :fence outlives the lease), ARGV[5] the channel of
#         the caller's doorbell ('' if it has none), kept with its place in line,
#         ARGV[6] the barging window in ms (0: none), ARGV[7] '1' if the caller is a
#         watcher (it waits only to hear of the next release: see `answer`), ARGV[8]
#         its place in line if it had one ('': none; a watcher answered keeps it)
# Takes the lock if it is free and no earlier waiter is queued (or `token` is first),
# with a new fencing token in the same step. Re-acquiring with the holding token is
# idempotent (and claims a lock handed over to `token`: its lease is reset to the full
# length, and :fence kept as long); if :fence is gone (deleted by hand), the holder
# gets a new, larger token. Shared leases (:readers) hold the key too: a writer they
# refuse is queued as for a busy lock and marks the key (:wmark), so that no new
# reader enters until it is in; the readers' last release hands the lock to the first
# in line. The uncontended path asks one EXISTS whether any of that is there.
# A free lock whose first waiter is not `token` is that waiter's turn (whose_turn): it
# is told, and passed over if it has not come within HANDOVER_MS.
# returns: the fencing token (> 0) if `token` holds the lock now; otherwise `token` is
#          queued and the reply is minus the holder's remaining lease in ms (for
#          readers: until the last of their leases ends; if free but another waiter is
#          first in line: until that waiter's turn ends, when `token` should look again);
#          a watcher gets {that, its place in line (microseconds)}.
ACQUIRE_SCRIPT: Final[str] = (
    CORE
    + """
local token, retain, window = ARGV[1], tonumber(ARGV[4]), tonumber(ARGV[6])
local holder = redis.call('GET', LOCK)
if holder == token then
  redis.call('PEXPIRE', LOCK, ARGV[2])
  if redis.call('PEXPIRE', FENCE, int(tonumber(ARGV[2]) + retain)) == 1 then
    return tonumber(redis.call('GET', FENCE))
  end
  return next_fence(ARGV[2], retain)
end
if not holder and redis.call('EXISTS', QUEUE, READERS, WMARK) == 0 then  -- free, alone
  return take(token, ARGV[2], retain)
end
if not holder and window > 0 and redis.call('EXISTS', WINDOW) == 1
    and redis.call('EXISTS', READERS, WMARK) == 0 and not redis.call('ZSCORE', QUEUE, token) then
  return take(token, ARGV[2], retain)  -- barging: the holder's window is open
end
"""
    + REST
    + READERS_LUA
    + """
local now, now_us = now_ms()
prune(now)
local readers = not holder and readers_until(now)
local turn_left = 0
if readers then
  mark_writer(now, readers)  -- held by readers: new ones wait behind this writer
elseif not holder then
  if window > 0 and redis.call('EXISTS', WINDOW) == 1 then  -- barging: free to take
    forget(token)
    return take(token, ARGV[2], retain)
  end
  local head
  head, turn_left = whose_turn(now, token)  -- free: tells the first in line, if not us
  if not head or head == token then
    forget(token)
    redis.call('DEL', WMARK, TURN)  -- a writer is in: no reader waits behind it any more
    return take(token, ARGV[2], retain)
  end
end
local added = redis.call('ZADD', QUEUE, 'NX', tonumber(ARGV[8]) or now_us, token)
redis.call('ZADD', ALIVE, now + tonumber(ARGV[3]), token)
redis.call('HSET', TTLS, token, ARGV[2])
if ARGV[5] ~= '' then
  redis.call('HSET', ADDR, token, ARGV[5])  -- where to tell it of its turn
end
local watcher = ARGV[7] == '1'
if watcher then
  redis.call('SADD', WATCHERS, token)
end
keep_queue(ARGV[3])
-- The reply when queued: minus the ms to wait; a watcher also learns its place (the
-- server's clock when it queued: a release after that has answered it).
local function queued(ms)
  if watcher then
    return {-ms, tonumber(redis.call('ZSCORE', QUEUE, token))}
  end
  return -ms
end
if readers then
  return queued(math.max(readers - now, 1))
elseif not holder then
  return queued(math.max(turn_left, 1))
end
local left = math.max(redis.call('PTTL', LOCK), 0)
if window > 0 and redis.call('ZRANGE', QUEUE, 0, 0)[1] == token then
  -- First in line while the holder may take the lock back: it looks again a window
  -- after that window closes (by then the first release after it has handed it the
  -- lock, unless nobody took the lock back). The first waiter of a line opens it.
  local open = redis.call('PTTL', WINDOW)
  if open < 0 and added == 1 then
    redis.call('SET', WINDOW, token, 'PX', window)
    open = window
  elseif open > 0 and redis.call('GET', WINDOW) ~= token then
    redis.call('SET', WINDOW, token, 'KEEPTTL')  -- it knows when the window closes
  end
  if open > 0 then
    left = math.min(left, open + window)
  end
end
return queued(left)
"""
)

# KEYS[1] the lock's base name
# ARGV[1] token, ARGV[2] waiter grace in ms, ARGV[3] fence retention in ms, ARGV[4]
#         the barging window in ms (0: none), ARGV[5] '1' to hand over even within the
#         window (the holder's process is done taking the lock back: remotelock.streak)
# Frees the lock only if `token` holds it, and hands it over to the first waiter in
# line. A token that does not hold it is taken out of the queue instead.
# A repeated release by the token that released the key last (within a minute) returns
# 1 again: the first one succeeded and only its reply was lost, so the retry must not
# look like a lost lock. A token whose lease ran out, was taken over or force-released
# never released the key itself, so it still gets 0; so does a token that took the
# lock again after its release (`take` clears the record).
# returns: 1 if released (now or by this token's previous call), 0 if `token` did not
#          hold the lock.
RELEASE_SCRIPT: Final[str] = (
    CORE
    + """
local token, window = ARGV[1], tonumber(ARGV[4])
local barging = window > 0 and ARGV[5] ~= '1'  -- a release within the window may keep it
local holder = redis.call('GET', LOCK)
local quiet = holder == token and redis.call('EXISTS', QUEUE, LISTEN) == 0  -- nobody waits
if holder == token and not quiet and barging and redis.call('EXISTS', WINDOW) == 1 then
  -- Within the barging window, with the first in line told when it closes: nobody is
  -- handed the lock (watchers still hear of the release).
  quiet = redis.call('GET', WINDOW) == redis.call('ZRANGE', QUEUE, 0, 0)[1]
    and redis.call('EXISTS', WATCHERS) == 0  -- watchers are answered below
  if quiet then
    redis.pcall('PUBLISH', BELL, 'r')
  end
end
if quiet then
  redis.call('DEL', LOCK)
  redis.call('SET', RELEASED, token, 'PX', RELEASED_MS)
  return 1
end
"""
    + REST
    + """
if holder ~= token then
  forget(token)
  if redis.call('GET', RELEASED) == token then
    return 1
  end
  return 0
end
redis.call('DEL', LOCK)
if barging and redis.call('EXISTS', WINDOW, QUEUE) == 2 then
  -- Within the window nobody in line is handed the lock (watchers still hear of it),
  -- but the first in line must look at the lock by a window after this one closes,
  -- in case nobody takes it back: it is told once ('w', :window names it), when it is
  -- not yet. Normally the first release after the window hands it the lock before.
  local _, now_us = now_ms()
  answer()
  local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
  if head and redis.call('GET', WINDOW) ~= head then
    redis.call('SET', WINDOW, head, 'KEEPTTL')
    tell(head, 'w' .. int(redis.call('PTTL', WINDOW) + window) .. ':')
  end
  ring('r' .. int(now_us))
else
  hand_over(tonumber(ARGV[2]), tonumber(ARGV[3]))
  if window > 0 and redis.call('EXISTS', QUEUE) == 1 then
    -- The new holder's window opens. The next in line is told of it by the first
    -- release within it, not now: a wake-up beside the hand-over's would slow it.
    redis.call('SET', WINDOW, '', 'PX', window)
  end
end
redis.call('SET', RELEASED, token, 'PX', RELEASED_MS)
return 1
"""
)

# KEYS[1] lock, KEYS[2] fence (the full ``...:lock`` and ``...:fence`` names: the
#         renewer's call, kept minimal)
# ARGV[1] token, ARGV[2] lease in ms, ARGV[3] fence retention in ms
# :fence is kept `retention` past the new end of the lease, like the lease itself.
# returns: 1 if `token` holds the lock and its lease was reset, else 0.
EXTEND_SCRIPT: Final[str] = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], string.format('%.0f', tonumber(ARGV[2]) + tonumber(ARGV[3])))
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS   the lock's base name of each lease (one Cluster slot: the caller groups them)
# ARGV[1] fence retention in ms; ARGV[2] for each KEYS[i] in turn, "<lease in ms>:<token's
#        length in bytes>:<token>", all in one argument (encoding a hundred arguments,
#        and parsing a hundred replies, was most of a batch's client time)
# EXTEND_SCRIPT for many leases in one round trip (the renewal loop's batches).
# returns: a string with '1' for each lease reset and '0' for each no longer held.
EXTEND_MANY_SCRIPT: Final[str] = """
local retain, asked, at = tonumber(ARGV[1]), ARGV[2], 1
local reset = {}
for i, base in ipairs(KEYS) do
  local first = string.find(asked, ':', at, true)
  local second = string.find(asked, ':', first + 1, true)
  local lease = string.sub(asked, at, first - 1)
  local stop = second + tonumber(string.sub(asked, first + 1, second - 1))
  local lock = base .. ':lock'
  at = stop + 1
  reset[i] = '0'
  if redis.call('GET', lock) == string.sub(asked, second + 1, stop) then
    redis.call('PEXPIRE', base .. ':fence', string.format('%.0f', tonumber(lease) + retain))
    if redis.call('PEXPIRE', lock, lease) == 1 then
      reset[i] = '1'
    end
  end
end
return table.concat(reset)
"""

# KEYS[1] the lock's base name
# ARGV[1] token, ARGV[2] waiter grace in ms, ARGV[3] fence retention in ms
# Takes `token` out of the queue (it gave up, or no longer needs the lock). If the lock
# was handed to it meanwhile, it is passed on to the next waiter; if it was first in
# line and the lock is free, the next waiter is told: its turn has come. Once nobody
# is in line, no writer waits: a writers' mark goes too (new readers may enter).
# returns: 1 if `token` was queued or held the lock, else 0.
LEAVE_SCRIPT: Final[str] = (
    PRELUDE
    + """
local token = ARGV[1]
if redis.call('GET', LOCK) == token then
  redis.call('DEL', LOCK)
  hand_over(tonumber(ARGV[2]), tonumber(ARGV[3]))
  return 1
end
local head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
local queued = redis.call('ZSCORE', QUEUE, token)
forget(token)
if head == token and redis.call('EXISTS', LOCK) == 0 then
  local next_head = redis.call('ZRANGE', QUEUE, 0, 0)[1]
  if next_head then
    tell(next_head, 't')
  end
end
if redis.call('EXISTS', QUEUE) == 0 then
  redis.call('DEL', WMARK)
end
if queued then
  return 1
end
return 0
"""
)

# KEYS[1] the lock's base name
# ARGV[1] waiter grace in ms, ARGV[2] fence retention in ms
# Frees the lock whoever holds it (an operator breaking a stuck lock) and hands it over;
# shared leases and a writers' mark go too.
# returns: 1 if an exclusive lock was there, else 0.
FORCE_RELEASE_SCRIPT: Final[str] = (
    PRELUDE
    + READERS_LUA
    + """
local held = redis.call('DEL', LOCK)
redis.call('DEL', READERS, RFENCES, WMARK)
hand_over(tonumber(ARGV[1]), tonumber(ARGV[2]))
return held
"""
)

SCRIPTS: Final = {
    "acquire": ACQUIRE_SCRIPT,
    "release": RELEASE_SCRIPT,
    "extend": EXTEND_SCRIPT,
    "extend_many": EXTEND_MANY_SCRIPT,
    "leave": LEAVE_SCRIPT,
    **WAIT_SCRIPTS,
    "force_release": FORCE_RELEASE_SCRIPT,
    **PERMIT_SCRIPTS,
    **READER_SCRIPTS,
}

__all__ = [
    "ACQUIRE_SCRIPT",
    "EXTEND_MANY_SCRIPT",
    "EXTEND_SCRIPT",
    "FORCE_RELEASE_SCRIPT",
    "LEAVE_SCRIPT",
    "LISTEN_SCRIPT",
    "PEEK_SCRIPT",
    "REFRESH_SCRIPT",
    "RELEASED_MS",
    "RELEASE_SCRIPT",
    "SCRIPTS",
]
