"""The Redis lock store (standalone, Sentinel or Cluster): fenced, fair, push-woken.

Written once, in its asyncio form (``aio.py``); the sync store (``store.py``) is
generated from it by ``tools/unasync.py``, so both run the same scripts on the same
keys by the same rules. What really differs, one client against one per event loop
(and the sync store's extras: its async twin, a warning about a client without a
timeout), is in the hand-written ``connect.py`` and ``connect_aio.py``.

Each primitive is one Lua script (see :mod:`remotelock.stores.redis.lua` for the key
layout and every script's KEYS, ARGV and reply). Expiry is decided by the Redis
server's clock (``PX``), so client clocks do not matter. Waiters queue in arrival
order; a release hands the lock to the first and rings the key's pub/sub bell, which
one subscriber connection hears for all the waiters of a process (see
:mod:`remotelock.stores.redis.bells`). Waiters sleep locally with their exact timeout
and never longer than the holder's remaining lease, so a crashed holder's lock is
noticed as soon as it runs out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from redis.client import NEVER_DECODE

from ..base import DISMISSED, AsyncStore, Dismissed, Handover, LockInfo
from .bells import LISTEN, TURN, WATCH, Released, Wait
from .clients import FENCE_RETENTION, WAITER_GRACE, check_options
from .common import (
    CAPABILITIES,
    LEASE_STEPS,
    MAX_RESULT_BYTES,
    Refused,
    base_name,
    by_slot,
    key_of,
    layout,
    ms,
    renewal_calls,
    renewed,
    text,
    translate,
)
from .connect_aio import AsyncClients
from .line import Keeper, Look, Places, Queued
from .permits_aio import AsyncRedisPermits
from .readers_aio import AsyncRedisReaders

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)


class AsyncRedisStore(AsyncRedisPermits, AsyncRedisReaders):
    """Locks in Redis: exclusion across processes and machines.

    - URL: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS),
      ``unix:///path/redis.sock``, ``redis+sentinel://host:26379[,host:port]/service[/db]``,
      ``redis+cluster://host:port[,host:port]``. Query options: ``prefix`` (key
      namespace, default ``remotelock``), ``waiter_grace`` (seconds a queued waiter
      keeps its place without coming back, default 60), ``fence_retention`` (seconds
      a key's fencing state outlives its last lease, default 86400), ``barging``
      (seconds a holder may take the lock back before handing it to the first in
      line, default 0: strict first come, first served), plus any redis-py
      option (``socket_timeout``, ``db``, ...). Clients built from a URL get 5 s connect and
      read timeouts and retry a broken connection once.
    - Or pass a client: ``AsyncRedisStore(redis.asyncio.Redis(...))``, a Sentinel
      ``master_for`` client, or a ``RedisCluster``. Give it a ``socket_timeout``, or a
      frozen server can hang its calls.
    - Clients (:class:`AsyncClients`): the sync store keeps one; the asyncio store
      built from a URL keeps one per event loop, since asyncio connections belong to
      the loop that opened them. The sync store's ``as_async()`` is an asyncio store
      built from the same URL, or for a store given a client, this store in worker
      threads.
    - Layout (per lock key, one hash tag): ``<prefix>:{<key>}:lock`` (holder token,
      PX lease), ``:fence`` (the last fencing token), ``:queue``, ``:alive``,
      ``:ttls``, ``:addr`` and ``:watchers`` (waiters, in arrival order; ``:turn``,
      ``:window``: see :mod:`~remotelock.stores.redis.lua`), ``:listen`` (a plain ``wait`` is
      listening) and ``:released`` (the last releasing token, for a minute); shared
      leases in ``:readers`` and ``:rfences``, a waiting writer's mark ``:wmark``,
      ``:rreleased`` (see :mod:`~remotelock.stores.redis.reader_lua`). Every
      key expires: a key that is no longer used leaves nothing after
      ``fence_retention`` (plus its last lease). Wake-ups are published on
      ``<prefix>:{<key>}:bell``.
    - Fencing tokens: ``max(last + 1, the server's clock in microseconds)``, so they
      keep rising after the key's ``:fence`` expired, was evicted, or was lost in a
      restart without persistence: only a server clock stepping back by more than
      the time since the key's last token, while that state is gone, can hand out a
      smaller token (while ``:fence`` lives, a clock that steps back does no harm).
      Permits alike (``:pcounter``); shared leases draw from the lock's ``:fence``,
      one sequence for both kinds. See :mod:`remotelock.stores.redis.lua`.
    - Clock: the Redis server's (``PX`` expiry, ``TIME`` in scripts).
    - Wake-ups: a release hands the lock to the first waiter in line and publishes one
      message on the key's channel and one on that waiter's own process channel, only
      if someone waits; a waiter whose process is gone is passed over. With
      ``barging``, a release within the window hands nothing over. Each store keeps **one**
      subscriber connection per process (per event loop for the asyncio store), read
      by one thread (or task), however many callers wait: waiters hold no connection
      while they sleep, and their waits end on time, to the millisecond, never later
      than the holder's lease. The store keeps all its queued waiters' places with
      one script every ``waiter_grace / 3`` seconds (see :class:`~.common.Keeper`).
      Cluster: classic ``PUBLISH`` reaches every node, so
      the one subscriber may sit on any of them. A client that cannot subscribe (no
      ``pubsub()``, or an ACL user without ``&<prefix>:*`` channels) makes waits
      poll: a small script every 25 ms per waiter. Needs Redis >= 6.
    - Release: a repeated release by the token that released the key returns ``True``
      (for a minute, and unless it took the lock again), so a retry after a lost reply
      is not a loss; a token whose lease ran out, was taken over or force-released
      gets ``False``. Permits and shared leases alike.
    - Shared leases (:class:`~remotelock.stores.readers.SharedStore`): a writer refused
      by readers queues as for a busy lock and marks the key, so new readers wait
      behind it; the last reader's release hands the lock to the first in line, and
      the exclusive release wakes waiting readers. See :class:`AsyncRedisReaders`.
    """

    capabilities: frozenset[str] = CAPABILITIES

    def __init__(
        self,
        client: Any,
        *,
        prefix: str = "remotelock",
        waiter_grace: float = WAITER_GRACE,
        fence_retention: float = FENCE_RETENTION,
        barging: float = 0.0,
    ) -> None:
        options = check_options(prefix, waiter_grace, fence_retention, barging)
        self._clients = AsyncClients.of(client, options.prefix, type(self).__name__)
        self.prefix = options.prefix
        self.waiter_grace = options.waiter_grace
        self._grace_ms = ms(options.waiter_grace)
        self.fence_retention = options.fence_retention
        self._retain_ms = ms(options.fence_retention)
        self.barging = options.barging
        self._window_ms = round(options.barging * 1000)  # 0: strict first come, first served
        self._queued: dict[str, Queued] = {}  # this store's tokens in line, by token
        self._places = Places()  # of its watchers a release took out of line
        self._refresh_every = options.waiter_grace / 3
        self._keeper = Keeper(self._refresh_every)
        self._permit_free_at: dict[str, Refused] = {}  # key -> its last refusal here
        self._shared_free_at: dict[str, Refused] = {}  # key -> its last refused reader
        if self._clients.untimed():
            log.warning(
                "%r: the Redis client has no socket_timeout; a frozen server can hang calls",
                self,
            )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a store and its client from a URL (see the class docs)."""
        clients, own = AsyncClients.from_url(url, options)
        return cls(clients, **own._asdict())

    @property
    def client(self) -> Any:
        """The client (for the asyncio store built from a URL: the running loop's)."""
        return self._clients.client

    @property
    def _scripts(self) -> dict[str, Any]:
        return self._clients.scripts

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        client = self._clients.lease if name in LEASE_STEPS else None  # None: the main one
        return await self._scripts[name](keys=keys, args=args, client=client)

    # -- the Store protocol ---------------------------------------------------------

    async def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """Take ``key`` if free and no earlier waiter is queued; else queue ``token``
        (at its old place if it was a watcher a release took out of line)."""
        return await self._acquire(key, token, ttl, watching=False)

    async def acquire_watching(self, key: str, token: str, ttl: float) -> int | None:
        """:meth:`acquire` for a caller that waits only to hear of the next release (a
        ``skip_if`` caller): queued as a watcher, which that release takes out of line,
        so it never needs the lock handed to it nor a step to leave."""
        return await self._acquire(key, token, ttl, watching=True)

    async def _acquire(self, key: str, token: str, ttl: float, watching: bool) -> int | None:
        k = layout(self.prefix, key)
        asked = time.monotonic()
        place = self._places.take(token) or ""  # a watcher answered that queues again
        with translate(self, "acquire", key):
            address = self._clients.doorbell().address
            args = [
                token, ms(ttl), self._grace_ms, self._retain_ms, address, self._window_ms,
                int(watching), place,
            ]  # fmt: skip
            reply = await self._run("acquire", [k.base], args)
        since = 0
        if isinstance(reply, list):  # a watcher queued: its place too
            reply, since = reply
        answer = int(reply)
        if answer > 0:
            self._queued.pop(token, None)
            return answer
        self._queued[token] = Queued(key, asked, answer, int(since))
        return None

    async def release(self, key: str, token: str, hand_over: bool = False) -> bool:
        """Free the lock if ``token`` holds it, handing it to the first waiter in line
        (``hand_over``: within a barging window too; its holder is done taking it back).

        A repeated release by the token that released the key returns ``True``, so a
        retry after a lost reply is not a loss (see the class docs).
        """
        k = layout(self.prefix, key)
        self._forget(token)
        with translate(self, "release", key):
            args = [token, self._grace_ms, self._retain_ms, self._window_ms, int(hand_over)]
            return bool(await self._run("release", [k.base], args))

    async def extend(self, key: str, token: str, ttl: float) -> bool:
        """Reset the lease if ``token`` still holds ``key``."""
        k = layout(self.prefix, key)
        with translate(self, "extend", key):
            args = [token, ms(ttl), self._retain_ms]
            return bool(await self._run("extend", [k.lock, k.fence], args))

    async def extend_many(self, leases: Sequence[tuple[str, str, float]]) -> list[bool]:
        """:meth:`extend` for each ``(key, token, ttl)``: one script for all of them (on
        a Cluster, one per slot), so renewing a hundred leases is one round trip."""
        reset = [False] * len(leases)
        for group, keys, args in renewal_calls(self.client, self.prefix, leases, self._retain_ms):
            with translate(self, "extend", leases[group[0]][0]):
                reply = await self._run("extend_many", keys, args)
                for index, ok in zip(group, renewed(reply, len(group)), strict=True):
                    reset[index] = ok
        return reset

    async def owner(self, key: str) -> str | None:
        """The token holding ``key``, or ``None``."""
        with translate(self, "owner", key):
            return text(await self.client.get(layout(self.prefix, key).lock))

    async def wait(self, key: str, timeout: float) -> None:
        """Wait for ``key`` to change hands, at most until the holder's lease ends or
        ``timeout`` (pushed; the lock layer uses :meth:`wait_turn`)."""
        k = layout(self.prefix, key)
        asked = time.monotonic()
        with translate(self, "wait", key):
            left, holder = await self._run("listen", [k.base], [ms(timeout)])
            if int(left) < 0:
                return
            deadline = min(asked + timeout, time.monotonic() + int(left) / 1000 + 0.001)
            look = Look(None, LISTEN, text(holder))

            async def check() -> object:
                return look(await self._run("peek", [k.base], [""]))

            await self._clients.doorbell().wait(Wait(k.bell, LISTEN, None, asked, deadline), check)

    # -- QueuedStore ------------------------------------------------------------------

    async def wait_turn(
        self, key: str, token: str, timeout: float, every_release: bool = False
    ) -> Handover | Dismissed | None:
        """Sleep (holding no connection) until the lock is handed to ``token`` (or,
        with ``every_release``, any release), the holder's lease ends, or ``timeout``;
        keep the place in line every ``waiter_grace / 3`` seconds meanwhile."""
        k = layout(self.prefix, key)
        queued = self._queued.get(token)
        if queued is None:  # not queued by this store: no bound learnt, no request time
            queued = self._queued[token] = Queued(key, time.monotonic(), 0)
        role = WATCH if every_release else TURN
        doorbell = self._clients.doorbell()
        channel, name = k.bell, token
        if not every_release:  # told on the doorbell's own channel, named with the key
            channel, name = doorbell.channel, f"{k.bell} {token}"
        watcher = every_release and queued.since > 0
        spec = Wait(
            channel, role, name, queued.asked, queued.bound(timeout),
            queued.seen + self._refresh_every, self._refresh_every, watcher,
        )  # fmt: skip
        look = Look(token, role, watcher=watcher)

        async def check() -> object:
            return look(await self._run("peek", [k.base], [token]))

        async def refresh() -> float | None:
            if self._keeper.claim(time.monotonic()):
                await self._keep_places()
            return None if queued.lost else max(queued.seen, self._keeper.started)

        with translate(self, "wait", key):
            seen = await doorbell.wait(spec, check, refresh)
        if isinstance(seen, Released):  # a watcher queued before it is out of line
            seen = DISMISSED if watcher and seen.at > queued.since else None
        if seen is DISMISSED:
            self._forget(token)
            self._places.keep(token, queued.since)
        return seen

    async def _keep_places(self) -> None:
        """Keep the places in line of every token this store has queued: one script
        per Cluster slot (see :class:`~.common.Keeper`). A token found no longer in
        line is marked lost, so its waiter tries again."""
        waiting = list(self._queued.copy().items())  # other threads may queue meanwhile
        bases = [base_name(self.prefix, queued.key) for _, queued in waiting]
        sent = time.monotonic()
        for group in by_slot(self.client, bases):
            tokens = [waiting[index][0] for index in group]
            replies = await self._run(
                "refresh", [bases[i] for i in group], [self._grace_ms, *tokens]
            )
            for index, reply in zip(group, replies, strict=True):
                token, queued = waiting[index]
                if int(reply):
                    queued.seen = sent
                    continue
                queued.lost = True
                if self._queued.get(token) is queued:
                    self._queued.pop(token, None)

    async def leave(self, key: str, token: str) -> None:
        """Take ``token`` out of the queue (passing the lock on if it was just handed it)."""
        k = layout(self.prefix, key)
        self._forget(token)
        with translate(self, "leave", key):
            await self._run("leave", [k.base], [token, self._grace_ms, self._retain_ms])

    def _forget(self, token: str) -> None:
        self._queued.pop(token, None)

    # -- kept results (single_flight) ------------------------------------------------

    max_result_bytes = MAX_RESULT_BYTES

    async def put_result(self, key: str, data: bytes, ttl: float) -> None:
        """Keep ``data`` as ``key``'s value for ``ttl`` seconds (``SET ... PX``)."""
        with translate(self, "put_result", key):
            await self.client.set(f"{base_name(self.prefix, key)}:result", data, px=ms(ttl))

    async def get_result(self, key: str) -> bytes | None:
        """``key``'s value, or ``None``; read as bytes even by a client that decodes."""
        name = f"{base_name(self.prefix, key)}:result"
        with translate(self, "get_result", key):
            value = await self.client.execute_command("GET", name, **{NEVER_DECODE: True})
        return None if value is None else bytes(value)

    # -- admin ----------------------------------------------------------------------

    async def force_release(self, key: str) -> bool:
        """Free ``key``'s lock whoever holds it; hand it to the next waiter."""
        k = layout(self.prefix, key)
        with translate(self, "force_release", key):
            args = [self._grace_ms, self._retain_ms]
            return bool(await self._run("force_release", [k.base], args))

    async def iter_locks(self, prefix: str = "") -> AsyncIterator[LockInfo]:
        """The held locks whose key starts with ``prefix`` (SCAN: not a snapshot)."""
        with translate(self, "iter_locks", prefix):
            client = self.client
            found: dict[str, LockInfo] = {}  # by key: SCAN may return a key twice
            async for raw in client.scan_iter(match=f"{self.prefix}:{{*}}:lock", count=500):
                key = key_of(text(raw) or "", self.prefix)
                if key is None or not key.startswith(prefix):
                    continue
                k = layout(self.prefix, key)
                token = await client.get(k.lock)
                left = await client.pttl(k.lock)
                fence = await client.get(k.fence)
                if token is not None:
                    fencing = int(fence) if fence is not None else None
                    expires = left / 1000 if left > 0 else None
                    found[key] = LockInfo(key, text(token) or "", fencing, expires)
        for key in sorted(found):
            yield found[key]

    async def waiting(self, key: str) -> int:
        """The tokens waiting in line for ``key`` (dead ones leave within the grace)."""
        with translate(self, "waiting", key):
            return int(await self.client.zcard(f"{base_name(self.prefix, key)}:queue"))

    # -- lifecycle ------------------------------------------------------------------

    def as_async(self) -> AsyncStore:
        """The async twin of this store, the same on every call (see the class docs;
        the asyncio store's is itself)."""
        return self._clients.twin(self)

    async def aclose(self) -> None:
        """Close the client's connections and the wake-up connection (for the asyncio
        store: the running loop's, or those of the client passed in)."""
        await self._clients.aclose()

    def __repr__(self) -> str:
        where = self._clients.where()
        target = "" if where is None else f"{where!r}, "
        return f"{type(self).__name__}({target}prefix={self.prefix!r})"


__all__ = ["AsyncRedisStore"]
