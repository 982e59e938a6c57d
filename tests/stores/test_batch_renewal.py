"""Redis and PostgreSQL renew many leases in one round trip (``extend_many``): each lease
answered as ``extend`` would answer it, and thousands of held locks kept alive by a few
calls on a few connections, from threads and from one event loop."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from remotelock import RemoteLock
from remotelock.renewal import BATCH
from remotelock.stores.base import AsyncBatchRenewal, BatchRenewal
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

SERVER_KINDS = ["redis", "postgres"]


@pytest.fixture(params=SERVER_KINDS)
def server_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def batch_store(server_kind: str, request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(f"{server_kind}_store")


def test_extend_many_answers_each_lease_as_extend_would(batch_store: Any, key: str) -> None:
    store = batch_store
    assert isinstance(batch_store, BatchRenewal)
    held = [(f"{key}:{n}", f"t{n}") for n in range(5)]
    for name, token in held:
        assert store.acquire(name, token, 0.5) is not None
    assert store.release(*held[1]) is True
    assert store.acquire(f"{key}:other", "x", 30) is not None
    assert store.acquire(f"{key}:short", "s", 0.05) is not None
    time.sleep(0.2)  # the short lease runs out
    asked = [(name, token, 3.0) for name, token in held] + [
        (f"{key}:other", "not-x", 3.0),
        (f"{key}:short", "s", 3.0),
        (f"{key}:never", "n", 3.0),
    ]
    assert store.extend_many(asked) == [True, False, True, True, True, False, False, False]
    time.sleep(0.8)  # past the leases as first taken, inside the renewed ones
    assert [store.owner(name) for name, _ in held] == ["t0", None, "t2", "t3", "t4"]
    assert store.owner(f"{key}:other") == "x"
    assert store.owner(f"{key}:short") is None
    assert store.extend_many([]) == []


async def test_the_async_twin_extends_many_too(batch_store: Any, key: str) -> None:
    twin = batch_store.as_async()
    assert isinstance(batch_store.as_async(), AsyncBatchRenewal)
    assert await twin.acquire(f"{key}:a", "a", 0.5) is not None
    assert await twin.acquire(f"{key}:b", "b", 0.5) is not None
    asked = [(f"{key}:a", "a", 3.0), (f"{key}:b", "wrong", 3.0)]
    assert await twin.extend_many(asked) == [True, False]
    await asyncio.sleep(0.8)
    assert [await twin.owner(f"{key}:a"), await twin.owner(f"{key}:b")] == ["a", None]
    await twin.aclose()


def test_extend_many_takes_any_token(batch_store: Any, key: str) -> None:
    """Tokens are the caller's: separators, spaces, digits and non-ASCII text (several
    bytes per character) go through a batch, each lease answered by its own token."""
    tokens = ["a:b:c", "12:34", "with space", "žluťoučký kůň", ":", "1:é:", "x" * 300]
    for n, token in enumerate(tokens):
        assert batch_store.acquire(f"{key}:{n}", token, 0.5) is not None
    asked = [(f"{key}:{n}", token, 3.0) for n, token in enumerate(tokens)]
    wrong = [(f"{key}:{n}", token[:-1] + "?", 3.0) for n, token in enumerate(tokens)]
    assert batch_store.extend_many(wrong + asked) == [False] * len(tokens) + [True] * len(tokens)
    time.sleep(0.8)  # past the leases as first taken
    assert [batch_store.owner(f"{key}:{n}") for n in range(len(tokens))] == tokens


def test_redis_extend_many_keeps_each_fence_past_its_lease(redis_store: Any, key: str) -> None:
    """The fence outlives the renewed lease by the retention, as ``extend`` keeps it."""
    from remotelock.stores.redis.common import layout

    assert redis_store.acquire(key, "t", 1.0) is not None
    assert redis_store.extend_many([(key, "t", 100.0)]) == [True]
    names = layout(redis_store.prefix, key)
    assert 99_000 < redis_store.client.pttl(names.lock) <= 100_000
    fence_ms = redis_store.client.pttl(names.fence)
    assert fence_ms > 100_000 + redis_store.fence_retention * 1000 - 1_000


# -- thousands of held locks -------------------------------------------------------------


def connections(kind: str, server: Any, name: str) -> Callable[[], int]:
    """How many server connections the store called ``name`` has open now."""
    if kind == "redis":
        import redis

        admin = redis.Redis.from_url(server.url)
        return lambda: sum(1 for c in admin.client_list() if c.get("name") == name)
    import psycopg

    def count() -> int:
        with psycopg.connect(server.url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
        return int(row[0]) if row else 0

    return count


@pytest.fixture
def named_store(server_kind: str, request: pytest.FixtureRequest) -> Iterator[tuple[Any, Any]]:
    """A store whose connections carry a name of their own, and a counter of them."""
    from remotelock.stores import store_from_url

    name = f"batch-{uuid.uuid4().hex[:10]}"
    if server_kind == "redis":
        server: RedisServer | PostgresServer = request.getfixturevalue("redis_server")
        url = f"{server.url}?prefix={name}&client_name={name}"
    else:
        server = request.getfixturevalue("postgres_server")
        url = f"{server.url}?table=t_{name[6:]}&application_name={name}"
    store: Any = store_from_url(url)
    yield store, connections(server_kind, server, name)
    store.close()


class Counting:
    """Counts the renewal calls a store gets: batches (with their sizes) and singles."""

    def __init__(self, target: Any) -> None:
        self.batches: list[int] = []
        self.singles = 0
        many, one = target.extend_many, target.extend
        if asyncio.iscoroutinefunction(many):

            async def extend_many_async(leases: Sequence[tuple[str, str, float]]) -> list[bool]:
                self.batches.append(len(leases))
                return list(await many(leases))

            target.extend_many = extend_many_async
        else:

            def extend_many(leases: Sequence[tuple[str, str, float]]) -> list[bool]:
                self.batches.append(len(leases))
                return list(many(leases))

            target.extend_many = extend_many

        def extend(*args: Any) -> Any:
            self.singles += 1
            return one(*args)

        target.extend = extend


HELD = 2000
TTL = 4.0  # renewed about every 1.3 s


def test_thousands_of_held_locks_renew_in_batches_on_few_connections(
    named_store: tuple[Any, Any], key: str
) -> None:
    store, open_connections = named_store
    calls = Counting(store)
    leases = [RemoteLock(f"{key}:{n}", store=store, ttl=TTL).acquire() for n in range(HELD)]
    time.sleep(TTL)  # every lease renewed two or three times
    peak = open_connections()
    assert not [lease for lease in leases if lease.lost]
    assert calls.singles == 0
    renewed = sum(calls.batches)
    assert renewed >= HELD, calls.batches
    assert max(calls.batches) <= BATCH
    assert len(calls.batches) <= 2 * renewed / 10  # batches of ten or more on average
    assert peak <= 10, peak
    assert all(store.owner(lease.key) == lease.token for lease in leases[:: HELD // 50])
    for lease in leases:
        assert lease.release() is True


async def test_thousands_of_locks_held_in_one_event_loop_on_few_connections(
    named_store: tuple[Any, Any], key: str
) -> None:
    store, open_connections = named_store
    calls = Counting(store.as_async())
    held = HELD // 2
    locks = [RemoteLock(f"{key}:{n}", store=store, ttl=TTL) for n in range(held)]
    leases = [await lock.aacquire() for lock in locks]
    await asyncio.sleep(TTL)
    peak = await asyncio.to_thread(open_connections)
    assert not [lease for lease in leases if lease.lost]
    assert calls.singles == 0
    assert sum(calls.batches) >= held, calls.batches
    assert len(calls.batches) <= 2 * sum(calls.batches) / 10
    assert peak <= 10, peak
    for lease in leases:
        assert await lease.arelease() is True
    await store.as_async().aclose()
