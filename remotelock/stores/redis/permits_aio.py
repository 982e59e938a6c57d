"""Counted permits (``limit=N``) of the Redis stores: a mixin of the store class.

Written once, in its asyncio form (``permits_aio.py``); the sync mixin
(``permits.py``) is generated from it by ``tools/unasync.py``. Each step is one script
from :mod:`remotelock.stores.redis.permit_lua`; the replies are read in
:mod:`remotelock.stores.redis.common`. A release rings the key's bell (``p``) while a
refused caller may wait, and each process wakes one local permit waiter per freed
permit (see :mod:`remotelock.stores.redis.bells`). A waiter never sleeps past the
moment the first held permit runs out, learnt from its last refused attempt.
"""

# The generated module's first line names its source and runs past the line limit
# (in the source the rule is unused, hence RUF100).

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex

from ..listing import PermitInfo
from .common import (
    Refused,
    conflict,
    key_of,
    listened,
    ms,
    permit_layout,
    permit_reply,
    permit_wait,
    text,
    translate,
    vacancy,
)

if TYPE_CHECKING:
    from .connect_aio import AsyncClients


class AsyncRedisPermits:
    """The :class:`~remotelock.stores.base.PermitStore` methods of the Redis store."""

    if TYPE_CHECKING:  # provided by the store class
        prefix: str
        _clients: AsyncClients
        _permit_free_at: dict[str, Refused]  # key -> its last refusal here
        _retain_ms: int  # how long a key's counter outlives its last permit

        async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any: ...

    async def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """Take one of ``limit`` permits of ``key`` (see :class:`PermitStore`)."""
        k = permit_layout(self.prefix, key)
        asked = time.monotonic()
        with translate(self, "acquire_permit", key):
            try:
                args = [token, ms(ttl), limit, self._retain_ms]
                reply = await self._run("acquire_permit", k.acquire_keys, args)
            except rex.ResponseError as exc:
                limit_error = conflict(exc, key, limit)
                if limit_error is None:
                    raise
                raise limit_error from None
        return permit_reply(int(reply), key, asked, limit, self._permit_free_at)

    async def release_permit(self, key: str, token: str) -> bool:
        """Give back ``token``'s permit of ``key`` (waking one waiter). A repeated
        release by the same token returns ``True``: a retry after a lost reply."""
        k = permit_layout(self.prefix, key)
        with translate(self, "release_permit", key):
            return bool(await self._run("release_permit", k.release_keys, [token, k.bell]))

    async def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s permit of ``key`` if it still holds it."""
        k = permit_layout(self.prefix, key)
        with translate(self, "extend_permit", key):
            args = [token, ms(ttl), self._retain_ms]
            return bool(await self._run("extend_permit", k.extend_keys, args))

    async def permit_holders(self, key: str) -> list[str]:
        """The tokens holding a permit of ``key``."""
        permits = permit_layout(self.prefix, key).permits
        with translate(self, "permit_holders", key):
            holders = await self._run("permit_holders", [permits], [])
        return [text(token) or "" for token in holders]

    async def wait_permit(self, key: str, timeout: float) -> None:
        """Sleep (holding no connection) until a release frees a permit, the first
        permit runs out, or ``timeout``."""
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

            await self._clients.doorbell().wait(permit_wait(k, refused, until), check)

    async def iter_permits(self, prefix: str = "") -> AsyncIterator[PermitInfo]:
        """Every unexpired permit holder of the keys starting with ``prefix`` (SCAN: not
        a snapshot)."""
        with translate(self, "iter_permits", prefix):
            client = self._clients.client
            seconds, micros = await client.time()
            now = int(seconds) * 1000 + int(micros) // 1000
            keys = set()
            async for raw in client.scan_iter(match=f"{self.prefix}:{{*}}:permits", count=500):
                key = key_of(text(raw) or "", self.prefix, "permits")
                if key is not None and key.startswith(prefix):
                    keys.add(key)
            for key in sorted(keys):
                k = permit_layout(self.prefix, key)
                ends = await client.zrangebyscore(k.permits, f"({now}", "+inf", withscores=True)
                fences = {text(t): int(f) for t, f in (await client.hgetall(k.fences)).items()}
                limit = int(await client.get(k.limit) or 0)
                held = sorted((fences.get(text(t)) or 0, text(t) or "", end) for t, end in ends)
                for fence, token, end in held:
                    yield PermitInfo(key, limit, token, fence or None, (float(end) - now) / 1000)


__all__ = ["AsyncRedisPermits"]
