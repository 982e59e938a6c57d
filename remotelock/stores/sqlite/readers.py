"""Shared (reader) locks for :class:`~remotelock.stores.sqlite.store.SQLiteStore` (a mixin).

The rules are :mod:`remotelock.stores.readers`'. Two tables beside the lock table:

- ``<table>_readers(key, token, fence, expires_at)``, primary key ``(key, token)``: one
  row per held shared lease. Its fencing token comes from the ``_meta`` counter that
  feeds the exclusive locks and the permits, so a key's tokens rise across both kinds,
  and keep rising after the rows are gone.
- ``<table>_marks(key, until)``: a writer refused by readers waits; until ``until`` no
  new reader enters. Written by the refused exclusive acquire, deleted by the
  successful one (and, once run out, by the next shared acquire that sees it).

Every step is one transaction, so the exclusive acquire sees the readers and the
shared acquire the exclusive holder and the mark, with nothing in between. A release
deletes its row; each shared acquire deletes up to :data:`SWEEP_BATCH` reader rows and
marks that ran out (by their indexes on the expiry), so keys no longer used leave no
rows. SQLite pushes nothing: waits poll ``data_version`` like the lock's ``wait``, are
woken at once by a release in this process, and are bounded by the lease (or mark)
that keeps them out.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from ..readers import WRITER_GRACE
from .connections import immediate, live_tokens, renew_row
from .schema import SWEEP_BATCH

if TYPE_CHECKING:
    import contextlib

    from .connections import BusyUntil, Local, Slot


class SQLiteReaders:
    """The :class:`~remotelock.stores.readers.SharedStore` methods of SQLiteStore, and
    the parts of the exclusive steps that must see the readers."""

    if TYPE_CHECKING:  # provided by SQLiteStore
        table: str
        _clock: Callable[[], float]
        _sql_bump: str
        _sql_fence: str
        _local: Local

        def _translate(
            self, step: str, key: str
        ) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

        def _wait_on(self, slot: Slot, busy_until: BusyUntil, timeout: float) -> None: ...
        def _monotonic(self, expires_at: float) -> float | None: ...

    # -- statements (built once per store: the exclusive acquire runs one of them) ------

    @cached_property
    def _sql_probe(self) -> str:
        # The readers' last lease end (live or not) and whether a mark exists: one
        # indexed lookup in each table, in one statement.
        return (
            f"SELECT (SELECT max(expires_at) FROM {self.table}_readers WHERE key = ?1), "
            f"EXISTS (SELECT 1 FROM {self.table}_marks WHERE key = ?1)"
        )

    @cached_property
    def _sql_guard(self) -> str:
        # The exclusive lease's end, the mark's, and whether ?2 holds a live shared lease.
        t = self.table
        return (
            f"SELECT (SELECT expires_at FROM {t} WHERE key = ?1), "
            f"(SELECT until FROM {t}_marks WHERE key = ?1), "
            f"EXISTS (SELECT 1 FROM {t}_readers WHERE key = ?1 AND token = ?2 "
            "AND expires_at > ?3)"
        )

    # -- the SharedStore protocol -------------------------------------------------------

    def acquire_shared(self, key: str, token: str, ttl: float) -> int | None:
        """Take a shared lease of ``key`` (see :class:`~remotelock.stores.readers.SharedStore`)."""
        with self._translate("acquire_shared", key) as conn:
            # A plain read first: a reader kept out is answered without the write lock.
            now = self._clock()
            writer_end, mark, mine = conn.execute(self._sql_guard, (key, token, now)).fetchone()
            if not mine and max(writer_end or 0.0, mark or 0.0) > now:
                return None
            with immediate(conn):
                return self._take_shared(conn, key, token, ttl)

    def _take_shared(
        self, conn: sqlite3.Connection, key: str, token: str, ttl: float
    ) -> int | None:
        r = f"{self.table}_readers"
        now = self._clock()
        self._sweep_shared(conn, now)
        row = conn.execute(
            f"SELECT fence FROM {r} WHERE key = ? AND token = ? AND expires_at > ?",
            (key, token, now),
        ).fetchone()
        if row is not None:  # a retry after a lost reply: the same lease, the same fence
            conn.execute(
                f"UPDATE {r} SET expires_at = ? WHERE key = ? AND token = ?",
                (now + ttl, key, token),
            )
            return int(row[0])
        writer_end, mark, _ = conn.execute(self._sql_guard, (key, token, now)).fetchone()
        if max(writer_end or 0.0, mark or 0.0) > now:
            return None
        if mark is not None:  # it ran out: the writer gave up
            conn.execute(f"DELETE FROM {self.table}_marks WHERE key = ?", (key,))
        conn.execute(self._sql_bump)
        fence = int(conn.execute(self._sql_fence).fetchone()[0])
        conn.execute(
            f"INSERT OR REPLACE INTO {r} VALUES (?, ?, ?, ?)", (key, token, fence, now + ttl)
        )
        return fence

    def _sweep_shared(self, conn: sqlite3.Connection, now: float) -> None:
        """Delete a few reader rows and marks that ran out, of any key: each shared
        acquire adds at most one row, so rows of keys no one uses again never pile up."""
        r, m = f"{self.table}_readers", f"{self.table}_marks"
        conn.execute(
            f"DELETE FROM {r} WHERE (key, token) IN (SELECT key, token FROM {r} "
            f"WHERE expires_at <= ? ORDER BY expires_at LIMIT {SWEEP_BATCH})",
            (now,),
        )
        conn.execute(
            f"DELETE FROM {m} WHERE key IN (SELECT key FROM {m} "
            f"WHERE until <= ? ORDER BY until LIMIT {SWEEP_BATCH})",
            (now,),
        )

    def release_shared(self, key: str, token: str) -> bool:
        """Give back ``token``'s shared lease of ``key``; the last one wakes writers."""
        r = f"{self.table}_readers"
        with self._translate("release_shared", key) as conn, immediate(conn):
            now = self._clock()
            row = conn.execute(
                f"SELECT expires_at FROM {r} WHERE key = ? AND token = ?", (key, token)
            ).fetchone()
            if row is None:
                return False
            conn.execute(f"DELETE FROM {r} WHERE key = ? AND token = ?", (key, token))
            if row[0] <= now:  # its lease had run out: drop the row, report the loss
                return False
            last = not conn.execute(
                f"SELECT 1 FROM {r} WHERE key = ? AND expires_at > ? LIMIT 1", (key, now)
            ).fetchone()
        if last:  # after the commit, so that a woken writer finds the key free
            self._local.wake(("lock", key))
        return True

    def extend_shared(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s shared lease of ``key`` if it still holds it."""
        with self._translate("extend_shared", key) as conn:
            return renew_row(conn, f"{self.table}_readers", key, token, ttl=ttl, now=self._clock())

    def shared_holders(self, key: str) -> list[str]:
        """The tokens holding a shared lease of ``key``, oldest first."""
        with self._translate("shared_holders", key) as conn:
            return live_tokens(conn, f"{self.table}_readers", key, self._clock())

    def wait_shared(self, key: str, timeout: float) -> None:
        """Sleep until a reader may enter ``key`` (here or in another process), or timeout."""
        self._wait_on(("shared", key), lambda conn: self._shared_busy_until(conn, key), timeout)

    # -- what the exclusive steps need ------------------------------------------------

    def _refused_by_readers(self, conn: sqlite3.Connection, key: str, now: float) -> bool:
        """In the exclusive acquire's transaction, on a key no exclusive lease holds:
        whether live readers refuse the writer. If so, mark that it waits (the caller
        commits the mark); if not, clear what readers and writers left of the key."""
        last, marked = conn.execute(self._sql_probe, (key,)).fetchone()
        if last is not None and last > now:
            conn.execute(
                f"INSERT OR REPLACE INTO {self.table}_marks VALUES (?1, max(?2, "
                f"coalesce((SELECT until FROM {self.table}_marks WHERE key = ?1), 0)))",
                (key, last + WRITER_GRACE),
            )
            return True
        if last is not None or marked:  # only rows that ran out, or the writer's mark
            self._drop_shared(conn, key)
        return False

    def _drop_shared(self, conn: sqlite3.Connection, key: str) -> None:
        """Delete ``key``'s reader rows and mark."""
        conn.execute(f"DELETE FROM {self.table}_readers WHERE key = ?", (key,))
        conn.execute(f"DELETE FROM {self.table}_marks WHERE key = ?", (key,))

    def _freed(self, key: str) -> None:
        """The exclusive lease of ``key`` went: wake this process's writers and readers."""
        self._local.wake(("lock", key))
        self._local.wake(("shared", key))

    def _lock_busy_until(self, conn: sqlite3.Connection, key: str) -> float | None:
        """Monotonic time the exclusive lease of ``key`` or its last shared lease ends
        (readers count as holders for a writer's wait), or ``None`` if free."""
        return self._ends(conn, key, f"SELECT max(expires_at) FROM {self.table}_readers")

    def _shared_busy_until(self, conn: sqlite3.Connection, key: str) -> float | None:
        """Monotonic time the exclusive lease of ``key`` or the writers' mark ends, or
        ``None`` if a reader may enter."""
        return self._ends(conn, key, f"SELECT until FROM {self.table}_marks")

    def _ends(self, conn: sqlite3.Connection, key: str, other: str) -> float | None:
        row = conn.execute(
            f"SELECT max(e) FROM (SELECT expires_at AS e FROM {self.table} WHERE key = ?1 "
            f"UNION ALL {other} WHERE key = ?1)",
            (key,),
        ).fetchone()
        return None if row[0] is None else self._monotonic(float(row[0]))


__all__ = ["SQLiteReaders"]
