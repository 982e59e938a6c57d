"""AsyncRedisStore: the asyncio twin of :class:`~remotelock.stores.redis.store.RedisStore`.

Same scripts, same key layout, same rules; ``redis.asyncio`` clients. A store built
from a URL keeps one client per event loop, because asyncio connections belong to the
loop that opened them (``asyncio.run`` twice must not share a connection pool). For the
same reason wake-ups come through one subscriber connection per event loop, read by a
task (see :mod:`remotelock.stores.redis.doorbell_aio`).
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex

from ...errors import StoreConfigError
from ..base import Handover, LockInfo
from .bells import LISTEN, TURN, WATCH, Wait
from .clients import build_client, check_options, make_client, parse_url
from .common import CAPABILITIES, Queued, key_of, layout, ms, text, translate
from .doorbell import Look
from .doorbell_aio import AsyncDoorbell
from .lua import SCRIPTS
from .permits import (
    Refused,
    conflict,
    listened,
    permit_layout,
    permit_reply,
    permit_wait,
    vacancy,
)

if TYPE_CHECKING:
    from typing_extensions import Self


class _Bound:
    """A client and its registered scripts (scripts belong to the client they ran on)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.scripts = {name: client.register_script(src) for name, src in SCRIPTS.items()}


class AsyncRedisStore:
    """Async Redis lock store; see :class:`~remotelock.stores.redis.store.RedisStore`.

    Build it from a URL (``AsyncRedisStore.from_url(url)``, the async twin of a
    URL-built ``RedisStore``) or from a ``redis.asyncio`` client of your own.
    """

    capabilities: frozenset[str] = CAPABILITIES

    def __init__(
        self, client: Any = None, *, prefix: str = "remotelock", waiter_grace: float = 3.0
    ) -> None:
        if isinstance(client, (str, bytes)):
            raise StoreConfigError(
                "AsyncRedisStore takes a client; for a URL use AsyncRedisStore.from_url"
            )
        options = check_options(prefix, waiter_grace)
        self.prefix = options.prefix
        self.waiter_grace = options.waiter_grace
        self._grace_ms = ms(options.waiter_grace)
        self._queued: dict[str, Queued] = {}
        self._refresh_every = options.waiter_grace / 3
        self._permit_free_at: dict[str, Refused] = {}
        self._doorbells: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncDoorbell] = (
            weakref.WeakKeyDictionary()
        )
        self._given = _Bound(client) if client is not None else None
        self._factory: tuple[str, dict[str, Any]] | None = None
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bound] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A store whose clients (one per event loop) are built from ``url``."""
        client_url, own, kwargs = parse_url(url, dict(options), asynchronous=True)
        build_client(client_url, kwargs, asynchronous=True)  # fail now, not on first use
        store = cls(prefix=own.prefix, waiter_grace=own.waiter_grace)
        store._factory = (client_url, kwargs)
        return store

    def _bound(self) -> _Bound:
        if self._given is not None:
            return self._given
        loop = asyncio.get_running_loop()
        bound = self._per_loop.get(loop)
        if bound is None:
            assert self._factory is not None
            url, kwargs = self._factory
            bound = self._per_loop[loop] = _Bound(
                make_client(url, dict(kwargs), asynchronous=True)
            )
        return bound

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._bound().scripts[name](keys=keys, args=args)

    def _doorbell(self) -> AsyncDoorbell:
        """The wake-ups of the running event loop (one subscriber connection each)."""
        loop = asyncio.get_running_loop()
        doorbell = self._doorbells.get(loop)
        if doorbell is None:
            doorbell = self._doorbells[loop] = AsyncDoorbell(self._bound().client, self.prefix)
        return doorbell

    @property
    def client(self) -> Any:
        """The client for the running event loop."""
        return self._bound().client

    async def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """See :meth:`RedisStore.acquire`."""
        k = layout(self.prefix, key)
        asked = time.monotonic()
        with translate(self, "acquire", key):
            reply = int(await self._run("acquire", [k.base], [token, ms(ttl), self._grace_ms]))
        if reply > 0:
            self._queued.pop(token, None)
            return reply
        self._queued[token] = Queued(asked, reply)
        return None

    async def release(self, key: str, token: str) -> bool:
        """See :meth:`RedisStore.release`."""
        k = layout(self.prefix, key)
        self._forget(token)
        with translate(self, "release", key):
            return bool(await self._run("release", [k.base], [token, self._grace_ms]))

    async def extend(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`RedisStore.extend`."""
        lock = layout(self.prefix, key).lock
        with translate(self, "extend", key):
            return bool(await self._run("extend", [lock], [token, ms(ttl)]))

    async def owner(self, key: str) -> str | None:
        """See :meth:`RedisStore.owner`."""
        with translate(self, "owner", key):
            return text(await self.client.get(layout(self.prefix, key).lock))

    async def wait(self, key: str, timeout: float) -> None:
        """See :meth:`RedisStore.wait`."""
        k = layout(self.prefix, key)
        asked = time.monotonic()
        with translate(self, "wait", key):
            left, holder = await self._run("listen", [k.base], [ms(timeout)])
            if int(left) < 0:
                return
            deadline = min(asked + timeout, time.monotonic() + int(left) / 1000 + 0.001)
            look = Look(None, LISTEN, text(holder))

            async def check() -> object:
                return look(await self._run("peek", [k.base], []))

            await self._doorbell().wait(Wait(k.bell, LISTEN, None, asked, deadline), check)

    async def wait_turn(
        self, key: str, token: str, timeout: float, every_release: bool = False
    ) -> Handover | None:
        """See :meth:`RedisStore.wait_turn`."""
        k = layout(self.prefix, key)
        queued = self._queued.get(token)
        if queued is None:  # not queued by this store: no bound learnt, no request time
            queued = Queued(time.monotonic(), 0)
        role = WATCH if every_release else TURN
        spec = Wait(
            k.bell, role, token, queued.asked, queued.bound(timeout),
            queued.seen + self._refresh_every, self._refresh_every,
        )  # fmt: skip
        look = Look(token, role)

        async def check() -> object:
            return look(await self._run("peek", [k.base], []))

        async def refresh() -> bool:
            sent = time.monotonic()
            still = bool(await self._run("refresh", [k.base], [token, self._grace_ms]))
            queued.seen = sent
            return still

        with translate(self, "wait", key):
            return await self._doorbell().wait(spec, check, refresh)

    async def leave(self, key: str, token: str) -> None:
        """See :meth:`RedisStore.leave`."""
        k = layout(self.prefix, key)
        self._forget(token)
        with translate(self, "leave", key):
            await self._run("leave", [k.base], [token, self._grace_ms])

    def _forget(self, token: str) -> None:
        self._queued.pop(token, None)

    # -- counted permits (see RedisStore) ------------------------------------------

    async def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """See :meth:`RedisStore.acquire_permit`."""
        k = permit_layout(self.prefix, key)
        asked = time.monotonic()
        with translate(self, "acquire_permit", key):
            try:
                reply = await self._run("acquire_permit", k.acquire_keys, [token, ms(ttl), limit])
            except rex.ResponseError as exc:
                limit_error = conflict(exc, key, limit)
                if limit_error is None:
                    raise
                raise limit_error from None
        return permit_reply(int(reply), key, asked, limit, self._permit_free_at)

    async def release_permit(self, key: str, token: str) -> bool:
        """See :meth:`RedisStore.release_permit`."""
        k = permit_layout(self.prefix, key)
        with translate(self, "release_permit", key):
            return bool(await self._run("release_permit", k.release_keys, [token, k.bell]))

    async def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`RedisStore.extend_permit`."""
        k = permit_layout(self.prefix, key)
        with translate(self, "extend_permit", key):
            keys = [k.permits, k.fences, k.limit]
            return bool(await self._run("extend_permit", keys, [token, ms(ttl)]))

    async def permit_holders(self, key: str) -> list[str]:
        """See :meth:`RedisStore.permit_holders`."""
        permits = permit_layout(self.prefix, key).permits
        with translate(self, "permit_holders", key):
            holders = await self._run("permit_holders", [permits], [])
        return [text(token) or "" for token in holders]

    async def wait_permit(self, key: str, timeout: float) -> None:
        """See :meth:`RedisStore.wait_permit`."""
        k = permit_layout(self.prefix, key)
        until = time.monotonic() + timeout
        refused = self._permit_free_at.pop(key, None)
        with translate(self, "wait_permit", key):
            if refused is None:  # no refusal to learn from: ask to hear releases
                asked = time.monotonic()
                reply = await self._run("listen_permit", k.listen_keys, [ms(timeout)])
                refused = listened(asked, reply)
                if refused is None:
                    return
            limit = refused.limit

            async def check() -> object:
                return vacancy(await self._run("permit_holders", [k.permits], []), limit)

            await self._doorbell().wait(permit_wait(k, refused, until), check)

    async def force_release(self, key: str) -> bool:
        """See :meth:`RedisStore.force_release`."""
        k = layout(self.prefix, key)
        with translate(self, "force_release", key):
            return bool(await self._run("force_release", [k.base], [self._grace_ms]))

    async def iter_locks(self, prefix: str = "") -> AsyncIterator[LockInfo]:
        """See :meth:`RedisStore.iter_locks`."""
        with translate(self, "iter_locks", prefix):
            client = self.client
            found = []
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
                    found.append(LockInfo(key, text(token) or "", fencing, expires))
        for info in sorted(found, key=lambda info: info.key):
            yield info

    async def aclose(self) -> None:
        """Close the client of the running loop (or the one you passed in), and the
        loop's wake-up connection."""
        doorbell = self._doorbells.pop(asyncio.get_running_loop(), None)
        if doorbell is not None:
            await doorbell.aclose()
        bound = self._given or self._per_loop.pop(asyncio.get_running_loop(), None)
        if bound is not None:
            await bound.client.aclose()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(prefix={self.prefix!r})"


__all__ = ["AsyncRedisStore"]
