"""Building a store's Redis clients from a URL: timeouts, retries and pools.

A client built from a plain URL has a blocking pool of :data:`POOL_SIZE` connections:
callers beyond it wait for a free one (up to the socket timeout) instead of failing
with redis-py's "Too many connections". Beside it the store keeps one more for
releases and renewals (:func:`~.common.lease_client_of`), which a crowd of acquires
therefore never delays, and one for its subscriber: a process (or each event loop of
an async store) uses at most 9 connections, however many threads or tasks wait.
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.exceptions as rex
from redis.backoff import ExponentialBackoff, NoBackoff

from ...errors import StoreConfigError, StoreUnavailable
from ..shared.redact import described, redact, secrets_in
from .clients import DEFAULT_SOCKET_TIMEOUT, POPPED, hosts, parse_value, parsers_of

POOL_SIZE: Final = 7
"""Most connections the steps of a client built from a plain URL open (per process, and
per event loop for the asyncio side); a ``max_connections`` option sets another."""


def client_defaults(kind: str, package: str = "redis") -> dict[str, Any]:
    """Timeouts and retries for clients remotelock builds itself.

    Connection errors (a pooled connection that went stale, a failover) are retried
    once; timeouts are not, so a frozen server costs one socket timeout, not ten. An
    asyncio client needs the asyncio ``Retry``: the sync one cannot await a command, so
    it would silently never retry.
    """
    retry = importlib.import_module(f"{package}.retry").Retry
    defaults: dict[str, Any] = {
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        "socket_connect_timeout": DEFAULT_SOCKET_TIMEOUT,
    }
    if kind == "cluster":
        defaults["retry"] = retry(
            ExponentialBackoff(cap=0.2, base=0.01), 3, (rex.ConnectionError,)
        )
    else:
        defaults["retry"] = retry(NoBackoff(), 1, (rex.ConnectionError,))
    return {**defaults, **version_given(package)}


@functools.cache
def version_given(package: str) -> dict[str, Any]:
    """redis-py's version, given to each connection it opens, where that saves work.

    redis-py 8 tells the server its version on every new connection and looks it up
    in its package metadata every time: about 5 ms of CPU per connection, which a
    crowd of processes opening their wake-up connections at once pays in full (earlier
    versions looked it up once). Given (as ``driver_info``), it is not looked up; the
    server hears the same.
    """
    connection = importlib.import_module(f"{package}.connection")
    opened = getattr(connection, "AbstractConnection", None)
    if opened is None or "driver_info" not in inspect.signature(opened.__init__).parameters:
        return {}
    info = importlib.import_module("redis.driver_info").DriverInfo
    return {"driver_info": info(lib_version=str(importlib.import_module("redis").__version__))}


def make_client(url: str, kwargs: dict[str, Any], *, asynchronous: bool = False) -> Any:
    """A redis-py client for ``url`` (``redis.asyncio`` if ``asynchronous``): plain,
    ``redis+sentinel://`` or ``redis+cluster://``."""
    package = "redis.asyncio" if asynchronous else "redis"  # the same API, module by module
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    parsers = parsers_of(asynchronous)
    query = {
        name: parse_value(name, value, parsers, url) for name, value in parse_qsl(parts.query)
    }
    if scheme == "redis+cluster":
        cluster = importlib.import_module(f"{package}.cluster")
        nodes = [cluster.ClusterNode(host, port) for host, port in hosts(parts.netloc, 6379)]
        settings = {**client_defaults("cluster", package), **query, **kwargs}
        if parts.password:
            settings.setdefault("password", unquote(parts.password))
        return cluster.RedisCluster(startup_nodes=nodes, **settings)
    if scheme == "redis+sentinel":
        sentinels = importlib.import_module(f"{package}.sentinel")
        service, _, db = parts.path.strip("/").partition("/")
        if not service:
            raise StoreConfigError(
                f"sentinel URLs need the service name as the path: {redact(url)!r}"
            )
        settings = {**client_defaults("sentinel", package), **query, **kwargs}
        if parts.password:
            settings.setdefault("password", unquote(parts.password))
        if db:
            settings["db"] = int(db)
        sentinel = sentinels.Sentinel(
            hosts(parts.netloc, 26379),
            socket_timeout=settings["socket_timeout"],
            sentinel_kwargs={"socket_timeout": settings["socket_timeout"]},
        )
        return sentinel.master_for(service, **settings)
    plain = importlib.import_module(package)
    settings = {**client_defaults("plain", package), **kwargs}
    if set(settings) & set(POPPED["plain"]):  # options of the client, not of its pool
        return plain.Redis.from_url(url, **settings)
    # A blocking pool: load past POOL_SIZE queues (bounded) instead of failing; an
    # option in the URL or the keywords still sets max_connections and the wait.
    settings.setdefault("max_connections", POOL_SIZE)
    settings.setdefault("timeout", settings["socket_timeout"] or DEFAULT_SOCKET_TIMEOUT)
    pool = plain.BlockingConnectionPool.from_url(url, **settings)
    return plain.Redis.from_pool(pool)


def build_client(url: str, kwargs: dict[str, Any], *, asynchronous: bool = False) -> Any:
    """:func:`make_client`, with redis-py's objections as remotelock's errors.

    A bad URL or option: :class:`StoreConfigError`, raised in place of redis-py's error
    rather than from it, so no chained exception can carry the URL. An unreachable
    Redis Cluster (its client connects at once): :class:`StoreUnavailable`.
    """
    try:
        return make_client(url, dict(kwargs), asynchronous=asynchronous)
    except StoreConfigError:
        raise
    except (ValueError, TypeError) as exc:
        problem = described(exc, hiding=secrets_in(url))
    except (rex.RedisError, rex.RedisClusterException, OSError) as exc:
        raise StoreUnavailable(
            f"cannot reach Redis at {redact(url)!r}: {described(exc, hiding=secrets_in(url))}"
        ) from exc
    raise StoreConfigError(f"bad Redis URL {redact(url)!r}: {problem}")


__all__ = [
    "POOL_SIZE",
    "build_client",
    "client_defaults",
    "make_client",
]
