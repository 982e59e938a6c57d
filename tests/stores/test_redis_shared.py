"""RedisStore's shared (reader) leases on a real server: what the contract cannot see.

The contract (``tests/contract/test_shared.py``) checks the rules; these tests check how
Redis keeps them: every key it writes for readers expires, all of them under the key's
one hash tag; fencing tokens rise across both kinds even when the key's state is lost;
a writer refused by readers waits in the FIFO queue and the last reader hands it the
lock; the uncontended exclusive cycle still costs one script call each.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from remotelock.stores.base import Handover
from remotelock.stores.readers import WRITER_GRACE
from remotelock.stores.redis.common import REFUSALS_KEPT, base_name, layout
from remotelock.stores.redis.lua import RELEASED_MS
from remotelock.stores.redis.store import RedisStore
from tests.servers.redis import RedisCluster, RedisServer

pytestmark = pytest.mark.redis


def token() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def prefix() -> str:
    return f"shared-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as client:
        yield client


@pytest.fixture
def store(redis_server: RedisServer, prefix: str) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, fence_retention=60)
    yield store
    store.close()


def expiries(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Every key under ``prefix`` and its PTTL in ms (-1: it never expires)."""
    names = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.pttl(name)
    return dict(zip(names, pipe.execute(), strict=True))


def name(store: RedisStore, key: str, part: str) -> str:
    return f"{layout(store.prefix, key).base}:{part}"


# -- storage stays bounded --------------------------------------------------------------


def test_every_key_of_a_shared_lock_expires_while_held_and_after(
    store: RedisStore, client: redis.Redis, prefix: str
) -> None:
    keys = [f"doc:{n}" for n in range(100)]
    for key in keys:  # readers, a writer in line behind them, a reader it holds back
        assert store.acquire_shared(key, "r1", 5) is not None
        assert store.acquire_shared(key, "r2", 5) is not None
        assert store.acquire(key, "w", 5) is None
        assert store.acquire_shared(key, "late", 5) is None
    for key in keys[:5]:  # a reader whose lease will run out unreleased
        assert store.acquire_shared(f"{key}:gone", "r", 0.2) is not None
    held = expiries(client, prefix)
    assert [n for n, ms in held.items() if ms < 0] == []
    for key in keys:  # every name under the key's own hash tag (one Cluster slot)
        base = base_name(prefix, key)
        assert {n for n in held if n.startswith(base + ":")} >= {
            f"{base}:{part}" for part in ("readers", "rfences", "wmark", "queue", "fence")
        }
    for key in keys:
        assert store.release_shared(key, "r1") is True
        assert store.release_shared(key, "r2") is True  # the last: "w" is handed the lock
        assert store.release(key, "w") is True
    time.sleep(0.2 + 1.0 + 0.3)  # the lapsed readers' keys: their lease and a second
    left = expiries(client, prefix)
    assert [n for n, ms in left.items() if ms < 0] == []
    # :fence outlives the last lease (5 s, and the readers' second) by fence_retention;
    # the releases are remembered a minute; :listen lasts while "late" might wait.
    assert max(left.values()) <= 5_000 + 1_000 + 60_000
    assert max(left.values()) > RELEASED_MS - 5_000
    parts = {n.rsplit(":", 1)[1] for n in left}
    assert {"fence", "released", "rreleased"} <= parts
    assert parts - {"fence", "released", "rreleased"} <= {"listen"}


def test_readers_that_never_release_leave_only_the_fence(
    store: RedisStore, client: redis.Redis, prefix: str
) -> None:
    for n in range(50):
        assert store.acquire_shared(f"doc:{n}", token(), 0.2) is not None
        assert store.acquire_shared(f"doc:{n}", token(), 0.3) is not None
    time.sleep(0.3 + 1.0 + 0.3)
    left = expiries(client, prefix)
    assert {n.rsplit(":", 1)[1] for n in left} == {"fence"}
    assert min(left.values()) > 0
    assert max(left.values()) <= 61_500


# -- fencing tokens: one sequence for both kinds -------------------------------------------


def test_fences_rise_across_kinds_when_the_state_is_lost(
    store: RedisStore, client: redis.Redis, prefix: str
) -> None:
    def wipe() -> None:
        names = list(client.scan_iter(match=f"{prefix}:*"))
        if names:
            client.delete(*names)

    fences = [store.acquire_shared("k", "a", 10)]
    assert store.release_shared("k", "a") is True
    wipe()  # a restart without persistence, or a deletion by hand
    fences.append(store.acquire("k", "w", 10))
    assert store.release("k", "w") is True
    wipe()
    fences.append(store.acquire_shared("k", "b", 10))
    client.delete(name(store, "k", "fence"))  # while a reader holds
    fences.append(store.acquire_shared("k", "c", 10))
    assert store.acquire_shared("k", "b", 10) == fences[2]  # a retry keeps its token
    assert store.release_shared("k", "b") is True
    assert store.release_shared("k", "c") is True
    fences.append(store.acquire("k", "w2", 10))
    rising = [fence for fence in fences if fence is not None]
    assert rising == fences
    assert rising == sorted(set(rising)), rising


def test_a_reader_keeps_the_fence_past_its_lease(store: RedisStore, client: redis.Redis) -> None:
    store.acquire_shared("k", "long", 30)
    store.acquire_shared("k", "short", 1)  # writes :fence with the shorter lease
    assert client.pttl(name(store, "k", "fence")) > 30_000 + 59_000  # long's lease + retention


# -- the queue and the readers -------------------------------------------------------------


def test_a_writer_refused_by_readers_waits_in_line_and_is_handed_the_lock(
    store: RedisStore, client: redis.Redis
) -> None:
    first = [store.acquire_shared("k", reader, 10) for reader in ("a", "b")]
    assert store.acquire("k", "w1", 30) is None
    assert store.acquire("k", "w2", 30) is None
    assert store.waiting("k") == 2
    mark = client.pttl(name(store, "k", "wmark"))
    assert 10_000 < mark <= 10_000 + WRITER_GRACE * 1000  # the readers' leases and a grace
    assert store.acquire_shared("k", "c", 10) is None  # held back behind the writers
    assert store.release_shared("k", "a") is True
    assert store.owner("k") is None  # "b" still reads
    assert store.release_shared("k", "b") is True  # the last reader: w1 is let in
    assert store.owner("k") == "w1"
    assert client.exists(name(store, "k", "wmark")) == 0
    handed = store.wait_turn("k", "w1", 5)
    assert isinstance(handed, Handover)
    assert handed.fencing_token > max(fence or 0 for fence in first)
    assert store.acquire("k", "w1", 30) == handed.fencing_token  # claimed, full lease
    assert store.release("k", "w1") is True
    assert store.owner("k") == "w2"  # first in line next: readers still wait
    assert store.acquire_shared("k", "c", 10) is None
    assert store.release("k", "w2") is True
    assert store.acquire_shared("k", "c", 10) is not None


def test_a_writer_that_leaves_the_line_lets_readers_in_at_once(
    store: RedisStore, client: redis.Redis
) -> None:
    store.acquire_shared("k", "a", 30)
    assert store.acquire("k", "w", 30) is None
    assert store.acquire_shared("k", "b", 30) is None
    store.leave("k", "w")  # it gave up: no writer waits any more
    assert client.exists(name(store, "k", "wmark")) == 0
    assert store.acquire_shared("k", "b", 30) is not None


def test_keeping_a_writers_place_does_not_wake_it_while_readers_hold(
    redis_server: RedisServer, prefix: str
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, waiter_grace=0.3)
    try:
        store.acquire_shared("k", "a", 5)
        assert store.acquire("k", "w", 5) is None
        started = time.monotonic()
        assert store.wait_turn("k", "w", 0.8) is None  # places kept every 0.1 s meanwhile
        assert time.monotonic() - started >= 0.75  # no "your turn" while "a" reads
        assert store.waiting("k") == 1
    finally:
        store.close()


def test_a_plain_wait_counts_readers_as_holders(store: RedisStore) -> None:
    for reader in ("a", "b"):
        store.acquire_shared("k", reader, 30)
    done = threading.Event()

    def wait() -> None:
        store.wait("k", 30)
        done.set()

    waiter = threading.Thread(target=wait)
    started = time.monotonic()
    waiter.start()
    time.sleep(0.2)
    assert store.release_shared("k", "a") is True
    assert not done.wait(0.3)  # "b" still reads
    assert store.release_shared("k", "b") is True
    assert done.wait(2.0)
    waiter.join()
    assert time.monotonic() - started < 3.0
    store.acquire_shared("k", "c", 0.3)
    started = time.monotonic()
    store.wait("k", 30)  # ends with the reader's lease
    assert time.monotonic() - started < 2.0


def test_force_release_drops_readers_and_the_mark(store: RedisStore, client: redis.Redis) -> None:
    store.acquire_shared("k", "a", 30)
    assert store.acquire("k", "w", 30) is None
    assert store.force_release("k") is False  # no exclusive holder was there
    assert store.shared_holders("k") == []
    assert store.owner("k") == "w"  # the lock went to the first in line
    assert client.exists(name(store, "k", "readers"), name(store, "k", "wmark")) == 0
    assert store.release_shared("k", "a") is False


# -- the exclusive cycle keeps its cost ----------------------------------------------------


def test_the_uncontended_exclusive_cycle_is_one_script_each(
    private_redis: RedisServer,
) -> None:
    store = RedisStore.from_url(private_redis.url)
    admin = redis.Redis(port=private_redis.port, socket_timeout=5, decode_responses=True)
    try:
        store.acquire_shared("k", "reader", 10)  # the key had readers once
        assert store.release_shared("k", "reader") is True
        store.acquire("warm", "t", 10)  # scripts loaded
        store.release("warm", "t")
        admin.config_resetstat()
        for n in range(10):
            assert store.acquire("k", f"t{n}", 10) is not None
            assert store.release("k", f"t{n}") is True
        stats: dict[str, Any] = admin.info("commandstats")
        calls = {n.removeprefix("cmdstat_"): int(e["calls"]) for n, e in stats.items()}
        assert calls.get("evalsha") == 20  # one round trip per step
        assert calls.get("exists") == 20  # one look for a queue, readers or a mark each
        assert "zrangebyscore" not in calls  # never the contended path
        assert "publish" not in calls  # nobody waits: no wake-up
    finally:
        admin.close()
        store.close()


# -- Redis Cluster -------------------------------------------------------------------------


def test_shared_leases_on_a_cluster(redis_cluster: RedisCluster) -> None:
    store = RedisStore.from_url(f"{redis_cluster.url}?prefix=cs{uuid.uuid4().hex[:8]}")
    try:
        keys = [f"doc:{n}" for n in range(12)]  # spread over the three masters
        for key in keys:
            assert store.acquire_shared(key, "a", 10) is not None
            assert store.acquire(key, "w", 10) is None
            assert store.acquire_shared(key, "b", 10) is None
            assert store.shared_holders(key) == ["a"]
            assert store.release_shared(key, "a") is True
            assert store.owner(key) == "w"
            assert store.release(key, "w") is True
            assert store.acquire_shared(key, "b", 10) is not None
            assert store.release_shared(key, "b") is True
    finally:
        store.close()


def test_refusals_remembered_stay_bounded(redis_store: RedisStore) -> None:
    """A refused caller that never waits leaves a note for its next wait; a store
    refused on many keys keeps a bounded number of them."""
    holder = "holder"
    for index in range(REFUSALS_KEPT + 200):
        key = f"bounded:{index}"
        assert redis_store.acquire(key, holder, 30) is not None
        assert redis_store.acquire_shared(key, "reader", 30) is None
        assert redis_store.acquire_permit(f"p:{key}", holder, 30, 1) is not None
        assert redis_store.acquire_permit(f"p:{key}", "other", 30, 1) is None
    assert len(redis_store._shared_free_at) <= REFUSALS_KEPT
    assert len(redis_store._permit_free_at) <= REFUSALS_KEPT
