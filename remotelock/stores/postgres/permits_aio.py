"""Counted permits for the PostgreSQL stores: the mixin of AsyncPostgresStore.

Written once, for asyncio; ``tools/unasync.py`` writes the sync mixin, in
:mod:`remotelock.stores.postgres.permits`, from it. Each step is one statement from
:mod:`remotelock.stores.postgres.permit_sql` (see ``ACQUIRE_PERMIT`` for why a key's
permits live in one row). A refused acquire asks one more question, only on that
path: were all permits taken, or do their holders use another limit
(:class:`~remotelock.errors.LimitConflict`)? Releases notify on the table's channel,
so waiters wake as they do for locks. The rules of the lock steps hold here too: an
acquire that runs out of time waiting for the row lock reports all permits taken
(contention, not an outage), and a repeated release by the token that gave its
permit back returns ``True`` (a retry after a lost reply is not a loss).
"""

# The generated module's first line names its source and runs past the line limit
# (in the source the rule is unused, hence RUF100).

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, TypeVar

from ..listing import PermitInfo
from . import sql as q
from .busy import acquire_params
from .permit_sql import busy_for, refused
from .queries_aio import Row, fetch_all, fetch_one, fetch_or_busy
from .waiting import pause

if TYPE_CHECKING:
    from .connections_aio import Run
    from .listener_aio import AsyncListener
    from .sql import Statements

T = TypeVar("T")


class AsyncPostgresPermits:
    """The counted permits of AsyncPostgresStore (:class:`~remotelock.stores.base.PermitStore`)."""

    if TYPE_CHECKING:  # provided by AsyncPostgresStore
        _sql: Statements
        _listener: AsyncListener
        listen: bool
        timeout: float
        retention: float

        async def _step(self, step: str, key: str, run: Run[T]) -> T: ...

        async def _changed(self, step: str, key: str, params: dict[str, Any]) -> bool: ...

        async def _tokens(self, step: str, key: str) -> list[str]: ...

    async def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """Take one of ``limit`` permits of ``key`` (one statement; see :class:`PermitStore`)."""
        params = acquire_params(
            key, token, ttl, self.timeout, limit=limit, retention=self.retention
        )
        statement = self._sql.acquire_permit
        self._listener.tried(key, q.permit_payload)  # a woken waiter used its wake-up
        row = await self._step(
            "acquire_permit", key, lambda c: fetch_or_busy(c, statement, params)
        )
        if row is not None:
            return int(row[0])
        refused(await self._permit_state("acquire_permit", key), key, limit)
        return None

    async def release_permit(self, key: str, token: str) -> bool:
        """Give back ``token``'s permit of ``key`` and notify its waiters; ``True`` too if
        ``token`` gave it back before (a retried release)."""
        params = {
            "key": key,
            "token": token,
            "channel": self._sql.channel,
            "payload": q.permit_payload(key),
            "retention": self.retention,
        }
        return await self._changed("release_permit", key, params)

    async def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s permit of ``key`` if it still holds it."""
        return await self._changed(
            "extend_permit", key, {"key": key, "token": token, "ttl": float(ttl)}
        )

    async def permit_holders(self, key: str) -> list[str]:
        """The tokens holding a permit of ``key``, oldest first."""
        return await self._tokens("permit_holders", key)

    async def wait_permit(self, key: str, timeout: float) -> None:
        """Sleep until a release of a permit of ``key`` is notified, one runs out, or
        ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._listener.waiter(q.permit_payload(key), self.listen) as woken:
            left = busy_for(await self._permit_state("wait_permit", key))
            if left is not None:
                await woken.wait(pause(left, woken.listening, deadline))

    async def iter_permits(self, prefix: str = "") -> AsyncIterator[PermitInfo]:
        """Every unexpired permit holder of the keys starting with ``prefix`` (one query)."""
        params = {"prefix": prefix}
        statement = self._sql.list_permits
        rows = await self._step("iter_permits", prefix, lambda c: fetch_all(c, statement, params))
        for key, limit, token, fence, left in rows:
            yield PermitInfo(str(key), int(limit), str(token), int(fence), float(left))

    async def _permit_state(self, step: str, key: str) -> Row | None:
        params = {"key": key}
        statement = self._sql.permit_state
        return await self._step(step, key, lambda c: fetch_one(c, statement, params))


__all__ = ["AsyncPostgresPermits"]
