"""Lock stores, and :func:`store_from_url` to pick one by URL.

Store classes load on first use (PEP 562), so ``import remotelock.stores`` imports no
driver: a Lambda cold start pays only for the store it actually uses. Only the names
in ``__all__`` are public.

Third-party stores plug in through the ``remotelock.stores`` entry-point group: the
entry name is the URL scheme, the value ``"module:Class"``; the class needs a
``from_url(url, **options)`` class method.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..errors import StoreConfigError
from .base import AsyncStore, Capability, LockInfo, Store, missing
from .shared.redact import redact, split_url

if TYPE_CHECKING:
    from .callable import AsyncCallableStore, CallableStore
    from .dynamodb.aio import AsyncDynamoDBStore
    from .dynamodb.store import DynamoDBStore
    from .memory import MemoryStore
    from .postgres.aio import AsyncPostgresStore
    from .postgres.store import PostgresStore
    from .redis.aio import AsyncRedisStore
    from .redis.store import RedisStore
    from .sqlite.store import SQLiteStore

# URL scheme -> "module:Class", imported on first use.
_SCHEMES: dict[str, str] = {
    "memory": "remotelock.stores.memory:MemoryStore",
    "sqlite": "remotelock.stores.sqlite.store:SQLiteStore",
    "redis": "remotelock.stores.redis.store:RedisStore",
    "rediss": "remotelock.stores.redis.store:RedisStore",
    "unix": "remotelock.stores.redis.store:RedisStore",
    "redis+sentinel": "remotelock.stores.redis.store:RedisStore",
    "redis+cluster": "remotelock.stores.redis.store:RedisStore",
    "postgresql": "remotelock.stores.postgres.store:PostgresStore",
    "postgres": "remotelock.stores.postgres.store:PostgresStore",
    "dynamodb": "remotelock.stores.dynamodb.store:DynamoDBStore",
}

# Public class name -> "module:Class", served by __getattr__ below.
_CLASSES: dict[str, str] = {
    "MemoryStore": "remotelock.stores.memory:MemoryStore",
    "SQLiteStore": "remotelock.stores.sqlite.store:SQLiteStore",
    "CallableStore": "remotelock.stores.callable:CallableStore",
    "AsyncCallableStore": "remotelock.stores.callable:AsyncCallableStore",
    "RedisStore": "remotelock.stores.redis.store:RedisStore",
    "AsyncRedisStore": "remotelock.stores.redis.aio:AsyncRedisStore",
    "PostgresStore": "remotelock.stores.postgres.store:PostgresStore",
    "AsyncPostgresStore": "remotelock.stores.postgres.aio:AsyncPostgresStore",
    "DynamoDBStore": "remotelock.stores.dynamodb.store:DynamoDBStore",
    "AsyncDynamoDBStore": "remotelock.stores.dynamodb.aio:AsyncDynamoDBStore",
}

# How to install the driver a store module imports.
_DRIVERS: dict[str, str] = {
    "redis": "pip install redis",
    "psycopg": "pip install 'remotelock[postgres]'",
    "psycopg_pool": "pip install 'remotelock[postgres]'",
    "boto3": "pip install 'remotelock[dynamodb]'",
    "botocore": "pip install 'remotelock[dynamodb]'",
}


def _load(target: str, what: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in _DRIVERS:
            raise StoreConfigError(
                f"{what} needs the {missing!r} package, which is not installed; "
                f"install it with: {_DRIVERS[missing]}"
            ) from exc
        raise
    return getattr(module, attr)


def _entry_point(scheme: str) -> str | None:
    from importlib import metadata  # slow to import: only for schemes we don't know

    for entry in metadata.entry_points(group="remotelock.stores"):
        if entry.name == scheme:
            return str(entry.value)
    return None


def store_from_url(
    url: str, *, require: Iterable[Capability | str] = (), **options: Any
) -> Store | AsyncStore:
    """Build the store a URL names; keyword options override the URL's query string.

    ``memory://``, ``sqlite:///path``, ``redis://``, ``rediss://``, ``postgresql://``,
    plus any scheme a third-party package registers.

    .. code-block:: python

        store = store_from_url("redis://localhost:6379/0?prefix=myapp")
        store = store_from_url(url, require={Capability.CROSS_HOST})  # never a local file

    :param require: capabilities the store must declare (:class:`Capability` members or
        their names), such as ``CROSS_HOST`` for a lock that must exclude other machines.
    :raises StoreConfigError: unknown scheme, malformed URL, unknown option or bad
        option value, missing driver (the message names the pip command that installs
        it), or a store without a required capability. Messages never show a password:
        URLs in them are redacted.
    """
    try:
        missing(frozenset(), require)  # names checked before anything is built
    except ValueError as exc:
        raise StoreConfigError(str(exc)) from None
    if not isinstance(url, str) or not url:
        raise StoreConfigError(f"a store URL must be a non-empty string, got {redact(repr(url))}")
    scheme = split_url(url, "store").scheme.lower()
    target = _SCHEMES.get(scheme) or _entry_point(scheme)
    if target is None:
        import difflib  # only to suggest a fix for a mistyped scheme

        known = ", ".join(f"{name}://" for name in sorted(_SCHEMES))
        close = difflib.get_close_matches(scheme, _SCHEMES, n=1)
        hint = f"did you mean {close[0]}://? " if close else ""
        raise StoreConfigError(
            f"unknown store URL scheme {scheme!r} in {redact(url)!r}; {hint}known: {known}"
        )
    cls = _load(target, f"the {scheme}:// store")
    store: Store | AsyncStore = cls.from_url(url, **options)
    lacking = missing(frozenset(store.capabilities), require)
    if lacking:
        names = ", ".join(capability.value for capability in lacking)
        raise StoreConfigError(
            f"{store!r} ({scheme}://) does not offer {names}, which is required"
        )
    return store


def __getattr__(name: str) -> Any:
    target = _CLASSES.get(name)
    if target is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = _load(target, name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncCallableStore",
    "AsyncDynamoDBStore",
    "AsyncPostgresStore",
    "AsyncRedisStore",
    "AsyncStore",
    "CallableStore",
    "Capability",
    "DynamoDBStore",
    "LockInfo",
    "MemoryStore",
    "PostgresStore",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "store_from_url",
]
