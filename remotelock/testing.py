"""The store contract suite, shipped so that third-party stores can run it too.

.. code-block:: python

    # tests/test_my_store.py
    import pytest
    from remotelock.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self):
            return MyStore(...)

Every test takes the ``store`` fixture (a sync :class:`~remotelock.stores.base.Store`)
and never names a backend. An async store runs the same suite through
:class:`BlockingStore`, which drives it on a private event loop. Tests that need a
guarantee a store does not declare in ``capabilities`` are skipped, not failed.
Real-time checks use short leases and generous margins: a slow machine never fails
them, it only makes them wait longer.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from .errors import LimitConflict
from .stores.base import (
    EXPIRY,
    FENCING,
    NOTIFY,
    TOKEN_CHECKED,
    AsyncLockAdmin,
    AsyncPermitStore,
    AsyncQueuedStore,
    AsyncStore,
    Handover,
    LockAdmin,
    LockInfo,
    PermitStore,
    Store,
)

T = TypeVar("T")

# Generous upper bounds for "returns early" checks: far below the wait's own timeout,
# far above any real wake-up latency.
_EARLY = 10.0
_LONG_WAIT = 30.0


class BlockingStore:
    """A sync :class:`Store` face for an :class:`AsyncStore`, run on a private loop thread."""

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self.capabilities = store.capabilities
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the store's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=120)

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        return self.run(self.store.acquire(key, token, ttl))

    def release(self, key: str, token: str) -> bool:
        return self.run(self.store.release(key, token))

    def extend(self, key: str, token: str, ttl: float) -> bool:
        return self.run(self.store.extend(key, token, ttl))

    def owner(self, key: str) -> str | None:
        return self.run(self.store.owner(key))

    def wait(self, key: str, timeout: float) -> None:
        self.run(self.store.wait(key, timeout))

    def close(self) -> None:
        """Run the store's ``aclose``/``close`` if any, then stop the loop."""
        closer = getattr(self.store, "aclose", None) or getattr(self.store, "close", None)
        if closer is not None:
            result = closer()
            if asyncio.iscoroutine(result):
                self.run(result)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __repr__(self) -> str:
        return f"BlockingStore({self.store!r})"


class _BlockingAdmin:
    """Mixin: the admin operations of an async store, run to completion."""

    store: Any
    run: Any

    def force_release(self, key: str) -> bool:
        return bool(self.run(self.store.force_release(key)))

    def iter_locks(self, prefix: str = "") -> Iterator[LockInfo]:
        admin = self.store

        async def collect() -> list[LockInfo]:
            return [info async for info in admin.iter_locks(prefix)]

        return iter(self.run(collect()))


class _BlockingQueued:
    """Mixin: the queued waiting of an async store, run to completion."""

    store: Any
    run: Any

    def wait_turn(
        self, key: str, token: str, timeout: float, every_release: bool = False
    ) -> Handover | None:
        return self.run(self.store.wait_turn(key, token, timeout, every_release))  # type: ignore[no-any-return]

    def leave(self, key: str, token: str) -> None:
        self.run(self.store.leave(key, token))


class _BlockingPermits:
    """Mixin: the counted permits of an async store, run to completion."""

    store: Any
    run: Any

    def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        return self.run(self.store.acquire_permit(key, token, ttl, limit))  # type: ignore[no-any-return]

    def release_permit(self, key: str, token: str) -> bool:
        return bool(self.run(self.store.release_permit(key, token)))

    def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        return bool(self.run(self.store.extend_permit(key, token, ttl)))

    def permit_holders(self, key: str) -> list[str]:
        return list(self.run(self.store.permit_holders(key)))

    def wait_permit(self, key: str, timeout: float) -> None:
        self.run(self.store.wait_permit(key, timeout))


_COMBINED: dict[tuple[type, ...], type[BlockingStore]] = {}


def blocking(store: AsyncStore) -> BlockingStore:
    """A sync face for ``store``, keeping its optional abilities."""
    mixins: tuple[type, ...] = ()
    if isinstance(store, AsyncQueuedStore):
        mixins += (_BlockingQueued,)
    if isinstance(store, AsyncPermitStore):
        mixins += (_BlockingPermits,)
    if isinstance(store, AsyncLockAdmin):
        mixins += (_BlockingAdmin,)
    cls = _COMBINED.get(mixins)
    if cls is None:
        cls = _COMBINED[mixins] = type("BlockingStore", (*mixins, BlockingStore), {})
    return cls(store)


def needs(store: Store | PermitStore, *capabilities: str) -> None:
    """Skip the calling test unless ``store`` declares every capability."""
    missing = [name for name in capabilities if name not in store.capabilities]
    if missing:
        pytest.skip(f"{store!r} does not declare {', '.join(missing)}")


def _token() -> str:
    return uuid.uuid4().hex


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

    def test_release_twice_is_false(self, store: Store, key: str) -> None:
        token = _token()
        store.acquire(key, token, 10)
        assert store.release(key, token) is True
        assert store.release(key, token) is False

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

    def test_wait_on_a_free_key_returns(self, store: Store, key: str) -> None:
        started = time.monotonic()
        store.wait(key, 1.0)
        assert time.monotonic() - started < 1.0 + _EARLY

    def test_wait_wakes_early_on_release(self, store: Store, key: str) -> None:
        needs(store, NOTIFY)
        token = _token()
        store.acquire(key, token, 60)
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            waiting = pool.submit(store.wait, key, _LONG_WAIT)
            time.sleep(0.2)
            assert store.release(key, token) is True
            waiting.result(timeout=_LONG_WAIT + _EARLY)
        assert time.monotonic() - started < _EARLY

    def test_wait_ends_when_the_lease_runs_out(self, store: Store, key: str) -> None:
        needs(store, NOTIFY, EXPIRY)
        store.acquire(key, _token(), 0.3)
        started = time.monotonic()
        store.wait(key, _LONG_WAIT)
        assert time.monotonic() - started < _EARLY

    # -- concurrency --------------------------------------------------------------

    def test_racing_threads_have_exactly_one_winner(self, store: Store, key: str) -> None:
        needs(store, TOKEN_CHECKED)
        racers = 8
        barrier = threading.Barrier(racers)

        def race(_: int) -> int | None:
            barrier.wait()
            return store.acquire(key, _token(), 10)

        with ThreadPoolExecutor(racers) as pool:
            results = list(pool.map(race, range(racers)))
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
        assert permits.release_permit(key, first) is False
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


__all__ = ["BlockingStore", "PermitContract", "StoreContract", "blocking", "needs"]
