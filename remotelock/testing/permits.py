"""PermitContract: the rules of counted permits."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from ..errors import LimitConflict
from ..stores.base import (
    CROSS_HOST,
    EXPIRY,
    NOTIFY,
    TOKEN_CHECKED,
    PermitStore,
    Store,
)
from .contract import _EARLY, _LATE, _LONG_WAIT, _token, needs


class PermitContract:
    """The rules of counted permits (:class:`~remotelock.stores.base.PermitStore`).

    Runs with the ``store`` fixture; skipped for stores without counted permits.
    """

    @pytest.fixture
    def key(self) -> str:
        return f"permits:{uuid.uuid4().hex}:a key with spaces/ünïcode"

    @pytest.fixture
    def permits(self, store: Store) -> PermitStore:
        if not isinstance(store, PermitStore):
            pytest.skip(f"{store!r} has no counted permits")
        return store

    def test_up_to_the_limit(self, permits: PermitStore, key: str) -> None:
        tokens = [_token() for _ in range(3)]
        fences = [permits.acquire_permit(key, token, 10, 3) for token in tokens]
        assert all(isinstance(fence, int) for fence in fences)
        assert permits.acquire_permit(key, _token(), 10, 3) is None
        assert sorted(permits.permit_holders(key)) == sorted(tokens)

    def test_fencing_tokens_increase_across_permits(self, permits: PermitStore, key: str) -> None:
        fences = []
        for _ in range(4):
            token = _token()
            fence = permits.acquire_permit(key, token, 10, 2)
            assert fence is not None
            fences.append(fence)
            assert permits.release_permit(key, token) is True
        for _ in range(2):  # two held at once: still one sequence per key
            fence = permits.acquire_permit(key, _token(), 10, 2)
            assert fence is not None
            fences.append(fence)
        assert fences == sorted(set(fences)), fences

    def test_release_frees_one_permit(self, permits: PermitStore, key: str) -> None:
        first, second = _token(), _token()
        permits.acquire_permit(key, first, 10, 2)
        permits.acquire_permit(key, second, 10, 2)
        assert permits.acquire_permit(key, _token(), 10, 2) is None
        assert permits.release_permit(key, first) is True
        again = permits.release_permit(key, first)  # a retry after a lost reply
        assert again is True if CROSS_HOST in permits.capabilities else again in (True, False)
        assert permits.release_permit(key, _token()) is False
        assert permits.acquire_permit(key, _token(), 10, 2) is not None
        assert second in permits.permit_holders(key)

    def test_same_token_is_idempotent(self, permits: PermitStore, key: str) -> None:
        token = _token()
        fence = permits.acquire_permit(key, token, 10, 2)
        assert permits.acquire_permit(key, token, 10, 2) == fence
        assert permits.permit_holders(key) == [token]

    def test_permits_run_out(self, permits: PermitStore, key: str) -> None:
        needs(permits, EXPIRY)
        stale = _token()
        permits.acquire_permit(key, stale, 0.2, 1)
        time.sleep(0.5)
        assert permits.permit_holders(key) == []
        assert permits.acquire_permit(key, _token(), 10, 1) is not None
        assert permits.release_permit(key, stale) is False
        assert permits.extend_permit(key, stale, 10) is False

    def test_extend_keeps_the_permit(self, permits: PermitStore, key: str) -> None:
        needs(permits, EXPIRY)
        token = _token()
        permits.acquire_permit(key, token, 1.0, 1)
        assert permits.extend_permit(key, token, 30) is True
        assert permits.extend_permit(key, _token(), 30) is False
        time.sleep(1.5)
        assert permits.permit_holders(key) == [token]

    def test_disagreeing_limits_conflict(self, permits: PermitStore, key: str) -> None:
        token = _token()
        permits.acquire_permit(key, token, 10, 3)
        with pytest.raises(LimitConflict) as caught:
            permits.acquire_permit(key, _token(), 10, 5)
        assert (caught.value.held_limit, caught.value.asked_limit) == (3, 5)
        permits.release_permit(key, token)
        assert permits.acquire_permit(key, _token(), 10, 5) is not None  # a new limit, once free

    def test_wait_honours_its_timeout_closely(self, permits: PermitStore, key: str) -> None:
        permits.acquire_permit(key, _token(), 60, 1)
        overruns = []
        for _ in range(5):
            started = time.monotonic()
            permits.wait_permit(key, 0.05)
            overruns.append(time.monotonic() - started - 0.05)
        assert sorted(overruns)[2] < _LATE

    def test_wait_wakes_early_on_release(self, permits: PermitStore, key: str) -> None:
        needs(permits, NOTIFY)
        token = _token()
        permits.acquire_permit(key, token, 60, 1)
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            waiting = pool.submit(permits.wait_permit, key, _LONG_WAIT)
            time.sleep(0.2)
            assert permits.release_permit(key, token) is True
            waiting.result(timeout=_LONG_WAIT + _EARLY)
        assert time.monotonic() - started < _EARLY

    def test_racing_threads_never_exceed_the_limit(self, permits: PermitStore, key: str) -> None:
        needs(permits, TOKEN_CHECKED)
        racers = 8
        barrier = threading.Barrier(racers)

        def race(_: int) -> int | None:
            barrier.wait()
            return permits.acquire_permit(key, _token(), 10, 3)

        with ThreadPoolExecutor(racers) as pool:
            results = list(pool.map(race, range(racers)))
        assert sum(result is not None for result in results) == 3, results
