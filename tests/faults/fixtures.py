"""Fixtures that put a :class:`~tests.faults.proxy.FaultProxy` in front of a server.

Every proxy a test makes is stopped at its end, so a fault left switched on (a black
hole, a refusal) never leaks into the next test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.faults.proxy import FaultProxy

if TYPE_CHECKING:
    from tests.servers.postgres import PostgresServer
    from tests.servers.redis import RedisServer

ProxyFactory = Callable[[str, int], FaultProxy]


@pytest.fixture
def fault_proxy() -> Iterator[ProxyFactory]:
    """Make proxies: ``fault_proxy(host, port)``; all are stopped after the test."""
    made: list[FaultProxy] = []

    def make(host: str, port: int) -> FaultProxy:
        proxy = FaultProxy(host, port)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.stop()


@pytest.fixture
def redis_proxy(fault_proxy: ProxyFactory, redis_server: RedisServer) -> FaultProxy:
    """A proxy in front of the session's Redis (``redis_proxy.url(redis_server.url)``)."""
    return fault_proxy("127.0.0.1", redis_server.port)


@pytest.fixture
def postgres_proxy(fault_proxy: ProxyFactory, postgres_server: PostgresServer) -> FaultProxy:
    """A proxy in front of the session's PostgreSQL."""
    return fault_proxy("127.0.0.1", postgres_server.port)


__all__ = ["ProxyFactory", "fault_proxy", "postgres_proxy", "redis_proxy"]
