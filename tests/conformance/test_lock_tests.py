"""CPython's lock-object tests (``Lib/test/lock_tests.py``), ported to RemoteLock.

People reach for RemoteLock with ``threading.Lock`` habits: ``lock.acquire(); ...;
lock.release()``, ``if lock.acquire(blocking=False):``, ``with lock:``, a release from
another thread, ``acquire(timeout=...)``. Each case of CPython's ``BaseLockTests`` and
``LockTests`` is mapped here onto RemoteLock and run against every store (the ``store``
fixture); the code is our own. Where RemoteLock differs on purpose, the test asserts
the documented behaviour and its docstring says so.

CPython case                         here
-----------------------------------  -----------------------------------------------------
BaseLockTests.test_constructor       test_constructor
BaseLockTests.test_constructor_noargs test_constructor_arguments (DIFFERS: a key is
                                     required, every other argument is keyword-only)
BaseLockTests.test_repr              test_repr (DIFFERS: names the key and store, not
                                     "locked"/"unlocked", which would need a store round
                                     trip); test_repr_never_shows_a_password
BaseLockTests.test_locked_repr       test_locked_repr (same difference)
BaseLockTests.test_acquire_destroy   test_acquire_destroy, test_acquire_destroy_keeping_lease
                                     (DIFFERS: deleting the object does not free the lock;
                                     the lease lives on until released or lost)
BaseLockTests.test_acquire_release   test_acquire_release (``acquire()`` returns a truthy
                                     Lease; ``locked()`` sees any holder)
BaseLockTests.test_try_acquire       test_try_acquire
BaseLockTests.test_try_acquire_contended  test_try_acquire_contended (busy: ``None``)
BaseLockTests.test_acquire_contended test_acquire_contended
BaseLockTests.test_with              test_with; test_with_acquired_lease (``with
                                     lock.acquire() as lease:``, a Lease is a context
                                     manager)
BaseLockTests.test_thread_leak       test_thread_leak (remotelock's own ``remotelock-*``
                                     background threads are allowed)
BaseLockTests.test_timeout           test_timeout_with_non_blocking_is_an_error,
                                     test_timeout_values_that_are_errors,
                                     test_timeouts_on_a_free_lock, test_timeout_duration,
                                     test_timeout_is_not_stretched_by_wait,
                                     test_no_timeout_follows_stop (DIFFERS: a timed-out
                                     blocking acquire raises LockTimeout instead of
                                     returning False; ``timeout=None`` and ``-1`` wait as
                                     ``stop=`` says, 60 s by default, not forever; huge
                                     timeouts are accepted, no OverflowError)
BaseLockTests.test_weakref_exists    test_weakref_exists
BaseLockTests.test_weakref_deleted   test_weakref_deleted, test_weakref_deleted_after_use
LockTests.test_reacquire             test_reacquire_raises (DIFFERS: not reentrant, but
                                     RuntimeError at once instead of a deadlock);
                                     test_reacquire_from_another_thread (the documented
                                     way to wait for a lock this code holds)
LockTests.test_different_thread      test_different_thread
LockTests.test_state_after_timeout   test_state_after_timeout (DIFFERS: the acquire that
                                     times out runs in another thread, since the holding
                                     thread would get RuntimeError)
LockTests.test_at_fork_reinit        not ported: it checks threading's private
                                     ``_at_fork_reinit`` hook, which RemoteLock has no
                                     counterpart of

RemoteLock's own promises that make those idioms safe, with no CPython counterpart:
test_lease_outlives_its_references (a lease nobody refers to is still renewed),
test_release_when_nothing_is_held (RuntimeError, as ``threading.Lock.release``),
test_release_with_several_leases_held (``limit > 1``: which lease ``release()`` means).
"""

from __future__ import annotations

import functools
import gc
import re
import threading
import time
import weakref
from typing import Any

import pytest
import tenacity

from remotelock import Lease, LockTimeout, RemoteLock
from remotelock.stores import store_from_url
from remotelock.stores.base import PermitStore, Store

from .helpers import (
    SHORT_TTL,
    SLACK,
    TIMEOUT,
    Boom,
    Bunch,
    busy_for_others,
    eventually,
    let_threads_block,
    new_lock,
    timed_acquire,
)


def free_in_another_thread(lock: RemoteLock) -> bool:
    """Whether another thread can take ``lock`` at once (and give it back)."""

    def probe() -> bool:
        lease = lock.acquire(blocking=False)
        if lease is None:
            return False
        lease.release()
        return True

    return Bunch.run(probe)


# -- construction and repr ------------------------------------------------------------


def test_constructor(store: Store, key: str) -> None:
    """Creating a lock takes nothing: no I/O, and the key stays free."""
    lock = RemoteLock(key, store=store)
    del lock
    assert not RemoteLock(key, store=store).locked()


def test_constructor_arguments(store: Store, key: str) -> None:
    """DIFFERS: threading.Lock() takes no arguments; RemoteLock needs its key, and takes
    everything else by keyword only."""
    with pytest.raises(TypeError):
        RemoteLock()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        RemoteLock(key, store)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        RemoteLock(key, store=store, x=1)  # type: ignore[call-arg]


def test_repr(store: Store, key: str) -> None:
    """DIFFERS: the repr names the key (and the store), not "unlocked": telling would
    take a store round trip. ``locked()`` answers that."""
    assert key in repr(RemoteLock(key, store=store))


def test_locked_repr(store: Store, key: str) -> None:
    """DIFFERS as :func:`test_repr`: a held lock's repr still names its key."""
    lock = new_lock(key, store)
    with lock:
        assert key in repr(lock)


@pytest.mark.parametrize(
    "url",
    ["redis://user:s3cret-pw@127.0.0.1:1/0", "postgresql://user:s3cret-pw@127.0.0.1:1/db"],
)
def test_repr_never_shows_a_password(url: str, key: str) -> None:
    """A lock's repr lands in logs and tracebacks: it must not carry the store's password.
    (The stores connect on first use, so no server is needed.)"""
    if url.startswith("postgresql"):
        pytest.importorskip("psycopg")
    store = store_from_url(url)
    try:
        text = repr(RemoteLock(key, store=store))
    finally:
        getattr(store, "close", lambda: None)()
    assert key in text
    assert "s3cret-pw" not in text


# -- acquire and release --------------------------------------------------------------


def test_acquire_destroy(store: Store, key: str) -> None:
    """DIFFERS: deleting a held threading.Lock is harmless; a RemoteLock's lock lives in
    the store, so deleting the object does not free it: it stays held (and renewed)
    until released or lost. Here the lease is freed the way an operator would."""
    lock = new_lock(key, store)
    lock.acquire()
    del lock
    gc.collect()
    assert busy_for_others(key, store)
    token = store.owner(key)
    assert token is not None
    store.release(key, token)


def test_acquire_destroy_keeping_lease(store: Store, key: str) -> None:
    """The object may go; the lease it handed out still releases the lock."""
    lock = new_lock(key, store)
    lease = lock.acquire()
    del lock
    gc.collect()
    assert busy_for_others(key, store)
    lease.release()
    assert not new_lock(key, store).locked()


def test_acquire_release(store: Store, key: str) -> None:
    """``acquire()`` then ``release()``, with the result dropped as threading users do;
    then the result itself: a truthy Lease."""
    lock = new_lock(key, store)
    lock.acquire()
    assert lock.locked()
    assert new_lock(key, store).locked()  # any lock object of the key sees the holder
    lock.release()
    assert not lock.locked()

    lease = lock.acquire()
    assert isinstance(lease, Lease)
    assert lease
    lock.release()
    assert lease.released
    assert not lock.locked()


def test_lease_outlives_its_references(store: Store, key: str) -> None:
    """A lease nobody refers to is still renewed until released or lost, so the
    ``lock.acquire(); ...; lock.release()`` idiom holds the lock past its ttl."""
    lock = new_lock(key, store, ttl=SHORT_TTL)
    lock.acquire()
    gc.collect()
    time.sleep(SHORT_TTL * 1.6)
    assert busy_for_others(key, store)
    lock.release()
    assert not lock.locked()


def test_release_when_nothing_is_held(store: Store, key: str) -> None:
    """Releasing a lock this object does not hold raises RuntimeError, as
    threading.Lock.release does for an unlocked lock (another object's lease is not
    this object's to release)."""
    lock = new_lock(key, store)
    with pytest.raises(RuntimeError):
        lock.release()
    lock.acquire()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()

    other = new_lock(key, store)
    other.acquire()
    with pytest.raises(RuntimeError):
        lock.release()
    other.release()


def test_release_with_several_leases_held(store: Store, key: str) -> None:
    """With ``limit > 1`` one lock object can hold several leases at once: a bare
    ``release()`` then means the lease this thread entered with ``with``, and without
    one it refuses (RuntimeError asking for the lease) rather than guess."""
    if not isinstance(store, PermitStore):
        pytest.skip(f"{store!r} has no counted permits (limit > 1)")
    lock = new_lock(key, store, limit=2)

    def take() -> None:
        lock.acquire()

    Bunch.run(take)
    mine = lock.acquire()
    with pytest.raises(RuntimeError, match="lease"):
        lock.release()
    mine.release()
    lock.release()  # only the other thread's lease is left: that one
    assert store.permit_holders(key) == []

    Bunch.run(take)
    with lock as entered:
        lock.release()
        assert entered.released
        assert len(store.permit_holders(key)) == 1
    lock.release()
    assert store.permit_holders(key) == []


# -- try-acquire and contention -------------------------------------------------------


def test_try_acquire(store: Store, key: str) -> None:
    lock = new_lock(key, store)
    lease = lock.acquire(False)
    assert lease
    assert isinstance(lease, Lease)
    lock.release()
    assert lease.released


def test_try_acquire_contended(store: Store, key: str) -> None:
    """A busy lock: one attempt, then ``None`` (falsy), from this object or another."""
    lock = new_lock(key, store)
    lock.acquire()
    assert Bunch.run(lambda: lock.acquire(False)) is None
    assert busy_for_others(key, store)
    lock.release()


def test_acquire_contended(store: Store, key: str) -> None:
    lock = new_lock(key, store)
    lock.acquire()

    def cycle() -> None:
        lock.acquire()
        lock.release()

    count = 5
    with Bunch(cycle, count) as bunch:
        let_threads_block(count)
        assert bunch.finished == []
        lock.release()
    assert len(bunch.finished) == count
    assert not lock.locked()


# -- with -----------------------------------------------------------------------------


def test_with(store: Store, key: str) -> None:
    """``with lock:`` releases on the way out, also when the block raises (a distinct
    exception stands in for CPython's TypeError, so no TypeError of the lock's own can
    pass for it)."""
    lock = new_lock(key, store)
    with lock:
        pass
    assert free_in_another_thread(lock)

    def raise_inside() -> None:
        with lock:
            raise Boom

    with pytest.raises(Boom):
        raise_inside()
    assert free_in_another_thread(lock)


def test_with_acquired_lease(store: Store, key: str) -> None:
    """``with lock.acquire():`` and ``with lock.acquire() as lease:``: a Lease is a
    context manager that releases it."""
    lock = new_lock(key, store)
    with lock.acquire():
        assert lock.locked()
    assert not lock.locked()

    with lock.acquire() as lease:
        assert isinstance(lease, Lease)
        assert lock.locked()
    assert lease.released
    assert free_in_another_thread(lock)

    def raise_inside() -> None:
        with lock.acquire():
            raise Boom

    with pytest.raises(Boom):
        raise_inside()
    assert free_in_another_thread(lock)


# -- threads --------------------------------------------------------------------------


def test_thread_leak(store: Store, key: str) -> None:
    """Many short-lived foreign threads (started with ``_thread``, as in CPython's case)
    take and give back the lock; afterwards no thread is left over but remotelock's own
    (named ``remotelock-*``). Calling ``threading.current_thread()`` in such a thread
    registers a dummy Thread that Python 3.11 never removes: that is the leak this
    case catches."""
    lock = new_lock(key, store)

    def cycle() -> None:
        lock.acquire()
        lock.release()

    before = {thread.ident for thread in threading.enumerate()}

    def extra() -> list[threading.Thread]:
        return [
            thread
            for thread in threading.enumerate()
            if thread.ident not in before and not thread.name.startswith("remotelock-")
        ]

    # Many at once, so that thread idents are not simply reused.
    with Bunch(cycle, 15):
        pass
    assert eventually(lambda: not extra(), timeout=2), f"threads left over: {extra()}"


def test_different_thread(store: Store, key: str) -> None:
    """A lock acquired in one thread can be released from another."""
    lock = new_lock(key, store)
    lock.acquire()
    Bunch.run(lock.release)
    assert not lock.locked()
    lock.acquire()
    lock.release()


def test_reacquire_raises(store: Store, key: str) -> None:
    """DIFFERS: threading.Lock blocks a thread that acquires it twice until another
    thread releases it. RemoteLock is not reentrant either, but the holding thread gets
    RuntimeError naming the key at once (through this object, another object of the
    key, or ``with``), instead of waiting for itself; another thread then releases it,
    as in CPython's case."""
    lock = new_lock(key, store, ttl=5, stop=tenacity.stop_after_delay(1.5))
    again = new_lock(key, store, ttl=5, stop=tenacity.stop_after_delay(1.5))
    named = re.escape(key)

    def enter() -> None:
        with again:
            pass

    def holder() -> float:
        lock.acquire()
        started = time.monotonic()
        with pytest.raises(RuntimeError, match=named):
            lock.acquire()
        with pytest.raises(RuntimeError, match=named):
            again.acquire()
        with pytest.raises(RuntimeError, match=named):
            enter()
        return time.monotonic() - started

    assert Bunch.run(holder) < 1.0  # at once: none of them waited for the lock
    assert lock.locked()
    lock.release()
    assert not lock.locked()


def test_reacquire_from_another_thread(store: Store, key: str) -> None:
    """The documented way to wait for a lock this code holds: acquire it from another
    thread, which blocks until the holder releases it."""
    lock = new_lock(key, store)
    lock.acquire()
    phase: list[str] = []

    def waiter() -> None:
        lock.acquire()
        phase.append("acquired")

    with Bunch(waiter):
        let_threads_block(1)
        assert phase == []
        lock.release()
    assert phase == ["acquired"]
    assert lock.locked()
    lock.release()  # the waiter's lease, released from this thread
    assert not lock.locked()


# -- timeouts -------------------------------------------------------------------------


def test_timeout_with_non_blocking_is_an_error(store: Store, key: str) -> None:
    """As threading.Lock: a timeout makes no sense for a single attempt."""
    lock = new_lock(key, store)
    with pytest.raises(ValueError, match="timeout"):
        lock.acquire(False, 1)
    with pytest.raises(ValueError, match="timeout"):
        lock.acquire(blocking=False, timeout=1)
    assert not lock.locked()


def test_timeout_values_that_are_errors(store: Store, key: str) -> None:
    """Negative timeouts other than -1 are ValueError (as threading.Lock); a bool is a
    TypeError (``timeout=True`` is a mistake, not one second). None of them takes the lock."""
    lock = new_lock(key, store)
    for timeout in (-100, -0.5, -2):
        with pytest.raises(ValueError, match="timeout"):
            lock.acquire(timeout=timeout)
    for flag in (True, False):
        with pytest.raises(TypeError, match="timeout"):
            lock.acquire(timeout=flag)
    assert not lock.locked()


def test_timeouts_on_a_free_lock(store: Store, key: str) -> None:
    """Every valid timeout takes a free lock at once. DIFFERS: huge timeouts are fine
    (no OverflowError: no OS wait primitive is involved)."""
    lock = new_lock(key, store)
    valid: tuple[Any, ...] = (None, -1, 0, 5, threading.TIMEOUT_MAX, 1e100)
    for timeout in valid:
        started = time.monotonic()
        lease = lock.acquire(timeout=timeout)
        assert isinstance(lease, Lease), timeout
        assert time.monotonic() - started < 5  # it did not wait for the timeout
        lock.release()
    assert not lock.locked()


def test_timeout_duration(store: Store, key: str) -> None:
    """DIFFERS: a blocking acquire that times out raises LockTimeout (a TimeoutError)
    instead of returning False. It returns no earlier than the timeout and soon after
    it; ``timeout=0`` makes a single attempt."""
    lock = new_lock(key, store)
    held = lock.acquire()
    try:
        outcome, elapsed = Bunch.run(lambda: timed_acquire(lock, timeout=TIMEOUT))
        assert isinstance(outcome, LockTimeout)
        assert isinstance(outcome, TimeoutError)
        assert TIMEOUT <= elapsed < TIMEOUT + SLACK

        outcome, elapsed = Bunch.run(lambda: timed_acquire(lock, timeout=0))
        assert isinstance(outcome, LockTimeout)
        assert elapsed < SLACK
    finally:
        held.release()


def test_timeout_is_not_stretched_by_wait(store: Store, key: str) -> None:
    """``wait=`` only spaces the attempts out: a 60 s pause between attempts does not
    carry a 0.5 s timeout past its deadline."""
    lock = new_lock(key, store, wait=tenacity.wait_fixed(60))
    held = lock.acquire()
    try:
        with Bunch(lambda: timed_acquire(lock, timeout=TIMEOUT)) as bunch:
            bunch.wait_for_finished(timeout=TIMEOUT + SLACK + 2)
        [(outcome, elapsed)] = bunch.results
        assert isinstance(outcome, LockTimeout)
        assert TIMEOUT <= elapsed < TIMEOUT + SLACK
    finally:
        held.release()


def test_no_timeout_follows_stop(store: Store, key: str) -> None:
    """DIFFERS: ``timeout=None`` (and ``-1``, threading's "no timeout") waits as the
    lock's ``stop=`` says (60 s by default), not forever. A stop strategy is tenacity's
    own, so the last pause may overrun it by up to one ``wait=`` (at most 0.5 s by
    default)."""
    stop_after = 0.3
    lock = new_lock(key, store, stop=tenacity.stop_after_delay(stop_after))
    held = lock.acquire()
    try:
        for timeout in (None, -1):
            outcome, elapsed = Bunch.run(functools.partial(timed_acquire, lock, timeout=timeout))
            assert isinstance(outcome, LockTimeout), timeout
            assert stop_after <= elapsed < stop_after + 0.5 + SLACK, timeout
    finally:
        held.release()


def test_state_after_timeout(store: Store, key: str) -> None:
    """After a LockTimeout the lock object works as before. DIFFERS: the acquire that
    times out runs in another thread (in the holding thread it would be RuntimeError)."""
    lock = new_lock(key, store)
    held = lock.acquire()
    outcome, _ = Bunch.run(lambda: timed_acquire(lock, timeout=0.01))
    assert isinstance(outcome, LockTimeout)
    lock.release()
    assert held.released
    assert not lock.locked()
    again = lock.acquire(blocking=False)
    assert again
    lock.release()
    assert again.released


# -- weak references ------------------------------------------------------------------


def test_weakref_exists(store: Store, key: str) -> None:
    lock = RemoteLock(key, store=store)
    ref = weakref.ref(lock)
    assert ref() is not None


def test_weakref_deleted(store: Store, key: str) -> None:
    lock = RemoteLock(key, store=store)
    ref = weakref.ref(lock)
    del lock
    gc.collect()
    assert ref() is None


def test_weakref_deleted_after_use(store: Store, key: str) -> None:
    """A lock that was used and released is not kept alive by remotelock (renewal may
    drop a released lease lazily, so this allows about a third of the ttl)."""
    lock = new_lock(key, store, ttl=SHORT_TTL)
    lease = lock.acquire()
    lease.release()
    ref = weakref.ref(lock)
    del lock, lease

    def gone() -> bool:
        gc.collect()
        return ref() is None

    assert eventually(gone, timeout=SHORT_TTL + 1)
