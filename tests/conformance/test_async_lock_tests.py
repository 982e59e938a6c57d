"""CPython's lock-object tests (``Lib/test/lock_tests.py``), ported to RemoteLock's asyncio API.

The cases of ``BaseLockTests`` and ``LockTests`` that mean something for asyncio code
(``await lock.aacquire()``, ``await lock.arelease()``, ``async with lock``), with tasks
where CPython uses threads. They run against every store: the ``store`` fixture gives
the sync store, and a RemoteLock used from async code picks that store's async twin.
The code is our own. Where RemoteLock differs on purpose, the test asserts the
documented behaviour and its docstring says so; see ``test_lock_tests.py`` for the
sync side.

CPython case                         here
-----------------------------------  -----------------------------------------------------
BaseLockTests.test_constructor,      not repeated: the same object serves both APIs, and
test_constructor_noargs, test_repr,  these involve no async call (see test_lock_tests.py)
test_locked_repr, test_weakref_*
BaseLockTests.test_acquire_destroy   covered by test_lease_outlives_its_references
BaseLockTests.test_acquire_release   test_acquire_release
BaseLockTests.test_try_acquire       test_try_acquire
BaseLockTests.test_try_acquire_contended  test_try_acquire_contended (another task; busy:
                                     ``None``)
BaseLockTests.test_acquire_contended test_acquire_contended (tasks);
                                     test_tasks_started_inside_async_with_wait_their_turn
                                     (a task started by the holder is not the holder)
BaseLockTests.test_with              test_async_with; test_async_with_acquired_lease
                                     (``async with await lock.aacquire() as lease:``)
BaseLockTests.test_thread_leak       test_task_leak (no task left over but remotelock's
                                     own, named ``remotelock-*``)
BaseLockTests.test_timeout           test_timeout_with_non_blocking_is_an_error,
                                     test_timeout_values_that_are_errors,
                                     test_timeouts_on_a_free_lock, test_timeout_duration,
                                     test_timeout_is_not_stretched_by_wait,
                                     test_no_timeout_follows_stop (DIFFERS: LockTimeout
                                     instead of False; None/-1 follow ``stop=``)
LockTests.test_reacquire             test_reacquire_raises (DIFFERS: RuntimeError at once
                                     in the holding task instead of a deadlock);
                                     test_reacquire_from_another_task
LockTests.test_different_thread      test_different_task
LockTests.test_state_after_timeout   test_state_after_timeout (DIFFERS: the acquire that
                                     times out runs in another task)
LockTests.test_at_fork_reinit        not ported (threading's private hook)

RemoteLock's own promises behind those idioms: test_lease_outlives_its_references,
test_release_when_nothing_is_held.
"""

from __future__ import annotations

import asyncio
import gc
import re
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import tenacity

from remotelock import Lease, LockTimeout, RemoteLock
from remotelock.stores.base import HasAsyncTwin, Store

from .helpers import (
    PATIENCE,
    SHORT_TTL,
    SLACK,
    TIMEOUT,
    Boom,
    async_eventually,
    async_timed_acquire,
    finish_within,
    let_tasks_block,
    new_lock,
)


@pytest.fixture
async def astore(store: Store) -> AsyncIterator[Store]:
    """Every sync store, used from async code; its async twin is closed afterwards."""
    yield store
    if isinstance(store, HasAsyncTwin):
        closer = getattr(store.as_async(), "aclose", None)
        if closer is not None:
            await closer()


async def free_in_another_task(lock: RemoteLock) -> bool:
    """Whether another task can take ``lock`` at once (and give it back)."""

    async def probe() -> bool:
        lease = await lock.aacquire(blocking=False)
        if lease is None:
            return False
        await lease.arelease()
        return True

    return await asyncio.create_task(probe())


async def busy_for_others(key: str, store: Store) -> bool:
    """Whether another task, with a lock object of its own, is refused the key now
    (the holding task itself would get RuntimeError: locks are not reentrant)."""

    async def probe() -> bool:
        lease = await new_lock(key, store).aacquire(blocking=False)
        if lease is None:
            return True
        await lease.arelease()
        return False

    return await asyncio.create_task(probe())


# -- acquire and release --------------------------------------------------------------


async def test_acquire_release(astore: Store, key: str) -> None:
    """``await lock.aacquire()`` then ``await lock.arelease()``, the result dropped; then
    the result itself: a truthy Lease."""
    lock = new_lock(key, astore)
    await lock.aacquire()
    assert await lock.alocked()
    assert await new_lock(key, astore).alocked()
    await lock.arelease()
    assert not await lock.alocked()

    lease = await lock.aacquire()
    assert isinstance(lease, Lease)
    assert lease
    await lock.arelease()
    assert lease.released
    assert not await lock.alocked()


async def test_lease_outlives_its_references(astore: Store, key: str) -> None:
    """A lease nobody refers to is still renewed until released or lost (it also
    stands in for CPython's acquire-then-destroy case)."""
    lock = new_lock(key, astore, ttl=SHORT_TTL)
    await lock.aacquire()
    gc.collect()
    await asyncio.sleep(SHORT_TTL * 1.6)
    assert await busy_for_others(key, astore)
    await lock.arelease()
    assert not await lock.alocked()


async def test_release_when_nothing_is_held(astore: Store, key: str) -> None:
    """Releasing a lock this object does not hold raises RuntimeError, as
    threading.Lock.release does for an unlocked lock."""
    lock = new_lock(key, astore)
    with pytest.raises(RuntimeError):
        await lock.arelease()
    await lock.aacquire()
    await lock.arelease()
    with pytest.raises(RuntimeError):
        await lock.arelease()


# -- try-acquire and contention -------------------------------------------------------


async def test_try_acquire(astore: Store, key: str) -> None:
    lock = new_lock(key, astore)
    lease = await lock.aacquire(False)
    assert lease
    assert isinstance(lease, Lease)
    await lock.arelease()
    assert lease.released


async def test_try_acquire_contended(astore: Store, key: str) -> None:
    """A busy lock: one attempt, then ``None`` (falsy), in another task, through this
    object or another."""
    lock = new_lock(key, astore)
    await lock.aacquire()
    assert await asyncio.create_task(lock.aacquire(False)) is None
    assert await busy_for_others(key, astore)
    await lock.arelease()


async def test_acquire_contended(astore: Store, key: str) -> None:
    lock = new_lock(key, astore)
    await lock.aacquire()
    finished: list[int] = []

    async def cycle(number: int) -> None:
        await lock.aacquire()
        await lock.arelease()
        finished.append(number)

    count = 5
    tasks = [asyncio.create_task(cycle(number)) for number in range(count)]
    await let_tasks_block(count)
    assert finished == []
    await lock.arelease()
    await finish_within(asyncio.gather(*tasks), PATIENCE, "the waiting tasks")
    assert sorted(finished) == list(range(count))
    assert not await lock.alocked()


async def test_tasks_started_inside_async_with_wait_their_turn(astore: Store, key: str) -> None:
    """Tasks started inside ``async with lock:`` are not its holder: they wait for the
    block to end and then get the lock, instead of being refused as reentrant."""
    lock = new_lock(key, astore)
    got: list[int] = []

    async def waiter(number: int) -> None:
        async with lock:
            got.append(number)

    count = 3
    async with lock:
        tasks = [asyncio.create_task(waiter(number)) for number in range(count)]
        await let_tasks_block(count)
        assert got == []
    await finish_within(asyncio.gather(*tasks), PATIENCE, "the waiting tasks")
    assert sorted(got) == list(range(count))


# -- async with -----------------------------------------------------------------------


async def test_async_with(astore: Store, key: str) -> None:
    """``async with lock:`` releases on the way out, also when the block raises."""
    lock = new_lock(key, astore)
    async with lock:
        pass
    assert await free_in_another_task(lock)

    async def raise_inside() -> None:
        async with lock:
            raise Boom

    with pytest.raises(Boom):
        await raise_inside()
    assert await free_in_another_task(lock)


async def test_async_with_acquired_lease(astore: Store, key: str) -> None:
    """``async with await lock.aacquire():``: a Lease is an async context manager that
    releases it."""
    lock = new_lock(key, astore)
    async with await lock.aacquire():
        assert await lock.alocked()
    assert not await lock.alocked()

    async with await lock.aacquire() as lease:
        assert isinstance(lease, Lease)
        assert await lock.alocked()
    assert lease.released

    async def raise_inside() -> None:
        async with await lock.aacquire():
            raise Boom

    with pytest.raises(Boom):
        await raise_inside()
    assert await free_in_another_task(lock)


# -- tasks ----------------------------------------------------------------------------


async def test_task_leak(astore: Store, key: str) -> None:
    """Many tasks take and give back the lock; afterwards no task is left over but
    remotelock's own (named ``remotelock-*``) and those a store keeps for its lifetime
    (started by a first round)."""
    lock = new_lock(key, astore)

    async def cycle() -> None:
        await lock.aacquire()
        await lock.arelease()

    async def round_of_tasks() -> None:
        await finish_within(asyncio.gather(*(cycle() for _ in range(15))), PATIENCE, "the tasks")

    # A first round lets a store start what it keeps for its lifetime (a listener).
    await round_of_tasks()
    before = asyncio.all_tasks()

    def extra() -> list[asyncio.Task[Any]]:
        return [
            task
            for task in asyncio.all_tasks() - before
            if not task.get_name().startswith("remotelock-")
        ]

    await round_of_tasks()
    assert await async_eventually(lambda: not extra(), timeout=2), extra()


async def test_different_task(astore: Store, key: str) -> None:
    """A lock acquired in one task can be released from another."""
    lock = new_lock(key, astore)
    await lock.aacquire()
    await asyncio.create_task(lock.arelease())
    assert not await lock.alocked()
    await lock.aacquire()
    await lock.arelease()


async def test_reacquire_raises(astore: Store, key: str) -> None:
    """DIFFERS: the task holding the lock gets RuntimeError naming the key at once when
    it acquires the key again (this object, another object, or ``async with``), where
    threading.Lock would deadlock; another task then releases it."""
    lock = new_lock(key, astore, ttl=5, stop=tenacity.stop_after_delay(1.5))
    again = new_lock(key, astore, ttl=5, stop=tenacity.stop_after_delay(1.5))
    named = re.escape(key)

    async def enter() -> None:
        async with again:
            pass

    async def holder() -> float:
        await lock.aacquire()
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=named):
            await lock.aacquire()
        with pytest.raises(RuntimeError, match=named):
            await again.aacquire()
        with pytest.raises(RuntimeError, match=named):
            await enter()
        return time.monotonic() - started

    assert await asyncio.create_task(holder()) < 1.0  # at once: none of them waited
    assert await lock.alocked()
    await lock.arelease()
    assert not await lock.alocked()


async def test_reacquire_from_another_task(astore: Store, key: str) -> None:
    """The documented way to wait for a lock this code holds: acquire it from another
    task, which waits until the holder releases it."""
    lock = new_lock(key, astore)
    await lock.aacquire()
    phase: list[str] = []

    async def waiter() -> None:
        await lock.aacquire()
        phase.append("acquired")

    task = asyncio.create_task(waiter())
    await let_tasks_block(1)
    assert phase == []
    await lock.arelease()
    await finish_within(task, PATIENCE, "the waiting task")
    assert phase == ["acquired"]
    assert await lock.alocked()
    await lock.arelease()  # the waiter's lease, released from this task
    assert not await lock.alocked()


# -- timeouts -------------------------------------------------------------------------


async def test_timeout_with_non_blocking_is_an_error(astore: Store, key: str) -> None:
    lock = new_lock(key, astore)
    with pytest.raises(ValueError, match="timeout"):
        await lock.aacquire(False, 1)
    with pytest.raises(ValueError, match="timeout"):
        await lock.aacquire(blocking=False, timeout=1)
    assert not await lock.alocked()


async def test_timeout_values_that_are_errors(astore: Store, key: str) -> None:
    """Negative timeouts other than -1 are ValueError; a bool is a TypeError."""
    lock = new_lock(key, astore)
    for timeout in (-100, -0.5, -2):
        with pytest.raises(ValueError, match="timeout"):
            await lock.aacquire(timeout=timeout)
    for flag in (True, False):
        with pytest.raises(TypeError, match="timeout"):
            await lock.aacquire(timeout=flag)
    assert not await lock.alocked()


async def test_timeouts_on_a_free_lock(astore: Store, key: str) -> None:
    """Every valid timeout takes a free lock at once; huge ones are fine (DIFFERS: no
    OverflowError)."""
    lock = new_lock(key, astore)
    valid: tuple[Any, ...] = (None, -1, 0, 5, threading.TIMEOUT_MAX, 1e100)
    for timeout in valid:
        started = time.monotonic()
        lease = await lock.aacquire(timeout=timeout)
        assert isinstance(lease, Lease), timeout
        assert time.monotonic() - started < 5
        await lock.arelease()
    assert not await lock.alocked()


async def test_timeout_duration(astore: Store, key: str) -> None:
    """DIFFERS: a timed-out acquire raises LockTimeout (a TimeoutError) instead of
    returning False, no earlier than the timeout and soon after it."""
    lock = new_lock(key, astore)
    await lock.aacquire()
    try:
        outcome, elapsed = await asyncio.create_task(async_timed_acquire(lock, timeout=TIMEOUT))
        assert isinstance(outcome, LockTimeout)
        assert isinstance(outcome, TimeoutError)
        assert TIMEOUT <= elapsed < TIMEOUT + SLACK

        outcome, elapsed = await asyncio.create_task(async_timed_acquire(lock, timeout=0))
        assert isinstance(outcome, LockTimeout)
        assert elapsed < SLACK
    finally:
        await lock.arelease()


async def test_timeout_is_not_stretched_by_wait(astore: Store, key: str) -> None:
    """A 60 s ``wait=`` between attempts does not carry a 0.5 s timeout past its deadline."""
    lock = new_lock(key, astore, wait=tenacity.wait_fixed(60))
    await lock.aacquire()
    try:
        outcome, elapsed = await finish_within(
            async_timed_acquire(lock, timeout=TIMEOUT),
            TIMEOUT + SLACK + 2,
            "the timed acquire",
        )
        assert isinstance(outcome, LockTimeout)
        assert TIMEOUT <= elapsed < TIMEOUT + SLACK
    finally:
        await lock.arelease()


async def test_no_timeout_follows_stop(astore: Store, key: str) -> None:
    """DIFFERS: ``timeout=None`` and ``-1`` wait as ``stop=`` says, not forever (the last
    pause may overrun a tenacity stop by up to one default wait, 0.5 s)."""
    stop_after = 0.3
    lock = new_lock(key, astore, stop=tenacity.stop_after_delay(stop_after))
    await lock.aacquire()
    try:
        for timeout in (None, -1):
            outcome, elapsed = await asyncio.create_task(
                async_timed_acquire(lock, timeout=timeout)
            )
            assert isinstance(outcome, LockTimeout), timeout
            assert stop_after <= elapsed < stop_after + 0.5 + SLACK, timeout
    finally:
        await lock.arelease()


async def test_state_after_timeout(astore: Store, key: str) -> None:
    """After a LockTimeout the lock object works as before. DIFFERS: the acquire that
    times out runs in another task (in the holding task it would be RuntimeError)."""
    lock = new_lock(key, astore)
    await lock.aacquire()
    outcome, _ = await asyncio.create_task(async_timed_acquire(lock, timeout=0.01))
    assert isinstance(outcome, LockTimeout)
    await lock.arelease()
    assert not await lock.alocked()
    assert await lock.aacquire(blocking=False)
    await lock.arelease()
