"""A lease lives until it is released or lost, whoever keeps it; it is a context manager;
``release()`` works from any thread; nothing one lease holds can stop the renewal."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from typing import Any

import pytest

from remotelock import Lease, LockLost, RemoteLock
from remotelock.renewal import Renewer
from remotelock.stores import MemoryStore, SQLiteStore
from remotelock.stores.base import Store
from tests.helpers.elsewhere import in_thread


def rival_gets_it(key: str, store: Any) -> bool:
    """Whether another thread can take ``key`` right now (then it gives it back)."""
    rival = RemoteLock(key, store=store)
    lease = in_thread(lambda: rival.acquire(blocking=False))
    if lease is None:
        return False
    lease.release()
    return True


# -- a dropped lease stays held ------------------------------------------------------------


def test_a_dropped_lease_stays_held_and_renewed(store: Store, key: str) -> None:
    lock = RemoteLock(key, store=store, ttl=1.0)
    assert lock.acquire()  # the threading.Lock idiom: the lease is not kept
    gc.collect()
    time.sleep(2.2)  # more than two leases long: only renewal can keep it
    gc.collect()
    assert not rival_gets_it(key, store)
    assert lock.locked()
    assert lock.release() is True
    assert rival_gets_it(key, store)


def test_try_acquire_idiom_keeps_the_lock(sqlite_store: SQLiteStore, key: str) -> None:
    lock = RemoteLock(key, store=sqlite_store, ttl=0.6)
    if not lock.acquire(blocking=False):
        pytest.fail("a free lock must be taken")
    gc.collect()
    time.sleep(1.0)
    assert not rival_gets_it(key, sqlite_store)
    assert in_thread(lock.release) is True  # from another thread, as threading.Lock allows


async def test_a_dropped_async_lease_stays_held(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store, ttl=0.6)
    assert await lock.aacquire()
    gc.collect()
    await asyncio.sleep(1.0)
    assert memory_store.owner(key) is not None
    assert await lock.arelease() is True
    assert memory_store.owner(key) is None


def test_release_from_another_thread(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    in_thread(lock.acquire)
    assert lock.locked()
    assert lock.release() is True  # this thread never acquired it
    assert not lock.locked()
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()


def test_several_leases_of_one_lock_object(memory_store: MemoryStore, key: str) -> None:
    """With ``limit > 1`` one lock object can hold several leases at once: a bare
    ``release()`` then releases the one this thread entered, else asks for the lease."""
    lock = RemoteLock(key, store=memory_store, limit=3)
    first = in_thread(lock.acquire)
    second = in_thread(lock.acquire)
    with pytest.raises(RuntimeError, match="holds 2 leases"):
        lock.release()
    with lock as mine:
        assert lock.release() is True  # the one this thread entered
        assert mine.released
    assert lock.release(first) is True
    assert lock.release() is True  # only one left: no ambiguity
    assert second.released


# -- a lease is a context manager -------------------------------------------------------------


def test_with_lock_acquire(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    with lock.acquire() as lease:
        assert memory_store.owner(key) == lease.token
    assert lease.released
    assert memory_store.owner(key) is None
    with lock.acquire():
        assert lock.locked()
    assert not lock.locked()


def test_with_lease_raises_lock_lost(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    with pytest.raises(LockLost), lock.acquire():
        memory_store.force_release(key)


def test_with_lease_keeps_the_block_error(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)

    def lose_it_and_fail() -> None:
        with lock.acquire():
            memory_store.force_release(key)
            raise KeyError("mine")

    with pytest.raises(KeyError):
        lose_it_and_fail()
    assert not lock.locked()


async def test_async_with_await_aacquire(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    async with await lock.aacquire() as lease:
        assert memory_store.owner(key) == lease.token
    assert lease.released
    assert memory_store.owner(key) is None
    assert not any(task.get_name().startswith("remotelock-renew") for task in asyncio.all_tasks())


async def test_lease_kind_mismatch_is_a_clear_error(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    lease = await lock.aacquire()
    with pytest.raises(TypeError, match="async with"), lease:
        pass
    await lease.arelease()
    sync_lease = in_thread(lock.acquire)
    with pytest.raises(TypeError, match="with"):
        async with sync_lease:
            pass
    sync_lease.release()


# -- nothing a lease holds can stop renewal ---------------------------------------------------


class _Boom(BaseException):
    """An error no renewal code expects (a store bug, a MemoryError...)."""


class _BrokenRenewals(MemoryStore):
    """A memory store whose renewals blow up once armed."""

    armed = False

    def extend(self, key: str, token: str, ttl: float) -> bool:
        if self.armed:
            raise _Boom("renewal blew up")
        return super().extend(key, token, ttl)


def wait_for_losses(seen: list[Lease], count: int) -> None:
    deadline = time.monotonic() + 10
    while len(seen) < count and time.monotonic() < deadline:
        time.sleep(0.02)


def test_a_renewal_that_blows_up_marks_its_lease_lost(key: str) -> None:
    store = _BrokenRenewals()
    seen: list[Lease] = []
    leases = [
        RemoteLock(f"{key}:{n}", store=store, ttl=0.9, on_lost=seen.append).acquire()
        for n in range(3)
    ]
    store.armed = True
    wait_for_losses(seen, 3)
    assert sorted(id(lease) for lease in seen) == sorted(id(lease) for lease in leases)
    assert all("renewal failed" in lease.lost_reason for lease in leases)
    for lease in leases:
        lease.release()
    store.armed = False
    lease = RemoteLock(f"{key}:after", store=store, ttl=0.6).acquire()
    time.sleep(1.0)  # renewal goes on for the next lease
    assert not lease.lost
    assert lease.release() is True


def test_a_failing_renewal_thread_marks_every_lease_lost(
    memory_store: MemoryStore, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Lease] = []
    leases = [
        RemoteLock(f"{key}:{n}", store=memory_store, ttl=0.3, on_lost=seen.append).acquire()
        for n in range(3)
    ]

    def broken(self: Any, lease: Lease) -> None:
        raise _Boom("the renewal thread itself is broken")

    monkeypatch.setattr(Renewer, "_handle", broken)
    wait_for_losses(seen, 3)
    assert sorted(id(lease) for lease in seen) == sorted(id(lease) for lease in leases)
    assert all("failed" in lease.lost_reason for lease in leases)
    monkeypatch.undo()
    for lease in leases:
        lease.release()
    lease = RemoteLock(f"{key}:after", store=memory_store, ttl=0.6).acquire()
    time.sleep(1.0)  # a fresh renewal thread keeps the next lease
    assert not lease.lost
    assert lease.release() is True


def test_on_lost_runs_off_the_renewal_thread(memory_store: MemoryStore, key: str) -> None:
    """A slow ``on_lost`` must not delay the renewal of other leases."""
    started = threading.Event()

    def slow(lease: Lease) -> None:
        started.set()
        time.sleep(2)

    doomed = RemoteLock(f"{key}:doomed", store=memory_store, ttl=0.3, on_lost=slow).acquire()
    kept = RemoteLock(f"{key}:kept", store=memory_store, ttl=0.6).acquire()
    memory_store.force_release(f"{key}:doomed")
    assert started.wait(5)
    time.sleep(0.6)  # two of kept's renewals fall inside the slow callback
    assert not kept.lost
    assert doomed.lost
    kept.release()
    doomed.release()
