"""Every wait is bounded, and bounded where it says: ``timeout``, ``stop`` and the ``wait``
strategy hold on every store, and a lease with no time left is never handed out."""

from __future__ import annotations

import time
from typing import Any

import pytest
import tenacity

from remotelock import LockTimeout, RemoteLock, remote_locked
from remotelock.stores import MemoryStore
from remotelock.stores.base import Store
from tests.helpers.elsewhere import held_elsewhere

SLACK = 0.5  # a loaded 2-core machine's worst scheduling delay, generously


def timed_timeout(lock: RemoteLock, **acquire: Any) -> tuple[float, LockTimeout]:
    started = time.monotonic()
    with pytest.raises(LockTimeout) as caught:
        lock.acquire(**acquire)
    return time.monotonic() - started, caught.value


def test_timeout_beats_a_long_wait_strategy(store: Store, key: str) -> None:
    lock = RemoteLock(key, store=store, wait=tenacity.wait_fixed(60))
    with held_elsewhere(RemoteLock(key, store=store)):
        waited, error = timed_timeout(lock, timeout=1)
    assert 1.0 <= waited < 1.0 + SLACK
    assert 1.0 <= error.waited < 1.0 + SLACK


def test_stop_beats_a_long_wait_strategy(store: Store, key: str) -> None:
    lock = RemoteLock(
        key, store=store, wait=tenacity.wait_fixed(60), stop=tenacity.stop_after_delay(0.5)
    )
    with held_elsewhere(RemoteLock(key, store=store)):
        waited, _ = timed_timeout(lock)
    assert 0.5 <= waited < 0.5 + SLACK


def test_short_waits_are_not_stretched(store: Store, key: str) -> None:
    """``wait_fixed(0.05)`` for one second is about twenty attempts, whatever the store
    (a store whose wait overran to 0.1 s would make only about ten)."""
    lock = RemoteLock(key, store=store, wait=tenacity.wait_fixed(0.05))
    with held_elsewhere(RemoteLock(key, store=store)):
        waited, error = timed_timeout(lock, timeout=1)
    assert error.attempts >= 15, (error.attempts, waited)


def test_default_wait_ends_at_the_timeout(store: Store, key: str) -> None:
    lock = RemoteLock(key, store=store)
    with held_elsewhere(RemoteLock(key, store=store)):
        waited, _ = timed_timeout(lock, timeout=0.3)
    assert 0.3 <= waited < 0.3 + SLACK


def test_decorator_honours_stop(memory_store: MemoryStore) -> None:
    @remote_locked("job", store=memory_store, wait=tenacity.wait_fixed(60),
                   stop=tenacity.stop_after_delay(0.4))  # fmt: skip
    def job() -> None:
        pytest.fail("must not run")

    with held_elsewhere(RemoteLock("job", store=memory_store)):
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            job()
    assert 0.4 <= time.monotonic() - started < 0.4 + SLACK


def test_either_stop_bounds_the_wait(memory_store: MemoryStore, key: str) -> None:
    stop = tenacity.stop_after_attempt(1000) | tenacity.stop_after_delay(0.3)
    lock = RemoteLock(key, store=memory_store, wait=tenacity.wait_fixed(30), stop=stop)
    with held_elsewhere(RemoteLock(key, store=memory_store)):
        waited, _ = timed_timeout(lock)
    assert 0.3 <= waited < 0.3 + SLACK


# -- threading.Lock's argument rules ------------------------------------------------------------


def test_non_blocking_takes_no_timeout(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(blocking=False, timeout=1)
    with pytest.raises(ValueError, match="non-blocking"):
        lock.acquire(False, 0)
    assert not lock.locked()
    lease = lock.acquire(blocking=False, timeout=-1)  # -1: "no timeout", as in threading
    assert lease is not None
    lease.release()


@pytest.mark.parametrize("timeout", [True, False, "1", [1]])
def test_timeout_of_the_wrong_type(memory_store: MemoryStore, key: str, timeout: Any) -> None:
    with pytest.raises(TypeError, match="timeout"):
        RemoteLock(key, store=memory_store).acquire(timeout=timeout)
    assert memory_store.owner(key) is None


@pytest.mark.parametrize("timeout", [-2, -0.5, float("nan"), float("inf"), 10**400])
def test_timeout_out_of_range(memory_store: MemoryStore, key: str, timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        RemoteLock(key, store=memory_store).acquire(timeout=timeout)


def test_minus_one_waits_as_stop_says(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store, stop=tenacity.stop_after_delay(0.3))
    with held_elsewhere(RemoteLock(key, store=memory_store)):
        waited, _ = timed_timeout(lock, timeout=-1)
    assert 0.3 <= waited < 0.3 + SLACK


# -- a lease with no time left is never handed out -----------------------------------------


class _SlowReplies(MemoryStore):
    """Replies to ``acquire`` arrive ``delay`` seconds after the store acted."""

    def __init__(self, delay: float, slow_replies: int) -> None:
        super().__init__()
        self.delay = delay
        self.slow_replies = slow_replies

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        fence = super().acquire(key, token, ttl)
        if self.slow_replies > 0:
            self.slow_replies -= 1
            time.sleep(self.delay)
        return fence


def test_a_late_reply_is_not_a_lease(key: str) -> None:
    store = _SlowReplies(delay=0.3, slow_replies=1000)

    @remote_locked(key, store=store, ttl=0.2, stop=tenacity.stop_after_delay(1))
    def job(*, has_lock: bool = False) -> None:
        pytest.fail(f"ran with has_lock={has_lock} on a lease that had already run out")

    with pytest.raises(LockTimeout):
        job()


def test_a_late_reply_is_retried_with_the_same_token(key: str) -> None:
    store = _SlowReplies(delay=0.3, slow_replies=1)
    seen: list[float] = []

    @remote_locked(key, store=store, ttl=0.2, stop=tenacity.stop_after_delay(5))
    def job(lease: Any = None) -> None:
        seen.append(lease.remaining())

    job()
    assert len(seen) == 1
    assert seen[0] > 0.05
    assert store.owner(key) is None
