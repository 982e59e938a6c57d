"""A store's engine-facing face is worked out once per (store, limit) and shared."""

from __future__ import annotations

import pytest

from remotelock.binding import async_binding, sync_binding
from remotelock.permits import PermitView
from remotelock.stores import CallableStore, MemoryStore
from tests.conftest import DictLock


def test_one_binding_per_store_and_limit() -> None:
    store = MemoryStore()
    assert sync_binding(store, 1) is sync_binding(store, 1)
    assert sync_binding(store, 1).store is store
    permits = sync_binding(store, 3)
    assert isinstance(permits.store, PermitView)
    assert permits is sync_binding(store, 3)
    assert permits.source is store
    assert async_binding(store, 1) is async_binding(store, 1)


def test_a_sync_store_without_twin_gets_one_threaded_face() -> None:
    fake = DictLock()
    store = CallableStore(fake.get_lock, fake.set_lock, fake.release_lock)
    face = async_binding(store, 1).store
    assert face is not store
    assert async_binding(store, 1).store is face  # not a new wrapper per call


def test_refusals_are_not_cached() -> None:
    store = MemoryStore().as_async()
    for _ in range(2):
        with pytest.raises(TypeError, match="async store"):
            sync_binding(store, 1)
    fake = DictLock()
    plain = CallableStore(fake.get_lock, fake.set_lock, fake.release_lock)
    with pytest.raises(TypeError, match="no counted permits"):
        sync_binding(plain, 2)
