"""A thousand threads, or a thousand tasks, waiting on one Redis key from a store built
from a URL: a few connections for the whole process, every one of them gets the lock
in turn, no errors, and waiting is quiet (a few round trips a second for all of them,
not a few each)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import tenacity

from remotelock import RemoteLock
from remotelock.stores import RedisStore, store_from_url
from tests.servers.redis import RedisServer

WAITERS = 1000
IDLE = 3.0  # seconds of waiting measured


@pytest.fixture
def named(redis_server: RedisServer) -> Iterator[tuple[RedisStore, Callable[[], int], Any]]:
    """A store from a URL whose connections carry a name of their own; a counter of
    those connections; and an admin client."""
    name = f"scale-{uuid.uuid4().hex[:10]}"
    store = store_from_url(f"{redis_server.url}?prefix={name}&client_name={name}")
    assert isinstance(store, RedisStore)
    admin = redis.Redis.from_url(redis_server.url)

    def connections() -> int:
        return sum(1 for client in admin.client_list() if client.get("name") == name)

    yield store, connections, admin
    store.close()
    admin.close()


def scripts_run(admin: Any) -> int:
    """Script calls the server has answered so far (each a round trip of a store step)."""
    stats = admin.info("commandstats")
    calls = [stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("evalsha", "eval")]
    return sum(int(count) for count in calls)


class Peak:
    """The most connections seen, sampled in the background."""

    def __init__(self, count: Callable[[], int]) -> None:
        self.count, self.most, self._stop = count, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.most = max(self.most, self.count())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.most, self.count())


def test_a_thousand_waiting_threads(
    named: tuple[RedisStore, Callable[[], int], Any], key: str
) -> None:
    store, connections, admin = named
    holder = RemoteLock(key, store=store, ttl=60).acquire()
    inside, entered, errors = [0], [0], []
    queued = threading.Barrier(WAITERS + 1)

    def worker() -> None:
        queued.wait()
        lock = RemoteLock(key, store=store, ttl=60, stop=tenacity.stop_after_delay(300))
        try:
            with lock:
                inside[0] += 1
                assert inside[0] == 1
                entered[0] += 1
                inside[0] -= 1
        except BaseException as exc:
            errors.append(exc)

    peak = Peak(connections)
    threads = [threading.Thread(target=worker) for _ in range(WAITERS)]
    for thread in threads:
        thread.start()
    queued.wait()
    queue = f"{store.prefix}:{{{key}}}:queue"
    deadline = time.monotonic() + 120
    while admin.zcard(queue) < WAITERS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admin.zcard(queue) == WAITERS  # every thread asked, and waits in line
    before = scripts_run(admin)
    time.sleep(IDLE)
    idle = scripts_run(admin) - before
    holder.release()
    for thread in threads:
        thread.join(300)
    assert not errors, errors[:3]
    assert entered[0] == WAITERS
    assert peak.stop() <= 10  # eight pooled connections and the subscriber
    assert idle / WAITERS / IDLE < 0.1, idle  # round trips per waiter and second


async def test_a_thousand_waiting_tasks(
    named: tuple[RedisStore, Callable[[], int], Any], key: str
) -> None:
    store, connections, admin = named
    holder = await RemoteLock(key, store=store, ttl=60).aacquire()
    inside, entered, errors = [0], [0], []

    async def worker() -> None:
        lock = RemoteLock(key, store=store, ttl=60, stop=tenacity.stop_after_delay(300))
        try:
            async with lock:
                inside[0] += 1
                assert inside[0] == 1
                await asyncio.sleep(0)
                entered[0] += 1
                inside[0] -= 1
        except BaseException as exc:
            errors.append(exc)

    peak = Peak(connections)
    tasks = [asyncio.ensure_future(worker()) for _ in range(WAITERS)]
    queue = f"{store.prefix}:{{{key}}}:queue"
    deadline = time.monotonic() + 120
    while admin.zcard(queue) < WAITERS and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the server's queue, not an event of this loop
    assert admin.zcard(queue) == WAITERS
    before = scripts_run(admin)
    await asyncio.sleep(IDLE)
    idle = scripts_run(admin) - before
    await holder.arelease()
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    assert not errors, errors[:3]
    assert entered[0] == WAITERS
    assert peak.stop() <= 10
    assert idle / WAITERS / IDLE < 0.1, idle
    await store.as_async().aclose()  # type: ignore[attr-defined]
