"""A sync lock on a barging Redis store keeps, in its process, a lock it comes straight
back for (remotelock.streak): a take-over costs no request, yet one holder at a time,
fencing tokens that rise in the order the sections ran, the window still bounding the
first in line, and nothing kept past a moment, a ``locked()``, an exit or a fork.
"""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from remotelock import Lease, RemoteLock, remote_locked, streak
from remotelock.stores.redis.aio import AsyncRedisStore
from remotelock.stores.redis.store import RedisStore
from tests.helpers.eventually import eventually
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis

WINDOW = 1.0
PATIENCE = 10.0


@pytest.fixture(autouse=True)
def long_keep(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded machine still comes back within it: keeping does not hang on timing."""
    monkeypatch.setattr(streak, "KEEP", 0.5)


@pytest.fixture
def prefix() -> str:
    return f"keep-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def stores(redis_server: RedisServer, prefix: str) -> Iterator[list[RedisStore]]:
    """Three stores on one prefix (three processes), with a barging window."""
    made = [RedisStore.from_url(redis_server.url, prefix=prefix, barging=WINDOW) for _ in "abc"]
    yield made
    for store in made:
        store.close()


def counting(monkeypatch: pytest.MonkeyPatch, store: Any) -> collections.Counter[str]:
    """Count the store's acquires and releases (the lock layer's requests)."""
    calls: collections.Counter[str] = collections.Counter()
    for name in ("acquire", "release"):
        step = getattr(store, name)

        def counted(*args: Any, _step: Callable[..., Any] = step, _name: str = name) -> Any:
            calls[_name] += 1
            return _step(*args)

        monkeypatch.setattr(store, name, counted)
    return calls


def cycle(lock: RemoteLock, times: int) -> list[Lease]:
    leases = []
    for _ in range(times):
        lease = lock.acquire(timeout=PATIENCE)
        leases.append(lease)
        assert lock.release() is True
    return leases


def test_a_lock_taken_straight_back_costs_no_request(
    stores: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, other = stores[0], stores[1]
    calls = counting(monkeypatch, store)
    leases = cycle(RemoteLock("k", store=store, ttl=30), 6)
    # The first hold is released; the process comes straight back: that hold is kept.
    assert calls == {"acquire": 2, "release": 1}
    fences = [lease.fencing_token for lease in leases]
    assert fences == sorted(set(fences))  # strictly rising, one per acquisition
    assert len({lease.token for lease in leases[1:]}) == 1  # one hold at the store
    assert other.owner("k") == leases[-1].token  # kept, for a moment
    assert eventually(lambda: other.owner("k") is None, PATIENCE)
    assert calls == {"acquire": 2, "release": 2}
    after = other.acquire("k", "next", 30)
    assert after is not None
    assert after > fences[-1]  # and still rising after it


def test_a_lock_handed_over_is_kept_from_its_first_release(
    redis_server: RedisServer, stores: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hold that starts with a hand-over (whose lease is short until renewed) is kept
    from its first release on: no extra round trip per streak."""
    store = stores[0]
    holder = RedisStore.from_url(redis_server.url, prefix=store.prefix)  # hands over at once
    calls = counting(monkeypatch, store)
    lock = RemoteLock("k", store=store, ttl=30)
    cycle(lock, 1)
    assert holder.acquire("k", "H", 30) is not None
    got: list[Lease] = []
    thread = threading.Thread(target=lambda: got.append(lock.acquire(timeout=PATIENCE)))
    thread.start()
    board = store._clients.doorbell()._board
    waiting = lambda: any(not channel.empty() for channel in board.channels.values())  # noqa: E731
    assert eventually(waiting, PATIENCE)  # it waits in line, its wake-up registered
    holder.release("k", "H")  # hands it over
    thread.join(PATIENCE)
    assert got[0].remaining() < 5  # the short lease of a hand-over
    assert got[0].release() is True
    again = lock.acquire()
    assert calls == {"acquire": 2, "release": 1}
    assert again.fencing_token == got[0].fencing_token + 1
    again.release()
    holder.close()


def test_another_thread_of_the_process_takes_it_over(
    stores: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores[0]
    calls = counting(monkeypatch, store)
    first = cycle(RemoteLock("k", store=store, ttl=30), 2)
    got: list[Lease] = []
    thread = threading.Thread(target=lambda: got.append(RemoteLock("k", store=store).acquire()))
    thread.start()
    thread.join(PATIENCE)
    assert calls["acquire"] == 2
    assert got[0].token == first[-1].token
    assert got[0].fencing_token == first[-1].fencing_token + 1
    got[0].release()


def test_the_decorator_takes_it_over_too(
    stores: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores[0]
    calls = counting(monkeypatch, store)

    @remote_locked(key="report:{n}", store=store, ttl=30)
    def report(n: int, *, fencing_token: int = 0) -> int:
        return fencing_token

    fences = [report(1) for _ in range(5)]
    assert calls["acquire"] == 2
    assert fences == sorted(set(fences))


def test_one_holder_at_a_time_and_tokens_in_section_order(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four processes (stores) hammer one key with a short window, taking it straight
    back: the non-atomic counter loses nothing, and ordering the sections by when they
    ran orders their fencing tokens."""
    monkeypatch.setattr(streak, "KEEP", 0.002)  # the real one
    stores = [RedisStore.from_url(redis_server.url, prefix=prefix, barging=0.01) for _ in "abcd"]
    data = redis.Redis.from_url(redis_server.url)
    inside = [0]
    overlaps = [0]
    sections: list[tuple[float, int]] = []

    def work(n: int) -> None:
        lock = RemoteLock("k", store=stores[n], ttl=10)
        for _ in range(50):
            with lock.acquire(timeout=30) as lease:
                inside[0] += 1
                overlaps[0] += inside[0] > 1
                sections.append((time.monotonic(), lease.fencing_token))
                value = int(data.get(f"{prefix}:count") or 0)
                time.sleep(0.0005)
                data.set(f"{prefix}:count", value + 1)
                inside[0] -= 1

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert overlaps[0] == 0
    assert int(data.get(f"{prefix}:count") or 0) == 200
    fences = [fence for _, fence in sorted(sections)]
    assert fences == sorted(set(fences))
    for store in stores:
        store.close()


def test_the_window_still_bounds_the_first_in_line(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    window = 0.3
    hog_store, waiting = (
        RedisStore.from_url(redis_server.url, prefix=prefix, barging=window) for _ in "ab"
    )
    calls = counting(monkeypatch, hog_store)
    stop = threading.Event()
    rounds = [0]

    def hog() -> None:
        lock = RemoteLock("k", store=hog_store, ttl=30)
        while not stop.is_set():
            with lock.acquire(timeout=20):
                rounds[0] += 1
                time.sleep(0.001)

    thread = threading.Thread(target=hog)
    thread.start()
    assert eventually(lambda: rounds[0] >= 5, PATIENCE)
    asked = time.monotonic()
    with RemoteLock("k", store=waiting, ttl=30).acquire(timeout=20):
        waited = time.monotonic() - asked
    stop.set()
    thread.join(20)
    assert calls["acquire"] < rounds[0]  # the hog took it over without asking
    assert waited < 2 * window + 2  # the window and one section, not the hog's loop
    hog_store.close()
    waiting.close()


def test_an_acquire_waits_for_a_kept_lock_on_its_way_out(
    stores: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The background thread is releasing a kept lock at the store when a thread of the
    process tries for the key without waiting: it finds the lock free, not held by its
    own process (it waits for that release, which is on its way)."""
    store = stores[0]
    monkeypatch.setattr(streak, "KEEP", 0.05)
    lock = RemoteLock("k", store=store, ttl=30)
    cycle(lock, 2)  # kept now; released at the store by the thread in 0.05 s
    leaving = threading.Event()
    release = store.release

    def slow_release(*args: Any) -> bool:
        leaving.set()
        time.sleep(0.3)  # a slow round trip
        return release(*args)

    monkeypatch.setattr(store, "release", slow_release)
    assert leaving.wait(PATIENCE)
    lease = lock.acquire(timeout=0)  # one attempt: no LockTimeout
    monkeypatch.setattr(store, "release", release)
    lease.release()


def test_a_hold_that_ends_hands_over_at_once(stores: list[RedisStore]) -> None:
    """The process's window counts from its grant; the store's from when the first
    waiter queued, later. A hold the process ends is handed to the first in line at
    once, not left for the process to take straight back in the store's window."""
    store, other = stores[0], stores[1]
    lock = RemoteLock("k", store=store, ttl=30)
    cycle(lock, 1)
    lease = lock.acquire()  # came straight back: its window is WINDOW from now
    time.sleep(WINDOW / 2)
    assert other.acquire("k", "W", 30) is None  # the store's window opens now
    time.sleep(WINDOW * 0.7)  # the process's window has closed, the store's has not
    assert lease.release() is True
    assert other.owner("k") == "W"


def test_locked_releases_a_kept_lock(stores: list[RedisStore]) -> None:
    lock = RemoteLock("k", store=stores[0], ttl=30)
    cycle(lock, 2)
    assert stores[1].owner("k") is not None  # kept
    assert lock.locked() is False  # nobody in the process holds it: released first
    assert stores[1].owner("k") is None


def test_a_take_over_never_gets_ahead_of_the_clock(
    stores: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A take-over whose fencing token would run ahead of the microseconds since the
    store issued the hold's token asks the store instead (after releasing it there)."""
    store = stores[0]
    calls = counting(monkeypatch, store)
    lock = RemoteLock("k", store=store, ttl=30)
    last = cycle(lock, 2)[-1]
    ident = (id(store), "k")
    kept = streak.KEEPER._kept[ident]
    later = kept.streak._replace(since=time.monotonic() + 60)  # as if no time had passed
    streak.KEEPER._kept[ident] = kept._replace(streak=later)
    lease = lock.acquire()
    assert calls == {"acquire": 3, "release": 2}
    assert lease.token != last.token
    assert lease.fencing_token > last.fencing_token
    lease.release()


def test_a_lease_short_of_time_is_not_kept(
    stores: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = stores[0]
    calls = counting(monkeypatch, store)
    lock = RemoteLock("k", store=store, ttl=30)
    cycle(lock, 1)
    lease = lock.acquire()
    lease.deadline = time.monotonic() + 0.5  # too little left for a take-over to renew
    assert lease.release() is True
    assert calls == {"acquire": 2, "release": 2}
    assert stores[1].owner("k") is None


def test_a_loss_behind_a_kept_locks_back_is_found(
    stores: list[RedisStore], caplog: pytest.LogCaptureFixture
) -> None:
    """Its release said ``True`` by the lease's clock; once the kept lock reaches the store
    and finds it gone (here: cut short behind its back), the lease is marked lost, with
    a WARNING and ``on_lost``."""
    caplog.set_level("WARNING", logger="remotelock")
    told: list[Lease] = []
    lock = RemoteLock("k", store=stores[0], ttl=30, on_lost=told.append)
    last = cycle(lock, 2)[-1]
    assert stores[1].extend("k", last.token, 0.01)  # behind its back
    assert eventually(lambda: told == [last], PATIENCE)
    assert last.lost
    assert any("k" in record.getMessage() for record in caplog.records)


def test_nothing_is_kept_past_the_exit(redis_server: RedisServer, prefix: str) -> None:
    script = f"""
from remotelock import RemoteLock, streak
from remotelock.stores.redis.store import RedisStore
streak.KEEP = 60.0
store = RedisStore.from_url({redis_server.url!r}, prefix={prefix!r}, barging=1.0)
lock = RemoteLock("k", store=store, ttl=30)
for _ in range(3):
    lock.acquire()
    lock.release()
assert store.owner("k") is not None  # kept when the process exits
"""
    done = subprocess.run([sys.executable, "-c", script], timeout=60, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    assert store.owner("k") is None  # released at exit, not left for its 30 s lease
    store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_keeps_nothing_of_its_parent(stores: list[RedisStore]) -> None:
    cycle(RemoteLock("k", store=stores[0], ttl=30), 2)
    assert streak.KEEPER._kept
    pid = os.fork()
    if pid == 0:  # the child: its keeper starts empty (the parent's locks are not its)
        os._exit(0 if not streak.KEEPER._kept else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_nothing_is_kept_inside_aws_lambda(
    stores: list[RedisStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "handler")
    calls = counting(monkeypatch, stores[0])
    cycle(RemoteLock("k", store=stores[0], ttl=30), 4)
    assert calls == {"acquire": 4, "release": 4}


def test_asyncio_locks_release_at_once(
    redis_server: RedisServer, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        store = AsyncRedisStore.from_url(redis_server.url, prefix=prefix, barging=WINDOW)
        calls = counting(monkeypatch, store)
        lock = RemoteLock("k", store=store, ttl=30)
        for _ in range(4):
            await lock.aacquire()
            assert await lock.arelease() is True
        assert calls == {"acquire": 4, "release": 4}
        await store.aclose()

    asyncio.run(main())
