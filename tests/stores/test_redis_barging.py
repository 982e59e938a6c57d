"""Bounded barging on Redis (``barging=`` seconds): a holder may take the lock back
while the first waiter in line has waited less than the window, then strict hand-over.

The default stays strict first come, first served (tests/stores/test_redis.py).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from remotelock import RemoteLock, StoreConfigError
from remotelock.stores import store_from_url
from remotelock.stores.base import Handover
from remotelock.stores.redis.aio import AsyncRedisStore
from remotelock.stores.redis.common import layout
from remotelock.stores.redis.store import RedisStore
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis

WINDOW = 1.0  # the longest allowed: steps meant to fall inside it do, on a loaded machine


@pytest.fixture
def pair(redis_server: RedisServer) -> Iterator[tuple[RedisStore, RedisStore]]:
    """Two stores (two processes) on one prefix, with a barging window."""
    prefix = f"barge-{uuid.uuid4().hex[:8]}"
    made = [RedisStore.from_url(redis_server.url, prefix=prefix, barging=WINDOW) for _ in "ab"]
    yield made[0], made[1]
    for store in made:
        store.close()


def test_the_option_is_checked(redis_server: RedisServer) -> None:
    store = store_from_url(f"{redis_server.url}?barging=0.02")
    assert isinstance(store, RedisStore)
    assert store.barging == 0.02
    store.close()
    assert RedisStore.from_url(redis_server.url).barging == 0  # strict FIFO by default
    for bad in (-0.1, 1.5, "soon", True):
        with pytest.raises(StoreConfigError, match="barging"):
            RedisStore.from_url(redis_server.url, barging=bad)
    with pytest.raises(StoreConfigError, match="barging"):
        store_from_url(f"{redis_server.url}?barging=soon")


def test_the_holder_takes_the_lock_back_within_the_window(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    holder, waiting = pair
    k = layout(holder.prefix, "k")
    assert holder.acquire("k", "H", 30) is not None
    assert waiting.acquire("k", "W", 30) is None  # first in line: the window opens
    assert 0 < holder.client.pttl(f"{k.base}:window") <= WINDOW * 1000
    assert holder.release("k", "H") is True  # within it: nobody is handed the lock
    assert holder.owner("k") is None
    assert holder.acquire("k", "H2", 30) is not None  # the holder's process takes it back
    assert holder.client.zrange(f"{k.base}:queue", 0, -1) == [b"W"]  # W keeps its place


def test_a_holder_done_taking_it_back_hands_over_within_the_window(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """``hand_over=True``: the holder's process is done (a sync lock's streak ended, see
    remotelock.streak), so the first in line gets the lock now, not after the window,
    and its own window opens."""
    holder, waiting = pair
    k = layout(holder.prefix, "k")
    assert holder.acquire("k", "H", 30) is not None
    assert waiting.acquire("k", "W", 30) is None  # first in line: the window opens
    assert holder.client.pttl(f"{k.base}:window") > 0
    assert holder.release("k", "H", True) is True
    assert holder.owner("k") == "W"
    assert holder.acquire("k", "H2", 30) is None  # no taking it back: queued
    assert 0 < holder.client.pttl(f"{k.base}:window") <= WINDOW * 1000  # W's window


def test_after_the_window_the_release_hands_over(pair: tuple[RedisStore, RedisStore]) -> None:
    holder, waiting = pair
    assert holder.acquire("k", "H", 30) is not None
    assert waiting.acquire("k", "W1", 30) is None
    assert waiting.acquire("k", "W2", 30) is None
    time.sleep(WINDOW + 0.1)  # the window closed: the next release is strict
    assert holder.release("k", "H") is True
    assert holder.owner("k") == "W1"
    assert holder.acquire("k", "H", 30) is None  # the releaser queues behind W2
    k = layout(holder.prefix, "k")
    assert 0 < holder.client.pttl(f"{k.base}:window") <= WINDOW * 1000  # W1's window


def test_a_waiter_gets_the_lock_when_the_holder_does_not_come_back(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """A release inside the window wakes nobody; the first in line looks again when the
    window closes, so a holder that never comes back costs the line the window."""
    holder, waiting = pair
    holder_lock = RemoteLock("k", store=holder, ttl=30)
    lease = holder_lock.acquire()
    got: list[float] = []

    def wait() -> None:
        with RemoteLock("k", store=waiting, ttl=30).acquire(timeout=20):
            got.append(time.monotonic())

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)  # queued, first in line
    released = time.monotonic()
    lease.release()
    thread.join(20)
    assert got
    assert got[0] - released < 2 * WINDOW + 2  # the window and one more, not the lease


def test_the_window_bounds_how_long_the_first_in_line_waits(
    pair: tuple[RedisStore, RedisStore],
) -> None:
    """A holder taking the lock back in a tight loop cannot keep it past the window:
    the first release after it hands the lock to the waiter. (Deterministic steps:
    test_the_holder_takes_the_lock_back_within_the_window and the next test.)"""
    holder, waiting = pair
    stop = threading.Event()
    rounds = [0]

    def hog() -> None:
        lock = RemoteLock("k", store=holder, ttl=30)
        while not stop.is_set():
            with lock.acquire(timeout=20):
                rounds[0] += 1
                time.sleep(0.002)

    thread = threading.Thread(target=hog)
    thread.start()
    while rounds[0] < 3:
        time.sleep(0.01)
    asked = time.monotonic()
    with RemoteLock("k", store=waiting, ttl=30).acquire(timeout=20):
        waited = time.monotonic() - asked
        taken_back = rounds[0]
    stop.set()
    thread.join(20)
    assert taken_back >= 3  # (it may have come in at once, between two of the hog's)
    assert waited < 2 * WINDOW + 2  # at most the window and one section (the hand-over)


def test_mutual_exclusion_and_progress_across_processes(redis_server: RedisServer) -> None:
    prefix = f"bargex-{uuid.uuid4().hex[:8]}"
    stores = [RedisStore.from_url(redis_server.url, prefix=prefix, barging=0.01) for _ in range(4)]
    data = redis.Redis.from_url(redis_server.url)
    inside = [0]
    overlaps = [0]
    done: dict[int, int] = {}

    def work(n: int) -> None:
        lock = RemoteLock("k", store=stores[n], ttl=10)
        for _ in range(40):
            with lock.acquire(timeout=30):
                inside[0] += 1
                overlaps[0] += inside[0] > 1
                value = int(data.get(f"{prefix}:count") or 0)
                time.sleep(0.001)
                data.set(f"{prefix}:count", value + 1)
                inside[0] -= 1
        done[n] = 40

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert done == dict.fromkeys(range(4), 40)
    assert overlaps[0] == 0
    assert int(data.get(f"{prefix}:count") or 0) == 160
    for store in stores:
        store.close()


def test_watchers_hear_a_release_inside_the_window(pair: tuple[RedisStore, RedisStore]) -> None:
    holder, waiting = pair
    assert holder.acquire("k", "H", 30) is not None
    assert waiting.acquire("k", "W", 30) is None
    woke: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: woke.update({"W": waiting.wait_turn("k", "W", 20, every_release=True)})
    )
    thread.start()
    k = layout(holder.prefix, "k")
    deadline = time.monotonic() + 10
    while dict(holder.client.pubsub_numsub(k.bell))[k.bell.encode()] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    released = time.monotonic()
    assert holder.release("k", "H") is True  # inside the window: no hand-over...
    thread.join(20)
    assert "W" in woke  # ...but a skip_if caller hears it at once
    assert not isinstance(woke["W"], Handover)
    assert time.monotonic() - released < 5


def test_the_next_in_line_is_told_once_when_to_look(pair: tuple[RedisStore, RedisStore]) -> None:
    """After a hand-over the new holder's window opens; its first release within it
    tells the first in line (once, on its process channel) to look by a window after
    the window closes: no round trip, and the hand-over normally comes first."""
    holder, waiting = pair
    k = layout(holder.prefix, "k")
    channel = waiting._clients.doorbell().channel
    listener = holder.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel)
    assert listener.get_message(timeout=1) is None  # the subscription is in place
    assert holder.acquire("k", "H", 30) is not None
    assert holder.acquire("k", "N", 30) is None  # first in line (it knows its window)
    assert waiting.acquire("k", "W", 30) is None  # second
    time.sleep(WINDOW + 0.1)
    assert holder.release("k", "H") is True  # strict: handed to N, whose window opens
    assert holder.owner("k") == "N"
    assert holder.client.get(f"{k.base}:window") == b""  # nobody told yet
    assert holder.release("k", "N") is True  # within N's window: W is told, once
    message = listener.get_message(timeout=5)
    assert message is not None
    ms, _, rest = message["data"].decode()[1:].partition(":")
    assert message["data"].startswith(b"w")
    assert rest == f"{k.bell} W"
    assert WINDOW * 1000 < int(ms) <= 2 * WINDOW * 1000
    assert holder.acquire("k", "N", 30) is not None  # N takes it back
    assert holder.release("k", "N") is True
    assert listener.get_message(timeout=0.3) is None  # told once per window
    listener.close()


async def test_the_asyncio_store_barges_and_hands_over_alike(redis_server: RedisServer) -> None:
    """The asyncio store is the source the sync one is generated from: the same window,
    told by the same scripts, with tasks for processes."""
    prefix = f"abarge-{uuid.uuid4().hex[:8]}"
    store = AsyncRedisStore.from_url(f"{redis_server.url}?prefix={prefix}&barging={WINDOW}")
    assert store.barging == WINDOW
    k = layout(prefix, "k")
    assert await store.acquire("k", "H", 30) is not None
    assert await store.acquire("k", "W", 30) is None  # first in line: the window opens
    assert await store.release("k", "H") is True  # within it: handed to nobody
    assert await store.owner("k") is None
    assert await store.acquire("k", "H2", 30) is not None  # taken back
    waited = asyncio.ensure_future(store.wait_turn("k", "W", 20))
    await asyncio.sleep(WINDOW + 0.1)  # the window closed: the next release hands over
    assert await store.release("k", "H2") is True
    handed = await asyncio.wait_for(waited, 20)
    assert isinstance(handed, Handover)
    assert await store.owner("k") == "W"
    assert await store.client.exists(f"{k.base}:queue") == 0
    await store.aclose()
