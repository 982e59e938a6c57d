"""A Redis store built from a URL keeps a connection for releases and renewals: with
every connection of its main pool taken by acquires, a holder still releases and
renews at once, while those acquires wait their turn."""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest

from remotelock.stores import RedisStore
from remotelock.stores.redis.aio import AsyncRedisStore
from remotelock.stores.redis.build import POOL_SIZE
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis


def _url(server: RedisServer) -> str:
    return f"{server.url}?prefix=lp{uuid.uuid4().hex[:8]}"


def test_a_release_and_a_renewal_go_past_acquires_waiting_for_a_connection(
    redis_server: RedisServer,
) -> None:
    store = RedisStore.from_url(_url(redis_server))
    assert store.acquire("k", "holder", 30) is not None
    pool: Any = store.client.connection_pool
    taken = [pool.get_connection() for _ in range(POOL_SIZE)]  # the acquires' whole pool
    tried: list[int | None] = []
    crowd = threading.Thread(target=lambda: tried.append(store.acquire("other", "t", 30)))
    crowd.start()
    crowd.join(0.3)
    assert crowd.is_alive()  # waiting for a connection...
    assert store.extend("k", "holder", 30)  # ...while the renewal has one of its own
    assert store.extend_many([("k", "holder", 30.0)]) == [True]
    assert store.release("k", "holder")
    assert crowd.is_alive()
    for conn in taken:
        pool.release(conn)
    crowd.join(30)
    assert tried[0] is not None
    lease_pool: Any = store._clients.lease.connection_pool
    assert lease_pool is not pool
    assert lease_pool.max_connections == 1
    store.close()


def test_an_async_release_goes_past_acquires_waiting_for_a_connection(
    redis_server: RedisServer,
) -> None:
    async def main() -> None:
        store = AsyncRedisStore.from_url(_url(redis_server))
        assert await store.acquire("k", "holder", 30) is not None
        pool: Any = store.client.connection_pool
        taken = [await pool.get_connection() for _ in range(POOL_SIZE)]
        crowd = asyncio.create_task(store.acquire("other", "t", 30))
        await asyncio.sleep(0.2)
        assert not crowd.done()
        assert await store.extend("k", "holder", 30)
        assert await store.release("k", "holder")
        assert not crowd.done()
        for conn in taken:
            await pool.release(conn)
        assert await asyncio.wait_for(crowd, 30) is not None
        await store.aclose()

    asyncio.run(main())


def test_a_given_client_is_used_for_everything(redis_server: RedisServer) -> None:
    import redis

    client = redis.Redis.from_url(redis_server.url)
    store = RedisStore(client, prefix=f"lp{uuid.uuid4().hex[:8]}")
    assert store._clients.lease is client
    assert store.acquire("k", "t", 30) is not None
    assert store.release("k", "t")
    client.close()


def test_max_connections_in_the_url_sizes_the_main_pool_only(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(f"{_url(redis_server)}&max_connections=3")
    assert store.client.connection_pool.max_connections == 3
    assert store._clients.lease.connection_pool.max_connections == 1
    store.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "asyncio"])
def test_connections_of_a_store_built_from_a_url_never_look_up_the_redis_version(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, asynchronous: bool
) -> None:
    """redis-py 8 reads its version from the package metadata for every connection it
    opens (milliseconds of CPU each) unless it is given; a crowd of processes opening
    their wake-up connections at once would pay that in full."""
    import redis.utils

    looked: list[str] = []
    real: Any = redis.utils.get_lib_version

    def counted() -> str:
        looked.append("version")
        return str(real())

    monkeypatch.setattr(redis.utils, "get_lib_version", counted)
    store = RedisStore.from_url(_url(redis_server))
    if asynchronous:

        async def cycle() -> None:
            twin: Any = store.as_async()
            assert await twin.acquire("k", "a", 30) is not None
            assert await twin.release("k", "a")
            await twin.aclose()

        asyncio.run(cycle())
    else:
        assert store.acquire("k", "a", 30) is not None
        assert store.release("k", "a")  # on the lease path's own connection
    store.close()
    assert looked == []
