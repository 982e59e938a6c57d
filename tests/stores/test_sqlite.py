"""SQLiteStore specifics: busy timeout, errors, file location, fork, many processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from remotelock import StoreConfigError, StoreError, StoreUnavailable
from remotelock.stores.sqlite.store import SQLiteStore, default_path
from tests.helpers.crossproc import ROOT


def test_busy_file_gives_store_unavailable_in_bounded_time(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    store = SQLiteStore(path, busy_timeout=0.2)
    store.acquire("warm-up", "t", 10)  # create the schema
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="file lock") as caught:
            store.acquire("key", "token", 10)
        assert time.monotonic() - started < 10
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.acquire("key", "token", 10) is not None  # works again once free


def test_corrupt_file_gives_store_error(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError) as caught:
        SQLiteStore(path).acquire("key", "token", 10)
    assert isinstance(caught.value.__cause__, sqlite3.DatabaseError)


def test_unusable_location_gives_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(StoreUnavailable) as caught:
        SQLiteStore(blocker / "locks.db").acquire("key", "token", 10)
    assert caught.value.__cause__ is not None


def test_default_path_follows_the_cache_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_path() == tmp_path / "remotelock" / "locks.sqlite3"
    assert SQLiteStore().path == default_path()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"table": "bad name"}, "identifier"),
        ({"busy_timeout": 0}, "busy_timeout"),
        ({"poll_interval": 5}, "poll_interval"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(StoreConfigError, match=match):
        SQLiteStore(tmp_path / "x.db", **kwargs)  # type: ignore[arg-type]


def test_fencing_continues_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    first = SQLiteStore(path)
    fence = first.acquire("k", "a", 10)
    assert fence is not None
    first.release("k", "a")
    first.close()
    again = SQLiteStore(path).acquire("k", "b", 10)
    assert again is not None
    assert again > fence


def test_tables_are_independent(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    jobs = SQLiteStore(path, table="jobs")
    other = SQLiteStore(path, table="other")
    assert jobs.acquire("k", "a", 10) is not None
    assert other.acquire("k", "b", 10) is not None


def test_wall_clock_expiry_with_injected_clock(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = SQLiteStore(tmp_path / "locks.db", clock=lambda: now[0])
    store.acquire("k", "a", 10)
    assert store.acquire("k", "b", 10) is None
    now[0] += 10.5
    assert store.owner("k") is None
    assert store.acquire("k", "b", 10) is not None


def test_release_in_another_process_wakes_a_waiter(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    store = SQLiteStore(path)
    script = (
        "import sys\n"
        "from remotelock.stores.sqlite.store import SQLiteStore\n"
        f"s = SQLiteStore({str(path)!r})\n"
        "assert s.acquire('k', 'other', 60) is not None\n"
        "print('held', flush=True)\n"
        "sys.stdin.readline()\n"
        "assert s.release('k', 'other')\n"
    )
    woke: list[float] = []
    with subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdin is not None
        assert holder.stdout.readline().strip() == "held"

        def wait() -> None:
            store.wait("k", 60)
            woke.append(time.monotonic())

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.2)
        released = time.monotonic()
        holder.stdin.write("go\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
        waiter.join(60)
    assert woke
    assert woke[0] - released < 10  # far below the 60 s wait


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_store_keeps_working_after_fork(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "locks.db")
    assert store.acquire("parent", "p", 10) is not None
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must open its own connection, never reuse the parent's
        try:
            ok = store.acquire("child", "c", 10) is not None and store.owner("parent") == "p"
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert store.owner("child") == "c"


@pytest.mark.slow
def test_many_processes_hammering_one_file(tmp_path: Path) -> None:
    path = tmp_path / "locks.db"
    script = (
        "import random, uuid\n"
        "from remotelock.stores.sqlite.store import SQLiteStore\n"
        f"s = SQLiteStore({str(path)!r}, busy_timeout=30)\n"
        "for _ in range(300):\n"
        "    k, t = f'k{random.randrange(4)}', uuid.uuid4().hex\n"
        "    if s.acquire(k, t, 5) is not None:\n"
        "        s.extend(k, t, 5)\n"
        "        assert s.owner(k) == t\n"
        "        assert s.release(k, t)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT) for _ in range(8)]
    assert [proc.wait(timeout=240) for proc in procs] == [0] * 8
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert check.execute("SELECT count(*) FROM remotelock_locks").fetchone()[0] == 0
    check.close()


@pytest.mark.slow
def test_many_processes_creating_a_new_file_at_once(tmp_path: Path) -> None:
    for round_ in range(3):
        path = tmp_path / f"fresh-{round_}.db"
        start_at = time.time() + 1.5  # every process starts its first step together
        script = (
            "import time, uuid\n"
            "from remotelock.stores.sqlite.store import SQLiteStore\n"
            f"time.sleep(max(0, {start_at} - time.time()))\n"
            f"s = SQLiteStore({str(path)!r})\n"
            "t = uuid.uuid4().hex\n"
            "s.acquire('k', t, 5)\n"
            "s.release('k', t)\n"
        )
        procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT) for _ in range(12)]
        assert [proc.wait(timeout=120) for proc in procs] == [0] * 12
