"""Asking again for a key this thread (or task) holds is refused at once, never a wait
for oneself; other threads and tasks wait as usual."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import tenacity

from remotelock import RemoteLock, remote_locked
from remotelock.stores import MemoryStore
from remotelock.stores.base import Store

FAST = 5.0  # far less than the 60 s default stop a self-wait would take


def test_second_lock_object_in_the_same_thread(store: Store, key: str) -> None:
    started = time.monotonic()
    with RemoteLock(key, store=store):
        for blocking, timeout in ((True, None), (False, None), (True, 30)):
            again = RemoteLock(key, store=store)
            with pytest.raises(RuntimeError, match=key) as caught:
                again.acquire(blocking, timeout)
            assert "not reentrant" in str(caught.value)
    assert time.monotonic() - started < FAST
    with RemoteLock(key, store=store):  # released: free to take again
        pass


def test_same_lock_object_in_the_same_thread(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    with lock, pytest.raises(RuntimeError, match="not reentrant"):
        lock.acquire()
    lease = lock.acquire()
    with pytest.raises(RuntimeError, match="not reentrant"), lock:
        pass
    lease.release()


def test_decorated_function_calling_itself(memory_store: MemoryStore) -> None:
    @remote_locked("job", store=memory_store)
    def job(depth: int) -> int:
        return depth if depth == 0 else job(depth - 1)

    started = time.monotonic()
    with pytest.raises(RuntimeError, match="'job'"):
        job(1)
    assert time.monotonic() - started < FAST
    assert job(0) == 0  # the outer call released it


def test_other_threads_wait_their_turn(memory_store: MemoryStore, key: str) -> None:
    order: list[str] = []
    lock = RemoteLock(key, store=memory_store, wait=tenacity.wait_fixed(0.01))
    with lock:

        def wait_then_note() -> None:
            lock.acquire()
            order.append("waiter")

        waiter = threading.Thread(target=wait_then_note)
        waiter.start()
        time.sleep(0.2)
        order.append("holder")
    waiter.join(10)
    assert order == ["holder", "waiter"]
    lock.release()


def test_other_keys_and_permits_are_not_refused(memory_store: MemoryStore, key: str) -> None:
    with RemoteLock(key, store=memory_store), RemoteLock(f"{key}:other", store=memory_store):
        pass
    permits = RemoteLock(f"{key}:permits", store=memory_store, limit=2)
    with permits, permits:  # two of two permits, one thread: allowed, nothing waits
        pass


async def test_same_task_is_refused(memory_store: MemoryStore, key: str) -> None:
    async with RemoteLock(key, store=memory_store):
        with pytest.raises(RuntimeError, match="this task"):
            await RemoteLock(key, store=memory_store).aacquire()


async def test_a_task_started_inside_the_block_waits(memory_store: MemoryStore, key: str) -> None:
    """Tasks copy their parent's context; they are other owners all the same."""
    order: list[str] = []

    async def child() -> None:
        async with RemoteLock(key, store=memory_store, wait=tenacity.wait_fixed(0.01)):
            order.append("child")

    async with RemoteLock(key, store=memory_store):
        task = asyncio.create_task(child())
        await asyncio.sleep(0.2)
        order.append("parent")
    await asyncio.wait_for(task, 10)
    assert order == ["parent", "child"]
