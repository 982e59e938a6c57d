"""Shared (reader) leases for the PostgreSQL stores: the mixin of AsyncPostgresStore.

Written once, for asyncio; ``tools/unasync.py`` writes the sync mixin, in
:mod:`remotelock.stores.postgres.readers`, from it. Each step is one statement from
:mod:`remotelock.stores.postgres.reader_sql` (see there why a key's readers live in its
lease row, beside the exclusive lease). The rules of the lock steps hold here too: an
acquire that runs out of time waiting for the row lock reports the key busy
(contention, not an outage), a repeated release by the token that gave its lease back
returns ``True`` (a retry after a lost reply is not a loss), and releases and renewals
may use the connection kept back for them.

Readers wait on the key's own NOTIFY payload, as writers do, but every waiting reader
of the process wakes on each notification (a writer's release lets them all in), and
a reader's try never uses up the one wake-up a waiting writer is owed.
"""

# The generated module's first line names its source and runs past the line limit
# (in the source the rule is unused, hence RUF100).

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from . import sql as q
from .busy import acquire_params
from .queries_aio import fetch_or_busy

if TYPE_CHECKING:
    from .connections_aio import Run
    from .listener_aio import AsyncListener
    from .sql import Statements

T = TypeVar("T")


class AsyncPostgresReaders:
    """The shared leases of AsyncPostgresStore
    (:class:`~remotelock.stores.readers.AsyncSharedStore`)."""

    if TYPE_CHECKING:  # provided by AsyncPostgresStore
        _sql: Statements
        _listener: AsyncListener
        listen: bool
        timeout: float
        retention: float

        async def _step(self, step: str, key: str, run: Run[T]) -> T: ...

        async def _changed(self, step: str, key: str, params: dict[str, Any]) -> bool: ...

        async def _tokens(self, step: str, key: str) -> list[str]: ...

        async def _wait_for(
            self, step: str, key: str, statement: Any, timeout: float, every: bool = False
        ) -> None: ...

    async def acquire_shared(self, key: str, token: str, ttl: float) -> int | None:
        """Take a shared lease of ``key`` unless an exclusive lease holds it or a writer
        waits for it (one statement; see :class:`~remotelock.stores.readers.SharedStore`)."""
        params = acquire_params(key, token, ttl, self.timeout, retention=self.retention)
        statement = self._sql.acquire_shared
        row = await self._step(
            "acquire_shared", key, lambda c: fetch_or_busy(c, statement, params)
        )
        return None if row is None else int(row[0])

    async def release_shared(self, key: str, token: str) -> bool:
        """Give back ``token``'s shared lease of ``key`` (the last one notifies the
        waiting writers); ``True`` too if ``token`` gave it back before (a retry)."""
        params = {
            "key": key,
            "token": token,
            "channel": self._sql.channel,
            "payload": q.payload(key),
            "retention": self.retention,
        }
        return await self._changed("release_shared", key, params)

    async def extend_shared(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s shared lease of ``key`` if it still holds it."""
        return await self._changed(
            "extend_shared", key, {"key": key, "token": token, "ttl": float(ttl)}
        )

    async def shared_holders(self, key: str) -> list[str]:
        """The tokens holding a shared lease of ``key``, oldest first."""
        return await self._tokens("shared_holders", key)

    async def wait_shared(self, key: str, timeout: float) -> None:
        """Sleep until the exclusive release of ``key`` is notified, its lease and the
        writer's mark end, or ``timeout``."""
        statement = self._sql.reader_busy_for
        await self._wait_for("wait_shared", key, statement, timeout, every=True)


__all__ = ["AsyncPostgresReaders"]
