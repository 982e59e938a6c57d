"""CallableStore: the seed's three functions as a store, sync and async."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from remotelock import RemoteLock, remote_locked
from remotelock.stores import AsyncCallableStore, CallableStore
from tests.conftest import DictLock


def test_remote_lock_over_callables() -> None:
    lock = DictLock()
    store = CallableStore(lock.get_lock, lock.set_lock, lock.release_lock)

    @remote_locked("ignored", store=store, ttl=5)
    def work(*, has_lock: bool = False) -> bool:
        return has_lock and lock.value is not None

    assert work() is True
    assert lock.value is None


def test_ttl_reaches_set_lock_in_milliseconds() -> None:
    seen: list[dict[str, Any]] = []
    store = CallableStore(
        lambda request_id: None,
        lambda **kwargs: seen.append(kwargs),
        lambda request_id: None,
    )
    store.acquire("k", "tok", 2.5)
    store.acquire("k", "tok", 0.0001)
    assert seen[0] == {"request_id": "tok", "timeout": 2500}
    assert seen[1]["timeout"] == 1  # never rounded down to "no lease"


def test_sync_store_refuses_async_functions() -> None:
    async def get_lock(request_id: str) -> None:
        return None

    with pytest.raises(TypeError, match="AsyncCallableStore"):
        CallableStore(get_lock, lambda **kw: None, lambda **kw: None)
    with pytest.raises(TypeError, match="set_lock"):
        CallableStore(lambda **kw: None, "not callable", lambda **kw: None)  # type: ignore[arg-type]


def test_sync_store_refuses_awaitable_results() -> None:
    async def later() -> None:
        return None

    store = CallableStore(lambda **kw: later(), lambda **kw: None, lambda **kw: None)
    with pytest.raises(TypeError, match="awaitable"):
        store.acquire("k", "t", 1)


async def test_async_callables() -> None:
    state: dict[str, Any] = {"lock": None}

    async def get_lock(request_id: str) -> Any:
        return state["lock"]

    async def set_lock(request_id: str, timeout: int) -> None:
        state["lock"] = request_id

    async def release_lock(request_id: str) -> None:
        state["lock"] = None

    store = AsyncCallableStore(get_lock, set_lock, release_lock)
    async with RemoteLock("k", store=store) as lease:
        assert state["lock"] == lease.token
        await asyncio.sleep(0)
    assert state["lock"] is None
