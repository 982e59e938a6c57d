"""Redis clients for the Redis stores: URLs, options, timeouts and retries.

Clients that remotelock builds from a URL get connect and read timeouts, and retry a
broken connection once but never a timeout: a frozen server costs one socket timeout,
then :class:`~remotelock.errors.StoreUnavailable`, instead of a hang.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis.exceptions as rex
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from ..errors import StoreConfigError

_PREFIX: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
DEFAULT_SOCKET_TIMEOUT: Final = 5.0
"""Connect and read timeout of clients built from a URL: no call can hang longer."""


class Options(NamedTuple):
    """remotelock's own options (the rest of a URL goes to redis-py)."""

    prefix: str = "remotelock"
    waiter_grace: float = 3.0


def check_options(prefix: object, waiter_grace: object) -> Options:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise StoreConfigError(
            f"prefix must be 1-64 characters of letters, digits and _.:/-, got {prefix!r}"
        )
    if isinstance(waiter_grace, bool) or not isinstance(waiter_grace, (int, float)):
        raise StoreConfigError(f"waiter_grace must be a number of seconds, got {waiter_grace!r}")
    if not 0.1 <= waiter_grace <= 3600:
        raise StoreConfigError(f"waiter_grace must be 0.1-3600 s, got {waiter_grace!r}")
    return Options(prefix, float(waiter_grace))


def parse_url(url: str, options: dict[str, Any]) -> tuple[str, Options, dict[str, Any]]:
    """Split a URL into (URL for redis-py, our options, client kwargs).

    Keyword options override the query string, also for redis-py's own options (which
    redis-py would otherwise let the query string win).
    """
    parts = urlsplit(url)
    own: dict[str, Any] = {}
    kept = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "prefix":
            own[name] = value
        elif name == "waiter_grace":
            try:
                own[name] = float(value)
            except ValueError:
                raise StoreConfigError(f"waiter_grace in {url!r} must be a number") from None
        elif name not in options:
            kept.append((name, value))
    for name in ("prefix", "waiter_grace"):
        if name in options:
            own[name] = options.pop(name)
    # Rebuilt by hand: urlunsplit drops the "//" of "unix:///path" (empty host).
    base = url.split("?", 1)[0]
    client_url = f"{base}?{urlencode(kept)}" if kept else base
    return client_url, check_options(**{**Options()._asdict(), **own}), options


def hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """``host:port,host:port`` (after any ``user:password@``) as a list."""
    found = []
    for item in netloc.rpartition("@")[2].split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item, "", "")
        found.append((host or "127.0.0.1", int(port) if port else default_port))
    return found


def client_defaults(kind: str) -> dict[str, Any]:
    """Timeouts and retries for clients remotelock builds itself.

    Connection errors (a pooled connection that went stale, a failover) are retried
    once; timeouts are not, so a frozen server costs one socket timeout, not ten.
    """
    defaults: dict[str, Any] = {
        "socket_timeout": DEFAULT_SOCKET_TIMEOUT,
        "socket_connect_timeout": DEFAULT_SOCKET_TIMEOUT,
    }
    if kind == "cluster":
        defaults["retry"] = Retry(
            ExponentialBackoff(cap=0.2, base=0.01), 3, (rex.ConnectionError,)
        )
    else:
        defaults["retry"] = Retry(NoBackoff(), 1, (rex.ConnectionError,))
    return defaults


def make_client(url: str, kwargs: dict[str, Any], *, asynchronous: bool = False) -> Any:
    """A redis-py client for ``url`` (``redis.asyncio`` if ``asynchronous``): plain,
    ``redis+sentinel://`` or ``redis+cluster://``."""
    package = "redis.asyncio" if asynchronous else "redis"  # the same API, module by module
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    query = dict(parse_qsl(parts.query))
    if scheme == "redis+cluster":
        cluster = importlib.import_module(f"{package}.cluster")
        nodes = [cluster.ClusterNode(host, port) for host, port in hosts(parts.netloc, 6379)]
        settings = {**client_defaults("cluster"), **query, **kwargs}
        if parts.password:
            settings.setdefault("password", unquote(parts.password))
        return cluster.RedisCluster(startup_nodes=nodes, **settings)
    if scheme == "redis+sentinel":
        sentinels = importlib.import_module(f"{package}.sentinel")
        service, _, db = parts.path.strip("/").partition("/")
        if not service:
            raise StoreConfigError(f"sentinel URLs need the service name as the path: {url!r}")
        settings = {**client_defaults("sentinel"), **query, **kwargs}
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
    return plain.Redis.from_url(url, **{**client_defaults("plain"), **kwargs})


def describe(client: Any) -> str:
    """Where a client points, briefly (error messages quote it; no passwords)."""
    pool = getattr(client, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None) or {}
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    if "host" in kwargs:
        return f"redis://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
    nodes = getattr(client, "startup_nodes", None)
    if nodes:
        return "redis+cluster://" + ",".join(sorted(str(name) for name in nodes))
    return type(client).__name__


def max_block(client: Any) -> float:
    """Longest single BLPOP: well under the client's read timeout (else it would fire)."""
    pool = getattr(client, "connection_pool", None)
    timeout = getattr(pool, "connection_kwargs", {}).get("socket_timeout") if pool else None
    if timeout is None:
        return 1.0
    return max(0.05, min(1.0, float(timeout) / 2))


__all__ = [
    "DEFAULT_SOCKET_TIMEOUT",
    "Options",
    "check_options",
    "client_defaults",
    "describe",
    "hosts",
    "make_client",
    "max_block",
    "parse_url",
]
