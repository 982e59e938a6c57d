"""SQLiteStore's shared locks: the rows they leave (none), their fences, old files, and
waits across processes (SQLite pushes nothing: the other side polls).

The rules themselves are checked by the contract (tests/contract/test_shared.py).
"""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotelock.stores.readers import WRITER_GRACE
from remotelock.stores.sqlite.schema import SWEEP_BATCH
from remotelock.stores.sqlite.store import SQLiteStore
from tests.helpers.crossproc import ROOT

READERS, MARKS = "remotelock_locks_readers", "remotelock_locks_marks"


def rows(store: SQLiteStore, table: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(store.path) as conn:
        return list(conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"))


def rising(fences: list[int | None]) -> bool:
    return all(a is not None and b is not None and a < b for a, b in itertools.pairwise(fences))


@pytest.fixture
def other(sqlite_store: SQLiteStore) -> Iterator[SQLiteStore]:
    """A second store on the same file: another process as far as wake-ups go (it shares
    no in-process waiters), so only SQLite's commits tell one about the other."""
    store = SQLiteStore(sqlite_store.path)
    yield store
    store.close()


def test_released_readers_and_cleared_marks_leave_no_rows(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    for n in range(200):
        key = f"job:{n}"
        assert store.acquire_shared(key, "a", 30) is not None
        assert store.acquire_shared(key, "b", 30) is not None
        assert store.acquire(key, "w", 30) is None  # refused: marks the key
        assert store.release_shared(key, "a") is True
        assert store.release_shared(key, "b") is True
        assert store.acquire(key, "w", 30) is not None  # clears the mark
        assert store.release(key, "w") is True
    assert rows(store, READERS) == []
    assert rows(store, MARKS) == []
    assert rows(store, "remotelock_locks") == []


def test_readers_and_marks_that_ran_out_are_swept(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    crashed = 3 * SWEEP_BATCH
    for n in range(crashed):  # readers that died holding, and writers that gave up
        assert store.acquire_shared(f"crashed:{n}", "r", 0.1) is not None
        assert store.acquire(f"crashed:{n}", "w", 30) is None
    assert len(rows(store, MARKS)) == crashed
    assert store.acquire_shared("held", "h", 60) is not None
    time.sleep(0.2 + WRITER_GRACE)
    for _ in range(crashed // SWEEP_BATCH + 1):  # each shared acquire deletes a batch
        assert store.acquire_shared("sweeper", "s", 30) is not None
        assert store.release_shared("sweeper", "s") is True
    assert [row[:2] for row in rows(store, READERS)] == [("held", "h")]
    assert rows(store, MARKS) == []


def test_a_writer_clears_what_readers_left_of_its_key(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    assert store.acquire_shared("k", "r", 0.1) is not None
    time.sleep(0.2)
    assert store.acquire("k", "w", 30) is not None  # the expired reader does not refuse it
    assert rows(store, READERS) == []
    assert rows(store, MARKS) == []


def test_fences_rise_across_kinds_after_the_rows_are_gone(
    sqlite_store: SQLiteStore, other: SQLiteStore
) -> None:
    store = sqlite_store
    fences = [store.acquire_shared("k", "r1", 0.1), store.acquire("j", "w", 0.1)]
    time.sleep(0.2)
    fences.append(store.acquire_shared("other", "o", 30))  # sweeps k's reader row
    fences.append(store.acquire("other2", "o", 30))  # sweeps j's lock row
    assert [row[:2] for row in rows(store, "remotelock_locks")] == [("other2", "o")]
    assert [row[:2] for row in rows(store, READERS)] == [("other", "o")]
    fences.append(store.acquire("k", "w", 30))
    assert store.release("k", "w") is True
    fences.append(other.acquire_shared("k", "r2", 30))  # another process, same counter
    fences.append(store.acquire_permit("k", "p", 30, 2))
    assert rising(fences), fences


def test_the_mark_only_grows_until_a_writer_gets_in(sqlite_store: SQLiteStore) -> None:
    now = [1_000_000.0]
    store = SQLiteStore(sqlite_store.path, clock=lambda: now[0])
    try:
        assert store.acquire_shared("k", "long", 20) is not None
        assert store.acquire_shared("k", "short", 5) is not None
        assert store.acquire("k", "w", 30) is None
        assert rows(store, MARKS) == [("k", now[0] + 20 + WRITER_GRACE)]
        assert store.release_shared("k", "long") is True
        assert store.acquire("k", "w", 30) is None  # a shorter reader never shrinks it
        assert rows(store, MARKS) == [("k", now[0] + 20 + WRITER_GRACE)]
        now[0] += 6  # the last reader ran out: the writer gets in and the mark goes
        assert store.acquire_shared("k", "late", 30) is None
        assert store.acquire("k", "w", 30) is not None
        assert rows(store, MARKS) == []
    finally:
        store.close()


def test_force_release_drops_readers_and_the_mark(sqlite_store: SQLiteStore) -> None:
    store = sqlite_store
    assert store.acquire_shared("k", "r", 30) is not None
    assert store.acquire("k", "w", 30) is None
    assert store.force_release("k") is False  # no exclusive lease was there
    assert rows(store, READERS) == []
    assert rows(store, MARKS) == []
    assert store.acquire_shared("k", "again", 30) is not None


def test_a_file_of_an_earlier_version_gets_the_shared_tables(tmp_path: Path) -> None:
    path = tmp_path / "locks.sqlite3"
    with sqlite3.connect(path) as conn:  # the layout before shared locks
        conn.execute(
            "CREATE TABLE remotelock_locks (key TEXT PRIMARY KEY, token TEXT NOT NULL, "
            "fence INTEGER NOT NULL, expires_at REAL NOT NULL) WITHOUT ROWID"
        )
        conn.execute("CREATE TABLE remotelock_locks_meta (name TEXT PRIMARY KEY, value INTEGER)")
        conn.execute("INSERT INTO remotelock_locks_meta VALUES ('fence', 41)")
        conn.execute("INSERT INTO remotelock_locks VALUES ('held', 't', 41, 9e18)")
    store = SQLiteStore(path)
    try:
        assert store.acquire_shared("held", "r", 30) is None  # the old lock still counts
        assert store.acquire_shared("k", "r", 30) == 42
        assert store.acquire("k", "w", 30) is None
        assert store.shared_holders("k") == ["r"]
    finally:
        store.close()


def test_a_writers_wait_ends_when_another_process_releases(
    sqlite_store: SQLiteStore, other: SQLiteStore
) -> None:
    assert other.acquire_shared("k", "r", 60) is not None
    assert sqlite_store.acquire("k", "w", 60) is None
    timer = threading.Timer(0.2, other.release_shared, ("k", "r"))
    started = time.monotonic()
    timer.start()
    sqlite_store.wait("k", 30)
    assert time.monotonic() - started < 5  # noticed by polling, far below the 30 s wait
    assert sqlite_store.acquire("k", "w", 60) is not None


def test_an_async_readers_wait_ends_when_another_process_releases(
    sqlite_store: SQLiteStore, other: SQLiteStore
) -> None:
    assert other.acquire("k", "w", 60) is not None
    twin = sqlite_store.as_async()

    async def main() -> float:
        started = time.monotonic()
        asyncio.get_running_loop().call_later(0.2, other.release, "k", "w")
        await twin.wait_shared("k", 30)
        return time.monotonic() - started

    assert asyncio.run(main()) < 5
    assert asyncio.run(twin.acquire_shared("k", "r", 60)) is not None


def test_a_reader_in_another_process_keeps_a_writer_out(sqlite_store: SQLiteStore) -> None:
    script = (
        "import sys\n"
        "from remotelock.stores.sqlite.store import SQLiteStore\n"
        f"s = SQLiteStore({str(sqlite_store.path)!r})\n"
        "assert s.acquire_shared('k', 'reader', 60) is not None\n"
        "print('held', flush=True)\n"
        "sys.stdin.readline()\n"
        "assert s.release_shared('k', 'reader')\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as reader:
        assert reader.stdout is not None
        assert reader.stdin is not None
        assert reader.stdout.readline().strip() == "held"
        assert sqlite_store.shared_holders("k") == ["reader"]
        assert sqlite_store.acquire("k", "w", 60) is None
        assert sqlite_store.acquire_shared("k", "late", 60) is None  # behind the writer
        reader.stdin.write("go\n")
        reader.stdin.flush()
        assert reader.wait(30) == 0
    assert sqlite_store.acquire("k", "w", 60) is not None
