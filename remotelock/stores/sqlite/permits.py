"""Counted permits for :class:`~remotelock.stores.sqlite.store.SQLiteStore` (a mixin).

Table ``<table>_permits(key, token, fence, expires_at, lim)``, one row per held permit,
primary key ``(key, token)``. Fencing tokens come from the same counter as the locks',
so they strictly increase per key across all its permits. Each step is one short
transaction, like the lock steps; a full permit set is answered by a plain read,
without taking the write lock. A release deletes the permit's row, and an acquire up
to :data:`SWEEP_BATCH` rows of permits that ran out (of any key), so keys no longer
used leave no rows.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ...errors import LimitConflict
from ..listing import PermitInfo
from .connections import live_tokens, renew_row
from .schema import SWEEP_BATCH

if TYPE_CHECKING:
    import contextlib

    from .connections import BusyUntil, Local, Slot


class SQLitePermits:
    """The :class:`~remotelock.stores.base.PermitStore` methods of SQLiteStore."""

    if TYPE_CHECKING:  # provided by SQLiteStore
        table: str
        _clock: Callable[[], float]
        _sql_bump: str
        _sql_fence: str

        def _translate(
            self, step: str, key: str
        ) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

        _local: Local

        def _wait_on(self, slot: Slot, busy_until: BusyUntil, timeout: float) -> None: ...
        def _monotonic(self, expires_at: float) -> float | None: ...

    def _permit_table(self) -> str:
        return f"{self.table}_permits"

    def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """Take one of ``limit`` permits of ``key`` (see :class:`PermitStore`)."""
        t = self._permit_table()
        with self._translate("acquire_permit", key) as conn:
            count, held_limit, mine = conn.execute(
                f"SELECT count(*), max(lim), sum(token = ?) FROM {t} "
                "WHERE key = ? AND expires_at > ?",
                (token, key, self._clock()),
            ).fetchone()
            if count and not mine:
                if held_limit != limit:
                    raise LimitConflict(key, int(held_limit), limit)
                if count >= limit:
                    return None  # full: answered without the write lock
            conn.execute("BEGIN IMMEDIATE")
            try:
                fence = self._take_permit(conn, key, token, ttl, limit)
                conn.execute("COMMIT")
                return fence
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    def _take_permit(
        self, conn: sqlite3.Connection, key: str, token: str, ttl: float, limit: int
    ) -> int | None:
        t = self._permit_table()
        now = self._clock()
        conn.execute(f"DELETE FROM {t} WHERE key = ? AND expires_at <= ?", (key, now))
        conn.execute(
            f"DELETE FROM {t} WHERE (key, token) IN (SELECT key, token FROM {t} "
            f"WHERE expires_at <= ? ORDER BY expires_at LIMIT {SWEEP_BATCH})",
            (now,),
        )
        rows = conn.execute(f"SELECT token, fence, lim FROM {t} WHERE key = ?", (key,)).fetchall()
        for held_token, fence, _lim in rows:
            if held_token == token:
                conn.execute(
                    f"UPDATE {t} SET expires_at = ? WHERE key = ? AND token = ?",
                    (now + ttl, key, token),
                )
                return int(fence)
        if rows and rows[0][2] != limit:
            raise LimitConflict(key, int(rows[0][2]), limit)
        if len(rows) >= limit:
            return None
        conn.execute(self._sql_bump)
        fence = int(conn.execute(self._sql_fence).fetchone()[0])
        conn.execute(
            f"INSERT INTO {t} VALUES (?, ?, ?, ?, ?)", (key, token, fence, now + ttl, limit)
        )
        return fence

    def release_permit(self, key: str, token: str) -> bool:
        """Give back ``token``'s permit of ``key``."""
        t = self._permit_table()
        with self._translate("release_permit", key) as conn:
            released = conn.execute(
                f"DELETE FROM {t} WHERE key = ? AND token = ? AND expires_at > ?",
                (key, token, self._clock()),
            ).rowcount
            if not released:  # its lease had run out: drop the row, report the loss
                conn.execute(f"DELETE FROM {t} WHERE key = ? AND token = ?", (key, token))
            self._local.wake(("permit", key))
            return bool(released)

    def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s permit of ``key`` if it still holds it."""
        with self._translate("extend_permit", key) as conn:
            return renew_row(conn, self._permit_table(), key, token, ttl=ttl, now=self._clock())

    def permit_holders(self, key: str) -> list[str]:
        """The tokens holding a permit of ``key``, oldest first."""
        with self._translate("permit_holders", key) as conn:
            return live_tokens(conn, self._permit_table(), key, self._clock())

    def iter_permits(self, prefix: str = "") -> Iterator[PermitInfo]:
        """Every unexpired permit holder of the keys starting with ``prefix``."""
        with self._translate("iter_permits", prefix) as conn:
            now = self._clock()
            rows = conn.execute(
                f"SELECT key, lim, token, fence, expires_at FROM {self._permit_table()} "
                "WHERE expires_at > ? AND substr(key, 1, ?) = ? ORDER BY key, fence",
                (now, len(prefix), prefix),
            ).fetchall()
        return iter(
            [PermitInfo(r[0], int(r[1]), r[2], int(r[3]), float(r[4]) - now) for r in rows]
        )

    def wait_permit(self, key: str, timeout: float) -> None:
        """Sleep until a permit of ``key`` frees (here or in another process), or timeout."""
        self._wait_on(("permit", key), lambda conn: self._permits_busy_until(conn, key), timeout)

    def _permits_busy_until(self, conn: sqlite3.Connection, key: str) -> float | None:
        """When the first permit of a full set runs out (monotonic), or ``None`` if one is free."""
        count, limit, soonest = conn.execute(
            f"SELECT count(*), max(lim), min(expires_at) FROM {self._permit_table()} "
            "WHERE key = ? AND expires_at > ?",
            (key, self._clock()),
        ).fetchone()
        if not count or count < limit:
            return None
        return self._monotonic(float(soonest))


__all__ = ["SQLitePermits"]
