"""``skip_if`` callers wait on a Redis lock as *watchers*: the next release takes them out
of line, so none is handed the lock only to give it back, and none needs a step of its
own to leave. One that still needs the lock queues again at its old place.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from remotelock import RemoteLock, remote_locked
from remotelock.stores.base import DISMISSED, Handover
from remotelock.stores.redis.aio import AsyncRedisStore
from remotelock.stores.redis.bells import BUSY, WATCH
from remotelock.stores.redis.line import Look
from remotelock.stores.redis.store import RedisStore
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def store(redis_server: RedisServer) -> Iterator[RedisStore]:
    made = RedisStore.from_url(redis_server.url, prefix=f"wat-{uuid.uuid4().hex[:8]}")
    yield made
    made.close()


def names(store: RedisStore, key: str) -> tuple[str, str]:
    base = f"{store.prefix}:{{{key}}}"
    return f"{base}:queue", f"{base}:watchers"


def wait_in_thread(
    store: RedisStore, key: str, token: str, out: dict[str, Any]
) -> threading.Thread:
    def wait() -> None:
        out[token] = store.wait_turn(key, token, 20, every_release=True)

    thread = threading.Thread(target=wait)
    thread.start()
    return thread


def test_a_release_takes_the_watchers_out_of_line_and_hands_over_past_them(
    store: RedisStore,
) -> None:
    queue, watchers = names(store, "k")
    assert store.acquire("k", "H", 30) is not None
    assert store.acquire_watching("k", "W", 30) is None  # first in line, as a watcher
    assert store.acquire("k", "P", 30) is None  # a plain waiter behind it
    assert store.client.smembers(watchers) == {b"W"}
    woke: dict[str, Any] = {}
    thread = wait_in_thread(store, "k", "W", woke)
    time.sleep(0.3)
    assert store.release("k", "H")
    assert store.owner("k") == "P"  # handed past the watcher, which only wanted to hear
    thread.join(20)
    assert woke["W"] is DISMISSED
    assert store.client.zrange(queue, 0, -1) == []
    assert not store.client.exists(watchers)


def test_with_only_watchers_in_line_a_release_frees_the_lock(store: RedisStore) -> None:
    queue, watchers = names(store, "k")
    store.acquire("k", "H", 30)
    woke: dict[str, Any] = {}
    threads = []
    for token in ("A", "B", "C"):
        assert store.acquire_watching("k", token, 30) is None
        threads.append(wait_in_thread(store, "k", token, woke))
    time.sleep(0.3)
    store.release("k", "H")
    for thread in threads:
        thread.join(20)
    assert woke == {"A": DISMISSED, "B": DISMISSED, "C": DISMISSED}
    assert store.owner("k") is None  # nobody was handed a lock to give back
    assert not store.client.exists(queue, watchers)


def test_an_answered_watcher_that_still_needs_the_lock_keeps_its_place(
    store: RedisStore,
) -> None:
    queue, _ = names(store, "k")
    store.acquire("k", "H", 30)
    store.acquire_watching("k", "W", 30)
    place = store.client.zscore(queue, "W")
    store.acquire("k", "P", 30)
    woke: dict[str, Any] = {}
    thread = wait_in_thread(store, "k", "W", woke)
    time.sleep(0.3)
    store.release("k", "H")  # handed to P; W is out of line
    thread.join(20)
    assert woke["W"] is DISMISSED
    assert store.acquire("k", "L", 30) is None  # a later waiter
    assert store.acquire("k", "W", 30) is None  # W comes back: at its old place
    assert store.client.zscore(queue, "W") == place
    assert [t.decode() for t in store.client.zrange(queue, 0, -1)] == ["W", "L"]
    store.release("k", "P")
    assert store.owner("k") == "W"


def test_a_watcher_queued_after_a_release_is_not_dismissed_by_it(store: RedisStore) -> None:
    """Each release message says when it was made: a watcher that queued later stays in
    line (it heard of an earlier release), and needs the next release to be answered."""
    store.acquire("k", "H", 30)
    store.acquire_watching("k", "early", 30)
    store.release("k", "H")  # answers "early" (not waiting here yet)
    store.acquire("k", "H2", 30)
    assert store.acquire_watching("k", "late", 30) is None
    _, watchers = names(store, "k")
    assert store.client.smembers(watchers) == {b"late"}
    woke: dict[str, Any] = {}
    thread = wait_in_thread(store, "k", "late", woke)
    time.sleep(0.3)
    store.release("k", "H2")
    thread.join(20)
    assert woke["late"] is DISMISSED


def test_a_release_within_a_barging_window_answers_the_watchers(
    redis_server: RedisServer,
) -> None:
    barging = RedisStore.from_url(
        redis_server.url, prefix=f"watb-{uuid.uuid4().hex[:8]}", barging=1.0
    )
    try:
        queue, watchers = names(barging, "k")
        barging.acquire("k", "H", 30)
        assert barging.acquire("k", "P", 30) is None  # opens the window
        assert barging.acquire_watching("k", "W", 30) is None
        woke: dict[str, Any] = {}
        thread = wait_in_thread(barging, "k", "W", woke)
        time.sleep(0.3)
        assert barging.release("k", "H")  # within the window: nobody is handed it
        thread.join(20)
        assert woke["W"] is DISMISSED
        assert barging.owner("k") is None
        assert [t.decode() for t in barging.client.zrange(queue, 0, -1)] == ["P"]
        assert not barging.client.exists(watchers)
    finally:
        barging.close()


def test_a_watchers_look_tells_whether_a_release_came() -> None:
    look = Look("W", WATCH, watcher=True)
    assert look(["H", 5, 1000, 0, 1]) is BUSY  # still a watcher: no release since
    assert look(["H2", 6, 1000, 0, 0]) is DISMISSED  # out of line
    assert look(["W", 7, 2000, 0, 0]) == Handover(7, 2.0)
    assert look(["", 0, 0, 0, 0]) is None  # free: try again


# -- through the lock ---------------------------------------------------------------------


def counting(store: RedisStore, name: str, calls: list[str]) -> None:
    real = getattr(store, name)

    def counted(*args: Any) -> Any:
        calls.append(name)
        return real(*args)

    setattr(store, name, counted)


def test_skip_if_callers_skip_without_leaving_the_line(store: RedisStore) -> None:
    """Many skip_if callers wait for one holder (a stampede): after its release each
    checks once more and returns, with no step to leave the line and no lock handed
    around; while they wait, none looks again (a look at the server when its wake-up
    connection starts tells it that no release came)."""
    queue, watchers = names(store, "k")
    fresh, calls = [False], list[str]()
    counting(store, "leave", calls)
    counting(store, "release", calls)
    checks: list[float] = []

    def cached() -> bool:
        checks.append(time.monotonic())
        return fresh[0]

    holder = RemoteLock("k", store=store, ttl=30).acquire()
    results: list[bool] = []

    @remote_locked("k", store=store, ttl=30, skip_if=cached)
    def refresh(*, has_lock: bool = False) -> None:
        results.append(has_lock)

    def caller() -> None:
        refresh()

    threads = [threading.Thread(target=caller) for _ in range(5)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while store.client.scard(watchers) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # the wake-up connection starts meanwhile
    assert len(checks) == 10  # before the acquire and after the busy reply, no more
    fresh[0] = True
    calls.clear()
    holder.release()
    for thread in threads:
        thread.join(20)
    assert results == [False] * 5  # all skipped
    assert calls == ["release"]  # the holder's: no leave, no hand-over given back
    assert not store.client.exists(queue, watchers)


def test_skip_if_callers_that_still_need_the_lock_all_get_it_in_turn(
    store: RedisStore,
) -> None:
    """A watcher that learns it still needs the lock queues again and gets it: skip_if
    is never true here, so every caller ends up holding the lock, one at a time."""
    inside, entered = [0], [0]
    holder = RemoteLock("k", store=store, ttl=30).acquire()

    @remote_locked("k", store=store, ttl=30, skip_if=lambda: False)
    def caller(*, has_lock: bool = False) -> None:
        assert has_lock
        inside[0] += 1
        assert inside[0] == 1
        time.sleep(0.01)
        entered[0] += 1
        inside[0] -= 1

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    holder.release()
    for thread in threads:
        thread.join(30)
    assert entered[0] == 6


def test_async_skip_if_callers_skip_without_leaving_the_line(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = AsyncRedisStore.from_url(redis_server.url, prefix=f"wata-{uuid.uuid4().hex[:8]}")
        base = f"{store.prefix}:{{k}}"
        fresh, left = [False], []
        real_leave = store.leave

        async def leave(key: str, token: str) -> None:
            left.append(token)
            await real_leave(key, token)

        store.leave = leave  # type: ignore[method-assign]
        holder = await RemoteLock("k", store=store, ttl=30).aacquire()

        @remote_locked("k", store=store, ttl=30, skip_if=lambda: fresh[0])
        async def caller(*, has_lock: bool = False) -> bool:
            return has_lock

        tasks = [asyncio.ensure_future(caller()) for _ in range(5)]
        deadline = time.monotonic() + 10
        while await store.client.scard(f"{base}:watchers") < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        fresh[0] = True
        await holder.arelease()
        assert await asyncio.wait_for(asyncio.gather(*tasks), 20) == [False] * 5
        assert left == []
        assert not await store.client.exists(f"{base}:queue", f"{base}:watchers")
        await store.aclose()

    asyncio.run(scenario())


def test_readers_enter_at_once_after_the_watchers_they_kept_waiting_are_answered(
    store: RedisStore,
) -> None:
    """A writer refused by readers marks the key, so that new readers wait behind it.
    When it only waited as a watcher, the readers' last release answers it: the mark
    goes too, and a new reader is not kept out for the writers' grace."""
    assert store.acquire_shared("k", "R", 30) is not None
    assert store.acquire_watching("k", "W", 30) is None  # refused by the reader: marks
    assert store.acquire_shared("k", "R2", 30) is None  # a new reader waits behind W
    assert store.release_shared("k", "R")
    assert store.acquire_shared("k", "R3", 30) is not None  # at once: W was answered
