"""RedisStore leaves nothing behind for good: every key it writes expires.

Fencing tokens still rise per key across releases, expiries and the loss of the key's
state (``:fence`` deleted, expired, or gone with a restart of a server without
persistence): a token is ``max(last + 1, the server's clock in microseconds)``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from remotelock import RemoteLock, StoreConfigError
from remotelock.stores import AsyncRedisStore, RedisStore
from remotelock.stores.redis.common import layout, permit_layout
from remotelock.stores.redis.lua import RELEASED_MS
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis

N = 2000  # distinct keys (the benchmark's scenario (g) takes 100,000)


def token() -> str:
    return uuid.uuid4().hex


@pytest.fixture
def prefix() -> str:
    return f"bounded-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server.url) as client:
        yield client


def expiries(client: redis.Redis, prefix: str) -> dict[str, int]:
    """Every key under ``prefix`` and its PTTL in ms (-1: it never expires). A key that
    expired between the SCAN and its PTTL (-2: gone, as a slow run may see) is left out."""
    names = [name.decode() for name in client.scan_iter(match=f"{prefix}:*", count=1000)]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.pttl(name)
    return {name: ms for name, ms in zip(names, pipe.execute(), strict=True) if ms != -2}


def assert_all_expire(client: redis.Redis, prefix: str, within_ms: int) -> dict[str, int]:
    left = expiries(client, prefix)
    assert left  # the fences and release records are there, for a while
    assert [name for name, ms in left.items() if ms < 0] == []  # each one expires...
    assert max(left.values()) <= within_ms  # ...in time
    return left


# -- no key without an expiry -------------------------------------------------------------------


def test_many_keys_locked_once_leave_only_keys_that_expire(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, fence_retention=60)
    for n in range(N):
        mine = token()
        assert store.acquire(f"job:{n}", mine, 5) is not None
        assert store.release(f"job:{n}", mine) is True
    left = assert_all_expire(client, prefix, within_ms=max(RELEASED_MS, 65_000))
    assert {name.rsplit(":", 1)[1] for name in left} == {"fence", "released"}
    store.close()


def test_many_keys_with_a_limit_leave_only_keys_that_expire(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, fence_retention=60)
    for n in range(N):
        tokens = [token() for _ in range(3)]
        for mine in tokens:
            assert store.acquire_permit(f"job:{n}", mine, 5, 5) is not None
        assert store.extend_permit(f"job:{n}", tokens[0], 5) is True
        for mine in tokens:
            assert store.release_permit(f"job:{n}", mine) is True
    left = assert_all_expire(client, prefix, within_ms=max(RELEASED_MS, 66_000))
    assert {name.rsplit(":", 1)[1] for name in left} <= {"pcounter", "plimit", "preleased"}
    store.close()


def test_waiting_and_lock_layer_keys_expire_too(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, fence_retention=60)
    holder, waiter = token(), token()
    assert store.acquire("k", holder, 5) is not None
    assert store.acquire("k", waiter, 5) is None  # queued
    store.wait("k", 0.01)  # a plain waiter listens
    assert store.extend("k", holder, 5) is True
    assert store.release("k", holder) is True  # handed to the waiter
    assert store.release("k", waiter) is True
    with RemoteLock("k2", store=store, ttl=5):
        pass
    assert store.force_release("k") is False
    assert_all_expire(client, prefix, within_ms=max(RELEASED_MS, 65_000))
    store.close()


# -- fencing tokens keep rising without the state -----------------------------------------------


def test_fences_rise_when_the_fence_key_is_deleted(
    redis_store: RedisStore, client: redis.Redis, key: str
) -> None:
    first, second = token(), token()
    before = redis_store.acquire(key, first, 10)
    assert before is not None
    assert redis_store.release(key, first) is True
    assert client.delete(layout(redis_store.prefix, key).fence) == 1
    after = redis_store.acquire(key, second, 10)
    assert after is not None
    assert after > before


def test_a_holder_whose_fence_key_was_deleted_gets_a_larger_token(
    redis_store: RedisStore, client: redis.Redis, key: str
) -> None:
    mine = token()
    before = redis_store.acquire(key, mine, 10)
    assert before is not None
    client.delete(layout(redis_store.prefix, key).fence)
    again = redis_store.acquire(key, mine, 10)  # idempotent, but the old token is unknown
    assert again is not None
    assert again > before
    assert redis_store.acquire(key, mine, 10) == again


def test_fences_rise_across_an_expiry_and_the_end_of_the_retention(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=prefix, fence_retention=0.2)
    fences = []
    for _ in range(3):
        fence = store.acquire("k", token(), 0.1)
        assert fence is not None
        fences.append(fence)
        time.sleep(0.5)  # the lease ran out, and the retention after it
        assert expiries(client, prefix) == {}  # nothing is left of the key
    assert fences == sorted(set(fences))
    store.close()


def test_a_token_counts_up_from_the_last_one_while_the_clock_is_behind_it(
    redis_store: RedisStore, client: redis.Redis, key: str
) -> None:
    # As after the server's clock stepped back: the last token is ahead of the clock.
    ahead = int(time.time() * 1_000_000) + 3600 * 1_000_000
    client.set(layout(redis_store.prefix, key).fence, ahead)
    client.set(permit_layout(redis_store.prefix, key).counter, ahead)
    assert redis_store.acquire(key, token(), 10) == ahead + 1
    assert redis_store.acquire_permit(key, token(), 10, 2) == ahead + 1


def test_permit_fences_rise_when_the_counter_is_deleted(
    redis_store: RedisStore, client: redis.Redis, key: str
) -> None:
    first, second = token(), token()
    before = redis_store.acquire_permit(key, first, 10, 2)
    assert before is not None
    assert redis_store.release_permit(key, first) is True
    assert client.delete(permit_layout(redis_store.prefix, key).counter) == 1
    after = redis_store.acquire_permit(key, second, 10, 2)
    assert after is not None
    assert after > before


def test_fences_rise_across_a_restart_without_persistence(private_redis: RedisServer) -> None:
    store = RedisStore.from_url(private_redis.url, socket_timeout=2)
    lock_before = store.acquire("k", "a", 30)
    permit_before = store.acquire_permit("p", "a", 30, 2)
    assert lock_before is not None
    assert permit_before is not None
    private_redis.stop()
    private_redis.start()  # the same port, an empty data set
    assert store.owner("k") is None
    lock_after = store.acquire("k", "b", 30)
    permit_after = store.acquire_permit("p", "b", 30, 2)
    assert lock_after is not None
    assert permit_after is not None
    assert lock_after > lock_before
    assert permit_after > permit_before
    store.close()


async def test_the_async_store_keeps_the_same_rules(
    redis_server: RedisServer, client: redis.Redis, prefix: str
) -> None:
    store = AsyncRedisStore.from_url(redis_server.url, prefix=prefix, fence_retention=30)
    before = await store.acquire("k", "a", 5)
    assert before is not None
    assert await store.extend("k", "a", 5) is True
    assert await store.release("k", "a") is True
    client.delete(layout(prefix, "k").fence)
    after = await store.acquire("k", "b", 5)
    assert after is not None
    assert after > before
    assert_all_expire(client, prefix, within_ms=max(RELEASED_MS, 35_000))
    await store.aclose()


# -- the option --------------------------------------------------------------------------------


def test_fence_retention_from_the_url_and_keywords(redis_server: RedisServer) -> None:
    assert RedisStore.from_url(redis_server.url).fence_retention == 86400
    store = RedisStore.from_url(f"{redis_server.url}?fence_retention=120")
    assert store.fence_retention == 120
    assert RedisStore.from_url(redis_server.url, fence_retention=5).fence_retention == 5
    store.close()


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1e12"])
def test_a_bad_fence_retention_is_refused(redis_server: RedisServer, value: str) -> None:
    with pytest.raises(StoreConfigError, match="fence_retention"):
        RedisStore.from_url(f"{redis_server.url}?fence_retention={value}")
