"""Replies lost on the wire: a request ran on the server, its answer never came.

Each case goes through a :class:`~tests.faults.proxy.FaultProxy` to a real server. A
lost reply must never turn a finished release into a reported loss, and never leave
a lock (or a place in the queue) behind for a whole lease.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import tenacity

from remotelock import LockTimeout, RemoteLock, StoreUnavailable
from remotelock.stores import store_from_url
from tests.faults.fixtures import ProxyFactory
from tests.helpers.elsewhere import in_thread
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

TTL = 30.0  # long: a lock left behind would block the others for all of it
SOON = 5.0  # given back well within this (a loaded machine, backoff included)


class Setup:
    """A store reached through a proxy, and one reached directly, on the same server."""

    def __init__(self, proxy: Any, through: Any, direct: Any) -> None:
        self.proxy = proxy
        self.through = through
        self.direct = direct
        through.owner("warm-up")  # connected before any fault: the faults hit requests


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])  # fmt: skip
def setup(request: pytest.FixtureRequest, fault_proxy: ProxyFactory) -> Setup:
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        proxy = fault_proxy("127.0.0.1", redis_server.port)
        prefix = f"?prefix=amb-{uuid.uuid4().hex[:8]}"
        options = "&socket_timeout=0.5&socket_connect_timeout=0.5"
        through = store_from_url(proxy.url(redis_server.url) + prefix + options)
        direct = store_from_url(redis_server.url + prefix)
        return Setup(proxy, through, direct)
    pg: PostgresServer = request.getfixturevalue("postgres_server")
    proxy = fault_proxy("127.0.0.1", pg.port)
    table = f"?table=amb_{uuid.uuid4().hex[:8]}"
    through = store_from_url(proxy.url(pg.url) + table + "&timeout=0.5")
    direct = store_from_url(pg.url + table)
    return Setup(proxy, through, direct)


def taken_soon(store: Any, key: str) -> float:
    """Seconds until another client gets ``key`` (fails the test past ``SOON``)."""
    started = time.monotonic()
    rival = RemoteLock(key, store=store, stop=tenacity.stop_after_delay(SOON))
    lease = in_thread(rival.acquire)
    lease.release()
    return time.monotonic() - started


def test_lost_reply_to_release_is_not_a_loss(setup: Setup) -> None:
    lock = RemoteLock("k", store=setup.through, ttl=TTL)
    with lock as lease:
        setup.proxy.drop_reply_to(lease.token.encode())
    assert not lease.lost  # no LockLost was raised, and none is reported
    assert setup.proxy.replies_dropped == 1
    assert taken_soon(setup.direct, "k") < 1.0


def test_lost_replies_to_acquire_give_the_lock_back(setup: Setup) -> None:
    setup.proxy.drop_reply_to(b"k2", count=2)  # the request and the client's one retry
    with pytest.raises(StoreUnavailable):
        RemoteLock("k2", store=setup.through, ttl=TTL).acquire()
    assert setup.proxy.replies_dropped == 2
    assert taken_soon(setup.direct, "k2") < SOON  # not orphaned for the whole ttl


def test_acquire_that_timed_out_gives_the_lock_back(setup: Setup) -> None:
    setup.proxy.latency(1.5)  # the request arrives and runs; the reply comes too late
    with pytest.raises(StoreUnavailable):
        RemoteLock("k3", store=setup.through, ttl=TTL).acquire()
    setup.proxy.heal()
    assert taken_soon(setup.direct, "k3") < SOON


@pytest.mark.redis
def test_a_waiter_whose_wait_failed_leaves_the_queue(
    redis_server: RedisServer, fault_proxy: ProxyFactory
) -> None:
    proxy = fault_proxy("127.0.0.1", redis_server.port)
    prefix = f"?prefix=amb-{uuid.uuid4().hex[:8]}"
    through = store_from_url(proxy.url(redis_server.url) + prefix + "&socket_timeout=0.5")
    direct = store_from_url(redis_server.url + prefix)
    holder = in_thread(RemoteLock("q", store=direct, ttl=TTL).acquire)
    failed: list[BaseException] = []

    def wait() -> None:
        try:
            RemoteLock("q", store=through, ttl=TTL).acquire()
        except (StoreUnavailable, LockTimeout) as exc:
            failed.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.5)  # queued behind the holder
    proxy.refuse(True)
    proxy.reset()
    waiter.join(30)
    assert failed
    assert isinstance(failed[0], StoreUnavailable)
    proxy.heal()  # the waiter's give-back (leaving the queue) can get through now
    time.sleep(1.0)
    holder.release()
    assert taken_soon(direct, "q") < 1.0  # not handed to the waiter that gave up


async def test_lost_reply_to_an_async_release_is_not_a_loss(setup: Setup) -> None:
    """The async twin of a store built from a URL retries a broken connection too."""
    lock = RemoteLock("ka", store=setup.through, ttl=TTL)
    async with lock as lease:
        setup.proxy.drop_reply_to(lease.token.encode())
    assert not lease.lost
    assert setup.proxy.replies_dropped == 1
    assert taken_soon(setup.direct, "ka") < 1.0
