"""limit=N: at most N holders, on every store that has counted permits."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import tenacity

from remotelock import LimitConflict, LockLost, LockTimeout, RemoteLock, policy, remote_locked
from remotelock.permits import permit_view
from remotelock.stores import MemoryStore
from remotelock.stores.base import PermitStore
from tests.conftest import DictLock
from tests.helpers.crossproc import (
    kill_holder_and_take_over,
    most_at_once,
    pause_holder_past_its_ttl,
    run_counter,
)

QUICK = tenacity.stop_after_delay(0.3)


# -- the lock layer, on the memory store -------------------------------------------------


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3", True, None])
def test_bad_limits_fail_at_decoration(bad: Any) -> None:
    with pytest.raises(ValueError, match="limit"):
        remote_locked("k", limit=bad)
    with pytest.raises(ValueError, match="limit"):
        RemoteLock("k", limit=bad)


def test_n_holders_at_once(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store, limit=2, stop=QUICK)
    first, second = lock.acquire(), lock.acquire()
    assert lock.locked()
    with pytest.raises(LockTimeout):
        lock.acquire()
    second.release()
    assert not lock.locked()
    third = lock.acquire()
    assert first.fencing_token < second.fencing_token < third.fencing_token
    first.release()
    third.release()


def test_decorated_calls_never_exceed_the_limit(memory_store: MemoryStore) -> None:
    inside, peak = [0], [0]
    mutex = threading.Lock()

    @remote_locked("ext-api", store=memory_store, limit=3)
    def call_api() -> None:
        with mutex:
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
        time.sleep(0.05)
        with mutex:
            inside[0] -= 1

    threads = [threading.Thread(target=call_api) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert peak[0] == 3


def test_callers_must_agree_on_the_limit(memory_store: MemoryStore) -> None:
    @remote_locked("shared", store=memory_store, limit=3)
    def three() -> None:
        five()

    @remote_locked("shared", store=memory_store, limit=5)
    def five() -> None:
        pass

    with pytest.raises(LimitConflict) as caught:
        three()  # holds a permit of "shared" with limit 3, then asks with limit 5
    assert (caught.value.held_limit, caught.value.asked_limit) == (3, 5)
    assert isinstance(caught.value, ValueError)
    five()  # once no permit is held, a new limit takes over


def test_a_lost_permit_raises_lock_lost(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store, ttl=0.3, limit=2)
    lease = lock.__enter__()
    memory_store.release_permit(key, lease.token)  # taken away behind our back
    for _ in range(500):
        if lease.lost:
            break
        time.sleep(0.02)
    assert lease.lost
    with pytest.raises(LockLost):
        lock.__exit__(None, None, None)


def test_skip_if_works_with_permits(memory_store: MemoryStore) -> None:
    @remote_locked("k", store=memory_store, limit=2, skip_if=lambda: True)
    def fn(*, has_lock: bool = False) -> bool:
        return has_lock

    assert fn() is False


def test_permit_waiters_wait_quietly_on_stores_that_push(memory_store: MemoryStore) -> None:
    # A release rings for permits as for locks, so a permit waiter sleeps until then
    # (or the first held permit's end), like a lock's; permits are not queued (FAIR).
    assert policy.default_wait(memory_store.capabilities) is policy.PUSHED_WAIT
    view = permit_view(memory_store, 3, asynchronous=False)
    assert "fair" not in view.capabilities
    assert policy.default_wait(view.capabilities) is policy.PUSHED_WAIT


def test_stores_without_permits_are_refused(key: str) -> None:
    from remotelock.stores import CallableStore

    lock = DictLock()
    store = CallableStore(lock.get_lock, lock.set_lock, lock.release_lock)
    with pytest.raises(TypeError, match="no counted permits"):
        RemoteLock(key, store=store, limit=2).acquire()


async def test_async_limit(memory_store: MemoryStore, key: str) -> None:
    inside, peak = [0], [0]

    @remote_locked(key, store=memory_store, limit=2)
    async def work() -> None:
        inside[0] += 1
        peak[0] = max(peak[0], inside[0])
        await asyncio.sleep(0.02)
        inside[0] -= 1

    await asyncio.gather(*(work() for _ in range(8)))
    assert peak[0] == 2


# -- real stores, across processes ----------------------------------------------------------


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def permit_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL every process can reach (a fresh namespace for each test)."""
    name = f"limits_{uuid.uuid4().hex[:8]}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/locks.db"
    if request.param == "redis":
        return f"{request.getfixturevalue('redis_server').url}?prefix={name}"
    return f"{request.getfixturevalue('postgres_server').url}?table={name}"


@pytest.mark.slow
def test_twelve_processes_share_three_permits(permit_url: str, tmp_path: Path) -> None:
    _, sections = run_counter(
        permit_url, "ext-api", tmp_path, processes=12, count=2, work=0.2, limit=3
    )
    assert len(sections) == 24
    assert most_at_once(sections) == 3  # never more than three, and three were reached
    fences = [section["fence"] for section in sections]
    assert len(set(fences)) == len(fences)  # one fencing token per permit taken


def _store(url: str) -> Any:
    from remotelock.stores import store_from_url

    store = store_from_url(url)
    assert isinstance(store, PermitStore)
    return store


@pytest.mark.slow
def test_a_killed_holder_frees_its_permit_within_its_ttl(permit_url: str) -> None:
    store = _store(permit_url)
    mine = RemoteLock("k", store=store, ttl=30, limit=2).acquire()  # one of two
    assert kill_holder_and_take_over(permit_url, store, ttl=2.0, limit=2) <= 2.0 + 1
    mine.release()


@pytest.mark.slow
def test_a_paused_holder_loses_its_permit(permit_url: str) -> None:
    store = _store(permit_url)
    mine = RemoteLock("k", store=store, ttl=30, limit=2).acquire()
    successor = pause_holder_past_its_ttl(permit_url, store, limit=2)
    assert sorted(store.permit_holders("k")) == sorted([mine.token, successor.token])
    successor.release()
    mine.release()
