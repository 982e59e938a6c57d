"""The SQLite store's file layout: its tables and indexes, created idempotently.

Kept apart from the store so that the store and its permit mixin share one list of
statements (and :data:`SWEEP_BATCH`) without importing each other.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

SWEEP_BATCH: Final = 16
"""Rows of run-out leases one acquire deletes at most: a step stays short, and each
acquire adds at most one row, so rows of keys no one takes again never pile up."""


def schema(table: str) -> Iterator[str]:
    """The statements creating the store's tables and indexes (each idempotent, so a
    file made by an earlier version gets what it lacks).

    ``<table>`` holds the held locks; ``<table>_meta``'s ``fence`` row feeds every
    fencing token (of locks, shared leases and permits), so tokens keep rising after
    rows are deleted; ``<table>_permits`` holds one row per held permit;
    ``<table>_readers`` one per held shared lease and ``<table>_marks`` the waiting
    writers' marks (see :mod:`~remotelock.stores.sqlite.readers`); ``<table>_results``
    the values kept for ``single_flight``. The indexes on the expiry columns find rows
    that ran out without a table scan.
    """
    yield (
        f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, token TEXT NOT NULL, "
        "fence INTEGER NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID"
    )
    yield (
        f"CREATE TABLE IF NOT EXISTS {table}_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)"
    )
    yield f"INSERT OR IGNORE INTO {table}_meta VALUES ('fence', 0)"
    yield f"CREATE INDEX IF NOT EXISTS {table}_expires ON {table} (expires_at)"
    yield (
        f"CREATE TABLE IF NOT EXISTS {table}_permits (key TEXT NOT NULL, "
        "token TEXT NOT NULL, fence INTEGER NOT NULL, expires_at REAL NOT NULL, "
        "lim INTEGER NOT NULL, PRIMARY KEY (key, token)) WITHOUT ROWID"
    )
    yield f"CREATE INDEX IF NOT EXISTS {table}_permits_expires ON {table}_permits (expires_at)"
    yield (
        f"CREATE TABLE IF NOT EXISTS {table}_readers (key TEXT NOT NULL, "
        "token TEXT NOT NULL, fence INTEGER NOT NULL, expires_at REAL NOT NULL, "
        "PRIMARY KEY (key, token)) WITHOUT ROWID"
    )
    yield f"CREATE INDEX IF NOT EXISTS {table}_readers_expires ON {table}_readers (expires_at)"
    yield (
        f"CREATE TABLE IF NOT EXISTS {table}_marks (key TEXT PRIMARY KEY, "
        "until REAL NOT NULL) WITHOUT ROWID"
    )
    yield f"CREATE INDEX IF NOT EXISTS {table}_marks_until ON {table}_marks (until)"
    yield (
        f"CREATE TABLE IF NOT EXISTS {table}_results (key TEXT PRIMARY KEY, "
        "data BLOB NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID"
    )
    yield f"CREATE INDEX IF NOT EXISTS {table}_results_expires ON {table}_results (expires_at)"


__all__ = ["SWEEP_BATCH", "schema"]
