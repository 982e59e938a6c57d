"""A holder whose store goes silent (a network black hole) is told by its local deadline.

The proxy swallows every byte, so the renewal call hangs until the client's own socket
timeout, long after the lease ran out. The holder must not wait for it: ``lease.lost``,
``on_lost`` and ``LockLost`` come at the lease's local deadline.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from remotelock.stores import store_from_url
from tests.faults.fixtures import ProxyFactory
from tests.helpers.told import told_in_time
from tests.servers.postgres import PostgresServer
from tests.servers.redis import RedisServer

TTL = 1.0
LATE = 0.15  # how late the watchdog may run on a loaded machine


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("postgres", marks=pytest.mark.postgres)])  # fmt: skip
def through(request: pytest.FixtureRequest, fault_proxy: ProxyFactory) -> tuple[Any, Any]:
    """(proxy, a store reached through it, with 5 s client timeouts: far past the ttl)."""
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        proxy = fault_proxy("127.0.0.1", redis_server.port)
        url = proxy.url(redis_server.url) + f"?prefix=bh-{uuid.uuid4().hex[:8]}"
    else:
        pg: PostgresServer = request.getfixturevalue("postgres_server")
        proxy = fault_proxy("127.0.0.1", pg.port)
        url = proxy.url(pg.url) + f"?table=bh_{uuid.uuid4().hex[:8]}&timeout=5"
    return proxy, store_from_url(url)


def test_black_hole_tells_the_holder_by_its_deadline(through: tuple[Any, Any]) -> None:
    proxy, store = through
    told_in_time(store, silence=proxy.blackhole, restore=proxy.heal)
