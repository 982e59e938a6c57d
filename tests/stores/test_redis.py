"""RedisStore on a real redis-server: layout, URLs, fairness, wake-ups, failures."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.exceptions
import tenacity

from remotelock import (
    LockTimeout,
    RemoteLock,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    remote_locked,
)
from remotelock.stores import AsyncRedisStore, RedisStore, store_from_url
from remotelock.stores.base import Handover
from remotelock.stores.redis.clients import WAITER_GRACE
from remotelock.stores.redis.common import key_of, layout, permit_layout
from remotelock.stores.redis.prelude_lua import HANDOVER_MS
from tests.helpers.crossproc import (
    assert_exclusive,
    kill_holder_and_take_over,
    pause_holder_past_its_ttl,
    run_counter,
)
from tests.helpers.elsewhere import in_thread
from tests.helpers.outage import stop_server_while_waiting
from tests.servers.redis import RedisCluster, RedisServer

pytestmark = pytest.mark.redis


def cluster_slot(name: str) -> str:
    start = name.find("{")
    end = name.find("}", start + 1)
    return name[start + 1 : end]


# -- key layout --------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["report:7", "a}b", "}start", "{x}", "50%", "ünï code"])
def test_every_key_of_a_lock_shares_one_hash_tag(key: str) -> None:
    keys = layout("remotelock", key)
    parts = (":queue", ":alive", ":ttls", ":listen", ":released")
    derived = [keys.base + part for part in parts]
    permits = permit_layout("remotelock", key)
    names = [keys.base, keys.lock, keys.fence, keys.bell, *derived, *permits]
    tags = {cluster_slot(name) for name in names}
    assert len(tags) == 1
    assert tags.pop()  # never an empty tag (that would hash the whole name)
    assert key_of(keys.lock, "remotelock") == key


def test_readable_layout() -> None:
    assert layout("app", "report:7").lock == "app:{report:7}:lock"
    assert layout("app", "report:7").fence == "app:{report:7}:fence"


# -- URLs and clients ----------------------------------------------------------------------


def test_url_options_and_overrides(redis_server: RedisServer) -> None:
    store = store_from_url(f"{redis_server.url}?prefix=jobs&waiter_grace=7&socket_timeout=3")
    assert isinstance(store, RedisStore)
    assert store.prefix == "jobs"
    assert store.waiter_grace == 7
    kwargs = store.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 3
    assert kwargs["socket_connect_timeout"] == 5
    store.close()
    overridden = RedisStore.from_url(f"{redis_server.url}?socket_timeout=3", socket_timeout=1.5)
    assert overridden.client.connection_pool.connection_kwargs["socket_timeout"] == 1.5
    overridden.close()


def test_url_built_clients_have_timeouts(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url)
    kwargs = store.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 5
    assert kwargs["socket_connect_timeout"] == 5
    store.close()


def test_unix_socket_url(tmp_path: Path) -> None:
    from tests.servers.redis import _binary

    sock = tmp_path / "redis.sock"
    server = RedisServer(_binary(), tmp_path / "r", "--unixsocket", str(sock)).start()
    try:
        store = store_from_url(f"unix://{sock}?prefix=u")
        assert isinstance(store, RedisStore)
        assert store.acquire("k", "t", 5) is not None
        store.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://localhost?prefix=bad{prefix", "prefix"),
        ("redis://localhost?waiter_grace=soon", "waiter_grace"),
        ("redis://localhost?waiter_grace=0", "waiter_grace"),
        ("redis+sentinel://localhost:26379", "service name"),
    ],
)
def test_bad_urls(url: str, match: str) -> None:
    with pytest.raises(StoreConfigError, match=match):
        store_from_url(url)


def test_client_without_timeout_is_warned_about(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis(port=redis_server.port, socket_timeout=None)
    with caplog.at_level(logging.WARNING, logger="remotelock.stores.redis"):
        RedisStore(client)
    assert any("socket_timeout" in record.getMessage() for record in caplog.records)
    client.close()


def test_store_from_a_client(redis_server: RedisServer) -> None:
    client = redis.Redis(port=redis_server.port, socket_timeout=5, decode_responses=True)
    store = RedisStore(client, prefix=f"client-{uuid.uuid4().hex[:8]}")
    with RemoteLock("k", store=store) as lease:
        assert store.owner("k") == lease.token
    client.close()


# -- the scripts' rules --------------------------------------------------------------------


def test_waiters_are_served_in_arrival_order(redis_store: RedisStore, key: str) -> None:
    first = redis_store.acquire(key, "A", 30)
    assert first is not None
    assert redis_store.acquire(key, "B", 30) is None  # queued first
    assert redis_store.acquire(key, "C", 30) is None  # queued second
    assert redis_store.release(key, "A") is True
    assert redis_store.owner(key) == "B"  # handed straight to the first in line
    assert redis_store.acquire(key, "A", 30) is None  # the releaser cannot jump the line
    assert redis_store.acquire(key, "C", 30) is None
    handed = redis_store.wait_turn(key, "B", 5)
    assert isinstance(handed, Handover)
    assert handed.fencing_token > first
    assert redis_store.acquire(key, "B", 30) == handed.fencing_token  # claiming is idempotent
    assert redis_store.release(key, "B") is True
    assert redis_store.owner(key) == "C"


def test_handover_reaches_the_waiter_with_a_short_lease(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(
        f"{redis_server.url}?prefix=ho-{uuid.uuid4().hex[:8]}", waiter_grace=2
    )
    assert store.acquire("k", "A", 30) is not None
    assert store.acquire("k", "B", 30) is None
    handed: list[Any] = []
    waiter = threading.Thread(target=lambda: handed.append(store.wait_turn("k", "B", 30)))
    waiter.start()
    time.sleep(0.2)
    store.release("k", "A")
    waiter.join(30)
    assert handed[0] is not None
    assert handed[0].lease == 2.0  # at most the waiter grace, until the holder renews it
    assert store.client.pttl(layout(store.prefix, "k").lock) <= 2000
    assert store.extend("k", "B", 30) is True
    store.close()


def test_a_dead_waiter_holds_a_handed_lock_only_briefly(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(
        f"{redis_server.url}?prefix=dead-{uuid.uuid4().hex[:8]}", waiter_grace=0.5
    )
    store.acquire("k", "A", 30)
    store.acquire("k", "ghost", 30)  # queued, then dies without a word
    store.release("k", "A")  # the lock goes to the ghost...
    assert store.owner("k") == "ghost"
    lease = RemoteLock("k", store=store).acquire(timeout=10)  # ...for half a second at most
    assert store.owner("k") == lease.token
    lease.release()
    store.close()


def test_a_dead_waiter_costs_at_most_the_hand_over_lease_with_the_default_grace(
    redis_server: RedisServer,
) -> None:
    """However long the grace (a quieter wait), a waiter that died in line delays the
    line by the hand-over lease at most (3 s)."""
    store = RedisStore.from_url(f"{redis_server.url}?prefix=dead60-{uuid.uuid4().hex[:8]}")
    assert store.waiter_grace == WAITER_GRACE == 60
    assert store._refresh_every == 20
    store.acquire("k", "A", 30)
    store.acquire("k", "ghost", 30)  # queued, then dies without a word
    released = time.monotonic()
    store.release("k", "A")  # the lock goes to the ghost, its place still kept...
    assert store.owner("k") == "ghost"
    assert store.client.pttl(layout(store.prefix, "k").lock) <= HANDOVER_MS
    lease = RemoteLock("k", store=store).acquire(timeout=10)  # ...for 3 s at most
    assert time.monotonic() - released < HANDOVER_MS / 1000 + 1
    assert store.owner("k") == lease.token
    lease.release()
    store.close()


def test_a_dead_first_waiter_loses_its_turn_on_a_free_lock(redis_server: RedisServer) -> None:
    """A holder's lease runs out (nobody hands the lock over) while a dead waiter is
    first in line, its place kept for the whole grace: the next waiter gets the lock
    once the dead one's turn (3 s) is over, not after the grace (60 s)."""
    store = RedisStore.from_url(f"{redis_server.url}?prefix=turn-{uuid.uuid4().hex[:8]}")
    k = layout(store.prefix, "k")
    assert store.acquire("k", "A", 0.5) is not None
    assert store.acquire("k", "ghost", 30) is None  # queued, then dies without a word
    time.sleep(0.6)  # A's lease runs out: free, the ghost first in line
    assert store.acquire("k", "B", 30) is None  # the ghost's turn: B is told to wait...
    turn = store.client.get(f"{k.base}:turn")
    assert turn is not None
    assert turn.decode().endswith(":ghost")
    assert 0 < store.client.pttl(f"{k.base}:turn") <= 2 * HANDOVER_MS
    asked = time.monotonic()
    fence = None
    while fence is None and time.monotonic() - asked < 20:  # ...3 s at most
        store.wait_turn("k", "B", 20)
        fence = store.acquire("k", "B", 30)
    assert fence is not None
    assert time.monotonic() - asked < HANDOVER_MS / 1000 + 2
    assert store.client.zscore(f"{k.base}:queue", "ghost") is None  # passed over
    assert store.client.exists(f"{k.base}:turn") == 0
    store.release("k", "B")
    store.close()


def test_a_first_waiter_that_comes_back_in_its_turn_takes_the_lock(
    redis_store: RedisStore, key: str
) -> None:
    redis_store.acquire(key, "A", 0.3)
    assert redis_store.acquire(key, "B", 30) is None
    assert redis_store.acquire(key, "C", 30) is None
    time.sleep(0.4)  # free: B's turn
    assert redis_store.acquire(key, "C", 30) is None  # not C's: it is told how long
    assert redis_store.acquire(key, "D", 30) is None
    assert redis_store.acquire(key, "B", 30) is not None  # B came in time
    assert redis_store.release(key, "B") is True
    assert redis_store.owner(key) == "C"  # the line goes on in order


def test_a_waiter_passed_over_queues_again_at_the_back(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(f"{redis_server.url}?prefix=back-{uuid.uuid4().hex[:8]}")
    k = layout(store.prefix, "k")
    assert store.acquire("k", "A", 0.3) is not None
    assert store.acquire("k", "slow", 30) is None
    assert store.acquire("k", "B", 30) is None
    time.sleep(0.4)
    assert store.acquire("k", "B", 30) is None  # the slow one's turn starts
    deadline, _, _ = store.client.get(f"{k.base}:turn").decode().partition(":")
    now_ms = int(store.client.time()[0]) * 1000 + int(store.client.time()[1]) // 1000
    time.sleep((int(deadline) - now_ms) / 1000 + 0.1)
    assert store.acquire("k", "B", 30) is not None  # the slow one was passed over
    assert store.acquire("k", "slow", 30) is None  # it comes back: last in line
    assert store.client.zrange(f"{k.base}:queue", 0, -1) == [b"slow"]
    store.release("k", "B")
    assert store.owner("k") == "slow"
    store.close()


def test_leaving_hands_the_lock_on(redis_store: RedisStore, key: str) -> None:
    """A waiter that gives up just as the lock is handed to it passes it on."""
    redis_store.acquire(key, "A", 30)
    redis_store.acquire(key, "B", 30)
    redis_store.acquire(key, "C", 30)
    redis_store.release(key, "A")  # handed to B, who is giving up
    redis_store.leave(key, "B")
    assert redis_store.owner(key) == "C"


def test_leaving_hands_the_turn_on(redis_store: RedisStore, key: str) -> None:
    redis_store.acquire(key, "A", 1)
    redis_store.acquire(key, "B", 30)
    redis_store.acquire(key, "C", 30)
    time.sleep(1.2)  # A's lease runs out: the lock is free, B is first in line
    woke: list[float] = []

    def wait_for_c() -> None:
        redis_store.wait_turn(key, "C", 30)
        woke.append(time.monotonic())

    waiter = threading.Thread(target=wait_for_c)
    waiter.start()
    time.sleep(0.2)
    left = time.monotonic()
    redis_store.leave(key, "B")  # B gives up while first in line: C's turn
    waiter.join(30)
    assert woke
    assert woke[0] - left < 10
    assert redis_store.acquire(key, "C", 30) is not None


def test_a_waiter_that_never_comes_back_loses_its_place(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(
        f"{redis_server.url}?prefix=grace-{uuid.uuid4().hex[:8]}", waiter_grace=0.3
    )
    store.acquire("k", "A", 0.5)
    store.acquire("k", "ghost", 30)  # queued, then crashes
    time.sleep(0.6)  # A's lease runs out without a release: nobody hands it over
    assert store.acquire("k", "C", 30) is not None  # the ghost was dropped from the line
    store.close()


def test_release_wakes_every_watcher(redis_store: RedisStore, key: str) -> None:
    """Callers with skip_if watch every release: all of them re-check at once."""
    redis_store.acquire(key, "holder", 30)
    waiters = [f"w{n}" for n in range(5)]
    for waiter in waiters:
        assert redis_store.acquire(key, waiter, 30) is None
    woke: list[str] = []

    def wait(token: str) -> None:
        redis_store.wait_turn(key, token, 30, every_release=True)
        woke.append(token)

    threads = [threading.Thread(target=wait, args=(token,)) for token in waiters]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    redis_store.release(key, "holder")
    for thread in threads:
        thread.join(30)
    assert sorted(woke) == waiters  # everyone, not just the first in line
    assert time.monotonic() - started < 10


def test_release_wakes_only_the_first_in_line(redis_store: RedisStore, key: str) -> None:
    """Plain waiters sleep on until their turn: no herd on every handover."""
    redis_store.acquire(key, "holder", 30)
    for waiter in ("first", "second", "third"):
        assert redis_store.acquire(key, waiter, 30) is None
    woke: list[str] = []

    def wait(token: str) -> None:
        redis_store.wait_turn(key, token, 3)
        woke.append(token)

    threads = [threading.Thread(target=wait, args=(t,)) for t in ("first", "second", "third")]
    for thread in threads:
        thread.start()
    time.sleep(0.2)
    redis_store.release(key, "holder")
    threads[0].join(30)
    assert woke == ["first"]
    time.sleep(0.3)
    assert woke == ["first"]  # the others still sleep...
    for thread in threads[1:]:
        thread.join(30)  # ...until their own timeout
    assert sorted(woke) == ["first", "second", "third"]


def test_wait_is_bounded_by_the_holders_lease(redis_store: RedisStore, key: str) -> None:
    redis_store.acquire(key, "crashed", 0.5)
    assert redis_store.acquire(key, "waiter", 30) is None
    started = time.monotonic()
    redis_store.wait_turn(key, "waiter", 60)
    assert time.monotonic() - started < 10  # the lease ran out: no 60 s wait
    assert redis_store.acquire(key, "waiter", 30) is not None


def test_a_releasing_holder_does_not_starve_a_waiter(redis_store: RedisStore, key: str) -> None:
    got_it = threading.Event()
    waiting = threading.Event()  # set once the waiter stands in the queue
    cycles_after_waiting: list[int] = []

    def greedy() -> None:
        for _ in range(3000):
            with RemoteLock(key, store=redis_store, ttl=10):
                time.sleep(0.001)
            if waiting.is_set():
                cycles_after_waiting.append(1)
            if got_it.is_set():
                return

    def waiter() -> None:
        with RemoteLock(key, store=redis_store, ttl=10, stop=tenacity.stop_after_delay(30)):
            got_it.set()

    thread = threading.Thread(target=greedy)
    thread.start()
    time.sleep(0.05)
    queue = layout(redis_store.prefix, key).base + ":queue"
    waiting_thread = threading.Thread(target=waiter)
    waiting_thread.start()
    deadline = time.monotonic() + 30
    while not got_it.is_set() and not redis_store.client.zcard(queue):
        assert time.monotonic() < deadline, "the waiter never queued"
        time.sleep(0.0005)
    waiting.set()
    waiting_thread.join(60)
    thread.join(60)
    assert got_it.is_set()
    assert len(cycles_after_waiting) <= 2  # FIFO: its turn came at the next release


# -- error translation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (redis.exceptions.ConnectionError("refused"), StoreUnavailable),
        (redis.exceptions.TimeoutError("timed out"), StoreUnavailable),
        (redis.exceptions.ReadOnlyError("replica"), StoreUnavailable),
        (redis.exceptions.ResponseError("WRONGTYPE"), StoreError),
    ],
)
def test_driver_errors_become_store_errors(
    redis_store: RedisStore, error: Exception, expected: type[Exception]
) -> None:
    def broken(**kwargs: Any) -> Any:
        raise error

    redis_store._scripts["acquire"] = broken
    with pytest.raises(expected) as caught:
        redis_store.acquire("k", "t", 5)
    assert caught.value.__cause__ is error


# -- failures of a real server --------------------------------------------------------------


def test_frozen_server_gives_store_unavailable_not_a_hang(private_redis: RedisServer) -> None:
    store = RedisStore.from_url(private_redis.url, socket_timeout=1)
    store.acquire("warm", "t", 5)
    private_redis.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            RemoteLock("k", store=store, stop=tenacity.stop_after_delay(2)).acquire()
        assert time.monotonic() - started < 2 + 1 + 5
    finally:
        private_redis.thaw()
    store.close()


def test_server_killed_while_waiting_then_restarted(private_redis: RedisServer) -> None:
    store = RedisStore.from_url(private_redis.url, socket_timeout=1)
    assert stop_server_while_waiting(store, private_redis) < 15  # not the 30 s stop
    store.close()


@pytest.mark.slow
def test_paused_holder_loses_the_lock_and_fencing_tells_them_apart(
    redis_server: RedisServer,
) -> None:
    url = f"{redis_server.url}?prefix=pause-{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(url)
    successor = pause_holder_past_its_ttl(url, store)
    assert store.owner("k") == successor.token  # the new holder still holds it
    successor.release()
    store.close()


@pytest.mark.slow
def test_killed_holder_frees_the_lock_within_its_ttl(redis_server: RedisServer) -> None:
    url = f"{redis_server.url}?prefix=kill-{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(url)
    assert kill_holder_and_take_over(url, store, ttl=2.0) <= 2.0 + 1
    store.close()


@pytest.mark.slow
def test_counter_across_processes_on_redis(redis_server: RedisServer, tmp_path: Path) -> None:
    url = f"{redis_server.url}?prefix=counter-{uuid.uuid4().hex[:8]}"
    final, sections = run_counter(url, "counter", tmp_path, processes=8, count=200)
    assert final == 1600
    assert_exclusive(sections)


# -- asyncio --------------------------------------------------------------------------------


async def test_native_async_twin(redis_store: RedisStore, key: str) -> None:
    twin = redis_store.as_async()
    assert isinstance(twin, AsyncRedisStore)
    calls = []

    @remote_locked(key, store=redis_store, ttl=5)
    async def work(*, fencing_token: int | None = None) -> int | None:
        calls.append(fencing_token)
        return fencing_token

    results = await asyncio_gather(*(work() for _ in range(5)))
    assert sorted(results) == sorted(set(results))
    await twin.aclose()


async def asyncio_gather(*coros: Any) -> list[Any]:
    import asyncio

    return list(await asyncio.gather(*coros))


# -- Redis Cluster ---------------------------------------------------------------------------


@pytest.fixture
def cluster_store(redis_cluster: RedisCluster) -> Iterator[RedisStore]:
    store = store_from_url(f"{redis_cluster.url}?prefix=c{uuid.uuid4().hex[:8]}")
    assert isinstance(store, RedisStore)
    yield store
    store.close()


def test_cluster_locks_across_slots(cluster_store: RedisStore) -> None:
    keys = [f"job:{n}" for n in range(20)]  # spread over the three masters
    leases = [RemoteLock(k, store=cluster_store, ttl=10).acquire() for k in keys]
    assert all(
        cluster_store.owner(k) == lease.token for k, lease in zip(keys, leases, strict=True)
    )
    rival = RemoteLock(
        keys[0], store=cluster_store, wait=tenacity.wait_fixed(0.05),
        stop=tenacity.stop_after_attempt(2),
    )  # fmt: skip
    with pytest.raises(LockTimeout):
        in_thread(rival.acquire)
    for lease in leases:
        assert lease.release() is True
    assert {info.key for info in cluster_store.iter_locks()} == set()


def test_cluster_queue_and_wake_ups(cluster_store: RedisStore) -> None:
    cluster_store.acquire("k", "A", 30)
    assert cluster_store.acquire("k", "B", 30) is None
    timer = threading.Timer(0.2, cluster_store.release, args=("k", "A"))
    timer.start()
    cluster_store.wait_turn("k", "B", 30)
    timer.join()
    assert cluster_store.acquire("k", "B", 30) is not None


def test_cluster_extends_many_leases_one_script_per_slot(cluster_store: RedisStore) -> None:
    keys = [f"job:{n}" for n in range(30)]  # spread over the three masters
    for name in keys:
        assert cluster_store.acquire(name, "t-" + name, 0.5) is not None
    asked = [(name, "t-" + name, 5.0) for name in keys] + [(keys[0], "other", 5.0)]
    assert cluster_store.extend_many(asked) == [True] * len(keys) + [False]
    time.sleep(0.8)  # past the leases as first taken
    assert [cluster_store.owner(name) for name in keys] == ["t-" + name for name in keys]


def test_cluster_store_names_its_nodes_briefly(cluster_store: RedisStore) -> None:
    """Error messages quote the store: its nodes as host:port, not redis-py's reprs."""
    text = repr(cluster_store)
    assert "redis+cluster://127.0.0.1:" in text
    assert "host=" not in text
    assert len(text) < 200
