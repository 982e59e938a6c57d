"""A release by the token that released the key moments ago returns True again.

redis-py retries a command once after a connection error; when the release ran on the
server and only its reply was lost, that retry must not look like a lost lock.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from remotelock import RemoteLock
from remotelock.stores.base import Handover
from remotelock.stores.redis.aio import AsyncRedisStore
from remotelock.stores.redis.store import RedisStore
from tests.faults.proxy import FaultProxy
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis


def token() -> str:
    return uuid.uuid4().hex


# -- the rule, without faults ----------------------------------------------------------------


def test_releasing_twice_is_true_twice(redis_store: RedisStore, key: str) -> None:
    mine = token()
    redis_store.acquire(key, mine, 10)
    assert redis_store.release(key, mine) is True
    assert redis_store.release(key, mine) is True
    assert redis_store.owner(key) is None


def test_releasing_twice_after_a_handover_is_true_and_keeps_the_new_holder(
    redis_store: RedisStore, key: str
) -> None:
    mine, next_ = token(), token()
    redis_store.acquire(key, mine, 10)
    assert redis_store.acquire(key, next_, 10) is None
    assert redis_store.release(key, mine) is True  # handed to the next in line
    assert redis_store.release(key, mine) is True
    assert redis_store.owner(key) == next_  # the repeat freed nothing


def test_a_lease_that_ran_out_and_was_taken_is_still_lost(
    redis_store: RedisStore, key: str
) -> None:
    old, new = token(), token()
    redis_store.acquire(key, old, 0.2)
    time.sleep(0.4)
    assert redis_store.acquire(key, new, 10) is not None
    assert redis_store.release(key, new) is True
    assert redis_store.release(key, old) is False  # the key's last release was not old's


def test_a_lease_that_ran_out_is_lost(redis_store: RedisStore, key: str) -> None:
    mine = token()
    redis_store.acquire(key, mine, 0.2)
    time.sleep(0.4)
    assert redis_store.release(key, mine) is False


def test_a_force_released_lock_is_lost(redis_store: RedisStore, key: str) -> None:
    mine = token()
    redis_store.acquire(key, mine, 10)
    assert redis_store.force_release(key) is True
    assert redis_store.release(key, mine) is False


def test_taking_the_lock_again_forgets_the_earlier_release(
    redis_store: RedisStore, key: str
) -> None:
    mine = token()
    redis_store.acquire(key, mine, 10)
    assert redis_store.release(key, mine) is True
    redis_store.acquire(key, mine, 0.2)  # the same token holds it again...
    time.sleep(0.4)  # ...until its lease runs out
    assert redis_store.release(key, mine) is False


def test_a_token_that_never_held_the_key_gets_false(redis_store: RedisStore, key: str) -> None:
    redis_store.acquire(key, token(), 10)
    assert redis_store.release(key, token()) is False


def test_permits_release_twice_true_and_expired_false(redis_store: RedisStore, key: str) -> None:
    first, second, late = token(), token(), token()
    redis_store.acquire_permit(key, first, 10, 2)
    redis_store.acquire_permit(key, second, 10, 2)
    assert redis_store.release_permit(key, first) is True
    assert redis_store.release_permit(key, second) is True  # another release in between
    assert redis_store.release_permit(key, first) is True  # a repeat is still a success
    assert redis_store.permit_holders(key) == []
    redis_store.acquire_permit(key, late, 0.2, 2)
    time.sleep(0.4)
    assert redis_store.release_permit(key, late) is False
    redis_store.acquire_permit(key, first, 0.2, 2)  # the same token holds one again
    time.sleep(0.4)
    assert redis_store.release_permit(key, first) is False


# -- the real thing: the reply to the release is lost on the wire ------------------------------


@pytest.fixture
def proxied(redis_proxy: FaultProxy, redis_server: RedisServer) -> Iterator[RedisStore]:
    url = redis_proxy.url(redis_server.url) + f"?prefix=lost{uuid.uuid4().hex[:8]}"
    store = RedisStore.from_url(url)
    yield store
    store.close()


def test_a_lost_release_reply_is_not_a_lost_lock(
    proxied: RedisStore, redis_proxy: FaultProxy
) -> None:
    lease = RemoteLock("k", store=proxied, ttl=30).acquire()
    redis_proxy.drop_reply_to(lease.token.encode())  # the release runs; its reply is lost
    assert lease.release() is True  # redis-py retried once: the repeat returns True
    assert redis_proxy.replies_dropped == 1
    assert not lease.lost
    assert proxied.owner("k") is None


def test_a_lost_release_reply_after_a_handover(
    proxied: RedisStore, redis_proxy: FaultProxy
) -> None:
    mine = token()
    proxied.acquire("k", mine, 30)
    assert proxied.acquire("k", "next", 30) is None
    handed: list[object] = []
    waiter = threading.Thread(target=lambda: handed.append(proxied.wait_turn("k", "next", 10)))
    waiter.start()
    time.sleep(0.2)
    redis_proxy.drop_reply_to(mine.encode())
    assert proxied.release("k", mine) is True
    assert redis_proxy.replies_dropped == 1
    waiter.join(10)
    assert isinstance(handed[0], Handover)
    assert proxied.owner("k") == "next"


def test_a_lost_permit_release_reply_is_not_a_lost_permit(
    proxied: RedisStore, redis_proxy: FaultProxy
) -> None:
    mine = token()
    assert proxied.acquire_permit("k", mine, 30, 2) is not None
    redis_proxy.drop_reply_to(mine.encode())
    assert proxied.release_permit("k", mine) is True
    assert redis_proxy.replies_dropped == 1
    assert proxied.permit_holders("k") == []


async def test_a_lost_async_release_reply_is_not_a_lost_lock(redis_proxy: FaultProxy) -> None:
    # A client that retries a broken connection once (as URL-built sync clients do).
    client = redis.asyncio.Redis(
        port=redis_proxy.port, socket_timeout=5, retry=Retry(NoBackoff(), 1)
    )
    store = AsyncRedisStore(client, prefix=f"alost{uuid.uuid4().hex[:8]}")
    lease = await RemoteLock("k", store=store, ttl=30).aacquire()
    redis_proxy.drop_reply_to(lease.token.encode())
    assert await lease.arelease() is True
    assert redis_proxy.replies_dropped == 1
    assert await store.owner("k") is None
    await store.aclose()
