"""RemoteLock and Lease: acquire/release/extend, renewal, lost leases, cancellation."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
import tenacity

from remotelock import Lease, LockLost, LockTimeout, RemoteLock, StoreUnavailable
from remotelock.stores import MemoryStore, SQLiteStore
from tests.helpers.elsewhere import held_elsewhere, in_thread

QUICK_STOP = tenacity.stop_after_delay(0.3)


def test_with_block_holds_and_releases(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store, ttl=5)
    with lock as lease:
        assert isinstance(lease, Lease)
        assert memory_store.owner(key) == lease.token
        assert lock.locked()
        assert not lease.lost
    assert memory_store.owner(key) is None
    assert lease.released
    assert not lock.locked()


def test_fencing_tokens_increase(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    tokens = []
    for _ in range(3):
        with lock as lease:
            tokens.append(lease.fencing_token)
    assert tokens == sorted(set(tokens))


def test_busy_lock_times_out_with_facts(memory_store: MemoryStore, key: str) -> None:
    holder = RemoteLock(key, store=memory_store, ttl=30)
    waiter = RemoteLock(key, store=memory_store, stop=QUICK_STOP)
    with held_elsewhere(holder), pytest.raises(LockTimeout) as caught:
        waiter.acquire()
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert error.key == key
    assert error.attempts >= 2
    assert error.waited >= 0.3
    assert key in str(error)
    assert not isinstance(error.__cause__, tenacity.RetryError)


def test_non_blocking_and_zero_timeout_try_once(memory_store: MemoryStore, key: str) -> None:
    calls = []
    original = memory_store.acquire

    def counting(*args: Any) -> int | None:
        calls.append(args)
        return original(*args)

    with held_elsewhere(RemoteLock(key, store=memory_store)):
        memory_store.acquire = counting  # type: ignore[method-assign,assignment]
        started = time.monotonic()
        assert RemoteLock(key, store=memory_store).acquire(blocking=False) is None
        assert len(calls) == 1
        with pytest.raises(LockTimeout) as caught:
            RemoteLock(key, store=memory_store).acquire(timeout=0)
        assert caught.value.attempts == 1
        assert len(calls) == 2
        assert time.monotonic() - started < 5


def test_waiter_gets_the_lock_when_released(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    lease = lock.acquire()
    got: list[Lease] = []
    waiter = threading.Thread(
        target=lambda: got.append(RemoteLock(key, store=memory_store).acquire())
    )
    waiter.start()
    time.sleep(0.1)
    assert not got
    assert lock.release() is True
    waiter.join(10)
    assert got
    assert got[0].fencing_token > lease.fencing_token
    got[0].release()


def test_renewal_keeps_a_long_holder(sqlite_store: SQLiteStore, key: str) -> None:
    lock = RemoteLock(key, store=sqlite_store, ttl=0.6)
    with lock as lease:
        time.sleep(1.5)  # two and a half leases long
        assert sqlite_store.owner(key) == lease.token
        rival = RemoteLock(key, store=sqlite_store)
        assert in_thread(lambda: rival.acquire(blocking=False)) is None
    assert not lease.lost


def wait_until_lost(lease: Lease) -> None:
    deadline = time.monotonic() + 10
    while not lease.lost and time.monotonic() < deadline:
        time.sleep(0.02)


async def await_until_lost(lease: Lease) -> None:
    for _ in range(500):  # at most 10 s
        if lease.lost:
            return
        await asyncio.sleep(0.02)


def test_lost_lease_is_detected_and_raised(memory_store: MemoryStore, key: str) -> None:
    seen: list[Lease] = []
    lock = RemoteLock(key, store=memory_store, ttl=0.3, on_lost=seen.append)
    lease = lock.__enter__()
    memory_store.force_release(key)  # someone breaks the lock
    wait_until_lost(lease)  # the renewal notices within a third of the ttl
    assert lease.lost
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:  # on_lost runs in a thread of its own
        time.sleep(0.01)
    assert seen == [lease]
    with pytest.raises(LockLost) as caught:
        lock.__exit__(None, None, None)
    assert caught.value.fencing_token == lease.fencing_token
    assert caught.value.key == key
    assert "renewal" in lease.lost_reason


def test_lost_lease_can_only_warn(
    memory_store: MemoryStore, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    lock = RemoteLock(key, store=memory_store, ttl=30, raise_on_lost=False)
    with caplog.at_level(logging.WARNING, logger="remotelock"), lock as lease:
        memory_store.force_release(key)
    assert lease.lost
    assert any(
        record.name == "remotelock.lease" and "lost" in record.getMessage()
        for record in caplog.records
    )


def test_block_error_is_not_masked_by_lost_lease(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store, ttl=30)

    def broken_block() -> None:
        with lock:
            memory_store.force_release(key)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        broken_block()


def test_failed_release_returns_false_and_warns(
    memory_store: MemoryStore, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    lock = RemoteLock(key, store=memory_store, ttl=30)
    lease = lock.acquire()
    memory_store.force_release(key)
    with caplog.at_level(logging.WARNING, logger="remotelock"):
        assert lock.release() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings
    assert key in warnings[0].getMessage()
    assert "release found the lock no longer held" in warnings[0].getMessage()
    assert lease.lost


def test_release_of_an_expired_lease_is_false(memory_store: MemoryStore, key: str) -> None:
    clock = [0.0]
    store = MemoryStore(clock=lambda: clock[0])
    lock = RemoteLock(key, store=store, ttl=10)
    lease = lock.acquire()
    clock[0] = 11.0
    other = in_thread(RemoteLock(key, store=store).acquire)
    assert lease.release() is False
    assert store.owner(key) == other.token


def test_extend_resets_the_lease(key: str) -> None:
    clock = [0.0]
    store = MemoryStore(clock=lambda: clock[0])
    lock = RemoteLock(key, store=store, ttl=10)
    lease = lock.acquire()
    clock[0] = 8.0
    assert lock.extend(60) is True
    assert lease.ttl == 60
    clock[0] = 50.0
    assert store.owner(key) == lease.token
    clock[0] = 200.0
    assert lock.extend() is False
    assert lease.lost


def test_not_reentrant_in_one_context(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    with lock, pytest.raises(RuntimeError, match="not reentrant"), lock:
        pass


def test_release_without_a_lease_is_an_error(memory_store: MemoryStore, key: str) -> None:
    with pytest.raises(RuntimeError, match="is not held"):
        RemoteLock(key, store=memory_store).release()


def test_one_lock_object_shared_by_threads(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store, ttl=5)
    inside = []
    overlaps = []

    def work() -> None:
        for _ in range(20):
            with lock:
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(1)
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not overlaps


def test_lease_released_from_another_thread(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    lease = lock.acquire()
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(lease.release()))
    thread.start()
    thread.join(10)
    assert results == [True]
    assert memory_store.owner(key) is None


def test_bad_arguments_name_themselves(memory_store: MemoryStore) -> None:
    with pytest.raises(ValueError, match="key"):
        RemoteLock("", store=memory_store)
    with pytest.raises(TypeError, match="key"):
        RemoteLock(42, store=memory_store)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        RemoteLock("k", store=memory_store, ttl=0)
    with pytest.raises(TypeError, match="ttl"):
        RemoteLock("k", store=memory_store, ttl="30")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="store"):
        RemoteLock("k", store="redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="wait"):
        RemoteLock("k", store=memory_store, wait=0.1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="stop"):
        RemoteLock("k", store=memory_store, stop=10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_lost"):
        RemoteLock("k", store=memory_store, on_lost="log")  # type: ignore[arg-type]


class _BrokenStore(MemoryStore):
    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        raise StoreUnavailable("store is down")


def test_store_errors_propagate(key: str) -> None:
    with pytest.raises(StoreUnavailable):
        RemoteLock(key, store=_BrokenStore()).acquire()


# -- asyncio ----------------------------------------------------------------------------


async def test_async_with(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store, ttl=5)
    async with lock as lease:
        assert memory_store.owner(key) == lease.token
        assert await lock.alocked()
    assert memory_store.owner(key) is None


async def test_async_renewal_keeps_a_long_holder(sqlite_store: SQLiteStore, key: str) -> None:
    lock = RemoteLock(key, store=sqlite_store, ttl=0.6)
    async with lock as lease:
        await asyncio.sleep(1.5)
        assert sqlite_store.owner(key) == lease.token
    assert not lease.lost


async def test_async_lost_lease_raises(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store, ttl=0.3)
    lease = await lock.__aenter__()
    memory_store.force_release(key)
    await await_until_lost(lease)
    assert lease.lost
    with pytest.raises(LockLost):
        await lock.__aexit__(None, None, None)


async def test_cancelled_while_waiting_leaks_nothing(memory_store: MemoryStore, key: str) -> None:
    holder = await RemoteLock(key, store=memory_store, ttl=30).aacquire()
    waiter = asyncio.ensure_future(RemoteLock(key, store=memory_store).aacquire())
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await holder.arelease()
    assert memory_store.owner(key) is None


async def test_cancelled_while_holding_releases(memory_store: MemoryStore, key: str) -> None:
    entered = asyncio.Event()

    async def hold() -> None:
        async with RemoteLock(key, store=memory_store, ttl=30):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.ensure_future(hold())
    await entered.wait()
    assert memory_store.owner(key) is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert memory_store.owner(key) is None


class _SlowAcquireStore(MemoryStore):
    """Takes the lock, but the reply arrives late (the window where a cancel hits)."""

    def as_async(self) -> Any:
        twin = super().as_async()
        original = twin.acquire

        async def slow_acquire(key: str, token: str, ttl: float) -> int | None:
            fence = await original(key, token, ttl)
            await asyncio.sleep(0.3)
            return fence

        twin.acquire = slow_acquire  # type: ignore[method-assign]
        return twin


async def test_cancelled_mid_request_gives_the_lock_back(key: str) -> None:
    store = _SlowAcquireStore()
    task = asyncio.ensure_future(RemoteLock(key, store=store).aacquire())
    await asyncio.sleep(0.1)
    assert store.owner(key) is not None  # the request took the lock...
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.owner(key) is None  # ...and the cancelled caller gave it back


async def test_async_lock_on_sync_only_store_runs_in_threads(
    sqlite_store: SQLiteStore, key: str
) -> None:
    lock = RemoteLock(key, store=sqlite_store)
    async with lock as lease:
        assert sqlite_store.owner(key) == lease.token


def test_sync_use_of_an_async_store_is_a_clear_error(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store.as_async())
    with pytest.raises(TypeError, match="async with"):
        lock.acquire()


def test_extend_without_ttl_keeps_the_current_length(memory_store: MemoryStore, key: str) -> None:
    """After ``extend(5)`` renewals keep 5 s; a bare ``extend()`` must not undo that."""
    lock = RemoteLock(key, store=memory_store, ttl=30)
    with lock as lease:
        assert lock.extend(5) is True
        assert lock.extend() is True
        assert lease.extend() is True
        assert lease.ttl == 5
        assert lease.remaining() <= 5
