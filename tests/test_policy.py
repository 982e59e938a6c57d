"""How waiting is wired: tenacity strategies bound the store's wait; giving up is LockTimeout."""

from __future__ import annotations

import random
import time

import pytest
import tenacity

from remotelock import LockTimeout, RemoteLock
from remotelock.permits import permit_view
from remotelock.policy import (
    DEFAULT_STOP,
    DEFAULT_WAIT,
    PUSHED_WAIT,
    check_stop,
    check_wait,
    default_wait,
    store_wait,
)
from remotelock.stores import MemoryStore


class RecordingStore(MemoryStore):
    """Busy for ``busy_attempts`` attempts; records every wait's timeout (never sleeps)."""

    def __init__(self, busy_attempts: int) -> None:
        super().__init__()
        self.busy_attempts = busy_attempts
        self.attempts = 0
        self.waits: list[float] = []

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        self.attempts += 1
        if self.attempts <= self.busy_attempts:
            return None
        return super().acquire(key, token, ttl)

    def wait(self, key: str, timeout: float) -> None:
        self.waits.append(timeout)


def test_wait_strategy_is_the_bound_given_to_the_store(key: str) -> None:
    store = RecordingStore(busy_attempts=4)
    lock = RemoteLock(key, store=store, wait=tenacity.wait_fixed(0.25))
    lease = lock.acquire()
    assert store.waits == [0.25, 0.25, 0.25, 0.25]
    assert store.attempts == 5
    lease.release()


def test_combined_strategies(key: str) -> None:
    store = RecordingStore(busy_attempts=3)
    wait = tenacity.wait_fixed(0.1) + tenacity.wait_fixed(0.2)
    lock = RemoteLock(key, store=store, wait=wait)
    lock.acquire().release()
    assert store.waits == pytest.approx([0.3, 0.3, 0.3])


def test_stop_strategies_combine_and_give_lock_timeout(key: str) -> None:
    store = RecordingStore(busy_attempts=100)
    stop = tenacity.stop_after_attempt(5) | tenacity.stop_after_delay(60)
    lock = RemoteLock(key, store=store, stop=stop, wait=tenacity.wait_fixed(1))
    with pytest.raises(LockTimeout) as caught:
        lock.acquire()
    assert caught.value.attempts == 5
    assert store.attempts == 5
    assert len(store.waits) == 4  # no pointless wait after the last attempt
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_default_wait_is_jittered_and_bounded() -> None:
    random.seed(7)
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    samples = []
    for attempt in range(1, 40):
        state.attempt_number = attempt
        samples.append(DEFAULT_WAIT(state))
    assert max(samples) <= 0.05
    assert len(set(samples)) == len(samples)  # jitter: no two waits alike
    assert samples[0] <= 0.002  # the first retries come quickly


def test_default_stop_is_sixty_seconds() -> None:
    state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
    state.outcome_timestamp = time.monotonic()
    state.start_time = state.outcome_timestamp - 59
    assert not DEFAULT_STOP(state)
    state.start_time = state.outcome_timestamp - 61
    assert DEFAULT_STOP(state)


class PollingOnlyStore(RecordingStore):
    """A store that cannot wake its waiters (no ``notify`` capability)."""

    capabilities = frozenset({"fencing", "token_checked", "expiry"})


def test_default_wait_notices_a_free_lock_within_about_50ms(key: str) -> None:
    store = PollingOnlyStore(busy_attempts=30)
    RemoteLock(key, store=store).acquire().release()
    assert max(store.waits) <= 0.05


def test_stores_that_push_wake_ups_wait_longer_between_attempts(key: str) -> None:
    store = RecordingStore(busy_attempts=40)  # MemoryStore: "notify"
    RemoteLock(key, store=store).acquire().release()
    # The store's wait ends at a wake-up or the holder's lease end; the bound between
    # attempts is long, so sleeping waiters do not poll the store.
    assert min(store.waits) >= 10
    assert max(store.waits) <= 20
    assert default_wait(store.capabilities) is PUSHED_WAIT
    assert default_wait(PollingOnlyStore.capabilities) is DEFAULT_WAIT


def test_checks_accept_callables_and_reject_the_rest() -> None:
    assert check_wait(None) is None
    assert check_stop(None) is DEFAULT_STOP

    def custom(state: tenacity.RetryCallState) -> float:
        return 0.01

    assert check_wait(custom) is custom
    for bad_wait in (0.1, "fast", tenacity.wait_fixed):
        with pytest.raises(TypeError, match="wait"):
            check_wait(bad_wait)
    for bad_stop in (10, type(None)):
        with pytest.raises(TypeError, match="stop"):
            check_stop(bad_stop)


def test_a_store_can_choose_its_own_default_wait(key: str) -> None:
    """A polling store whose attempts are costly gives a longer bound than 2-50 ms."""
    store = RecordingStore(busy_attempts=3)
    store.default_wait = tenacity.wait_fixed(0.25)  # type: ignore[attr-defined]
    RemoteLock(key, store=store).acquire()
    assert store.waits == [0.25, 0.25, 0.25]
    permits = permit_view(store, 2, asynchronous=False)  # permits follow the store's choice
    assert store_wait(permits) is store.default_wait  # type: ignore[attr-defined]
    assert store_wait(MemoryStore()) is PUSHED_WAIT
