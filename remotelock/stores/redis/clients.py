"""Redis clients for the Redis stores: URLs, options, timeouts and retries.

Clients that remotelock builds from a URL get connect and read timeouts, and retry a
broken connection once but never a timeout: a frozen server costs one socket timeout,
then :class:`~remotelock.errors.StoreUnavailable`, instead of a hang.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import re
from collections.abc import Iterable
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode

from ...errors import StoreConfigError
from ..shared.redact import redact, split_url

_PREFIX: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,64}")
_DB: Final = re.compile(r"[0-9]{1,5}")
DEFAULT_SOCKET_TIMEOUT: Final = 5.0
"""Connect and read timeout of clients built from a URL: no call can hang longer."""
FENCE_RETENTION: Final = 86400.0
"""Seconds a key's fencing state (``:fence``, ``:pcounter``) outlives its last lease: a
server clock stepping back by less than this never reissues an earlier token."""
WAITER_GRACE: Final = 60.0
"""Seconds a queued waiter keeps its place in line without coming back. Its store keeps
the places of all its waiters with one script every third of it, and a waiter that
tries again (every 10-20 s by default, when no wake-up came) keeps its own: a lone
waiter costs one round trip every 15 s on average. A waiter that gave up or died
without leaving the line keeps its place this long, but holds the line up for at most
:data:`~remotelock.stores.redis.prelude_lua.HANDOVER_MS` when its turn comes: a lock
handed to it lapses then, and a free lock's turn passes to the next in line."""
BARGING_MAX: Final = 1.0
"""The longest barging window (seconds): beyond it the first in line waits too long."""
_SECONDS: Final = ("waiter_grace", "fence_retention", "barging")


class Options(NamedTuple):
    """remotelock's own options (the rest of a URL goes to redis-py)."""

    prefix: str = "remotelock"
    waiter_grace: float = WAITER_GRACE
    fence_retention: float = FENCE_RETENTION
    barging: float = 0.0


def check_options(
    prefix: object,
    waiter_grace: object,
    fence_retention: object = FENCE_RETENTION,
    barging: object = 0.0,
) -> Options:
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise StoreConfigError(
            f"prefix must be 1-64 characters of letters, digits and _.:/-, got {prefix!r}"
        )
    if isinstance(waiter_grace, bool) or not isinstance(waiter_grace, (int, float)):
        raise StoreConfigError(f"waiter_grace must be a number of seconds, got {waiter_grace!r}")
    if not 0.1 <= waiter_grace <= 3600:
        raise StoreConfigError(f"waiter_grace must be 0.1-3600 s, got {waiter_grace!r}")
    retention = fence_retention
    if isinstance(retention, bool) or not isinstance(retention, (int, float)):
        raise StoreConfigError(f"fence_retention must be a number of seconds, got {retention!r}")
    if not 0.01 <= retention <= 10 * 365 * 86400:
        raise StoreConfigError(f"fence_retention must be 0.01 s to 10 years, got {retention!r}")
    if isinstance(barging, bool) or not isinstance(barging, (int, float)):
        raise StoreConfigError(f"barging must be a number of seconds, got {barging!r}")
    if not 0 <= barging <= BARGING_MAX:
        raise StoreConfigError(f"barging must be 0-{BARGING_MAX:g} s, got {barging!r}")
    return Options(prefix, float(waiter_grace), float(retention), float(barging))


def parse_url(
    url: str, options: dict[str, Any], *, asynchronous: bool = False
) -> tuple[str, Options, dict[str, Any]]:
    """Split a URL into (URL for redis-py, our options, client kwargs), checked.

    Keyword options override the query string, also for redis-py's own options (which
    redis-py would otherwise let the query string win). Every option must be
    remotelock's or one the chosen redis-py client takes, and every query value must
    parse, so a typo fails here instead of as a ``TypeError`` on first use.
    """
    parts = split_url(url, "Redis")
    scheme = parts.scheme.lower()
    kind = _KINDS.get(scheme)
    if kind is None:
        raise StoreConfigError(
            f"not a Redis URL: {redact(url)!r}; use one of "
            + ", ".join(f"{name}://" for name in _KINDS)
        )
    _check_path(kind, scheme, parts.path, url)
    connection_class = options.get("connection_class")
    if connection_class is not None and not isinstance(connection_class, type):
        raise StoreConfigError(
            f"connection_class must be a class, got {type(connection_class).__name__}"
        )
    known = accepted(kind, scheme, asynchronous, connection_class)
    own, kept = _split_query(parts.query, url, known, parsers_of(asynchronous), options)
    for name in Options._fields:
        if name in options:
            own[name] = options.pop(name)
    for name in options:
        if name not in known.keywords:
            raise _unknown(name, url, known.keywords)
    # Rebuilt by hand: urlunsplit drops the "//" of "unix:///path" (empty host).
    base = url.split("?", 1)[0]
    client_url = f"{base}?{urlencode(kept)}" if kept else base
    return client_url, check_options(**{**Options()._asdict(), **own}), options


def _split_query(
    query: str, url: str, known: Accepted, parsers: dict[str, Any], options: dict[str, Any]
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(our options, redis-py's options not overridden by a keyword) of a query string."""
    own: dict[str, Any] = {}
    kept = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "prefix":
            own[name] = value
        elif name in _SECONDS:
            try:
                own[name] = float(value)
            except ValueError:
                raise StoreConfigError(
                    f"{name} in {redact(url)!r} must be a number of seconds, got {redact(value)!r}"
                ) from None
        elif name in known.keywords and name not in known.query:
            raise StoreConfigError(
                f"the Redis option {name!r} cannot be given in a URL ({redact(url)!r}); "
                "pass it as a keyword argument"
            )
        elif name not in known.query:
            raise _unknown(name, url, known.query)
        else:
            parse_value(name, value, parsers, url)
            if name not in options:
                kept.append((name, value))
    return own, kept


# -- what redis-py accepts ---------------------------------------------------------------

_KINDS: Final = {
    "redis": "plain",
    "rediss": "plain",
    "unix": "plain",
    "redis+sentinel": "sentinel",
    "redis+cluster": "cluster",
}

# Names redis-py takes out of ``**kwargs`` in a function body, where no signature
# shows them; each is accepted only while redis-py's client class still takes it too.
POPPED: Final = {
    "plain": ("single_connection_client", "cache", "cache_config"),  # Redis.from_url, pool
    "sentinel": ("ssl",),  # SentinelConnectionPool
    "cluster": (),
}


def _keywords(function: Any) -> tuple[set[str], bool]:
    """The names ``function`` takes as keywords, and whether it takes ``**kwargs``."""
    params = inspect.signature(function).parameters.values()
    names = {
        param.name
        for param in params
        if param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
    }
    return names - {"self", "cls"}, any(param.kind is param.VAR_KEYWORD for param in params)


def _init_keywords(cls: type) -> set[str]:
    """The keywords ``cls(...)`` takes: its ``__init__``'s and, while each passes
    ``**kwargs`` on, those of the classes after it in the MRO."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        own, more = _keywords(init)
        names |= own
        if not more:
            break
    return names


class Accepted(NamedTuple):
    """The options a client takes: in a URL's query string, and as keywords."""

    query: frozenset[str]
    keywords: frozenset[str]


@functools.cache
def accepted(kind: str, scheme: str, asynchronous: bool, connection_class: Any) -> Accepted:
    """Every option a client of ``kind`` takes, read off redis-py's own signatures once.

    ``plain``: ``Redis.from_url`` -> ``ConnectionPool`` -> the scheme's connection
    class. ``sentinel``: ``Sentinel.master_for`` -> ``SentinelConnectionPool`` ->
    its managed connections. ``cluster``: ``RedisCluster`` (whose ``**kwargs`` redis-py
    filters through ``REDIS_ALLOWED_KEYS``). Options a function takes itself, before
    the connections (``single_connection_client``, ``redis_class``), are keywords
    only: in a query string they would reach the connections as text.
    """
    package = "redis.asyncio" if asynchronous else "redis"
    client = importlib.import_module(package).Redis
    names: set[str] = set()
    only_keywords: set[str] = set()
    if kind == "cluster":
        cluster = importlib.import_module(f"{package}.cluster")
        names, more = _keywords(cluster.RedisCluster.__init__)
        if more:
            allowed = set(getattr(cluster, "REDIS_ALLOWED_KEYS", ()))
            names |= allowed - set(getattr(cluster, "KWARGS_DISABLED_KEYS", ()))
        names -= {"startup_nodes", "url"}
    elif kind == "sentinel":
        sentinel = importlib.import_module(f"{package}.sentinel")
        only_keywords = _keywords(sentinel.Sentinel.master_for)[0] - {"service_name"}
        names = _init_keywords(sentinel.SentinelConnectionPool)
        names -= {"service_name", "sentinel_manager"}
        for default in ("SentinelManagedConnection", "SentinelManagedSSLConnection"):
            if hasattr(sentinel, default):
                names |= _init_keywords(connection_class or getattr(sentinel, default))
    else:
        connection = importlib.import_module(f"{package}.connection")
        default = {"rediss": "SSLConnection", "unix": "UnixDomainSocketConnection"}.get(
            scheme, "Connection"
        )
        only_keywords = _keywords(client.from_url)[0] - {"url"}
        names = _init_keywords(connection.ConnectionPool)
        names |= _init_keywords(connection_class or getattr(connection, default))
    only_keywords |= set(POPPED[kind]) & _init_keywords(client)
    return Accepted(frozenset(names), frozenset(names | only_keywords))


@functools.cache
def parsers_of(asynchronous: bool) -> dict[str, Any]:
    """redis-py's parsers of URL query values (``db``: ``int``, ``socket_timeout``: ...)."""
    package = "redis.asyncio" if asynchronous else "redis"
    connection = importlib.import_module(f"{package}.connection")
    return dict(getattr(connection, "URL_QUERY_ARGUMENT_PARSERS", {}))


def parse_value(name: str, value: str, parsers: dict[str, Any], url: str) -> Any:
    """A query value as redis-py would parse it; a bad one is a StoreConfigError."""
    parser = parsers.get(name)
    if parser is None:
        return value
    try:
        return parser(value)
    except (TypeError, ValueError):
        pass
    raise StoreConfigError(
        f"bad value {redact(value)!r} for the Redis option {name!r} in {redact(url)!r}"
    )


def _unknown(name: str, url: str, known: Iterable[str]) -> StoreConfigError:
    close = difflib.get_close_matches(name, [*known, *Options._fields], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return StoreConfigError(
        f"unknown Redis option {name!r} in {redact(url)!r}: neither remotelock's "
        f"({', '.join(Options._fields)}) nor one this redis-py client takes{hint}"
    )


def _check_path(kind: str, scheme: str, path: str, url: str) -> None:
    """The path names the database (``/0``), or the service (``/mymaster[/0]``) of a
    Sentinel URL; redis-py would read ``redis://host/abc`` as database 0."""
    if scheme == "unix":
        return  # the socket's path
    parts = unquote(path).strip("/").split("/") if path.strip("/") else []
    if kind == "sentinel":
        if not parts or not parts[0]:
            raise StoreConfigError(
                f"sentinel URLs need the service name as the path: {redact(url)!r}"
            )
        parts = parts[1:]
    if kind == "cluster" and parts not in ([], ["0"]):
        raise StoreConfigError(
            f"a Redis Cluster has only database 0; the path of {redact(url)!r} must be empty or /0"
        )
    if len(parts) > 1 or (parts and not _DB.fullmatch(parts[0])):
        raise StoreConfigError(
            f"the path of {redact(url)!r} must be a database number (like /0), "
            f"got {redact(path)!r}"
        )


def hosts(netloc: str, default_port: int) -> list[tuple[str, int]]:
    """``host:port,host:port`` (after any ``user:password@``) as a list."""
    found = []
    for item in netloc.rpartition("@")[2].split(","):
        host, _, port = item.strip().rpartition(":") if ":" in item else (item, "", "")
        found.append((host or "127.0.0.1", int(port) if port else default_port))
    return found


__all__ = [
    "DEFAULT_SOCKET_TIMEOUT",
    "FENCE_RETENTION",
    "POPPED",
    "Accepted",
    "Options",
    "accepted",
    "check_options",
    "hosts",
    "parse_url",
    "parse_value",
    "parsers_of",
]
