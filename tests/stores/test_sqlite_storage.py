"""SQLiteStore leaves no row behind but held locks and permits.

A release deletes its row; an acquire also deletes a few rows whose lease ran out, so
keys that no one takes again (their holder crashed) do not stay in the file. One
counter feeds every fencing token, so tokens keep rising once a key's row is gone.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotelock import RemoteLock
from remotelock.stores import SQLiteStore
from remotelock.stores.sqlite.schema import SWEEP_BATCH

N = 2000  # distinct keys (the benchmark's scenario (g) takes 100,000)


def rising(fences: list[int | None]) -> bool:
    """Whether every acquire got a fencing token, each larger than the one before."""
    pairs = itertools.pairwise(fences)
    return all(a is not None and b is not None and a < b for a, b in pairs)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "locks.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(path)
    yield store
    store.close()


def keys(path: Path, table: str) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute(f"SELECT key FROM {table} ORDER BY key")]


def test_many_keys_leave_no_rows(store: SQLiteStore, path: Path) -> None:
    with RemoteLock("held", store=store, ttl=30):
        for n in range(N):
            assert store.acquire(f"job:{n}", "t", 30) is not None
            assert store.release(f"job:{n}", "t") is True
            for mine in ("a", "b", "c"):
                assert store.acquire_permit(f"job:{n}", mine, 30, 5) is not None
            for mine in ("a", "b", "c"):
                assert store.release_permit(f"job:{n}", mine) is True
        assert keys(path, "remotelock_locks") == ["held"]
    assert keys(path, "remotelock_locks") == []
    assert keys(path, "remotelock_locks_permits") == []
    with sqlite3.connect(path) as conn:  # the one counter behind every fencing token
        assert conn.execute("SELECT count(*) FROM remotelock_locks_meta").fetchone() == (1,)


def test_leases_that_ran_out_are_swept_by_later_acquires(store: SQLiteStore, path: Path) -> None:
    crashed = 3 * SWEEP_BATCH
    for n in range(crashed):
        assert store.acquire(f"crashed:{n}", "t", 0.1) is not None
        assert store.acquire_permit(f"crashed:{n}", "t", 0.1, 2) is not None
    assert store.acquire("held", "h", 30) is not None
    assert store.acquire_permit("held", "h", 30, 2) is not None
    time.sleep(0.2)
    for _ in range(crashed // SWEEP_BATCH + 1):  # each acquire deletes a batch
        assert store.acquire("sweeper", "s", 30) is not None
        assert store.release("sweeper", "s") is True
        assert store.acquire_permit("sweeper", "s", 30, 2) is not None
        assert store.release_permit("sweeper", "s") is True
    assert keys(path, "remotelock_locks") == ["held"]
    assert keys(path, "remotelock_locks_permits") == ["held"]


def test_fences_rise_across_the_rows_removal(store: SQLiteStore, path: Path) -> None:
    fences = [store.acquire("k", "a", 0.1), store.acquire_permit("k", "a", 0.1, 2)]
    time.sleep(0.2)
    assert store.acquire("other", "o", 30) is not None  # sweeps k's lock row
    assert store.acquire_permit("other", "o", 30, 2) is not None  # and its permit's
    assert keys(path, "remotelock_locks") == ["other"]
    assert keys(path, "remotelock_locks_permits") == ["other"]
    fences += [store.acquire("k", "b", 30), store.acquire_permit("k", "b", 30, 2)]
    assert rising(fences), fences


def test_a_file_of_an_earlier_version_gets_its_indexes(path: Path) -> None:
    with sqlite3.connect(path) as conn:  # the layout before the expiry indexes
        conn.execute(
            "CREATE TABLE remotelock_locks (key TEXT PRIMARY KEY, token TEXT NOT NULL, "
            "fence INTEGER NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID"
        )
        conn.execute("CREATE TABLE remotelock_locks_meta (name TEXT PRIMARY KEY, value INTEGER)")
        conn.execute("INSERT INTO remotelock_locks_meta VALUES ('fence', 5)")
        conn.execute("INSERT INTO remotelock_locks VALUES ('gone', 't', 5, 0)")
    store = SQLiteStore(path)
    assert store.acquire("k", "t", 30) == 6
    assert keys(path, "remotelock_locks") == ["k"]
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"remotelock_locks_expires", "remotelock_locks_permits_expires"} <= indexes
    store.close()
