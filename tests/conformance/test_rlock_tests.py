"""CPython's reentrant-lock tests (``RLockTests`` in ``Lib/test/lock_tests.py``), ported to
``RemoteLock(key, reentrant=True)`` and run against every store (the ``store`` fixture);
the code is our own. ``BaseLockTests`` already runs on plain locks in
test_lock_tests.py; a reentrant lock is a plain lock to every other thread, task and
process, so only what reentrancy changes is checked here.

CPython case                          here
------------------------------------  ----------------------------------------------------
RLockTests.test_reacquire             test_reacquire (the same Lease, fencing token and
                                      depth; one store acquire in all)
RLockTests.test_release_unacquired    test_release_unacquired
RLockTests.test_release_save_unacquired  not ported: ``_release_save`` is threading's
                                      private hook for ``Condition``
RLockTests.test_different_thread      test_different_thread (DIFFERS: a lease is a
                                      capability, so another thread may release it, as
                                      for a plain RemoteLock; ``threading.RLock`` raises)
RLockTests.test__is_owned             test_owned_by_the_entering_thread_only (``_is_owned``
                                      is private; the public equivalent: the holding
                                      thread enters at once, another thread is refused)

remotelock's own promises, with no CPython counterpart: other lock objects and decorated
functions of the key enter too; ``with`` blocks nest; the depth survives renewal; a key
held through a non-reentrant lock is refused; a lost lease is not entered again; tasks
are owners of their own (async); another process waits until the outermost release.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from remotelock import LockLost, RemoteLock, remote_locked
from remotelock.stores.base import EXPIRY, FENCING, Store

from .helpers import BOUNDED, Bunch, busy_for_others, let_threads_block


def reentrant(key: str, store: Store, **options: object) -> RemoteLock:
    return RemoteLock(key, store=store, ttl=5, stop=BOUNDED, reentrant=True, **options)  # type: ignore[arg-type]


def test_reacquire(store: Store, key: str) -> None:
    lock = reentrant(key, store)
    first = lock.acquire()
    second = lock.acquire()
    assert second is first
    assert first.depth == 2
    lock.release()
    third = lock.acquire()
    assert third is first
    assert third.fencing_token == first.fencing_token
    lock.release()
    assert busy_for_others(key, store)  # the outermost entry still holds it
    lock.release()
    assert first.released
    assert not busy_for_others(key, store)


def test_release_unacquired(store: Store, key: str) -> None:
    lock = reentrant(key, store)
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()
    lock.acquire()
    lock.acquire()
    lock.release()
    lock.acquire()
    lock.release()
    lock.release()
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()


def test_different_thread(store: Store, key: str) -> None:
    """DIFFERS: ``threading.RLock`` refuses a release from a thread that does not own
    it. A RemoteLock lease is a capability: whoever has it may release it (the same
    rule as for plain locks, see test_lock_tests.test_different_thread). The entries
    are still counted: the key is freed at the last one."""
    lock = reentrant(key, store)

    def enter_twice() -> None:
        lock.acquire()
        lock.acquire()

    Bunch.run(enter_twice)
    lock.release()
    assert lock.locked()
    lock.release()
    assert not lock.locked()


def test_owned_by_the_entering_thread_only(store: Store, key: str) -> None:
    lock = reentrant(key, store)
    with lock as lease:
        assert Bunch.run(lambda: lock.acquire(blocking=False)) is None  # not another thread
        with lock as inner:
            assert inner is lease
        assert busy_for_others(key, store)
    assert not busy_for_others(key, store)


def test_other_lock_objects_and_decorated_calls_enter_too(store: Store, key: str) -> None:
    seen: list[tuple[bool, int]] = []

    @remote_locked(key, store=store, ttl=5, reentrant=True)
    def walk(depth: int, *, has_lock: bool = False, fencing_token: int = 0) -> None:
        seen.append((has_lock, fencing_token))
        if depth:
            walk(depth - 1)

    with reentrant(key, store) as lease:
        walk(3)
        with reentrant(key, store) as again:
            assert again is lease
        assert busy_for_others(key, store)
    assert seen == [(True, lease.fencing_token)] * 4
    walk(1)  # on its own: one lease, entered twice
    assert seen[-1] == seen[-2]
    if FENCING in store.capabilities:
        assert seen[-1][1] > lease.fencing_token
    assert not busy_for_others(key, store)


def test_others_wait_until_the_outermost_release(store: Store, key: str) -> None:
    lock = reentrant(key, store)
    got: list[str] = []

    def other() -> None:
        with reentrant(key, store):
            got.append("other")

    lock.acquire()
    lock.acquire()
    with Bunch(other):
        let_threads_block(1)
        lock.release()
        let_threads_block(1)
        assert got == []  # the outer entry still holds it
        lock.release()
    assert got == ["other"]


def test_depth_survives_renewal(store: Store, key: str) -> None:
    if EXPIRY not in store.capabilities:
        pytest.skip(f"{store!r} has no lease expiry to renew against")
    lock = RemoteLock(key, store=store, ttl=1.0, stop=BOUNDED, reentrant=True)
    with lock as lease:
        with lock:
            time.sleep(1.2)  # longer than the lease: renewals keep it
            assert not lease.lost
            assert busy_for_others(key, store)
        assert busy_for_others(key, store)
    assert not lease.lost
    assert not busy_for_others(key, store)


def test_a_key_held_through_a_plain_lock_is_refused(store: Store, key: str) -> None:
    plain = RemoteLock(key, store=store, ttl=5)
    with plain, pytest.raises(RuntimeError, match=re.escape(key)):
        reentrant(key, store).acquire()
    with reentrant(key, store), pytest.raises(RuntimeError, match=re.escape(key)):
        plain.acquire()  # and a plain lock stays non-reentrant


def test_a_lost_lease_is_not_entered_again(store: Store, key: str) -> None:
    lock = reentrant(key, store, raise_on_lost=False)
    lease = lock.acquire()
    lease.mark_lost("taken over (simulated)")
    with pytest.raises(LockLost):
        lock.acquire()
    lock.release()
    assert not lock.locked()


def test_tasks_are_owners_of_their_own(store: Store, key: str) -> None:
    async def main() -> None:
        lock = reentrant(key, store)
        order: list[str] = []
        async with lock as lease:
            async with lock as inner:
                assert inner is lease

                async def other() -> None:
                    async with reentrant(key, store):
                        order.append("other")

                task = asyncio.create_task(other())
                await asyncio.sleep(0.2)
                assert order == []  # another task waits, as for a plain lock
            order.append("outer")
        await asyncio.wait_for(task, 10)
        assert order == ["outer", "other"]

    asyncio.run(main())
