"""PermitContract: the rules of counted permits."""

from __future__ import annotations

import time
import uuid

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
from .contract import _LATE, _LONG_WAIT, _token, median_overrun, needs, race, woken_by


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
        assert median_overrun(lambda: permits.wait_permit(key, 0.05), 0.05) < _LATE

    def test_wait_wakes_early_on_release(self, permits: PermitStore, key: str) -> None:
        needs(permits, NOTIFY)
        token = _token()
        permits.acquire_permit(key, token, 60, 1)
        assert woken_by(
            lambda: permits.wait_permit(key, _LONG_WAIT),
            lambda: permits.release_permit(key, token),
        )

    def test_racing_threads_never_exceed_the_limit(self, permits: PermitStore, key: str) -> None:
        needs(permits, TOKEN_CHECKED)
        results = race(lambda: permits.acquire_permit(key, _token(), 10, 3))
        assert sum(result is not None for result in results) == 3, results
