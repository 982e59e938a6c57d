"""One thin adapter per lock library, so every scenario drives them the same way.

Each adapter takes a Redis URL and gives ``acquire(key) -> handle`` (blocking, up to
60 s) and ``release(handle)``. Peers get a redis-py client with the same socket
timeout remotelock's URL-built clients use, so nobody wins by waiting less carefully.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import redis


class Adapter(Protocol):
    name: str

    def acquire(self, key: str) -> Any: ...

    def release(self, handle: Any) -> None: ...


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


WAIT_LIMIT = int(float(os.environ.get("REMOTELOCK_BENCH_WAIT_LIMIT", "60")))
"""Seconds any library waits for a lock before giving up (the idle scenario raises it)."""


class RemoteLockAdapter:
    """remotelock's RemoteLock over any store URL (``limit`` > 1: counted permits)."""

    def __init__(self, url: str, name: str, limit: int = 1) -> None:
        from remotelock import RemoteLock
        from remotelock.stores import store_from_url

        self.name = name
        self.store = store_from_url(url)
        self.limit = limit
        self._lock_class = RemoteLock
        self._locks: dict[str, Any] = {}
        self.requests = request_counter(self.store)

    def acquire(self, key: str) -> Any:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = self._lock_class(
                key, store=self.store, ttl=30, limit=self.limit
            )
        return lock.acquire(timeout=WAIT_LIMIT)

    def release(self, handle: Any) -> None:
        handle.release()


def request_counter(store: object) -> Callable[[], int] | None:
    """For a store that sends HTTP requests (DynamoDB): a function returning how many
    it has sent so far, every attempt and retry included (what AWS bills); else None."""
    events = getattr(getattr(getattr(store, "client", None), "meta", None), "events", None)
    if events is None:
        return None
    sent = [0]

    def count(**_: Any) -> None:
        sent[0] += 1

    events.register("before-send.dynamodb", count)
    return lambda: sent[0]


def requests_sent(adapter: Adapter) -> int | None:
    """How many requests ``adapter``'s store has sent, if it counts them."""
    counter = getattr(adapter, "requests", None)
    return None if counter is None else int(counter())


class RedisPyAdapter:
    """redis-py's own ``redis.lock.Lock`` (default ``sleep=0.1``, or a shorter poll)."""

    def __init__(self, url: str, sleep: float = 0.1, name: str = "redis-py Lock") -> None:
        self.name = name
        self.client = _client(url)
        self.sleep = sleep

    def acquire(self, key: str) -> Any:
        lock = self.client.lock(key, timeout=30, sleep=self.sleep, blocking_timeout=WAIT_LIMIT)
        if not lock.acquire():
            raise TimeoutError(key)
        return lock

    def release(self, handle: Any) -> None:
        handle.release()


class PythonRedisLockAdapter:
    """python-redis-lock (whole-second expiries; waits on a BLPOP signal list)."""

    def __init__(self, url: str, name: str = "python-redis-lock") -> None:
        import redis_lock

        self.name = name
        self.client = _client(url)
        self._lock_class = redis_lock.Lock

    def acquire(self, key: str) -> Any:
        # Its wait may not outlast its expiry.
        lock = self._lock_class(self.client, key, expire=max(60, WAIT_LIMIT))
        if not lock.acquire(blocking=True, timeout=WAIT_LIMIT):
            raise TimeoutError(key)
        return lock

    def release(self, handle: Any) -> None:
        handle.release()


class PotteryAdapter:
    """pottery's ``Redlock`` on one master (polls with a random delay up to 0.2 s)."""

    def __init__(self, url: str, name: str = "pottery Redlock") -> None:
        from pottery import Redlock

        self.name = name
        self.client = _client(url)
        self._lock_class = Redlock

    def acquire(self, key: str) -> Any:
        lock = self._lock_class(key=key, masters={self.client}, auto_release_time=30)
        if not lock.acquire(blocking=True, timeout=WAIT_LIMIT):
            raise TimeoutError(key)
        return lock

    def release(self, handle: Any) -> None:
        handle.release()


BARGING = 0.012
"""The barging window remotelock's second Redis row runs with (seconds)."""

# remotelock on each store; the value says which store URL it needs.
REMOTELOCK_KINDS = {
    "remotelock": ("redis", "remotelock (Redis)"),
    "remotelock-barging": ("redis-barging", f"remotelock (Redis, barging={BARGING * 1000:g} ms)"),
    "remotelock-postgres": ("postgres", "remotelock (PostgreSQL)"),
    "remotelock-postgres-polling": ("postgres-polling", "remotelock (PostgreSQL, polling only)"),
    "remotelock-sqlite": ("sqlite", "remotelock (SQLite)"),
    "remotelock-dynamodb": ("dynamodb", "remotelock (DynamoDB Local)"),
}
PEERS = ("redis-py", "redis-py-1ms", "python-redis-lock", "pottery")
ALL = (*REMOTELOCK_KINDS, *PEERS)


def store_of(kind: str) -> str:
    """Which store an adapter runs on (the peers all run on Redis)."""
    return REMOTELOCK_KINDS.get(kind, ("redis", ""))[0]


def make(kind: str, url: str, limit: int = 1) -> Adapter:
    """An adapter by name (the names used on the command line and in tables)."""
    if kind in REMOTELOCK_KINDS:
        return RemoteLockAdapter(url, REMOTELOCK_KINDS[kind][1], limit)
    if kind == "redis-py":
        return RedisPyAdapter(url)
    if kind == "redis-py-1ms":
        return RedisPyAdapter(url, sleep=0.001, name="redis-py Lock, sleep=1ms")
    if kind == "python-redis-lock":
        return PythonRedisLockAdapter(url)
    if kind == "pottery":
        return PotteryAdapter(url)
    raise ValueError(f"unknown adapter {kind!r}")


def name_of(kind: str) -> str:
    """The table name of an adapter, without building it."""
    if kind in REMOTELOCK_KINDS:
        return REMOTELOCK_KINDS[kind][1]
    return {
        "redis-py": "redis-py Lock",
        "redis-py-1ms": "redis-py Lock, sleep=1ms",
        "python-redis-lock": "python-redis-lock",
        "pottery": "pottery Redlock",
    }[kind]


__all__ = [
    "ALL",
    "PEERS",
    "REMOTELOCK_KINDS",
    "Adapter",
    "make",
    "name_of",
    "request_counter",
    "requests_sent",
    "store_of",
]
