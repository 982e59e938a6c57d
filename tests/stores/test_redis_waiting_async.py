"""AsyncRedisStore's waits on one event loop, and wake-ups through a Redis Cluster.

The async twin of ``test_redis_waiting``: the same bounds, the same medians.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio
import tenacity
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from remotelock import RemoteLock
from remotelock.stores import store_from_url
from remotelock.stores.base import Handover
from remotelock.stores.redis.aio import AsyncRedisStore
from remotelock.stores.redis.common import layout
from remotelock.stores.redis.store import RedisStore
from tests.servers.redis import RedisCluster, RedisServer
from tests.stores.test_redis_waiting import (
    RUNS,
    SLACK,
    TIMEOUTS,
    admin,
    clients_named,
    subscribers,
)

pytestmark = pytest.mark.redis

AsyncWait = Callable[[float], Awaitable[Any]]


async def median_wait(wait: AsyncWait, timeout: float, runs: int = RUNS) -> float:
    """The median time ``await wait(timeout)`` takes."""
    elapsed = []
    for _ in range(runs):
        started = time.monotonic()
        await wait(timeout)
        elapsed.append(time.monotonic() - started)
    return statistics.median(elapsed)


async def wait_until(condition: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not await condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def waits(store: AsyncRedisStore, key: str) -> dict[str, AsyncWait]:
    """Each kind of wait, as the lock layer calls it: a refused attempt, then the wait."""

    async def wait_turn(timeout: float) -> Any:
        assert await store.acquire(key, "waiter", 60) is None
        return await store.wait_turn(key, "waiter", timeout)

    async def wait(timeout: float) -> Any:
        return await store.wait(key, timeout)

    async def wait_permit(timeout: float) -> Any:
        assert await store.acquire_permit(key + ":p", "waiter", 60, 1) is None
        return await store.wait_permit(key + ":p", timeout)

    return {"wait_turn": wait_turn, "wait": wait, "wait_permit": wait_permit}


async def hold(store: AsyncRedisStore, key: str) -> None:
    assert await store.acquire(key, "holder", 60) is not None
    assert await store.acquire_permit(key + ":p", "holder", 60, 1) is not None


async def free(store: AsyncRedisStore, key: str) -> None:
    assert await store.release(key, "holder") is True
    assert await store.release_permit(key + ":p", "holder") is True


@pytest.fixture
async def astore(redis_server: RedisServer) -> AsyncIterator[AsyncRedisStore]:
    store = AsyncRedisStore.from_url(f"{redis_server.url}?prefix=a{uuid.uuid4().hex[:10]}")
    yield store
    await store.aclose()


@pytest.mark.parametrize("timeout", TIMEOUTS)
@pytest.mark.parametrize("kind", ["wait_turn", "wait", "wait_permit"])
async def test_an_async_wait_ends_at_its_timeout(
    astore: AsyncRedisStore, kind: str, timeout: float
) -> None:
    await hold(astore, "k")
    median = await median_wait(waits(astore, "k")[kind], timeout)
    assert timeout <= median <= timeout + SLACK


@pytest.mark.parametrize("kind", ["wait_turn", "wait", "wait_permit"])
async def test_a_release_wakes_an_async_waiter_at_once(astore: AsyncRedisStore, kind: str) -> None:
    async def once() -> float:
        await hold(astore, "k")
        waiting = asyncio.ensure_future(waits(astore, "k")[kind](30))
        await asyncio.sleep(0.2)
        released = time.monotonic()
        await free(astore, "k")
        await asyncio.wait_for(waiting, 30)
        woke = time.monotonic() - released
        if kind == "wait_turn":
            assert await astore.release("k", "waiter") is True
        return woke

    assert statistics.median([await once() for _ in range(3)]) < 0.05


async def test_fifty_waiting_tasks_share_one_subscriber_connection(
    redis_server: RedisServer,
) -> None:
    name = f"afifty-{uuid.uuid4().hex[:8]}"
    client = redis.asyncio.Redis(port=redis_server.port, socket_timeout=5, client_name=name)
    store = AsyncRedisStore(client, prefix=name, waiter_grace=30)
    queue = layout(name, "k").base + ":queue"
    holder = await RemoteLock("k", store=store, ttl=30).aacquire()
    sections: list[tuple[float, float]] = []

    async def worker() -> None:
        lock = RemoteLock(
            "k", store=store, ttl=30, wait=tenacity.wait_fixed(10),
            stop=tenacity.stop_after_delay(120),
        )  # fmt: skip
        async with lock:
            started = time.monotonic()
            await asyncio.sleep(0.002)
            sections.append((started, time.monotonic()))

    tasks = []
    for _ in range(50):
        tasks.append(asyncio.ensure_future(worker()))

        async def queued() -> bool:
            return bool(await client.zcard(queue) == len(tasks))

        await wait_until(queued)
    await asyncio.sleep(0.2)
    connected = clients_named(redis_server, name)
    assert subscribers(connected) == 1
    assert len(connected) <= 1 + 10
    started = time.monotonic()
    await holder.arelease()
    await asyncio.wait_for(asyncio.gather(*tasks), 120)
    ordered = sorted(sections)
    assert len(ordered) == 50
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))
    assert time.monotonic() - started < 60
    await store.aclose()


@pytest.mark.parametrize("retries", [1, 0], ids=["reconnecting-client", "no-retry-client"])
async def test_async_waiters_get_the_lock_after_the_subscriber_is_killed(
    private_redis: RedisServer, retries: int
) -> None:
    client = redis.asyncio.Redis(
        port=private_redis.port, socket_timeout=5, retry=Retry(NoBackoff(), retries)
    )
    store = AsyncRedisStore(client, prefix="akill")
    queue = layout("akill", "k").base + ":queue"
    await store.acquire("k", "holder", 60)
    got: list[float] = []

    async def worker() -> None:
        async with RemoteLock("k", store=store, wait=tenacity.wait_fixed(30)):
            got.append(time.monotonic())

    tasks = [asyncio.ensure_future(worker()) for _ in range(5)]

    async def queued() -> bool:
        return bool(await client.zcard(queue) == 5)

    await wait_until(queued)
    server = admin(private_redis)

    async def subscribed() -> bool:
        return subscribers(server.client_list()) == 1

    await wait_until(subscribed)
    await asyncio.sleep(0.2)
    assert server.client_kill_filter(_type="pubsub") == 1
    server.close()
    await asyncio.sleep(0.5)
    released = time.monotonic()
    await store.release("k", "holder")
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert len(got) == 5
    assert max(got) - released < 10
    await store.aclose()


async def test_an_async_handover_before_the_first_wait_is_not_lost(
    astore: AsyncRedisStore,
) -> None:
    assert await astore.acquire("k", "A", 60) is not None
    assert await astore.acquire("k", "B", 60) is None
    assert await astore.release("k", "A") is True
    started = time.monotonic()
    handed = await astore.wait_turn("k", "B", 10)
    assert time.monotonic() - started < 1
    assert isinstance(handed, Handover)
    assert await astore.owner("k") == "B"


# -- Redis Cluster -----------------------------------------------------------------------


@pytest.fixture
def cluster_url(redis_cluster: RedisCluster) -> str:
    return f"{redis_cluster.url}?prefix=cw{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sync_cluster_store(cluster_url: str) -> Iterator[RedisStore]:
    store = store_from_url(cluster_url)
    assert isinstance(store, RedisStore)
    yield store
    store.close()


def test_cluster_wake_ups_on_every_slot(sync_cluster_store: RedisStore) -> None:
    """Keys on all three masters; the one subscriber connection hears them all."""
    store = sync_cluster_store
    keys = [f"job:{n}" for n in range(6)]
    for key in keys:
        store.acquire(key, "holder", 60)
        assert store.acquire(key, "waiter", 60) is None
    handed: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda k=k: handed.update({k: store.wait_turn(k, "waiter", 30)}))
        for k in keys
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)
    released = time.monotonic()
    for key in keys:
        store.release(key, "holder")
    for thread in threads:
        thread.join(30)
    assert time.monotonic() - released < 2  # not the 30 s bound
    assert all(isinstance(handed[key], Handover) for key in keys)
    hold_key = "job:on-time"
    store.acquire(hold_key, "holder", 60)

    def wait_turn(timeout: float) -> Any:
        store.acquire(hold_key, "waiter", 60)
        return store.wait_turn(hold_key, "waiter", timeout)

    elapsed = []
    for _ in range(RUNS):
        started = time.monotonic()
        wait_turn(0.05)
        elapsed.append(time.monotonic() - started)
    assert 0.05 <= statistics.median(elapsed) <= 0.05 + SLACK


async def test_async_cluster_wake_ups(cluster_url: str) -> None:
    store = AsyncRedisStore.from_url(cluster_url)
    keys = [f"job:{n}" for n in range(6)]
    for key in keys:
        await store.acquire(key, "holder", 60)
        assert await store.acquire(key, "waiter", 60) is None
    waiting = [asyncio.ensure_future(store.wait_turn(key, "waiter", 30)) for key in keys]
    await asyncio.sleep(0.3)
    released = time.monotonic()
    for key in keys:
        await store.release(key, "holder")
    handed = await asyncio.wait_for(asyncio.gather(*waiting), 30)
    assert time.monotonic() - released < 2
    assert all(isinstance(h, Handover) for h in handed)
    await hold(store, "on-time")
    assert 0.05 <= await median_wait(waits(store, "on-time")["wait_turn"], 0.05) <= 0.05 + SLACK
    await store.aclose()
