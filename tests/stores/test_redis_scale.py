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

from remotelock import RemoteLock, policy
from remotelock.stores import RedisStore, store_from_url
from tests.servers.redis import RedisServer

WAITERS = 1000
IDLE = 3.0  # seconds of waiting measured
SETTLED = 10  # script calls in half a second once every waiter sleeps (0.02 per waiter-second)
assert isinstance(policy.PUSHED_WAIT, tenacity.wait_random)
FIRST_LOOK = policy.PUSHED_WAIT.wait_random_min  # a waiter's earliest look without a wake-up


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


def idle_rate(admin: Any, started: float) -> float:
    """Script calls per waiter and second while every waiter sleeps.

    The count starts once the waiters' setup is over (an acquire each, then a look each
    when their subscription becomes active: on a loaded machine that tail runs for a
    while after the last one queued) and ends before any waiter's first look of its own
    (:data:`~remotelock.policy.PUSHED_WAIT`, at least 10 s after it started waiting, so
    after ``started``). A store that polled would never settle, and fail the count.
    """
    last, deadline = scripts_run(admin), started + 60
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = scripts_run(admin)
        if now - last <= SETTLED:
            break
        last = now
    begun, before = time.monotonic(), scripts_run(admin)
    time.sleep(max(1.0, min(IDLE, started + FIRST_LOOK - 0.5 - begun)))
    return (scripts_run(admin) - before) / WAITERS / (time.monotonic() - begun)


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
    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(WAITERS)]
    for thread in threads:
        thread.start()
    queued.wait()
    queue = f"{store.prefix}:{{{key}}}:queue"
    deadline = time.monotonic() + 120
    while admin.zcard(queue) < WAITERS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert admin.zcard(queue) == WAITERS  # every thread asked, and waits in line
    idle = idle_rate(admin, started)
    holder.release()
    for thread in threads:
        thread.join(300)
    assert not errors, errors[:3]
    assert entered[0] == WAITERS
    assert peak.stop() <= 10  # eight pooled connections and the subscriber
    assert idle < 0.1, idle  # round trips per waiter and second


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
    started = time.monotonic()
    tasks = [asyncio.ensure_future(worker()) for _ in range(WAITERS)]
    queue = f"{store.prefix}:{{{key}}}:queue"
    deadline = time.monotonic() + 120
    while admin.zcard(queue) < WAITERS and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the server's queue, not an event of this loop
    assert admin.zcard(queue) == WAITERS
    idle = await asyncio.to_thread(idle_rate, admin, started)
    await holder.arelease()
    await asyncio.wait_for(asyncio.gather(*tasks), 300)
    assert not errors, errors[:3]
    assert entered[0] == WAITERS
    assert peak.stop() <= 10
    assert idle < 0.1, idle
    await store.as_async().aclose()  # type: ignore[attr-defined]
