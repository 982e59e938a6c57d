"""A hand-over or a turn wakes the one process it concerns, not every process in line.

Each store stands for a process here (each has its own doorbell, subscriber
connection and channel). Waiters that only wait for their turn subscribe to their
doorbell's own channel, never to the key's bell: a release then costs one wake-up in
one process, however many processes wait for the key.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from remotelock import RemoteLock
from remotelock.stores.base import Handover
from remotelock.stores.redis.common import layout
from remotelock.stores.redis.store import RedisStore
from tests.helpers.eventually import eventually
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis


@pytest.fixture
def stores(redis_server: RedisServer) -> Iterator[list[RedisStore]]:
    prefix = f"aim-{uuid.uuid4().hex[:8]}"
    made = [RedisStore.from_url(redis_server.url, prefix=prefix) for _ in range(3)]
    yield made
    for store in made:
        store.close()


def subscribers(store: RedisStore, channel: str) -> int:
    return int(dict(store.client.pubsub_numsub(channel))[channel.encode()])


def wait_in_thread(
    store: RedisStore, key: str, token: str, out: dict[str, Any]
) -> threading.Thread:
    thread = threading.Thread(target=lambda: out.update({token: store.wait_turn(key, token, 20)}))
    thread.start()
    return thread


def next_message(listener: Any) -> str:
    """The next message published to ``listener``'s channel (its subscribe reply is
    skipped), within 10 s."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        message = listener.get_message(timeout=0.1)
        if message is not None:
            return str(message["data"].decode())
    raise AssertionError("nothing published on the waiter's channel")


def listening(store: RedisStore, channel: str) -> Any:
    """A subscriber of ``channel`` (subscribed once the server counts it), to read what
    the scripts publish there."""
    listener = store.client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(channel)
    assert eventually(lambda: subscribers(store, channel) == 1, 10)
    return listener


def test_a_hand_over_reaches_only_the_waiter_it_concerns(stores: list[RedisStore]) -> None:
    holder, first, second = stores  # three processes
    k = layout(holder.prefix, "k")
    assert holder.acquire("k", "H", 30) is not None
    assert first.acquire("k", "W1", 30) is None
    assert second.acquire("k", "W2", 30) is None
    handed: dict[str, Any] = {}
    threads = [wait_in_thread(first, "k", "W1", handed), wait_in_thread(second, "k", "W2", handed)]
    readers = [store._clients.doorbell()._board for store in (first, second)]
    assert eventually(lambda: all(board.listening for board in readers), 10)  # both listen
    own = [store._clients.doorbell().channel for store in (first, second)]
    assert all(subscribers(first, name) == 1 for name in own)
    assert subscribers(first, k.bell) == 0  # nobody waiting for a turn hears the key's bell
    assert holder.release("k", "H") is True
    threads[0].join(20)
    assert isinstance(handed["W1"], Handover)
    assert "W2" not in handed  # the second process was not even woken...
    assert second._clients.doorbell()._board.recent == {}  # ...nor sent anything
    assert threads[1].is_alive()
    assert first.release("k", "W1") is True
    threads[1].join(20)
    assert isinstance(handed["W2"], Handover)


def test_one_token_waiting_on_two_keys_is_told_of_each_apart(stores: list[RedisStore]) -> None:
    """One doorbell channel serves every key of a process: a hand-over of one key never
    wakes a wait for another key, even under the same token."""
    holder, store, _ = stores
    for key in ("a", "b"):
        assert holder.acquire(key, "H", 30) is not None
        assert store.acquire(key, "W", 30) is None
    handed: dict[str, Any] = {}
    waits = {
        key: threading.Thread(
            target=lambda key=key: handed.update({key: store.wait_turn(key, "W", 20)})
        )
        for key in ("a", "b")
    }
    for thread in waits.values():
        thread.start()
    time.sleep(0.2)
    assert holder.release("a", "H") is True
    waits["a"].join(20)
    assert isinstance(handed["a"], Handover)
    time.sleep(0.3)
    assert "b" not in handed  # still waiting: b was not handed over
    assert holder.release("b", "H") is True
    waits["b"].join(20)
    assert isinstance(handed["b"], Handover)


def test_turns_and_hand_overs_are_told_on_the_waiters_own_channel(
    stores: list[RedisStore],
) -> None:
    """What the scripts publish on a waiter's channel: its token named with the key's
    bell, so that one channel can serve every key of a process."""
    holder, first, other = stores
    k = layout(holder.prefix, "k")
    address = first._clients.doorbell().channel
    listener = listening(holder, address)

    def heard() -> str:
        return next_message(listener)

    assert holder.acquire("k", "H", 0.3) is not None
    assert first.acquire("k", "W1", 30) is None  # queued with its channel
    time.sleep(0.4)  # H's lease ran out: free, W1 first in line
    assert other.acquire("k", "C", 30) is None  # W1's turn: W1 is told
    assert heard() == f"t{k.bell} W1"
    assert first.acquire("k", "W1", 30) is not None
    assert first.release("k", "W1") is True  # handed to C: not W1's process's business
    assert listener.get_message(timeout=0.3) is None
    assert holder.acquire("k", "H2", 30) is None  # behind C, from the holder's store
    assert first.acquire("k", "W2", 30) is None
    assert other.release("k", "C") is True  # handed to H2: not told on W1's channel
    assert listener.get_message(timeout=0.3) is None
    assert holder.release("k", "H2") is True  # handed to W2: told on its channel
    fence, lease, rest = heard()[1:].split(":", 2)
    assert rest == f"{k.bell} W2"
    assert int(fence) > 0
    assert 0 < int(lease) <= 3000
    listener.close()


def test_watchers_still_hear_every_release_on_the_key_bell(stores: list[RedisStore]) -> None:
    holder, watcher_store, _ = stores
    k = layout(holder.prefix, "k")
    assert holder.acquire("k", "H", 30) is not None
    assert watcher_store.acquire("k", "W", 30) is None
    assert watcher_store.acquire("k", "X", 30) is None
    woke: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: woke.update(
            {"X": watcher_store.wait_turn("k", "X", 20, every_release=True)}
        )
    )
    thread.start()
    assert eventually(
        lambda: subscribers(holder, k.bell) == 1, 10
    )  # a watcher hears the key's bell
    assert holder.release("k", "H") is True  # handed to W; X (second) hears the release
    thread.join(20)
    assert "X" in woke
    assert woke["X"] is None


def test_many_processes_in_line_are_served_in_order(redis_server: RedisServer) -> None:
    prefix = f"line-{uuid.uuid4().hex[:8]}"
    stores = [RedisStore.from_url(redis_server.url, prefix=prefix) for _ in range(5)]
    data = redis.Redis.from_url(redis_server.url)
    order: list[int] = []

    def work(n: int) -> None:
        lock = RemoteLock("k", store=stores[n], ttl=10)
        for _ in range(20):
            with lock:
                value = int(data.get(f"{prefix}:count") or 0)
                time.sleep(0.001)
                data.set(f"{prefix}:count", value + 1)
                order.append(n)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert int(data.get(f"{prefix}:count") or 0) == 100
    assert len(order) == 100
    for store in stores:
        store.close()


def test_a_waiter_whose_process_is_gone_is_passed_over_at_once(
    stores: list[RedisStore],
) -> None:
    """A hand-over skips a waiter whose process no longer listens (its subscriber
    connection closed: the process died): the next waiter gets the lock at once, not
    after the 3 s a dead waiter's hand-over lease would last."""
    holder, doomed, alive = stores
    assert holder.acquire("k", "H", 30) is not None
    assert doomed.acquire("k", "warm", 30) is None  # its first wait starts its reader
    doomed.wait_turn("k", "warm", 0.05)
    doomed.leave("k", "warm")
    assert doomed.acquire("k", "D", 30) is None  # queued by a process that listens
    assert not doomed._clients.doorbell().address.startswith("~")
    assert alive.acquire("k", "A", 30) is None
    handed: dict[str, Any] = {}
    thread = wait_in_thread(alive, "k", "A", handed)
    time.sleep(1.2)  # D has been in line over a second
    doomed.close()  # its process dies: its subscriber connection closes
    assert eventually(lambda: subscribers(holder, doomed._clients.doorbell().channel) == 0, 10)
    released = time.monotonic()
    assert holder.release("k", "H") is True
    thread.join(20)
    assert isinstance(handed["A"], Handover)
    assert time.monotonic() - released < 2  # not the dead one's 3 s lease
    assert holder.owner("k") == "A"


def test_a_fresh_waiter_is_not_judged_gone(stores: list[RedisStore]) -> None:
    """A process starts listening just after its first acquire: until then (and for
    the first second in line) a waiter without a subscriber still gets the lock."""
    holder, first, _ = stores
    assert holder.acquire("k", "H", 30) is not None
    assert first.acquire("k", "W", 30) is None  # no reader yet: its channel is marked
    assert first._clients.doorbell().address.startswith("~")
    assert holder.release("k", "H") is True
    assert holder.owner("k") == "W"


def test_the_keepers_turn_notice_reaches_a_marked_channel(stores: list[RedisStore]) -> None:
    """A lock found free by the script that keeps places (nobody released it: the
    holder's lease ran out) tells the first in line on its process channel, also when
    that channel was sent marked (its process was not listening yet, or on Cluster)."""
    holder, first, _ = stores
    k = layout(holder.prefix, "k")
    channel = first._clients.doorbell().channel
    listener = listening(holder, channel)
    assert holder.acquire("k", "H", 0.3) is not None
    assert first.acquire("k", "W", 30) is None
    assert holder.client.hget(f"{k.base}:addr", "W") == f"~{channel}".encode()
    time.sleep(0.4)  # H's lease ran out: free, and nobody told W
    first._keep_places()
    assert next_message(listener) == f"t{k.bell} W"
    listener.close()
