"""Counted permits for the PostgreSQL stores (mixins for the sync and async classes).

Each step is one statement from :mod:`remotelock.stores.postgres.sql` (see
``ACQUIRE_PERMIT`` for why a key's permits live in one row). A refused acquire asks one
more question, only on that path: were all permits taken, or do their holders use
another limit (:class:`~remotelock.errors.LimitConflict`)? Releases notify on the
table's channel, so waiters wake as they do for locks. The rules of the lock steps
hold here too: an acquire that runs out of time waiting for the row lock reports all
permits taken (contention, not an outage), and a repeated release by the token that
gave its permit back returns ``True`` (a retry after a lost reply is not a loss).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import LimitConflict
from . import sql as q
from .busy import acquire_params, afetch_or_busy, fetch_or_busy

if TYPE_CHECKING:
    import asyncio

    from .sql import Statements

T = TypeVar("T")

# Without a listening connection, waiters look again this often.
_POLL = 0.05


def _refused(state: Any, key: str, limit: int) -> float | None:
    """After a refused acquire: seconds until a permit runs out, or ``LimitConflict``."""
    if state is None:
        return None
    live, held_limit, first_ends_in = state
    if live and held_limit != limit:
        raise LimitConflict(key, int(held_limit), limit)
    return None if first_ends_in is None else float(first_ends_in)


def _busy_for(state: Any) -> float | None:
    """Seconds until a permit of a full set runs out, or ``None`` if one is free."""
    if state is None:
        return None
    live, limit, first_ends_in = state
    if not live or live < limit or first_ends_in is None:
        return None
    return float(first_ends_in)


def _params(key: str, token: str, **more: Any) -> dict[str, Any]:
    return {"key": key, "token": token, **more}


class PostgresPermits:
    """The :class:`~remotelock.stores.base.PermitStore` methods of PostgresStore."""

    if TYPE_CHECKING:  # provided by PostgresStore
        _sql: Statements
        listen: bool
        timeout: float
        _listener: Any

        def _step(self, step: str, key: str, run: Callable[[Any], T]) -> T: ...

    def _permit_state(self, step: str, key: str) -> Any:
        params = {"key": key}
        return self._step(
            step, key, lambda c: c.execute(self._sql.permit_state, params).fetchone()
        )

    def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """Take one of ``limit`` permits of ``key`` (one statement; see :class:`PermitStore`)."""
        params = acquire_params(key, token, ttl, self.timeout, limit=limit)
        statement = self._sql.acquire_permit
        row = self._step("acquire_permit", key, lambda c: fetch_or_busy(c, statement, params))
        if row is not None:
            return int(row[0])
        _refused(self._permit_state("acquire_permit", key), key, limit)
        return None

    def release_permit(self, key: str, token: str) -> bool:
        """Give back ``token``'s permit of ``key`` and notify its waiters; ``True`` too if
        ``token`` gave it back before (a retried release)."""
        params = _params(key, token, channel=self._sql.channel, payload=q.permit_payload(key))
        return self._rows("release_permit", key, self._sql.release_permit, params) > 0

    def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s permit of ``key`` if it still holds it."""
        params = _params(key, token, ttl=float(ttl))
        return self._rows("extend_permit", key, self._sql.extend_permit, params) > 0

    def _rows(self, step: str, key: str, statement: Any, params: dict[str, Any]) -> int:
        return int(self._step(step, key, lambda c: c.execute(statement, params).rowcount))

    def permit_holders(self, key: str) -> list[str]:
        """The tokens holding a permit of ``key``, oldest first."""
        params = {"key": key}
        rows = self._step(
            "permit_holders", key, lambda c: c.execute(self._sql.permit_holders, params).fetchall()
        )
        return [str(row[0]) for row in rows]

    def wait_permit(self, key: str, timeout: float) -> None:
        """Sleep until a release of a permit of ``key`` is notified, one runs out, or
        ``timeout``."""
        deadline = time.monotonic() + timeout
        topic = q.permit_payload(key)
        event = threading.Event()
        listening = self.listen and self._listener.subscribe(topic, event)
        try:
            busy_for = _busy_for(self._permit_state("wait_permit", key))
            if busy_for is None:
                return
            pause = busy_for + 0.001 if listening else min(busy_for + 0.001, _POLL)
            event.wait(max(0.0, min(deadline - time.monotonic(), pause)))
        finally:
            if self.listen:
                self._listener.unsubscribe(topic, event)


class AsyncPostgresPermits:
    """The :class:`~remotelock.stores.base.AsyncPermitStore` methods of AsyncPostgresStore."""

    if TYPE_CHECKING:  # provided by AsyncPostgresStore
        _sql: Statements
        listen: bool
        timeout: float

        async def _step(self, step: str, key: str, run: Callable[[Any], Awaitable[T]]) -> T: ...
        def _state(self) -> Any: ...
        def _subscribe(self, state: Any, topic: str, woken: asyncio.Future[None]) -> bool: ...

    async def _fetch(self, step: str, key: str, statement: Any, params: dict[str, Any]) -> Any:
        async def run(conn: Any) -> Any:
            return await (await conn.execute(statement, params)).fetchone()

        return await self._step(step, key, run)

    async def _count(self, step: str, key: str, statement: Any, params: dict[str, Any]) -> int:
        async def run(conn: Any) -> int:
            return int((await conn.execute(statement, params)).rowcount)

        return await self._step(step, key, run)

    async def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """See :meth:`PostgresStore.acquire_permit`."""
        params = acquire_params(key, token, ttl, self.timeout, limit=limit)
        statement = self._sql.acquire_permit
        row = await self._step(
            "acquire_permit", key, lambda c: afetch_or_busy(c, statement, params)
        )
        if row is not None:
            return int(row[0])
        state = await self._fetch("acquire_permit", key, self._sql.permit_state, {"key": key})
        _refused(state, key, limit)
        return None

    async def release_permit(self, key: str, token: str) -> bool:
        """See :meth:`PostgresStore.release_permit`."""
        params = _params(key, token, channel=self._sql.channel, payload=q.permit_payload(key))
        return await self._count("release_permit", key, self._sql.release_permit, params) > 0

    async def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`PostgresStore.extend_permit`."""
        params = _params(key, token, ttl=float(ttl))
        return await self._count("extend_permit", key, self._sql.extend_permit, params) > 0

    async def permit_holders(self, key: str) -> list[str]:
        """See :meth:`PostgresStore.permit_holders`."""

        async def run(conn: Any) -> list[Any]:
            cursor = await conn.execute(self._sql.permit_holders, {"key": key})
            return list(await cursor.fetchall())

        return [str(row[0]) for row in await self._step("permit_holders", key, run)]

    async def wait_permit(self, key: str, timeout: float) -> None:
        """See :meth:`PostgresStore.wait_permit`."""
        import asyncio

        deadline = time.monotonic() + timeout
        state = self._state()
        topic = q.permit_payload(key)
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        listening = self.listen and self._subscribe(state, topic, woken)
        try:
            row = await self._fetch("wait_permit", key, self._sql.permit_state, {"key": key})
            busy_for = _busy_for(row)
            if busy_for is None:
                return
            pause = busy_for + 0.001 if listening else min(busy_for + 0.001, _POLL)
            await asyncio.wait((woken,), timeout=max(0.0, min(deadline - time.monotonic(), pause)))
        finally:
            futures = state.waiters.get(topic)
            if futures is not None:
                futures.discard(woken)
                if not futures:
                    del state.waiters[topic]


__all__ = ["AsyncPostgresPermits", "PostgresPermits"]
