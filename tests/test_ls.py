"""``remotelock ls``: held locks and permit holders on every store, waiters where the store
knows them (Redis), a table for people and JSON lines for scripts."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from remotelock import RemoteLock, lister
from remotelock.stores import RedisStore, SQLiteStore
from remotelock.stores.base import LockAdmin, PermitStore, Store
from remotelock.stores.listing import PermitAdmin


def test_locks_and_permits_on_every_store(store: Store) -> None:
    if not isinstance(store, LockAdmin):
        pytest.skip(f"{store!r} has no admin operations")
    prefix = f"ls-{uuid.uuid4().hex[:8]}:"
    lock = RemoteLock(prefix + "orders", store=store, ttl=30).acquire()
    elsewhere = RemoteLock(f"other-{uuid.uuid4().hex}", store=store, ttl=30).acquire()
    permits = []
    if isinstance(store, PermitStore) and isinstance(store, PermitAdmin):
        permits = [
            RemoteLock(prefix + "api", store=store, ttl=30, limit=3).acquire() for _ in "ab"
        ]
    found = lister.rows(store, prefix)
    assert [(row.key, row.kind) for row in found] == [(prefix + "api", "permit")] * len(
        permits
    ) + [(prefix + "orders", "lock")]
    locked = found[-1]
    assert locked.holder == lock.token[:8]
    assert locked.fencing_token == lock.fencing_token
    assert locked.expires_in is not None
    assert 0 < locked.expires_in <= 30
    for row, lease in zip(found, sorted(permits, key=lambda p: p.fencing_token), strict=False):
        assert (row.holder, row.fencing_token) == (lease.token[:8], lease.fencing_token)
        assert (row.permits_held, row.limit) == (2, 3)
        assert row.expires_in is not None
        assert 0 < row.expires_in <= 30
    for lease in [lock, *permits]:
        lease.release()
    assert lister.rows(store, prefix) == []
    elsewhere.release()


def test_permit_holders_that_ran_out_are_not_listed(store: Store) -> None:
    if not isinstance(store, PermitAdmin):
        pytest.skip(f"{store!r} does not list permits")
    key = f"ls-{uuid.uuid4().hex[:8]}"
    assert isinstance(store, PermitStore)
    store.acquire_permit(key, "a" * 32, 0.2, 2)
    store.acquire_permit(key, "b" * 32, 30, 2)
    deadline = time.monotonic() + 10
    while len(list(store.iter_permits(key))) > 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (left,) = store.iter_permits(key)
    assert left.token == "b" * 32
    store.release_permit(key, "b" * 32)


@pytest.mark.redis
def test_waiters_on_redis(redis_store: RedisStore) -> None:
    key = f"ls-{uuid.uuid4().hex[:8]}"
    holder = RemoteLock(key, store=redis_store, ttl=30).acquire()
    waiter = threading.Thread(
        target=lambda: RemoteLock(key, store=redis_store).acquire().release()
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while lister.rows(redis_store, key)[0].waiters != 1:
        assert time.monotonic() < deadline, "the waiter never showed"
        time.sleep(0.05)
    holder.release()
    waiter.join(10)


def _ls(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "remotelock", "ls", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/locks.db"
    assert _ls("--url", url).stdout.strip() == "nothing held"
    assert _ls("--url", url).returncode == 1
    store = SQLiteStore(tmp_path / "locks.db")
    lease = RemoteLock("reports:nightly", store=store, ttl=60).acquire()
    permit = RemoteLock("partner-api", store=store, ttl=60, limit=5).acquire()
    table = _ls("--url", url)
    assert table.returncode == 0
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["KEY", "KIND", "HOLDER", "FENCING", "TOKEN", "LEASE", "LEFT",
                              "PERMITS", "WAITERS"]  # fmt: skip
    assert lines[0].split()[:4] == ["partner-api", "permit", permit.token[:8], "2"]
    assert lines[0].split()[-2:] == ["1/5", "-"]
    assert lines[1].split()[:4] == ["reports:nightly", "lock", lease.token[:8], "1"]
    (only,) = _ls("reports", "--json", "--url", url).stdout.splitlines()
    record = json.loads(only)
    assert record["key"] == "reports:nightly"
    assert record["holder"] == lease.token[:8]
    assert record["waiters"] is None
    assert lease.token not in table.stdout  # a prefix only, never the whole token
    lease.release()
    permit.release()


def test_a_store_that_cannot_list_is_a_usage_error() -> None:
    done = _ls("--url", "memory://")
    assert done.returncode == 2
    assert "other processes" in done.stderr
