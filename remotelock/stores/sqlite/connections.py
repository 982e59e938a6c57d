"""SQLiteStore's connections: a small pool per store and process, reset after fork."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

# In-process waiters wait on a slot: ("lock", key), ("shared", key) or ("permit", key).
Slot = tuple[str, str]
# Given a connection: the monotonic time a slot frees on its own, or None if free now.
BusyUntil = Callable[[sqlite3.Connection], "float | None"]

MAX_IDLE = 8
"""Idle connections kept per store and process."""


def default_path() -> Path:
    """The embedded default lock file: ``remotelock/locks.sqlite3`` in the user's cache dir.

    ``$XDG_CACHE_HOME`` or ``~/.cache`` on Linux and other Unixes, ``~/Library/Caches``
    on macOS, ``%LOCALAPPDATA%`` on Windows. Processes of the same user on this machine
    therefore agree on it without any configuration.
    """
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "remotelock" / "locks.sqlite3"


def use_wal(conn: sqlite3.Connection, busy_timeout: float) -> None:
    """Switch the file to WAL mode (persistent: done once per file, by whoever is first).

    The switch needs an exclusive lock and SQLite answers "database is locked" without
    calling the busy handler when another process holds any lock, which happens when
    many processes open a new file at once: retry until ``busy_timeout``.
    """
    deadline = time.monotonic() + busy_timeout
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(random.uniform(0.001, 0.02))


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: taken with ``BEGIN IMMEDIATE`` (so two steps never both
    read, then both write), committed when the block ends, even by ``return``, and
    rolled back when it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


class Local:
    """One store's state in this process: idle connections and in-process waiters."""

    def __init__(self) -> None:
        self.idle: list[sqlite3.Connection] = []
        self.wakers: dict[Slot, list[Callable[[], None]]] = {}
        self.mutex = threading.Lock()

    def register(self, slot: Slot, waker: Callable[[], None]) -> None:
        """Call ``waker`` when this process frees ``slot`` (once; see :meth:`wake`)."""
        with self.mutex:
            self.wakers.setdefault(slot, []).append(waker)

    def unregister(self, slot: Slot, waker: Callable[[], None]) -> None:
        with self.mutex:
            wakers = self.wakers.get(slot)
            if wakers is not None and waker in wakers:
                wakers.remove(waker)
                if not wakers:
                    del self.wakers[slot]

    def wake(self, slot: Slot) -> None:
        """A release in this process freed ``slot``: its local waiters need not poll."""
        with self.mutex:
            wakers = self.wakers.pop(slot, ())
        for waker in wakers:
            waker()

    def close(self) -> None:
        with self.mutex:
            idle, self.idle = self.idle, []
        for conn in idle:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def forget_after_fork(self) -> None:
        # A connection must never be used on both sides of a fork, and a mutex some
        # parent thread held would stay locked forever: the child starts afresh.
        _ORPHANED.extend(self.idle)
        self.idle = []
        self.wakers = {}
        self.mutex = threading.Lock()


# Connections inherited across fork: kept referenced, never used or closed in the child.
_ORPHANED: list[sqlite3.Connection] = []
_LOCALS: weakref.WeakSet[Local] = weakref.WeakSet()


def renew_row(
    conn: sqlite3.Connection, table: str, key: str, token: str, *, ttl: float, now: float
) -> bool:
    """Move ``token``'s unexpired lease of ``key`` in ``table`` (permits, readers) to end
    ``ttl`` seconds from ``now``; whether it still held one."""
    return bool(
        conn.execute(
            f"UPDATE {table} SET expires_at = ? WHERE key = ? AND token = ? AND expires_at > ?",
            (now + ttl, key, token, now),
        ).rowcount
    )


def live_tokens(conn: sqlite3.Connection, table: str, key: str, now: float) -> list[str]:
    """The tokens holding an unexpired lease of ``key`` in ``table``, oldest first."""
    rows = conn.execute(
        f"SELECT token FROM {table} WHERE key = ? AND expires_at > ? ORDER BY fence",
        (key, now),
    ).fetchall()
    return [str(row[0]) for row in rows]


def _after_fork_in_child() -> None:
    for local in list(_LOCALS):
        local.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def register(local: Local) -> None:
    """Reset ``local`` in a forked child (see :meth:`Local.forget_after_fork`)."""
    _LOCALS.add(local)


__all__ = [
    "MAX_IDLE",
    "BusyUntil",
    "Local",
    "Slot",
    "default_path",
    "immediate",
    "register",
    "use_wal",
]
