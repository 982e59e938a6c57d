"""``skip_if`` callers wait on Redis as watchers (a release takes them out of line): under
faults between them and the server, they still end on time and leave nothing in line.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from remotelock import StoreUnavailable, remote_locked
from remotelock.stores import store_from_url
from tests.faults.fixtures import ProxyFactory
from tests.helpers.eventually import eventually
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.redis

TTL = 30.0  # long: a place or a lock left behind would show for all of it
SOON = 5.0


class Line:
    """A store reached through a proxy, one reached directly, and the key's line."""

    def __init__(self, redis_server: RedisServer, fault_proxy: ProxyFactory) -> None:
        self.proxy = fault_proxy("127.0.0.1", redis_server.port)
        prefix = f"fw-{uuid.uuid4().hex[:8]}"
        self.through: Any = store_from_url(
            self.proxy.url(redis_server.url) + f"?prefix={prefix}&socket_timeout=0.5"
        )
        self.direct: Any = store_from_url(f"{redis_server.url}?prefix={prefix}")
        self.base = f"{prefix}:{{k}}"

    def count(self, suffix: str) -> int:
        client: Any = self.direct.client
        if suffix == "watchers":
            return int(client.scard(f"{self.base}:watchers"))
        return int(client.zcard(f"{self.base}:queue"))


@pytest.fixture
def line(redis_server: RedisServer, fault_proxy: ProxyFactory) -> Line:
    return Line(redis_server, fault_proxy)


def test_watchers_whose_connections_were_reset_still_skip_and_leave_no_place(
    line: Line,
) -> None:
    fresh = [False]
    results: list[object] = []

    @remote_locked("k", store=line.through, ttl=TTL, skip_if=lambda: fresh[0])
    def refresh(*, has_lock: bool = False) -> bool:
        return has_lock

    holder = line.direct.acquire("k", "holder", TTL)
    assert holder is not None
    callers = [threading.Thread(target=lambda: results.append(refresh())) for _ in range(4)]
    for caller in callers:
        caller.start()
    assert eventually(lambda: line.count("watchers") == 4, SOON)
    time.sleep(0.3)  # their wake-up connection is up
    line.proxy.reset()  # every connection through the proxy: the subscriber's too
    time.sleep(0.5)  # they look again, and wait on a new connection
    fresh[0] = True
    started = time.monotonic()
    assert line.direct.release("k", "holder")
    for caller in callers:
        caller.join(SOON * 2)
    assert results == [False] * 4  # all skipped, none handed the lock
    assert time.monotonic() - started < SOON
    assert eventually(lambda: line.count("queue") == 0 and line.count("watchers") == 0, SOON)
    assert line.direct.owner("k") is None


def test_a_lost_reply_to_a_watchers_acquire_leaves_no_place_behind(line: Line) -> None:
    """The acquire ran (the caller is a watcher in line), its reply was lost: the caller
    gets StoreUnavailable, and its give-back takes it out of line."""
    assert line.direct.acquire("k", "holder", TTL) is not None
    line.through.owner("warm-up")  # connected before the fault

    @remote_locked("k", store=line.through, ttl=TTL, skip_if=lambda: False)
    def refresh(*, has_lock: bool = False) -> bool:
        return has_lock

    line.proxy.drop_reply_to(b"{k}", count=2)  # the request and the client's one retry
    with pytest.raises(StoreUnavailable):
        refresh()
    assert line.proxy.replies_dropped == 2
    assert eventually(lambda: line.count("queue") == 0 and line.count("watchers") == 0, SOON)
    assert line.direct.release("k", "holder")
    assert line.direct.owner("k") is None  # not handed to the caller that gave up
