"""SQLiteStore: locks shared by the processes of one machine, with no server at all.

The embedded default store. Every step is one short SQLite transaction, so the file
stays consistent when many processes hammer it and when a holder is killed mid-step.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, unquote

from ...errors import StoreConfigError, StoreError, StoreUnavailable
from ..base import CROSS_PROCESS, EXPIRY, FENCING, NOTIFY, TOKEN_CHECKED, LockInfo
from ..shared.redact import redact, split_url
from .connections import (
    MAX_IDLE,
    BusyUntil,
    Local,
    Slot,
    default_path,
    immediate,
    register,
    use_wal,
)
from .permits import SQLitePermits
from .readers import SQLiteReaders
from .results import SQLiteResults
from .schema import SWEEP_BATCH, schema

if TYPE_CHECKING:
    from typing_extensions import Self

    from .aio import AsyncSQLiteStore

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# sqlite3 hands the busy timeout to SQLite as a C int of milliseconds.
_MAX_BUSY_TIMEOUT: Final = 2_000_000.0


class SQLiteStore(SQLiteResults, SQLitePermits, SQLiteReaders):
    """Locks in a SQLite file: exclusion between the processes of one machine.

    - URL: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (SQLAlchemy's
      convention), or ``sqlite://`` for the embedded default file (:func:`default_path`).
      Query options: ``busy_timeout`` (seconds, default 5), ``table`` (default
      ``remotelock_locks``), ``poll_interval`` (seconds, default 0.002).
    - Layout: table ``<table>(key TEXT PRIMARY KEY, token TEXT, fence INTEGER,
      expires_at REAL)`` holding the held locks, and ``<table>_meta(name, value)`` whose
      ``fence`` row feeds the fencing tokens of every key, so they keep increasing after
      a key's row is deleted. A release deletes the key's row; an acquire also deletes
      a few rows whose lease ran out (:data:`SWEEP_BATCH`, by an index on
      ``expires_at``), so keys no longer used leave nothing behind. Shared leases and
      waiting writers' marks have tables of their own
      (:mod:`~remotelock.stores.sqlite.readers`). The file runs in WAL mode with
      ``synchronous=NORMAL``: a crashed process loses nothing; a power cut may lose the
      last few steps.
    - Clock: expiry is **wall time** (``time.time``) of this machine, because several
      processes must agree on it. A wall-clock jump shortens or stretches leases.
    - Wake-ups: a release in this process wakes its waiters at once; waiters in other
      processes watch SQLite's ``data_version`` every ``poll_interval`` and wake a few
      milliseconds after a commit frees their key. Waits are also bounded by the
      holder's remaining lease.
    - Limits: one machine only. A file on a network filesystem is not supported by
      SQLite's locking; use Redis or PostgreSQL across machines. Each step waits at most
      ``busy_timeout`` for the file lock, then raises :class:`StoreUnavailable`.
    """

    capabilities: frozenset[str] = frozenset(
        {CROSS_PROCESS, NOTIFY, FENCING, TOKEN_CHECKED, EXPIRY}
    )

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        table: str = "remotelock_locks",
        busy_timeout: float = 5.0,
        poll_interval: float = 0.002,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
            raise StoreConfigError(f"table must be a plain SQL identifier, got {table!r}")
        for name, seconds in (("busy_timeout", busy_timeout), ("poll_interval", poll_interval)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                raise StoreConfigError(f"{name} must be a number of seconds, got {seconds!r}")
        if not 0 < busy_timeout <= _MAX_BUSY_TIMEOUT:
            raise StoreConfigError(
                f"busy_timeout must be between 0 and {_MAX_BUSY_TIMEOUT:.0f} s, "
                f"got {busy_timeout!r}"
            )
        if not 0 < poll_interval <= 1:
            raise StoreConfigError(f"poll_interval must be in (0, 1] s, got {poll_interval!r}")
        if path is not None and os.fspath(path) == ":memory:":
            raise StoreConfigError(
                "an in-memory SQLite database cannot be shared; use MemoryStore instead"
            )
        self.path = Path(path) if path is not None else default_path()
        self.table = table
        self.busy_timeout = float(busy_timeout)
        self.poll_interval = float(poll_interval)
        self._clock = clock
        self._schema_ready = False
        self._local = Local()
        register(self._local)
        weakref.finalize(self, self._local.close)
        self._twin: AsyncSQLiteStore | None = None
        t = table
        self._sql_select: Final = f"SELECT token, fence, expires_at FROM {t} WHERE key = ?"
        self._sql_insert: Final = f"INSERT OR REPLACE INTO {t} VALUES (?, ?, ?, ?)"
        self._sql_renew: Final = f"UPDATE {t} SET expires_at = ? WHERE key = ?"
        self._sql_bump = f"UPDATE {t}_meta SET value = value + 1 WHERE name = 'fence'"
        self._sql_fence = f"SELECT value FROM {t}_meta WHERE name = 'fence'"
        self._sql_release: Final = (
            f"DELETE FROM {t} WHERE key = ? AND token = ? AND expires_at > ?"
        )
        self._sql_drop: Final = f"DELETE FROM {t} WHERE key = ? AND token = ?"
        self._sql_extend: Final = (
            f"UPDATE {t} SET expires_at = ? WHERE key = ? AND token = ? AND expires_at > ?"
        )
        self._sql_owner: Final = f"SELECT token FROM {t} WHERE key = ? AND expires_at > ?"
        self._sql_sweep: Final = (  # leases that ran out, of keys no one takes again
            f"DELETE FROM {t} WHERE key IN (SELECT key FROM {t} "
            f"WHERE expires_at <= ? ORDER BY expires_at LIMIT {SWEEP_BATCH})"
        )

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build from ``sqlite:///path`` (see the class docs); kwargs override the query."""
        parts = split_url(url, "sqlite://")
        if parts.scheme != "sqlite":
            raise StoreConfigError(f"not a sqlite:// URL: {redact(url)!r}")
        if parts.netloc:
            raise StoreConfigError(
                f"sqlite URLs have no host: write sqlite:///relative.db or "
                f"sqlite:////absolute/path.db, got {redact(url)!r}"
            )
        raw_path = unquote(parts.path)
        path = raw_path[1:] if raw_path.startswith("/") else raw_path
        merged: dict[str, Any] = {}
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in ("busy_timeout", "poll_interval"):
                try:
                    merged[name] = float(value)
                except ValueError:
                    raise StoreConfigError(
                        f"{name} in {redact(url)!r} must be a number of seconds, "
                        f"got {redact(value)!r}"
                    ) from None
            elif name == "table":
                merged[name] = value
            else:
                raise StoreConfigError(f"unknown sqlite:// option {name!r} in {redact(url)!r}")
        for name in options:
            if name not in ("table", "busy_timeout", "poll_interval", "clock"):
                raise StoreConfigError(f"unknown sqlite:// option {name!r}")
        merged.update(options)
        return cls(path or None, **merged)

    # -- connections ----------------------------------------------------------------

    @contextlib.contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        """A connection for one step, taken from the idle pool and put back after."""
        local = self._local
        with local.mutex:
            conn = local.idle.pop() if local.idle else None
        if conn is None:
            conn = self._connect()
        try:
            yield conn
        except BaseException:
            conn.close()  # it may be mid-transaction or broken: don't reuse it
            raise
        with local.mutex:
            if len(local.idle) < MAX_IDLE:
                local.idle.append(conn)
                return
        conn.close()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # we issue BEGIN IMMEDIATE ourselves
            check_same_thread=False,  # pooled: used by one thread at a time, any thread
        )
        try:
            use_wal(conn, self.busy_timeout)
            conn.execute("PRAGMA synchronous = NORMAL")
            if not self._schema_ready:
                conn.execute("BEGIN IMMEDIATE")
                for statement in schema(self.table):
                    conn.execute(statement)
                conn.execute("COMMIT")
                self._schema_ready = True
        except BaseException:
            conn.close()
            raise
        return conn

    @contextlib.contextmanager
    def _translate(self, step: str, key: str) -> Iterator[sqlite3.Connection]:
        """Run one step on a pooled connection; driver errors become StoreErrors."""
        try:
            with self._conn() as conn:
                yield conn
        except sqlite3.OperationalError as exc:
            text = str(exc).lower()
            if "locked" in text or "busy" in text:
                raise StoreUnavailable(
                    f"SQLite store {self.path}: {step} {key!r} waited more than "
                    f"{self.busy_timeout:g} s for the file lock"
                ) from exc
            raise StoreUnavailable(f"SQLite store {self.path}: {step} {key!r}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite store {self.path}: {step} {key!r}: {exc}") from exc
        except OSError as exc:
            raise StoreUnavailable(f"SQLite store {self.path}: {step} {key!r}: {exc}") from exc

    # -- the Store protocol ---------------------------------------------------------

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """Take ``key`` if free or expired, in one ``BEGIN IMMEDIATE`` transaction."""
        with self._translate("acquire", key) as conn:
            # A plain read first: a busy lock is answered without the write lock.
            row = conn.execute(self._sql_select, (key,)).fetchone()
            if row is not None and row[0] != token and row[2] > self._clock():
                return None
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock()
                conn.execute(self._sql_sweep, (now,))
                row = conn.execute(self._sql_select, (key,)).fetchone()
                if row is not None and row[2] > now:
                    if row[0] != token:
                        return None
                    conn.execute(self._sql_renew, (now + ttl, key))
                    fence = int(row[1])
                else:
                    if self._refused_by_readers(conn, key, now):
                        conn.execute("COMMIT")  # keep the mark: new readers wait behind us
                        return None
                    conn.execute(self._sql_bump)
                    fence = int(conn.execute(self._sql_fence).fetchone()[0])
                    conn.execute(self._sql_insert, (key, token, fence, now + ttl))
                conn.execute("COMMIT")
                return fence
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    def release(self, key: str, token: str) -> bool:
        """Delete ``key`` if ``token`` holds an unexpired lease on it."""
        with self._translate("release", key) as conn:
            if conn.execute(self._sql_release, (key, token, self._clock())).rowcount:
                self._freed(key)
                return True
            # Our lease had already run out: drop the stale row, but report the loss.
            if conn.execute(self._sql_drop, (key, token)).rowcount:
                self._freed(key)
            return False

    def extend(self, key: str, token: str, ttl: float) -> bool:
        """Reset the lease if ``token`` still holds ``key``."""
        with self._translate("extend", key) as conn:
            now = self._clock()
            return bool(conn.execute(self._sql_extend, (now + ttl, key, token, now)).rowcount)

    def extend_many(self, leases: Sequence[tuple[str, str, float]]) -> list[bool]:
        """:meth:`extend` for each ``(key, token, ttl)``, in one transaction."""
        with self._translate("extend", f"{len(leases)} leases") as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                now = self._clock()
                extended = [
                    bool(conn.execute(self._sql_extend, (now + ttl, key, token, now)).rowcount)
                    for key, token, ttl in leases
                ]
                conn.execute("COMMIT")
                return extended
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")

    def owner(self, key: str) -> str | None:
        """The token holding ``key``, or ``None``."""
        with self._translate("owner", key) as conn:
            row = conn.execute(self._sql_owner, (key, self._clock())).fetchone()
            return None if row is None else str(row[0])

    def wait(self, key: str, timeout: float) -> None:
        """Sleep until ``key`` frees (release here or elsewhere), its lease ends, or timeout."""
        self._wait_on(("lock", key), lambda conn: self._lock_busy_until(conn, key), timeout)

    def _wait_on(self, slot: Slot, busy_until: BusyUntil, timeout: float) -> None:
        """Wait until ``busy_until`` says free (re-asked after every commit by anyone),
        the deadline it gives passes, a release in this process, or ``timeout``."""
        deadline = time.monotonic() + timeout
        event = threading.Event()
        self._local.register(slot, event.set)
        try:
            with self._translate("wait", slot[1]) as conn:
                for pause in self.pauses(conn, busy_until, deadline):
                    if event.wait(pause):
                        return
        finally:
            self._local.unregister(slot, event.set)

    # -- admin ----------------------------------------------------------------------

    def force_release(self, key: str) -> bool:
        """Delete ``key`` (and its readers) whoever holds it; ``True`` if an unexpired
        exclusive lease was there."""
        with self._translate("force_release", key) as conn, immediate(conn):
            now = self._clock()
            held = conn.execute(
                f"DELETE FROM {self.table} WHERE key = ? AND expires_at > ?", (key, now)
            ).rowcount
            conn.execute(f"DELETE FROM {self.table} WHERE key = ?", (key,))
            self._drop_shared(conn, key)
        self._freed(key)
        return bool(held)

    def iter_locks(self, prefix: str = "") -> Iterator[LockInfo]:
        """The unexpired locks whose key starts with ``prefix``."""
        with self._translate("iter_locks", prefix) as conn:
            now = self._clock()
            rows = conn.execute(
                f"SELECT key, token, fence, expires_at FROM {self.table} "
                "WHERE expires_at > ? AND substr(key, 1, ?) = ? ORDER BY key",
                (now, len(prefix), prefix),
            ).fetchall()
        return iter([LockInfo(r[0], r[1], int(r[2]), float(r[3]) - now) for r in rows])

    def as_async(self) -> AsyncSQLiteStore:
        """The async twin; it shares this store's file and in-process wake-ups."""
        if self._twin is None:
            from .aio import AsyncSQLiteStore

            self._twin = AsyncSQLiteStore(self)
        return self._twin

    def close(self) -> None:
        """Close the idle connections (the store reconnects if used again)."""
        self._local.close()

    # -- waiting helpers (shared with the async twin) ---------------------------------

    def _monotonic(self, expires_at: float) -> float | None:
        """A stored (wall-clock) expiry as a local monotonic deadline; ``None`` if past."""
        left = expires_at - self._clock()
        return None if left <= 0 else time.monotonic() + left

    def pauses(
        self, conn: sqlite3.Connection, busy_until: BusyUntil, deadline: float
    ) -> Iterator[float]:
        """How long to sleep, again and again, while a slot stays busy (no I/O but reads
        of ``conn``; the sync and async waits each sleep the pauses their own way).

        Ends when ``busy_until`` says free (re-asked after every commit by anyone), or
        when the deadline, or the holder's lease end it gives, comes.
        """
        until = busy_until(conn)
        version = self._version(conn)
        while until is not None:
            left = min(deadline, until) - time.monotonic()
            if left <= 0:
                return
            yield min(self.poll_interval, left)
            now_version = self._version(conn)
            if now_version != version:
                version = now_version
                until = busy_until(conn)

    @staticmethod
    def _version(conn: sqlite3.Connection) -> int:
        # Changes whenever another connection commits; in WAL mode it reads shared
        # memory only, so polling it is cheap and never waits for a writer.
        return int(conn.execute("PRAGMA data_version").fetchone()[0])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, table={self.table!r})"


__all__ = ["SQLiteStore", "default_path"]
