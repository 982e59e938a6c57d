"""StoreContract: the rules every lock store keeps."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import pytest

from ..stores.base import (
    CROSS_HOST,
    EXPIRY,
    FENCING,
    NOTIFY,
    TOKEN_CHECKED,
    LockAdmin,
    PermitStore,
    Store,
)

T = TypeVar("T")

# Generous upper bounds for "returns early" checks: far below the wait's own timeout,
# far above any real wake-up latency.
_EARLY = 10.0
_LONG_WAIT = 30.0
# How far past its timeout a wait may return: the lock layer's deadlines rely on it.
_LATE = 0.03


def needs(store: Store | PermitStore, *capabilities: str) -> None:
    """Skip the calling test unless ``store`` declares every capability."""
    missing = [name for name in capabilities if name not in store.capabilities]
    if missing:
        pytest.skip(f"{store!r} does not declare {', '.join(missing)}")


def _token() -> str:
    return uuid.uuid4().hex


def median_overrun(wait: Callable[[], object], timeout: float) -> float:
    """How far past ``timeout`` five runs of ``wait()`` return, the median of them (a
    loaded machine's odd late wake-up does not count)."""
    overruns = []
    for _ in range(5):
        started = time.monotonic()
        wait()
        overruns.append(time.monotonic() - started - timeout)
    return sorted(overruns)[2]


def woken_by(wait: Callable[[], object], release: Callable[[], bool]) -> bool:
    """Whether ``wait()`` (a long wait) returns early once ``release()`` frees the key."""
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        waiting = pool.submit(wait)
        time.sleep(0.2)
        assert release() is True
        waiting.result(timeout=_LONG_WAIT + _EARLY)
    return time.monotonic() - started < _EARLY


def race(attempt: Callable[[], T], racers: int = 8) -> list[T]:
    """``attempt()`` from ``racers`` threads released at the same instant; their results."""
    barrier = threading.Barrier(racers)

    def run(_: int) -> T:
        barrier.wait()
        return attempt()

    with ThreadPoolExecutor(racers) as pool:
        return list(pool.map(run, range(racers)))


class StoreContract:
    """The rules every lock store keeps; see :mod:`remotelock.stores.base`."""

    @pytest.fixture
    def key(self) -> str:
        """A fresh key per test, with characters stores must not choke on."""
        return f"contract:{uuid.uuid4().hex}:a key with spaces/ünïcode"

    # -- acquire ------------------------------------------------------------------

    def test_acquire_free_key_returns_fencing_token(self, store: Store, key: str) -> None:
        fence = store.acquire(key, _token(), 10)
        assert isinstance(fence, int)
        assert not isinstance(fence, bool)

    def test_second_token_is_refused_while_held(self, store: Store, key: str) -> None:
        first = _token()
        assert store.acquire(key, first, 10) is not None
        assert store.acquire(key, _token(), 10) is None
        assert store.owner(key) == first

    def test_same_token_reacquire_is_idempotent(self, store: Store, key: str) -> None:
        token = _token()
        fence = store.acquire(key, token, 10)
        again = store.acquire(key, token, 10)
        assert again is not None
        if FENCING in store.capabilities:
            assert again == fence
        assert store.owner(key) == token

    def test_keys_are_independent(self, store: Store, key: str) -> None:
        assert store.acquire(key + ":one", _token(), 10) is not None
        assert store.acquire(key + ":two", _token(), 10) is not None

    def test_long_and_odd_keys(self, store: Store, key: str) -> None:
        for odd in (key + "x" * 500, key + ":{braces}[brackets]*?", key + "\tné\u2603"):
            token = _token()
            assert store.acquire(odd, token, 10) is not None
            assert store.owner(odd) == token
            assert store.release(odd, token) is True

    # -- fencing ------------------------------------------------------------------

    def test_fencing_token_increases_across_releases(self, store: Store, key: str) -> None:
        needs(store, FENCING)
        fences = []
        for _ in range(5):
            token = _token()
            fence = store.acquire(key, token, 10)
            assert fence is not None
            fences.append(fence)
            assert store.release(key, token) is True
        assert fences == sorted(set(fences)), fences

    def test_fencing_token_increases_across_expiry(self, store: Store, key: str) -> None:
        needs(store, FENCING, EXPIRY)
        first = store.acquire(key, _token(), 0.2)
        assert first is not None
        time.sleep(0.5)
        second = store.acquire(key, _token(), 10)
        assert second is not None
        assert second > first

    # -- release ------------------------------------------------------------------

    def test_release_by_owner(self, store: Store, key: str) -> None:
        token = _token()
        store.acquire(key, token, 10)
        assert store.release(key, token) is True
        assert store.owner(key) is None
        assert store.acquire(key, _token(), 10) is not None

    def test_repeated_release_by_the_releaser(self, store: Store, key: str) -> None:
        """A network store may lose the reply to a release that ran; the retry must not
        report a loss. Local stores cannot lose replies and may answer either way."""
        token = _token()
        store.acquire(key, token, 10)
        assert store.release(key, token) is True
        again = store.release(key, token)
        if CROSS_HOST in store.capabilities:
            assert again is True
        assert store.owner(key) is None
        assert store.acquire(key, _token(), 10) is not None

    def test_repeated_release_never_frees_a_successor(self, store: Store, key: str) -> None:
        """A repeated release may still say True while a successor holds the key (a
        retry often comes after a waiter took it), but it never frees the successor; once
        someone else has released the key, the old token's release is False."""
        first, second = _token(), _token()
        store.acquire(key, first, 10)
        assert store.release(key, first) is True
        assert store.acquire(key, second, 10) is not None
        store.release(key, first)
        assert store.owner(key) == second
        assert store.release(key, second) is True
        assert store.release(key, first) is False

    def test_release_by_other_token_is_false_and_lock_survives(
        self, store: Store, key: str
    ) -> None:
        owner = _token()
        store.acquire(key, owner, 10)
        assert store.release(key, _token()) is False
        assert store.owner(key) == owner
        assert store.acquire(key, _token(), 10) is None

    def test_release_of_missing_key_is_false(self, store: Store, key: str) -> None:
        assert store.release(key, _token()) is False

    def test_release_after_expiry_is_false(self, store: Store, key: str) -> None:
        needs(store, EXPIRY)
        token = _token()
        store.acquire(key, token, 0.2)
        time.sleep(0.5)
        assert store.release(key, token) is False

    def test_stale_release_never_frees_the_successor(self, store: Store, key: str) -> None:
        needs(store, EXPIRY, TOKEN_CHECKED)
        stale, successor = _token(), _token()
        store.acquire(key, stale, 0.2)
        time.sleep(0.5)
        assert store.acquire(key, successor, 10) is not None
        assert store.release(key, stale) is False
        assert store.owner(key) == successor

    # -- expiry and extend ----------------------------------------------------------

    def test_expired_lease_lets_another_token_in(self, store: Store, key: str) -> None:
        needs(store, EXPIRY)
        store.acquire(key, _token(), 0.25)
        time.sleep(0.6)
        assert store.owner(key) is None
        assert store.acquire(key, _token(), 10) is not None

    def test_extend_by_owner_keeps_the_lock(self, store: Store, key: str) -> None:
        needs(store, EXPIRY)
        token = _token()
        store.acquire(key, token, 1.0)
        assert store.extend(key, token, 30) is True
        time.sleep(1.5)
        assert store.owner(key) == token
        assert store.acquire(key, _token(), 10) is None

    def test_reacquire_resets_the_lease(self, store: Store, key: str) -> None:
        needs(store, EXPIRY)
        token = _token()
        store.acquire(key, token, 1.0)
        assert store.acquire(key, token, 30) is not None
        time.sleep(1.5)
        assert store.owner(key) == token

    def test_extend_by_other_token_is_false(self, store: Store, key: str) -> None:
        owner = _token()
        store.acquire(key, owner, 10)
        assert store.extend(key, _token(), 10) is False
        assert store.owner(key) == owner

    def test_extend_of_missing_key_is_false(self, store: Store, key: str) -> None:
        assert store.extend(key, _token(), 10) is False

    def test_extend_after_expiry_is_false(self, store: Store, key: str) -> None:
        needs(store, EXPIRY)
        token = _token()
        store.acquire(key, token, 0.2)
        time.sleep(0.5)
        assert store.extend(key, token, 10) is False

    # -- waiting ------------------------------------------------------------------

    def test_wait_returns_by_its_timeout(self, store: Store, key: str) -> None:
        store.acquire(key, _token(), 60)
        started = time.monotonic()
        store.wait(key, 0.2)
        assert time.monotonic() - started < 0.2 + _EARLY

    def test_wait_honours_its_timeout_closely(self, store: Store, key: str) -> None:
        """A wait never overruns its timeout by more than a few ms (median of five, so a
        loaded machine's odd late wake-up does not count): deadlines are built on it."""
        store.acquire(key, _token(), 60)
        assert median_overrun(lambda: store.wait(key, 0.05), 0.05) < _LATE

    def test_wait_on_a_free_key_returns(self, store: Store, key: str) -> None:
        started = time.monotonic()
        store.wait(key, 1.0)
        assert time.monotonic() - started < 1.0 + _EARLY

    def test_wait_wakes_early_on_release(self, store: Store, key: str) -> None:
        needs(store, NOTIFY)
        token = _token()
        store.acquire(key, token, 60)
        assert woken_by(lambda: store.wait(key, _LONG_WAIT), lambda: store.release(key, token))

    def test_wait_ends_when_the_lease_runs_out(self, store: Store, key: str) -> None:
        needs(store, NOTIFY, EXPIRY)
        store.acquire(key, _token(), 0.3)
        started = time.monotonic()
        store.wait(key, _LONG_WAIT)
        assert time.monotonic() - started < _EARLY

    # -- concurrency --------------------------------------------------------------

    def test_racing_threads_have_exactly_one_winner(self, store: Store, key: str) -> None:
        needs(store, TOKEN_CHECKED)
        results = race(lambda: store.acquire(key, _token(), 10))
        assert sum(result is not None for result in results) == 1, results

    # -- admin (stores that offer it) ---------------------------------------------

    def test_force_release_and_listing(self, store: Store, key: str) -> None:
        if not isinstance(store, LockAdmin):
            pytest.skip(f"{store!r} has no admin operations")
        token = _token()
        fence = store.acquire(key, token, 10)
        infos = [info for info in store.iter_locks(key) if info.key == key]
        assert len(infos) == 1
        assert infos[0].token == token
        assert infos[0].fencing_token in (fence, None)
        assert infos[0].expires_in is None or 0 < infos[0].expires_in <= 10
        assert store.force_release(key) is True
        assert store.owner(key) is None
        assert store.force_release(key) is False
