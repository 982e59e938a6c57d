"""MemoryStore specifics: injected clock, wake-ups per key, shared URL instances."""

from __future__ import annotations

import asyncio
import threading
import time

from remotelock.stores import MemoryStore


def test_injected_clock_decides_expiry() -> None:
    now = [100.0]
    store = MemoryStore(clock=lambda: now[0])
    store.acquire("k", "a", 5)
    now[0] = 104.9
    assert store.owner("k") == "a"
    now[0] = 105.0
    assert store.owner("k") is None
    assert store.acquire("k", "b", 5) is not None


def test_release_wakes_only_its_own_key() -> None:
    store = MemoryStore()
    store.acquire("a", "ta", 60)
    store.acquire("b", "tb", 60)
    woke: list[str] = []

    def wait() -> None:
        store.wait("a", 2.0)
        woke.append("a")

    waiter = threading.Thread(target=wait)
    started = time.monotonic()
    waiter.start()
    time.sleep(0.1)
    store.release("b", "tb")
    time.sleep(0.2)
    assert woke == []  # another key's release does not wake us
    store.release("a", "ta")
    waiter.join(10)
    assert woke == ["a"]
    assert time.monotonic() - started < 1.9


async def test_async_waiter_wakes_on_a_release_from_a_thread() -> None:
    store = MemoryStore()
    store.acquire("k", "t", 60)
    twin = store.as_async()
    assert store.as_async() is twin
    timer = threading.Timer(0.1, store.release, args=("k", "t"))
    started = time.monotonic()
    timer.start()
    await twin.wait("k", 30)
    assert time.monotonic() - started < 10
    timer.join()


async def test_async_twin_shares_the_locks() -> None:
    store = MemoryStore()
    twin = store.as_async()
    assert await twin.acquire("k", "a", 10) is not None
    assert store.acquire("k", "b", 10) is None
    assert await twin.release("k", "a") is True
    assert [info async for info in twin.iter_locks()] == []
    await asyncio.sleep(0)
