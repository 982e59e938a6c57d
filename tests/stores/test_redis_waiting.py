"""RedisStore's waits on a real server: on time, pushed, one subscriber connection.

Timing checks take the median of several runs (the machine may be loaded) and never
assert that a wait ended before its timeout; bounds are in milliseconds.
"""

from __future__ import annotations

import itertools
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import tenacity
from redis.backoff import NoBackoff
from redis.retry import Retry

from remotelock import RemoteLock
from remotelock.stores.base import Handover
from remotelock.stores.redis.common import layout
from remotelock.stores.redis.store import RedisStore
from tests.helpers.elsewhere import in_thread
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis

TIMEOUTS = [0.03, 0.05, 0.2]
SLACK = 0.02  # a wait may end this much after its timeout (thread wake-up, one read)
RUNS = 7


def median_of(runs: int, once: Callable[[], float]) -> float:
    return statistics.median(once() for _ in range(runs))


def timed(call: Callable[[], Any]) -> float:
    started = time.monotonic()
    call()
    return time.monotonic() - started


def median_wait(wait: Callable[[float], Any], timeout: float, runs: int = RUNS) -> float:
    """The median time ``wait(timeout)`` takes."""
    return median_of(runs, lambda: timed(lambda: wait(timeout)))


def admin(server: RedisServer) -> redis.Redis:
    return redis.Redis(port=server.port, socket_timeout=5, decode_responses=True)


def clients_named(server: RedisServer, name: str) -> list[dict[str, Any]]:
    """The server's connections whose CLIENT SETNAME is ``name``."""
    client = admin(server)
    try:
        return [c for c in client.client_list() if c.get("name") == name]
    finally:
        client.close()


def subscribers(clients: list[dict[str, Any]]) -> int:
    return sum(1 for c in clients if int(c.get("sub", 0)) + int(c.get("psub", 0)) > 0)


def wait_until(condition: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def waits(store: RedisStore, key: str) -> dict[str, Callable[[float], Any]]:
    """Each kind of wait, as the lock layer calls it: a refused attempt, then the wait."""

    def wait_turn(timeout: float) -> Any:
        assert store.acquire(key, "waiter", 60) is None
        return store.wait_turn(key, "waiter", timeout)

    def wait_permit(timeout: float) -> Any:
        assert store.acquire_permit(key + ":p", "waiter", 60, 1) is None
        return store.wait_permit(key + ":p", timeout)

    return {
        "wait_turn": wait_turn,
        "wait": lambda t: store.wait(key, t),
        "wait_permit": wait_permit,
    }


def hold(store: RedisStore, key: str) -> None:
    assert store.acquire(key, "holder", 60) is not None
    assert store.acquire_permit(key + ":p", "holder", 60, 1) is not None


def free(store: RedisStore, key: str) -> None:
    assert store.release(key, "holder") is True
    assert store.release_permit(key + ":p", "holder") is True


@pytest.fixture
def fresh_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    store = RedisStore.from_url(f"{redis_server.url}?prefix=w{uuid.uuid4().hex[:10]}")
    yield store
    store.close()


# -- on time -----------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", TIMEOUTS)
@pytest.mark.parametrize("kind", ["wait_turn", "wait", "wait_permit"])
def test_a_wait_ends_at_its_timeout(fresh_store: RedisStore, kind: str, timeout: float) -> None:
    """Not at the server's next tick (BLPOP timeouts end up to 100 ms late)."""
    hold(fresh_store, "k")
    median = median_wait(waits(fresh_store, "k")[kind], timeout)
    assert timeout <= median <= timeout + SLACK


@pytest.mark.parametrize("kind", ["wait_turn", "wait", "wait_permit"])
def test_a_release_wakes_a_waiter_at_once(fresh_store: RedisStore, kind: str) -> None:
    def once() -> float:
        hold(fresh_store, "k")
        ended: list[float] = []

        def wait() -> None:
            waits(fresh_store, "k")[kind](30)
            ended.append(time.monotonic())

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.2)  # it waits
        released = time.monotonic()
        free(fresh_store, "k")
        waiter.join(30)
        if kind == "wait_turn":  # it was handed the lock: give it back
            assert fresh_store.release("k", "waiter") is True
        else:
            fresh_store.release_permit("k:p", "waiter")
        return ended[0] - released

    assert median_of(3, once) < 0.05


def test_a_plain_wait_does_not_poll(private_redis: RedisServer) -> None:
    store = RedisStore.from_url(private_redis.url)
    store.acquire("k", "holder", 60)
    store.wait("k", 0.05)  # scripts loaded, subscriber connected
    client = admin(private_redis)
    client.config_resetstat()
    store.wait("k", 0.5)
    stats = client.info("commandstats")
    ignored = {"config", "info", "client", "hello", "ping", "script", "subscribe"}
    calls = {
        name: entry["calls"]
        for name, entry in stats.items()
        if name.removeprefix("cmdstat_").split("|")[0] not in ignored
    }
    # One listen script (the commands it runs count too); polling every 5 ms made ~100.
    assert sum(calls.values()) <= 10, calls
    client.close()
    store.close()


# -- connections -------------------------------------------------------------------------


def test_fifty_waiting_threads_share_one_subscriber_connection(
    redis_server: RedisServer,
) -> None:
    name = f"fifty-{uuid.uuid4().hex[:8]}"
    client = redis.Redis(port=redis_server.port, socket_timeout=5, client_name=name)
    store = RedisStore(client, prefix=name, waiter_grace=30)
    queue = layout(name, "k").base + ":queue"
    holder = RemoteLock("k", store=store, ttl=30).acquire()
    sections: list[tuple[float, float]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        lock = RemoteLock(
            "k", store=store, ttl=30, wait=tenacity.wait_fixed(10),
            stop=tenacity.stop_after_delay(120),
        )  # fmt: skip
        try:
            with lock:
                started = time.monotonic()
                time.sleep(0.002)
                sections.append((started, time.monotonic()))
        except BaseException as exc:
            errors.append(exc)

    threads = []
    for _ in range(50):  # one by one, as waiters trickle in
        thread = threading.Thread(target=worker)
        thread.start()
        threads.append(thread)
        wait_until(lambda: client.zcard(queue) == len(threads))
    time.sleep(0.2)
    connected = clients_named(redis_server, name)
    assert subscribers(connected) == 1
    assert len(connected) <= 1 + 10  # the waiters hold none; BLPOP held one each
    started = time.monotonic()
    holder.release()
    for thread in threads:
        thread.join(120)
    assert not errors
    assert len(sections) == 50
    ordered = sorted(sections)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))  # one at a time
    assert time.monotonic() - started < 60
    store.close()


@pytest.mark.parametrize("retries", [1, 0], ids=["reconnecting-client", "no-retry-client"])
def test_waiters_get_the_lock_after_the_subscriber_is_killed(
    private_redis: RedisServer, retries: int
) -> None:
    client = redis.Redis(
        port=private_redis.port, socket_timeout=5, retry=Retry(NoBackoff(), retries)
    )
    store = RedisStore(client, prefix="kill")
    queue = layout("kill", "k").base + ":queue"
    store.acquire("k", "holder", 60)
    got: list[float] = []
    errors: list[BaseException] = []

    def worker() -> None:
        # A long wait bound: only a wake-up can bring the lock in time.
        lock = RemoteLock("k", store=store, wait=tenacity.wait_fixed(30))
        try:
            with lock:
                got.append(time.monotonic())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    wait_until(lambda: client.zcard(queue) == 5)
    server = admin(private_redis)
    wait_until(lambda: subscribers(server.client_list()) == 1)
    time.sleep(0.2)
    assert server.client_kill_filter(_type="pubsub") == 1
    server.close()
    time.sleep(0.5)  # the waiters re-check; the subscriber reconnects
    released = time.monotonic()
    store.release("k", "holder")
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len(got) == 5
    assert max(got) - released < 10  # not the 30 s bound
    store.close()


# -- no lost wake-up ---------------------------------------------------------------------


def test_a_handover_before_the_first_wait_is_not_lost(fresh_store: RedisStore) -> None:
    """The lock is handed over before anyone here subscribed to the key's channel."""
    assert fresh_store.acquire("k", "A", 60) is not None
    assert fresh_store.acquire("k", "B", 60) is None
    assert fresh_store.release("k", "A") is True  # handed to B; nobody heard it
    started = time.monotonic()
    handed = fresh_store.wait_turn("k", "B", 10)
    assert time.monotonic() - started < 1  # not its 10 s bound
    assert isinstance(handed, Handover)
    assert fresh_store.acquire("k", "B", 60) == handed.fencing_token
    assert fresh_store.owner("k") == "B"


def test_a_handover_before_the_wait_on_a_heard_channel_is_kept(fresh_store: RedisStore) -> None:
    """Another waiter here keeps the channel subscribed; B is handed the lock between
    its attempt and its wait: the message waits for it."""
    fresh_store.acquire("k", "A", 60)
    assert fresh_store.acquire("k", "B", 60) is None
    assert fresh_store.acquire("k", "C", 60) is None
    behind = threading.Thread(target=fresh_store.wait_turn, args=("k", "C", 3))
    behind.start()
    time.sleep(0.3)  # C's wait subscribed the channel
    fresh_store.release("k", "A")
    time.sleep(0.1)  # the message reached this process before B waits
    started = time.monotonic()
    handed = fresh_store.wait_turn("k", "B", 10)
    assert time.monotonic() - started < 0.5
    assert isinstance(handed, Handover)
    assert fresh_store.owner("k") == "B"
    behind.join(10)


def race_once(store: RedisStore) -> float:
    """The holder lets go right after the waiter's refused attempt, before its wait;
    returns how long after the release the waiter had the lock."""
    holder = RemoteLock("k", store=store, ttl=30).acquire()
    attempted = threading.Event()
    original = store.acquire

    def acquire(key: str, token: str, ttl: float) -> int | None:
        reply = original(key, token, ttl)
        attempted.set()
        return reply

    store.acquire = acquire  # type: ignore[method-assign]
    took: list[float] = []

    def waiter() -> None:
        with RemoteLock("k", store=store, wait=tenacity.wait_fixed(30)):
            took.append(time.monotonic())

    thread = threading.Thread(target=waiter)
    thread.start()
    attempted.wait(10)
    store.acquire = original  # type: ignore[method-assign]
    released = time.monotonic()
    holder.release()
    thread.join(60)
    assert took
    return took[0] - released


def test_lock_layer_races_between_attempt_and_wait(fresh_store: RedisStore) -> None:
    """First on a channel nobody here heard yet, then on one already subscribed."""
    for _ in range(10):
        assert race_once(fresh_store) < 5  # not the 30 s bound


# -- the place in line -------------------------------------------------------------------


def test_a_long_wait_keeps_its_place_refreshing_every_third_of_the_grace(
    redis_server: RedisServer,
) -> None:
    store = RedisStore.from_url(
        f"{redis_server.url}?prefix=g{uuid.uuid4().hex[:8]}", waiter_grace=0.3
    )
    queue = layout(store.prefix, "k").base + ":queue"
    store.acquire("k", "A", 30)
    assert store.acquire("k", "B", 30) is None
    refreshes = []
    refresh = store._scripts["refresh"]

    def counted(**kwargs: Any) -> Any:
        refreshes.append(time.monotonic())
        return refresh(**kwargs)

    store._scripts["refresh"] = counted
    later = threading.Timer(0.8, store.acquire, args=("k", "C", 30))  # prunes the line
    later.start()
    store.wait_turn("k", "B", 1.5)
    later.join()
    assert store.client.zrange(queue, 0, -1) == [b"B", b"C"]  # B kept its place
    assert 8 <= len(refreshes) <= 20  # about every 0.1 s, not every few ms
    store.close()


# -- without a subscriber ----------------------------------------------------------------


def test_a_client_that_cannot_subscribe_polls_on_time(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = redis.Redis(port=redis_server.port, socket_timeout=5)
    monkeypatch.setattr(client, "pubsub", None)
    store = RedisStore(client, prefix=f"poll{uuid.uuid4().hex[:8]}")
    hold(store, "k")
    for kind, wait in waits(store, "k").items():
        assert 0.05 <= median_wait(wait, 0.05, runs=5) <= 0.05 + SLACK, kind
    assert store.acquire("k", "waiter", 60) is None
    threading.Timer(0.2, store.release, args=("k", "holder")).start()
    started = time.monotonic()
    handed = store.wait_turn("k", "waiter", 10)
    assert isinstance(handed, Handover)
    assert time.monotonic() - started < 0.2 + 0.2
    store.close()


def test_a_user_without_pub_sub_rights_still_gets_locks(private_redis: RedisServer) -> None:
    """ACL channels closed (Redis 7's default for new users): releases must not fail on
    their wake-up, and waits fall back to polling."""
    admin(private_redis).acl_setuser(
        "closed", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all"],
        channels=[], reset_channels=True,
    )  # fmt: skip
    client = redis.Redis(
        port=private_redis.port, username="closed", password="pw", socket_timeout=5
    )
    store = RedisStore(client, prefix="acl")
    holder = in_thread(RemoteLock("k", store=store, ttl=30).acquire)  # another holder
    later = threading.Timer(0.2, holder.release)
    later.start()
    started = time.monotonic()
    # The subscriber fails (NOPERM): the waiter re-checks once, then polls.
    with RemoteLock("k", store=store, wait=tenacity.wait_fixed(10)) as lease:
        assert time.monotonic() - started < 2  # not the 10 s bound
    assert not lease.lost
    later.join()
    assert not holder.lost
    store.close()


def test_the_wake_up_connection_is_closed_with_its_reader(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A store built from a URL gives its wake-up reader a client of its own: closing the
    store closes that client too (on the sync side as on the asyncio side)."""
    caplog.set_level("DEBUG", logger="remotelock")
    prefix = f"hangup-{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    holder = RedisStore.from_url(redis_server.url, prefix=prefix)
    assert holder.acquire("k", "H", 30) is not None
    before = set(threading.enumerate())
    store.wait("k", 0.05)  # starts the reader
    readers = [t for t in set(threading.enumerate()) - before if t.name.endswith("-bells")]
    assert readers
    store.close()
    holder.close()
    for reader in readers:
        reader.join(10)  # it sees its doorbell closed within one read
        assert not reader.is_alive()
    assert not [r for r in caplog.records if "closing the Redis wake-up" in r.getMessage()]
