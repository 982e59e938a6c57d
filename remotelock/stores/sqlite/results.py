"""Kept results for :class:`~remotelock.stores.sqlite.store.SQLiteStore` (a mixin).

Table ``<table>_results(key, data, expires_at)``: one row per kept value, its expiry on
the store's clock (wall time, shared by every process using the file). A read past the
expiry answers ``None``; every put deletes up to :data:`SWEEP_BATCH` rows that ran out,
so values nobody reads again leave no rows behind.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from .schema import SWEEP_BATCH

if TYPE_CHECKING:
    import contextlib

MAX_RESULT_BYTES: Final = 64 * 1024 * 1024
"""Longest value kept (SQLite takes up to a gigabyte, but each put is one write of it)."""


class SQLiteResults:
    """The :class:`~remotelock.stores.base.ResultStore` methods of SQLiteStore."""

    max_result_bytes = MAX_RESULT_BYTES

    if TYPE_CHECKING:  # provided by SQLiteStore
        table: str
        _clock: Callable[[], float]

        def _translate(
            self, step: str, key: str
        ) -> contextlib.AbstractContextManager[sqlite3.Connection]: ...

    def put_result(self, key: str, data: bytes, ttl: float) -> None:
        """Keep ``data`` as ``key``'s value for ``ttl`` seconds."""
        t = f"{self.table}_results"
        with self._translate("put_result", key) as conn:
            now = self._clock()
            conn.execute(
                f"DELETE FROM {t} WHERE key IN "
                f"(SELECT key FROM {t} WHERE expires_at <= ? LIMIT {SWEEP_BATCH})",
                (now,),
            )
            conn.execute(
                f"INSERT OR REPLACE INTO {t} (key, data, expires_at) VALUES (?, ?, ?)",
                (key, sqlite3.Binary(data), now + ttl),
            )

    def get_result(self, key: str) -> bytes | None:
        """``key``'s value, or ``None`` if it has none (or it ran out)."""
        with self._translate("get_result", key) as conn:
            row = conn.execute(
                f"SELECT data FROM {self.table}_results WHERE key = ? AND expires_at > ?",
                (key, self._clock()),
            ).fetchone()
        return None if row is None else bytes(row[0])


__all__ = ["MAX_RESULT_BYTES", "SQLiteResults"]
