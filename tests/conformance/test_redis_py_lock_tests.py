"""redis-py's lock tests (``tests/test_lock.py`` and ``tests/test_asyncio/test_lock.py``),
mapped onto RemoteLock.

Many users come to remotelock from ``redis.lock.Lock``
(``r.lock(name, timeout=..., blocking_timeout=...)``). Each redis-py case that has a
RemoteLock counterpart is mapped here and run against every store (the ``store``
fixture; the async cases use the same stores, whose async twin a lock picks when it
is used from async code). The code is our own. Where RemoteLock differs on purpose,
the test asserts the documented behaviour and its docstring says so.

How the concepts map:

- ``timeout`` (the lock's lifetime) is ``ttl``. DIFFERS: a lease is renewed while it is
  held, so a holder keeps the lock past ``ttl`` until it releases; a holder that stops
  renewing (a killed process) loses it ``ttl`` after its last renewal. There is no lock
  without a lease (redis-py's default ``timeout=None`` never expires).
- ``blocking_timeout`` is ``acquire(timeout=...)`` per call or
  ``stop=tenacity.stop_after_delay(...)`` per lock; ``blocking=False`` is
  ``acquire(blocking=False)`` per call or ``stop=tenacity.stop_after_attempt(1)`` per
  lock; ``sleep`` is ``wait=tenacity.wait_fixed(...)`` (an upper bound: a release wakes
  waiters sooner, and no pause runs past the timeout).
- ``locked()`` is ``locked()``; ``owned()`` is ``not lease.lost and not lease.released``
  together with ``store.owner(key) == lease.token``; ``lock.local.token`` is
  ``lease.token`` (kept on the lease, not in a thread-local).
- ``extend(t)`` and ``extend(t, replace_ttl=True)`` are both ``lock.extend(t)`` /
  ``lease.extend(t)``, which always *replace*: the lease is reset to ``t`` seconds from
  now (to add time as redis-py's default does, pass the total). ``reacquire()`` is
  ``lease.extend()`` / ``lock.extend()`` with the lock's own ``ttl``.
- ``LockError`` for a timed-out ``with`` is :class:`LockTimeout` (a ``TimeoutError``).
  ``LockNotOwnedError`` has no counterpart: a release or extend that finds the lock no
  longer held returns ``False``, logs a WARNING and marks the lease lost, and leaving a
  ``with`` block then raises :class:`LockLost` (``raise_on_lost=False``: the WARNING
  only, as redis-py's ``raise_on_release_error=False``).
- redis-py's ``r.set(name, "a")`` (another holder behind the lock's back) is
  :func:`take_over` here: with the store's own steps, the holder's lease is cut short
  behind its back, runs out, and another token takes the key, as another process
  would after the holder was paused past its lease.
- Each case also runs on Redis with ``barging=`` (``redis_barging``), where a sync
  lock's process may keep a lock it released and comes straight back for. DIFFERS
  there: a loss made behind such a release's back is found a moment later, when the
  kept lock reaches the store (:func:`may_keep`).

redis-py ``tests/test_lock.py``              here
------------------------------------------  ------------------------------------------------
test_lock                                   test_lock (DIFFERS: the entry has a lease, 30 s
                                            by default; no lock without one)
test_lock_token                             test_lock_token (DIFFERS: no ``token=``; every
                                            acquisition gets a fresh random token)
test_lock_token_thread_local_false          test_token_lives_on_the_lease (DIFFERS from
                                            redis-py's default ``thread_local=True``: any
                                            thread or task may release a lease)
test_locked                                 test_locked (any holder, any lock object)
test_owned, test_owned_with_decoded_        test_owned (tokens are ``str`` on every store)
responses
test_competing_locks                        test_competing_locks_in_two_threads;
                                            test_competing_locks_in_one_thread (DIFFERS: the
                                            holding thread or task gets RuntimeError, not
                                            reentrant, instead of ``False``)
test_timeout                                test_ttl_is_the_lease_length;
                                            test_lease_is_renewed_while_held (DIFFERS);
                                            test_abandoned_lock_expires_after_ttl
test_float_timeout                          test_float_ttl
test_blocking (asyncio)                     test_blocking_is_chosen_per_call
test_blocking_timeout                       test_blocking_timeout (DIFFERS: LockTimeout
                                            instead of ``False``)
test_context_manager                        test_context_manager
test_context_manager_blocking_timeout       test_context_manager_blocking_timeout (the
                                            waiter runs in another thread)
test_context_manager_raises_when_locked_    test_context_manager_raises_when_locked_not_
not_acquired, test_lock_error_gives_        acquired (LockTimeout, naming the key)
correct_lock_name
test_high_sleep_small_blocking_timeout      test_high_sleep_small_blocking_timeout
test_high_sleep_raises_error (older         test_wait_longer_than_ttl_is_accepted (DIFFERS:
redis-py)                                   ``wait`` and ``ttl`` are independent)
test_releasing_unlocked_lock_raises_error   test_releasing_unlocked_lock_raises_error
                                            (DIFFERS: RuntimeError, not LockError)
test_releasing_lock_no_longer_owned_        test_releasing_lock_no_longer_owned,
raises_error                                test_releasing_expired_lock_taken_by_another
                                            (DIFFERS: ``False`` + WARNING + lease lost)
test_extend_lock                            test_extend_lock (DIFFERS: replaces)
test_extend_lock_replace_ttl                test_extend_lock_replace_ttl
test_extend_lock_float                      test_extend_lock_float
test_extending_unlocked_lock_raises_error,  test_extending_unlocked_lock_raises_error
test_reacquiring_unlocked_lock_raises_      (DIFFERS: RuntimeError, not LockError)
error
test_extending_lock_with_no_timeout_        test_extending_a_lock_with_the_default_ttl
raises_error, test_reacquiring_lock_with_   (DIFFERS: every lock has a lease, so extending
no_timeout_raises_error, test_context_      works; ``ttl=None`` is refused when the lock is
manager_reacquiring_lock_with_no_timeout_   made)
raises_error
test_extending_lock_no_longer_owned_        test_extending_lock_no_longer_owned (DIFFERS:
raises_error, test_reacquiring_lock_no_     ``False``, the lease marked lost, ``on_lost``)
longer_owned_raises_error
test_reacquire_lock                         test_reacquire_lock
test_context_manager_reacquiring_lock_no_   test_with_lock_no_longer_owned_raises_lock_lost
longer_owned_raises_error                   (DIFFERS: LockLost on leaving the block)
TestLockClassSelection.test_lock_class_     not ported: a hook of ``Redis.lock()``, the
argument                                    factory; a RemoteLock is built directly

redis-py ``tests/test_asyncio/test_lock.py``  here
------------------------------------------  ------------------------------------------------
test_lock                                   test_async_lock (DIFFERS as test_lock)
test_lock_token                             test_async_lock_token (DIFFERS as test_lock_token)
test_lock_token_thread_local_false          test_async_token_lives_on_the_lease (DIFFERS
                                            from ``thread_local=True``: another task releases)
test_locked                                 test_async_locked
test_owned, test_owned_with_decoded_        test_async_owned
responses
test_competing_locks                        test_async_competing_locks (two tasks; in one
                                            task DIFFERS: RuntimeError, not ``False``)
test_timeout, test_float_timeout            test_async_ttl_is_the_lease_length;
                                            test_async_lease_is_renewed_while_held (DIFFERS)
test_blocking                               test_async_blocking_is_chosen_per_call
test_blocking_timeout                       test_async_blocking_timeout (DIFFERS: LockTimeout)
test_context_manager                        test_async_context_manager
test_context_manager_raises_when_locked_    test_async_context_manager_raises_when_locked_
not_acquired                                not_acquired
test_high_sleep_small_blocking_timeout      test_async_high_sleep_small_blocking_timeout
test_releasing_unlocked_lock_raises_error   test_async_releasing_unlocked_lock_raises_error
                                            (DIFFERS: RuntimeError)
test_releasing_lock_no_longer_owned_        test_async_releasing_lock_no_longer_owned
raises_error                                (DIFFERS: ``False`` + WARNING + lease lost)
test_extend_lock, test_extend_lock_         test_async_extend_lock (DIFFERS: replaces)
replace_ttl, test_extend_lock_float
test_extending_unlocked_lock_raises_error,  test_async_extending_unlocked_lock_raises_error
test_reacquiring_unlocked_lock_raises_      (DIFFERS: RuntimeError)
error
test_extending_lock_with_no_timeout_        test_async_extending_a_lock_with_the_default_ttl
raises_error, test_reacquiring_lock_with_   (DIFFERS: works)
no_timeout_raises_error
test_extending_lock_no_longer_owned_        test_async_extending_lock_no_longer_owned
raises_error, test_reacquiring_lock_no_     (DIFFERS: ``False``, lease lost, ``on_lost``)
longer_owned_raises_error
test_reacquire_lock                         test_async_reacquire_lock
(sync only in redis-py)                     test_async_with_lock_no_longer_owned_raises_lock_
                                            lost (DIFFERS: LockLost)
TestLockClassSelection.test_lock_class_     not ported (as above)
argument

RemoteLock's own, with no redis-py counterpart: test_fencing_tokens_increase and
test_async_fencing_tokens_increase: every acquisition of a key gets a larger fencing
token than the last, across lock objects, threads, tasks, take-overs and expiries.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import tenacity

from remotelock import Lease, LockLost, LockTimeout, RemoteLock, StoreUnavailable
from remotelock.stores.base import HasAsyncTwin, LockAdmin, Store

from .helpers import (
    PATIENCE,
    SLACK,
    Bunch,
    async_timed_acquire,
    new_lock,
    timed_acquire,
    wait_until,
)

BLOCKING_TIMEOUT = 0.3
"""redis-py's ``blocking_timeout`` in the timing cases."""

SLEEP = 0.05
"""redis-py's ``sleep`` between attempts in the timing cases."""

LONG_TTL = 5.0
"""Lease length where a holder is taken over: no renewal comes before the test is done."""

EXPIRING_TTL = 0.3
"""Lease length of holders that stop renewing and are meant to expire."""

CUT_SHORT = 0.02
"""What :func:`run_out` cuts a holder's lease to, behind its back, in the store."""


# -- helpers ----------------------------------------------------------------------------


def expires_in(store: Store, key: str) -> float | None:
    """Seconds the store gives the lease of ``key``, by its own clock, where it can tell
    (the stores with admin steps); ``None`` for a store that cannot (CallableStore)."""
    if not isinstance(store, LockAdmin):
        return None
    for info in store.iter_locks(key):
        if info.key == key:
            return info.expires_in
    raise AssertionError(f"{key!r} is not held in {store!r}")


def assert_lease_length(store: Store, lease: Lease, low: float, high: float) -> None:
    """The lease has more than ``low`` and at most ``high`` seconds left, by the holder's
    own account and (where it can tell) by the store's. redis-py checks ``r.pttl``."""
    assert low < lease.remaining() <= high, lease.remaining()
    left = expires_in(store, lease.key)
    if left is not None:
        assert low < left <= high, left


def run_out(store: Store, key: str, token: str) -> None:
    """Make the lease of ``token`` run out in the store, behind its holder's back (whose
    own account still gives it its ttl, as for a holder paused past its lease)."""
    assert store.extend(key, token, CUT_SHORT)
    wait_until(lambda: store.owner(key) is None, f"the lease of {key!r} to run out")


def take_over(store: Store, key: str, token: str) -> tuple[str, int]:
    """What redis-py's cases do with ``r.set(name, "a")``: the holder ``token`` no longer
    owns ``key`` and another holder has taken it. Done with the store's own steps: the
    lease runs out (:func:`run_out`) and another token takes the key. Returns that token
    (give it back with ``store.release``) and its fencing token.

    (Not ``store.release(key, token)``: a store may answer a repeated release by the
    token that released the key last with ``True``, a retry after a lost reply; the
    holder's own release would then look like a repeat of that one.)"""
    run_out(store, key, token)
    rival = uuid.uuid4().hex
    fence = store.acquire(key, rival, LONG_TTL)
    assert fence is not None
    return rival, fence


def owned(store: Store, lease: Lease) -> bool:
    """redis-py's ``lock.owned()``: the lease still holds the lock, by its own account
    and by the store's."""
    return not lease.lost and not lease.released and store.owner(lease.key) == lease.token


def warned(caplog: pytest.LogCaptureFixture, key: str) -> bool:
    """Whether a WARNING about ``key`` went to the ``remotelock`` logger tree."""
    return any(
        record.levelno == logging.WARNING
        and record.name.startswith("remotelock")
        and key in record.getMessage()
        for record in caplog.records
    )


def warned_soon(caplog: pytest.LogCaptureFixture, store: Store, key: str) -> bool:
    """:func:`warned`; with :func:`may_keep`, the WARNING comes from the thread that found
    the kept lock's loss, just after it marked the lease lost, so wait for it."""
    if may_keep(store):
        wait_until(lambda: warned(caplog, key), f"a WARNING about {key!r}")
    return warned(caplog, key)


def may_keep(store: Store) -> bool:
    """Whether a release may be kept in its process for a moment (Redis with ``barging=``,
    see remotelock.streak). DIFFERS then: such a release returns ``True`` by the lease's
    own clock, and a loss made behind its back at the store is found (lease lost, WARNING,
    ``on_lost``) when the kept lock reaches the store, within ``streak.KEEP``; until
    then the key still looks held to the store."""
    return bool(getattr(store, "barging", 0))


def found_lost(store: Store, lease: Lease, released: bool) -> None:
    """``lease``'s release reported its loss, or (:func:`may_keep`) found it soon after."""
    if may_keep(store):
        wait_until(lambda: lease.lost, "the kept lock's loss to be found")
    else:
        assert released is False
    assert lease.lost


def freed(store: Store, key: str) -> None:
    """Nobody holds ``key`` (:func:`may_keep`: once a kept lock reached the store)."""
    if may_keep(store):
        wait_until(lambda: store.owner(key) is None, f"the kept lock {key!r} to be released")
    assert store.owner(key) is None


def increasing(values: list[int]) -> bool:
    return all(earlier < later for earlier, later in itertools.pairwise(values))


class NoRenewals:
    """``store`` as a holder sees it once it can no longer reach it to renew (a paused
    or partitioned process): every renewal fails; acquire, release, owner and wait go
    through. What another process sees is the store itself."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.capabilities = store.capabilities

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        return self.store.acquire(key, token, ttl)

    def release(self, key: str, token: str) -> bool:
        return self.store.release(key, token)

    def extend(self, key: str, token: str, ttl: float) -> bool:
        raise StoreUnavailable(f"renewing {key!r}: the store cannot be reached")

    def owner(self, key: str) -> str | None:
        return self.store.owner(key)

    def wait(self, key: str, timeout: float) -> None:
        self.store.wait(key, timeout)

    def __repr__(self) -> str:
        return f"NoRenewals({self.store!r})"


# -- acquire, tokens, locked, owned ------------------------------------------------------


def test_lock(store: Store, key: str) -> None:
    """The holder's token is what the store holds, and a release clears it. DIFFERS:
    redis-py's entry has no expiry by default (``ttl == -1``); every RemoteLock entry has
    a lease (``ttl``, 30 s by default), renewed while held."""
    lock = RemoteLock(key, store=store, stop=tenacity.stop_after_delay(PATIENCE))
    lease = lock.acquire(blocking=False)
    assert lease
    assert store.owner(key) == lease.token
    assert_lease_length(store, lease, 25, 30)
    lock.release()
    assert store.owner(key) is None


def test_lock_token(store: Store, key: str) -> None:
    """DIFFERS: redis-py lets the caller choose the token (``acquire(token="test")``);
    RemoteLock has no such argument and gives every acquisition a fresh random token, so
    a token can never be guessed or reused by another holder. The token stays readable
    on the lease after the release, which marks the lease released."""
    lock = new_lock(key, store)
    with pytest.raises(TypeError):
        lock.acquire(blocking=False, token="test")  # type: ignore[call-overload]
    assert store.owner(key) is None

    first = lock.acquire(blocking=False)
    assert first
    assert isinstance(first.token, str)
    assert store.owner(key) == first.token
    lock.release()
    assert store.owner(key) is None
    assert first.released

    second = lock.acquire(blocking=False)
    assert second
    assert second.token != first.token
    lock.release()


def test_token_lives_on_the_lease(store: Store, key: str) -> None:
    """The ``thread_local`` question. DIFFERS from redis-py's default
    (``thread_local=True``, where another thread sees no token and cannot release): the
    token is kept on the lease, every thread sees the same one, and a lease taken in one
    thread is released from another, as with ``thread_local=False``."""
    lock = new_lock(key, store)
    lease = Bunch.run(lock.acquire)
    assert store.owner(key) == lease.token
    assert lock.release() is True  # this thread never acquired it
    assert lease.released
    assert store.owner(key) is None

    lease = lock.acquire()
    assert Bunch.run(lambda: lease.token) == lease.token
    assert Bunch.run(lease.release) is True
    freed(store, key)  # may_keep: this acquire followed a release within streak.KEEP


def test_locked(store: Store, key: str) -> None:
    """``locked()`` tells whether anyone holds the key, whichever lock object asks (as
    redis-py's ``locked()``; "do I hold it" is :func:`test_owned`)."""
    lock = new_lock(key, store)
    other = new_lock(key, store)
    assert lock.locked() is False
    lock.acquire(blocking=False)
    assert lock.locked() is True
    assert other.locked() is True
    lock.release()
    assert lock.locked() is False

    other.acquire(blocking=False)
    assert lock.locked() is True
    assert other.locked() is True
    other.release()
    assert lock.locked() is False
    assert other.locked() is False


def test_owned(store: Store, key: str) -> None:
    """redis-py's ``owned()`` is a question about one's own lease: held by its own
    account and by the store's (tokens are ``str`` on every store, so the comparison
    holds without redis-py's decoded-responses case)."""
    lock = new_lock(key, store)
    other = new_lock(key, store)
    lease = lock.acquire(blocking=False)
    assert lease
    assert owned(store, lease)
    lock.release()
    assert not owned(store, lease)

    successor = other.acquire(blocking=False)
    assert successor
    assert owned(store, successor)
    assert not owned(store, lease)
    other.release()
    assert not owned(store, successor)
    assert not owned(store, lease)


def test_competing_locks_in_two_threads(store: Store, key: str) -> None:
    """Two lock objects of one key, in two threads: one at a time."""
    lock1 = new_lock(key, store)
    lock2 = new_lock(key, store)
    assert lock1.acquire(blocking=False)
    assert Bunch.run(lambda: lock2.acquire(blocking=False)) is None
    lock1.release()
    assert Bunch.run(lambda: lock2.acquire(blocking=False))
    assert lock1.acquire(blocking=False) is None
    lock2.release()  # the other thread's lease, from this one
    assert not lock1.locked()


def test_competing_locks_in_one_thread(store: Store, key: str) -> None:
    """DIFFERS: in redis-py one thread may hold ``lock1`` and be refused ``lock2`` of the
    same name (``False``). RemoteLock is not reentrant: a thread that holds the key and
    asks again, through any lock object, gets RuntimeError at once (waiting for itself
    could only time out)."""
    lock1 = new_lock(key, store)
    lock2 = new_lock(key, store)
    assert lock1.acquire(blocking=False)
    with pytest.raises(RuntimeError, match="not reentrant"):
        lock2.acquire(blocking=False)
    lock1.release()
    assert lock2.acquire(blocking=False)
    with pytest.raises(RuntimeError, match="not reentrant"):
        lock1.acquire(blocking=False)
    lock2.release()


# -- lease length (redis-py's timeout) ------------------------------------------------------


def test_ttl_is_the_lease_length(store: Store, key: str) -> None:
    """redis-py's ``timeout=10``: the store's entry expires 10 s from now."""
    lock = new_lock(key, store, ttl=10)
    lease = lock.acquire(blocking=False)
    assert lease
    assert_lease_length(store, lease, 8, 10)
    lock.release()


def test_float_ttl(store: Store, key: str) -> None:
    """Fractions of a second (and a ``timedelta``) work as lease lengths."""
    for ttl in (9.5, timedelta(seconds=9.5)):
        lock = new_lock(key, store, ttl=ttl)
        lease = lock.acquire(blocking=False)
        assert lease
        assert lease.ttl == 9.5
        assert_lease_length(store, lease, 8, 9.5)
        lock.release()


def test_lease_is_renewed_while_held(store: Store, key: str) -> None:
    """DIFFERS: redis-py's lock expires ``timeout`` after it was taken, held or not; a
    RemoteLock lease is renewed while it is held, so the holder keeps the lock past its
    ttl until it releases."""
    lock = new_lock(key, store, ttl=EXPIRING_TTL)
    lease = lock.acquire()
    time.sleep(EXPIRING_TTL * 2.5)
    assert not lease.lost
    assert store.owner(key) == lease.token
    assert Bunch.run(lambda: new_lock(key, store).acquire(blocking=False)) is None
    assert lock.release() is True


def test_abandoned_lock_expires_after_ttl(store: Store, key: str) -> None:
    """What ``timeout`` is for: a holder that stops renewing (a killed process leaves
    just its entry in the store) blocks the others for ``ttl``, not longer. A waiter
    gets the lock no earlier than that, and soon after (within one pause of the default
    wait, at most 0.5 s)."""
    started = time.monotonic()
    assert store.acquire(key, uuid.uuid4().hex, EXPIRING_TTL) is not None
    lock = new_lock(key, store)
    assert lock.acquire(blocking=False) is None
    lease = lock.acquire(timeout=PATIENCE)
    elapsed = time.monotonic() - started
    assert EXPIRING_TTL <= elapsed < EXPIRING_TTL + 0.5 + SLACK
    assert store.owner(key) == lease.token
    lock.release()


# -- blocking, blocking_timeout and sleep ---------------------------------------------------


def test_blocking_is_chosen_per_call(store: Store, key: str) -> None:
    """redis-py's ``blocking`` is a lock attribute; here it is an argument of each
    ``acquire`` (``blocking=False``: one attempt, ``None`` when busy), and the lock-wide
    equivalent is ``stop=tenacity.stop_after_attempt(1)`` (one attempt, then
    LockTimeout, also for ``with``)."""
    holder = new_lock(key, store)
    holder.acquire()
    waiter = new_lock(key, store)
    once = new_lock(key, store, stop=tenacity.stop_after_attempt(1))

    def attempts() -> None:
        assert waiter.acquire(blocking=False) is None
        with pytest.raises(LockTimeout):
            once.acquire()
        with pytest.raises(LockTimeout), once:
            pass

    Bunch.run(attempts)
    holder.release()
    assert once.acquire()
    once.release()


def test_blocking_timeout(store: Store, key: str) -> None:
    """``blocking_timeout=0.3, sleep=0.05`` against a held lock, per call
    (``timeout=``) and per lock (``stop=``). DIFFERS: the acquire raises LockTimeout
    instead of returning ``False``. It gives up no earlier than the timeout (redis-py
    allows one ``sleep`` less) and soon after it."""
    holder = new_lock(key, store)
    holder.acquire(blocking=False)
    waiter = new_lock(key, store, wait=tenacity.wait_fixed(SLEEP))
    lockwide = new_lock(
        key,
        store,
        wait=tenacity.wait_fixed(SLEEP),
        stop=tenacity.stop_after_delay(BLOCKING_TIMEOUT),
    )
    try:
        for outcome, elapsed in (
            Bunch.run(lambda: timed_acquire(waiter, timeout=BLOCKING_TIMEOUT)),
            Bunch.run(lambda: timed_acquire(lockwide)),
        ):
            assert isinstance(outcome, LockTimeout)
            assert outcome.key == key
            assert BLOCKING_TIMEOUT <= elapsed < BLOCKING_TIMEOUT + SLACK
    finally:
        holder.release()


def test_high_sleep_small_blocking_timeout(store: Store, key: str) -> None:
    """``sleep=60`` (here 1 s) with ``blocking_timeout=1`` (here 0.2 s): the wait gives up
    at the timeout, not after a whole pause between attempts."""
    holder = new_lock(key, store)
    holder.acquire(blocking=False)
    waiter = new_lock(key, store, wait=tenacity.wait_fixed(1))
    lockwide = new_lock(
        key, store, wait=tenacity.wait_fixed(1), stop=tenacity.stop_after_delay(0.2)
    )

    def enter() -> float:
        started = time.monotonic()
        with pytest.raises(LockTimeout), lockwide:
            pass
        return time.monotonic() - started

    try:
        outcome, elapsed = Bunch.run(lambda: timed_acquire(waiter, timeout=0.2))
        assert isinstance(outcome, LockTimeout)
        assert 0.2 <= elapsed < 0.2 + SLACK
        assert 0.2 <= Bunch.run(enter) < 0.2 + SLACK
    finally:
        holder.release()


def test_wait_longer_than_ttl_is_accepted(store: Store, key: str) -> None:
    """DIFFERS from older redis-py, which refused ``sleep`` longer than ``timeout``:
    ``wait`` only bounds the pause between attempts (on stores that push wake-ups a
    release ends it sooner) and ``ttl`` only bounds how long an abandoned lock blocks,
    so any pair is fine."""
    lock = new_lock(key, store, ttl=0.5, wait=tenacity.wait_fixed(2))
    lease = lock.acquire(blocking=False)
    assert lease
    lock.release()


# -- with ----------------------------------------------------------------------------------


def test_context_manager(store: Store, key: str) -> None:
    """``with lock as lease:`` holds the store's entry for the block and frees it after."""
    lock = new_lock(key, store, stop=tenacity.stop_after_delay(0.2))
    with lock as lease:
        assert store.owner(key) == lease.token
    assert store.owner(key) is None
    assert lease.released


def test_context_manager_blocking_timeout(store: Store, key: str) -> None:
    """While a ``with`` block holds the lock, a waiter with ``timeout=`` gives up with
    LockTimeout on time. The waiter runs in another thread (in the holding one it would
    get RuntimeError: not reentrant)."""
    with new_lock(key, store, stop=tenacity.stop_after_attempt(1)):
        waiter = new_lock(key, store, wait=tenacity.wait_fixed(SLEEP))
        outcome, elapsed = Bunch.run(lambda: timed_acquire(waiter, timeout=BLOCKING_TIMEOUT))
        assert isinstance(outcome, LockTimeout)
        assert BLOCKING_TIMEOUT <= elapsed < BLOCKING_TIMEOUT + SLACK


def test_context_manager_raises_when_locked_not_acquired(store: Store, key: str) -> None:
    """Another holder has the key (put there with the store's own step, as another
    process would): ``with`` gives up with LockTimeout (a TimeoutError, like redis-py's
    LockError) naming the key, the block never runs, and the holder keeps its lock."""
    foreign = uuid.uuid4().hex
    assert store.acquire(key, foreign, LONG_TTL) is not None
    ran: list[bool] = []
    try:
        with (
            pytest.raises(LockTimeout) as caught,
            new_lock(key, store, stop=tenacity.stop_after_delay(0.1)),
        ):
            ran.append(True)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.key == key
        assert key in str(caught.value)
        assert ran == []
        assert store.owner(key) == foreign
    finally:
        store.release(key, foreign)


# -- release ---------------------------------------------------------------------------------


def test_releasing_unlocked_lock_raises_error(store: Store, key: str) -> None:
    """DIFFERS in the exception: RuntimeError ("not held", as ``threading.Lock``), not
    redis-py's LockError. A lease released once stays released: releasing it again
    returns ``False`` and does not count as a loss."""
    lock = new_lock(key, store)
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()
    lease = lock.acquire()
    lock.release()
    with pytest.raises(RuntimeError, match="not held"):
        lock.release()
    assert lease.release() is False
    assert not lease.lost


def test_releasing_lock_no_longer_owned(
    store: Store, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another holder took the key behind the lock's back. DIFFERS: redis-py raises
    LockNotOwnedError; RemoteLock's release returns ``False``, logs a WARNING and marks
    the lease lost (documented: a failed release is reported, not raised as a confusing
    error). As in redis-py, the lock object holds nothing afterwards, and the successor's
    lock is left alone. A lease that ran out with nobody taking the key since counts as
    lost too: exclusion was not guaranteed past its end."""
    caplog.set_level(logging.WARNING, logger="remotelock")
    lock = new_lock(key, store, ttl=LONG_TTL)
    lease = lock.acquire(blocking=False)
    assert lease
    rival, _ = take_over(store, key, lease.token)
    try:
        assert lock.release() is False
        assert lease.lost
        assert lease.released
        assert warned(caplog, key)
        assert store.owner(key) == rival
        with pytest.raises(RuntimeError, match="not held"):
            lock.release()
    finally:
        store.release(key, rival)

    caplog.clear()
    lease = lock.acquire(blocking=False)  # run out, and nobody took the key since
    assert lease
    run_out(store, key, lease.token)
    found_lost(store, lease, lock.release())
    assert warned_soon(caplog, store, key)


def test_releasing_expired_lock_taken_by_another(
    store: Store, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The real-world form of the case: the holder cannot renew (paused, cut off), its
    lease runs out, another holder takes the key. The holder is told at its deadline
    (``lease.lost``), the successor gets the lock no earlier than the ttl, and the late
    release returns ``False`` after a WARNING. DIFFERS as
    :func:`test_releasing_lock_no_longer_owned`: no LockNotOwnedError."""
    caplog.set_level(logging.WARNING, logger="remotelock")
    lock = new_lock(key, NoRenewals(store), ttl=EXPIRING_TTL)
    started = time.monotonic()
    lease = lock.acquire(blocking=False)
    assert lease
    successor = new_lock(key, store)
    taken = successor.acquire(timeout=PATIENCE)
    assert time.monotonic() - started >= EXPIRING_TTL
    try:
        assert lease.lost
        assert lock.release() is False
        assert lease.released
        assert warned(caplog, key)
        assert store.owner(key) == taken.token
    finally:
        successor.release()


# -- extend and reacquire ----------------------------------------------------------------------


def test_extend_lock(store: Store, key: str) -> None:
    """DIFFERS: redis-py's ``extend(10)`` adds 10 s to what is left; RemoteLock's
    ``extend(ttl)`` always resets the lease to ``ttl`` from now (redis-py's
    ``replace_ttl=True``), so adding 10 s to a 10 s lease is ``extend(20)``."""
    lock = new_lock(key, store, ttl=10)
    lease = lock.acquire(blocking=False)
    assert lease
    assert_lease_length(store, lease, 8, 10)
    assert lock.extend(20) is True
    assert_lease_length(store, lease, 16, 20)
    assert lease.extend(15) is True  # the lease's own form; replacing may shorten it
    assert_lease_length(store, lease, 13, 15)
    lock.release()


def test_extend_lock_replace_ttl(store: Store, key: str) -> None:
    """``extend(10, replace_ttl=True)`` on a 10 s lease: ``extend(10)`` resets it to 10 s."""
    lock = new_lock(key, store, ttl=10)
    lease = lock.acquire(blocking=False)
    assert lease
    assert lock.extend(10) is True
    assert_lease_length(store, lease, 8, 10)
    assert lease.extend(10) is True
    assert_lease_length(store, lease, 8, 10)
    lock.release()


def test_extend_lock_float(store: Store, key: str) -> None:
    """Fractional (and ``timedelta``) extensions work."""
    lock = new_lock(key, store, ttl=10.0)
    lease = lock.acquire(blocking=False)
    assert lease
    assert lock.extend(12.5) is True
    assert_lease_length(store, lease, 11, 12.5)
    assert lock.extend(timedelta(seconds=14.5)) is True
    assert_lease_length(store, lease, 13, 14.5)
    assert lease.extend(9.5) is True
    assert_lease_length(store, lease, 8, 9.5)
    lock.release()


def test_extending_unlocked_lock_raises_error(store: Store, key: str) -> None:
    """Extending (or reacquiring) a lock this object does not hold. DIFFERS in the
    exception: RuntimeError ("not held"), not LockError. A released lease cannot be
    extended back to life: ``False``, and the key stays free."""
    lock = new_lock(key, store, ttl=10)
    with pytest.raises(RuntimeError, match="not held"):
        lock.extend(10)
    with pytest.raises(RuntimeError, match="not held"):
        lock.extend()
    lease = lock.acquire()
    lock.release()
    with pytest.raises(RuntimeError, match="not held"):
        lock.extend(10)
    assert lease.extend(10) is False
    assert lease.extend() is False
    assert store.owner(key) is None


def test_extending_a_lock_with_the_default_ttl(store: Store, key: str) -> None:
    """DIFFERS: redis-py cannot extend or reacquire a lock made without ``timeout`` (it
    never expires). Every RemoteLock has a lease (30 s by default), so extending one
    made without ``ttl=`` works, also inside ``with``; ``ttl=None`` is refused when the
    lock is made."""
    with pytest.raises(TypeError, match="ttl"):
        RemoteLock(key, store=store, ttl=None)  # type: ignore[arg-type]
    lock = RemoteLock(key, store=store, stop=tenacity.stop_after_delay(PATIENCE))
    lease = lock.acquire(blocking=False)
    assert lease
    assert lock.extend() is True
    assert_lease_length(store, lease, 28, 30)
    assert lock.extend(10) is True
    assert lease.extend() is True  # the lease's own ttl is now 10 s
    assert_lease_length(store, lease, 8, 10)
    lock.release()

    with lock as entered:
        assert entered.extend() is True
        assert lock.extend() is True
        assert_lease_length(store, entered, 28, 30)
    freed(store, key)


def test_extending_lock_no_longer_owned(store: Store, key: str) -> None:
    """Another holder took the key behind the lock's back. DIFFERS: redis-py raises
    LockNotOwnedError from ``extend`` and ``reacquire``; RemoteLock returns ``False``,
    marks the lease lost and calls ``on_lost`` once. The successor's lock is left alone.
    A lease that ran out with nobody taking the key since is not revived by an extend."""
    lost: list[Lease] = []
    lock = new_lock(key, store, ttl=LONG_TTL, on_lost=lost.append)
    lease = lock.acquire(blocking=False)
    assert lease
    rival, _ = take_over(store, key, lease.token)
    try:
        assert lock.extend(10) is False
        assert lease.lost
        assert lost == [lease]
        assert lock.extend() is False  # reacquire
        assert lease.extend() is False
        assert lost == [lease]
        assert store.owner(key) == rival
        assert lock.release() is False
    finally:
        store.release(key, rival)

    lease = lock.acquire(blocking=False)  # run out, and nobody took the key since
    assert lease
    run_out(store, key, lease.token)
    assert lock.extend() is False
    assert lease.lost
    assert len(lost) == 2
    assert lost[-1] is lease
    assert store.owner(key) is None  # the extend did not take the key back
    assert lock.release() is False


def test_reacquire_lock(store: Store, key: str) -> None:
    """redis-py shortens the entry behind the lock's back (``pexpire(name, 5000)``), then
    ``reacquire()`` resets it to the lock's timeout. Here the store's own extend step
    shortens it to 2 s; ``lease.extend()`` and ``lock.extend()`` reset it to the ttl."""
    lock = new_lock(key, store, ttl=10)
    lease = lock.acquire(blocking=False)
    assert lease
    assert store.extend(key, lease.token, 2)
    left = expires_in(store, key)
    assert left is None or left <= 2
    assert lease.extend() is True
    assert_lease_length(store, lease, 8, 10)
    assert store.extend(key, lease.token, 2)
    assert lock.extend() is True
    assert_lease_length(store, lease, 8, 10)
    lock.release()


def test_with_lock_no_longer_owned_raises_lock_lost(
    store: Store, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Another holder took the key during a ``with`` block. DIFFERS: redis-py raises
    LockNotOwnedError on leaving; RemoteLock raises LockLost (naming the key and the
    holder's fencing token), because the block may not have run alone. With
    ``raise_on_lost=False`` (redis-py's ``raise_on_release_error=False``) leaving only
    logs the WARNING."""
    caplog.set_level(logging.WARNING, logger="remotelock")
    lock = new_lock(key, store, ttl=LONG_TTL)
    rival = ""
    with pytest.raises(LockLost) as caught, lock as lease:
        rival, _ = take_over(store, key, lease.token)
    assert caught.value.key == key
    assert caught.value.fencing_token == lease.fencing_token
    assert lease.lost
    assert store.owner(key) == rival
    store.release(key, rival)

    caplog.clear()
    quiet = new_lock(key, store, ttl=LONG_TTL, raise_on_lost=False)
    with quiet as lease:
        rival, _ = take_over(store, key, lease.token)
    found_lost(store, lease, released=False)
    assert warned_soon(caplog, store, key)
    assert store.owner(key) == rival
    store.release(key, rival)


# -- fencing tokens (RemoteLock's own) ---------------------------------------------------------


def test_fencing_tokens_increase(store: Store, key: str) -> None:
    """Every acquisition of a key gets a larger fencing token than the one before, from
    any lock object or thread, after a take-over and after an expiry."""
    lock = new_lock(key, store, ttl=LONG_TTL)
    other = new_lock(key, store)
    fences: list[int] = []
    for _ in range(3):
        with lock as lease:
            fences.append(lease.fencing_token)

    def in_other_thread() -> int:
        with other as lease:
            return lease.fencing_token

    fences.append(Bunch.run(in_other_thread))

    lease = lock.acquire()
    fences.append(lease.fencing_token)
    rival, fence = take_over(store, key, lease.token)
    fences.append(fence)
    # This acquire may follow the other thread's release within streak.KEEP, so its
    # release may be kept (may_keep): the loss is then found when it reaches the store.
    found_lost(store, lease, lock.release())
    store.release(key, rival)

    started = time.monotonic()
    fence_of_abandoned = store.acquire(key, uuid.uuid4().hex, EXPIRING_TTL)
    assert fence_of_abandoned is not None
    fences.append(fence_of_abandoned)
    with lock as lease:  # waits for the abandoned entry to expire
        assert time.monotonic() - started >= EXPIRING_TTL
        fences.append(lease.fencing_token)
    assert increasing(fences), fences


# == asyncio (redis-py's tests/test_asyncio/test_lock.py) ======================================


@pytest.fixture
async def astore(store: Store) -> AsyncIterator[Store]:
    """Every sync store, used from async code; its async twin is closed afterwards."""
    yield store
    if isinstance(store, HasAsyncTwin):
        closer = getattr(store.as_async(), "aclose", None)
        if closer is not None:
            await closer()


async def test_async_lock(astore: Store, key: str) -> None:
    """As :func:`test_lock` (DIFFERS the same way: the entry always has a lease)."""
    lock = RemoteLock(key, store=astore, stop=tenacity.stop_after_delay(PATIENCE))
    lease = await lock.aacquire(blocking=False)
    assert lease
    assert await asyncio.to_thread(astore.owner, key) == lease.token
    await asyncio.to_thread(assert_lease_length, astore, lease, 25, 30)
    await lock.arelease()
    assert await asyncio.to_thread(astore.owner, key) is None


async def test_async_lock_token(astore: Store, key: str) -> None:
    """As :func:`test_lock_token`. DIFFERS: no ``token=``; a fresh random token each time."""
    lock = new_lock(key, astore)
    with pytest.raises(TypeError):
        await lock.aacquire(blocking=False, token="test")  # type: ignore[call-overload]
    first = await lock.aacquire(blocking=False)
    assert first
    assert await asyncio.to_thread(astore.owner, key) == first.token
    await lock.arelease()
    assert await asyncio.to_thread(astore.owner, key) is None
    assert first.released
    second = await lock.aacquire(blocking=False)
    assert second
    assert second.token != first.token
    await lock.arelease()


async def test_async_token_lives_on_the_lease(astore: Store, key: str) -> None:
    """As :func:`test_token_lives_on_the_lease`, with tasks. DIFFERS from redis-py's
    default ``thread_local=True``: a lease taken in one task is released from another."""
    lock = new_lock(key, astore)
    lease = await asyncio.create_task(lock.aacquire())
    assert await asyncio.to_thread(astore.owner, key) == lease.token
    assert await lock.arelease() is True
    assert lease.released

    lease = await lock.aacquire()
    assert await asyncio.create_task(lease.arelease()) is True
    assert await asyncio.to_thread(astore.owner, key) is None


async def test_async_locked(astore: Store, key: str) -> None:
    """As :func:`test_locked`: any holder, whichever lock object asks."""
    lock = new_lock(key, astore)
    other = new_lock(key, astore)
    assert await lock.alocked() is False
    await lock.aacquire(blocking=False)
    assert await lock.alocked() is True
    assert await other.alocked() is True
    await lock.arelease()
    assert await lock.alocked() is False
    await other.aacquire(blocking=False)
    assert await lock.alocked() is True
    await other.arelease()
    assert await lock.alocked() is False
    assert await other.alocked() is False


async def test_async_owned(astore: Store, key: str) -> None:
    """As :func:`test_owned`."""
    lock = new_lock(key, astore)
    other = new_lock(key, astore)
    lease = await lock.aacquire(blocking=False)
    assert lease
    assert await asyncio.to_thread(owned, astore, lease)
    await lock.arelease()
    assert not await asyncio.to_thread(owned, astore, lease)
    successor = await other.aacquire(blocking=False)
    assert successor
    assert await asyncio.to_thread(owned, astore, successor)
    assert not await asyncio.to_thread(owned, astore, lease)
    await other.arelease()
    assert not await asyncio.to_thread(owned, astore, successor)


async def test_async_competing_locks(astore: Store, key: str) -> None:
    """As :func:`test_competing_locks_in_two_threads` with two tasks, and
    :func:`test_competing_locks_in_one_thread` in one task (DIFFERS: RuntimeError, not
    reentrant, instead of ``False``)."""
    lock1 = new_lock(key, astore)
    lock2 = new_lock(key, astore)
    assert await lock1.aacquire(blocking=False)
    assert await asyncio.create_task(lock2.aacquire(blocking=False)) is None
    with pytest.raises(RuntimeError, match="not reentrant"):
        await lock2.aacquire(blocking=False)
    await lock1.arelease()
    assert await asyncio.create_task(lock2.aacquire(blocking=False))
    assert await lock1.aacquire(blocking=False) is None
    await lock2.arelease()
    assert not await lock1.alocked()


async def test_async_ttl_is_the_lease_length(astore: Store, key: str) -> None:
    """As :func:`test_ttl_is_the_lease_length` and :func:`test_float_ttl`."""
    for ttl, low in ((10.0, 8.0), (9.5, 8.0)):
        lock = new_lock(key, astore, ttl=ttl)
        lease = await lock.aacquire(blocking=False)
        assert lease
        await asyncio.to_thread(assert_lease_length, astore, lease, low, ttl)
        await lock.arelease()


async def test_async_lease_is_renewed_while_held(astore: Store, key: str) -> None:
    """As :func:`test_lease_is_renewed_while_held` (DIFFERS: renewed while held), with
    the renewal running as a task."""
    lock = new_lock(key, astore, ttl=EXPIRING_TTL)
    lease = await lock.aacquire()
    await asyncio.sleep(EXPIRING_TTL * 2.5)
    assert not lease.lost
    assert await asyncio.to_thread(astore.owner, key) == lease.token
    rival = new_lock(key, astore)
    assert await asyncio.create_task(rival.aacquire(blocking=False)) is None
    assert await lock.arelease() is True


async def test_async_blocking_is_chosen_per_call(astore: Store, key: str) -> None:
    """As :func:`test_blocking_is_chosen_per_call` (redis-py's asyncio ``test_blocking``)."""
    holder = new_lock(key, astore)
    await holder.aacquire()
    waiter = new_lock(key, astore)
    once = new_lock(key, astore, stop=tenacity.stop_after_attempt(1))

    async def attempts() -> None:
        assert await waiter.aacquire(blocking=False) is None
        with pytest.raises(LockTimeout):
            await once.aacquire()
        with pytest.raises(LockTimeout):
            async with once:
                pass

    await asyncio.create_task(attempts())
    await holder.arelease()
    assert await once.aacquire()
    await once.arelease()


async def test_async_blocking_timeout(astore: Store, key: str) -> None:
    """As :func:`test_blocking_timeout` (DIFFERS: LockTimeout instead of ``False``)."""
    holder = new_lock(key, astore)
    await holder.aacquire(blocking=False)
    waiter = new_lock(key, astore, wait=tenacity.wait_fixed(SLEEP))
    lockwide = new_lock(
        key,
        astore,
        wait=tenacity.wait_fixed(SLEEP),
        stop=tenacity.stop_after_delay(BLOCKING_TIMEOUT),
    )
    try:
        for outcome, elapsed in (
            await asyncio.create_task(async_timed_acquire(waiter, timeout=BLOCKING_TIMEOUT)),
            await asyncio.create_task(async_timed_acquire(lockwide)),
        ):
            assert isinstance(outcome, LockTimeout)
            assert outcome.key == key
            assert BLOCKING_TIMEOUT <= elapsed < BLOCKING_TIMEOUT + SLACK
    finally:
        await holder.arelease()


async def test_async_context_manager(astore: Store, key: str) -> None:
    """As :func:`test_context_manager`, with ``async with``."""
    lock = new_lock(key, astore, stop=tenacity.stop_after_delay(0.2))
    async with lock as lease:
        assert await asyncio.to_thread(astore.owner, key) == lease.token
    assert await asyncio.to_thread(astore.owner, key) is None
    assert lease.released


async def test_async_context_manager_raises_when_locked_not_acquired(
    astore: Store, key: str
) -> None:
    """As :func:`test_context_manager_raises_when_locked_not_acquired`: LockTimeout."""
    foreign = uuid.uuid4().hex
    assert await asyncio.to_thread(astore.acquire, key, foreign, LONG_TTL) is not None
    ran: list[bool] = []
    try:
        with pytest.raises(LockTimeout) as caught:
            async with new_lock(key, astore, stop=tenacity.stop_after_delay(0.1)):
                ran.append(True)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.key == key
        assert ran == []
        assert await asyncio.to_thread(astore.owner, key) == foreign
    finally:
        await asyncio.to_thread(astore.release, key, foreign)


async def test_async_high_sleep_small_blocking_timeout(astore: Store, key: str) -> None:
    """As :func:`test_high_sleep_small_blocking_timeout`: gives up at the timeout."""
    holder = new_lock(key, astore)
    await holder.aacquire(blocking=False)
    waiter = new_lock(key, astore, wait=tenacity.wait_fixed(1))
    try:
        outcome, elapsed = await asyncio.create_task(async_timed_acquire(waiter, timeout=0.2))
        assert isinstance(outcome, LockTimeout)
        assert 0.2 <= elapsed < 0.2 + SLACK
    finally:
        await holder.arelease()


async def test_async_releasing_unlocked_lock_raises_error(astore: Store, key: str) -> None:
    """As :func:`test_releasing_unlocked_lock_raises_error` (DIFFERS: RuntimeError)."""
    lock = new_lock(key, astore)
    with pytest.raises(RuntimeError, match="not held"):
        await lock.arelease()
    lease = await lock.aacquire()
    await lock.arelease()
    with pytest.raises(RuntimeError, match="not held"):
        await lock.arelease()
    assert await lease.arelease() is False
    assert not lease.lost


async def test_async_releasing_lock_no_longer_owned(
    astore: Store, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    """As :func:`test_releasing_lock_no_longer_owned`. DIFFERS: ``False`` + WARNING + the
    lease marked lost, instead of LockNotOwnedError."""
    caplog.set_level(logging.WARNING, logger="remotelock")
    lock = new_lock(key, astore, ttl=LONG_TTL)
    lease = await lock.aacquire(blocking=False)
    assert lease
    rival, _ = await asyncio.to_thread(take_over, astore, key, lease.token)
    try:
        assert await lock.arelease() is False
        assert lease.lost
        assert lease.released
        assert warned(caplog, key)
        assert await asyncio.to_thread(astore.owner, key) == rival
        with pytest.raises(RuntimeError, match="not held"):
            await lock.arelease()
    finally:
        await asyncio.to_thread(astore.release, key, rival)


async def test_async_extend_lock(astore: Store, key: str) -> None:
    """As :func:`test_extend_lock` (DIFFERS: replaces), :func:`test_extend_lock_replace_ttl`
    and :func:`test_extend_lock_float`, with ``aextend``."""
    lock = new_lock(key, astore, ttl=10)
    lease = await lock.aacquire(blocking=False)
    assert lease
    await asyncio.to_thread(assert_lease_length, astore, lease, 8, 10)
    assert await lock.aextend(20) is True
    await asyncio.to_thread(assert_lease_length, astore, lease, 16, 20)
    assert await lock.aextend(10) is True
    await asyncio.to_thread(assert_lease_length, astore, lease, 8, 10)
    assert await lease.aextend(12.5) is True
    await asyncio.to_thread(assert_lease_length, astore, lease, 11, 12.5)
    await lock.arelease()


async def test_async_extending_unlocked_lock_raises_error(astore: Store, key: str) -> None:
    """As :func:`test_extending_unlocked_lock_raises_error` (DIFFERS: RuntimeError)."""
    lock = new_lock(key, astore, ttl=10)
    with pytest.raises(RuntimeError, match="not held"):
        await lock.aextend(10)
    with pytest.raises(RuntimeError, match="not held"):
        await lock.aextend()
    lease = await lock.aacquire()
    await lock.arelease()
    with pytest.raises(RuntimeError, match="not held"):
        await lock.aextend(10)
    assert await lease.aextend() is False
    assert await asyncio.to_thread(astore.owner, key) is None


async def test_async_extending_a_lock_with_the_default_ttl(astore: Store, key: str) -> None:
    """As :func:`test_extending_a_lock_with_the_default_ttl` (DIFFERS: every lock has a
    lease, so extending one made without ``ttl=`` works)."""
    lock = RemoteLock(key, store=astore, stop=tenacity.stop_after_delay(PATIENCE))
    lease = await lock.aacquire(blocking=False)
    assert lease
    assert await lock.aextend() is True
    assert await lease.aextend() is True
    await asyncio.to_thread(assert_lease_length, astore, lease, 28, 30)
    await lock.arelease()
    async with lock as entered:
        assert await entered.aextend() is True
        assert await lock.aextend() is True


async def test_async_extending_lock_no_longer_owned(astore: Store, key: str) -> None:
    """As :func:`test_extending_lock_no_longer_owned`. DIFFERS: ``False``, the lease
    marked lost and ``on_lost`` called once, instead of LockNotOwnedError."""
    lost: list[Lease] = []
    lock = new_lock(key, astore, ttl=LONG_TTL, on_lost=lost.append)
    lease = await lock.aacquire(blocking=False)
    assert lease
    rival, _ = await asyncio.to_thread(take_over, astore, key, lease.token)
    try:
        assert await lock.aextend(10) is False
        assert lease.lost
        assert lost == [lease]
        assert await lock.aextend() is False
        assert await lease.aextend() is False
        assert lost == [lease]
        assert await asyncio.to_thread(astore.owner, key) == rival
        assert await lock.arelease() is False
    finally:
        await asyncio.to_thread(astore.release, key, rival)


async def test_async_reacquire_lock(astore: Store, key: str) -> None:
    """As :func:`test_reacquire_lock`: ``aextend()`` resets a shortened entry to the ttl."""
    lock = new_lock(key, astore, ttl=10)
    lease = await lock.aacquire(blocking=False)
    assert lease
    assert await asyncio.to_thread(astore.extend, key, lease.token, 2)
    assert await lease.aextend() is True
    await asyncio.to_thread(assert_lease_length, astore, lease, 8, 10)
    assert await asyncio.to_thread(astore.extend, key, lease.token, 2)
    assert await lock.aextend() is True
    await asyncio.to_thread(assert_lease_length, astore, lease, 8, 10)
    await lock.arelease()


async def test_async_with_lock_no_longer_owned_raises_lock_lost(astore: Store, key: str) -> None:
    """As :func:`test_with_lock_no_longer_owned_raises_lock_lost`. DIFFERS: LockLost on
    leaving ``async with``, instead of LockNotOwnedError."""
    lock = new_lock(key, astore, ttl=LONG_TTL)
    rival = ""
    with pytest.raises(LockLost) as caught:
        async with lock as lease:
            rival, _ = await asyncio.to_thread(take_over, astore, key, lease.token)
    assert caught.value.key == key
    assert caught.value.fencing_token == lease.fencing_token
    assert await asyncio.to_thread(astore.owner, key) == rival
    await asyncio.to_thread(astore.release, key, rival)


async def test_async_fencing_tokens_increase(astore: Store, key: str) -> None:
    """As :func:`test_fencing_tokens_increase`, from tasks."""
    lock = new_lock(key, astore, ttl=LONG_TTL)
    other = new_lock(key, astore)
    fences: list[int] = []
    for _ in range(3):
        async with lock as lease:
            fences.append(lease.fencing_token)

    async def in_other_task() -> int:
        async with other as lease:
            return lease.fencing_token

    fences.append(await asyncio.create_task(in_other_task()))
    lease = await lock.aacquire()
    fences.append(lease.fencing_token)
    rival, fence = await asyncio.to_thread(take_over, astore, key, lease.token)
    fences.append(fence)
    assert await lock.arelease() is False
    await asyncio.to_thread(astore.release, key, rival)
    async with lock as lease:
        fences.append(lease.fencing_token)
    assert increasing(fences), fences
