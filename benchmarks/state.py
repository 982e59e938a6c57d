"""Scenario (g): what a lock library leaves in its store after many distinct keys.

Each key is locked once and released, as jobs named by an id do. A store that keeps
something per key ever used grows without end; remotelock keeps only what expires
(Redis) or what a later statement deletes once its retention passed (PostgreSQL),
and SQLite keeps nothing. Each run gets a namespace of its own (a key prefix, a
table, a file), so the counts are exactly what the run left.
"""

from __future__ import annotations

import math
import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks.adapters import make, name_of, store_of

KEYS = 100_000
PERMIT_KEYS = 20_000
LIMIT = 5
PG_RETENTION = 5.0
"""The PostgreSQL store's retention in this scenario (its default is 60 s), so that
the run can show the rows going without a minute of idling."""


@dataclass
class StateLeft:
    name: str
    keys: int
    left: int
    """Keys (Redis) or rows (SQL) left right after the last release."""
    without_expiry: int | None
    """Redis keys without a TTL (they stay until deleted by hand); None: not Redis."""
    size: int | None
    """Bytes: MEMORY USAGE summed (Redis), the tables' total size (PostgreSQL), the
    file's pages in use (SQLite)."""
    later: str
    """What happens to what is left."""


def _with(url: str, **options: str) -> str:
    query = "&".join(f"{name}={value}" for name, value in options.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _cycles(adapter: Any, prefix: str, count: int) -> None:
    for n in range(count):
        adapter.release(adapter.acquire(f"{prefix}:{n}"))


def _redis_keys(url: str, match: str) -> tuple[int, int, int, int]:
    """(keys, keys without a TTL, MEMORY USAGE summed, the longest PTTL in ms)."""
    with redis.Redis.from_url(url) as client:
        names = list(client.scan_iter(match=match, count=1000))
        ttls: list[int] = []
        size = 0
        for start in range(0, len(names), 10_000):
            pipe = client.pipeline(transaction=False)
            for name in names[start : start + 10_000]:
                pipe.pttl(name)
                pipe.memory_usage(name, samples=0)
            replies = pipe.execute()
            ttls += replies[0::2]
            size += sum(reply or 0 for reply in replies[1::2])
    return len(names), sum(ttl < 0 for ttl in ttls), size, max(ttls, default=0)


def _postgres_rows(url: str, table: str) -> tuple[int, int]:
    """(rows of both tables, their total size in bytes with indexes and sequences)."""
    import psycopg

    from remotelock.stores.postgres.schema import fences_of, permits_table

    names = [table, permits_table(table)]
    with psycopg.connect(url, autocommit=True) as conn:
        rows = 0
        for name in names:
            found = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
            if found and found[0] is not None:
                counted = conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()
                rows += int(counted[0]) if counted else 0
        size = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(to_regclass(n))), 0)::bigint"
            " FROM unnest(%s::text[]) AS n",
            ([*names, *map(fences_of, names)],),
        ).fetchone()
    return rows, int(size[0]) if size else 0


def _sqlite_rows(path: str, table: str) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        rows = sum(
            conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            for name in (table, f"{table}_permits")
        )
        pages, free, page = (
            conn.execute(f"PRAGMA {pragma}").fetchone()[0]
            for pragma in ("page_count", "freelist_count", "page_size")
        )
    return rows, (pages - free) * page


def _days(ms: int) -> str:
    seconds = ms / 1000
    return f"{seconds / 86400:.2f} d" if seconds >= 3600 else f"{seconds:.0f} s"


def state_left(url: str, kind: str, keys: int, limit: int = 1) -> StateLeft:
    """Lock ``keys`` distinct keys once each with ``kind`` on ``url``, and look at what
    stayed behind."""
    store = store_of(kind)
    tag = uuid.uuid4().hex[:10]
    name = name_of(kind) + (f", limit={limit}" if limit > 1 else "")
    if kind.startswith("remotelock") and store == "redis":
        prefix = f"bench-g-{tag}"
        _cycles(make(kind, _with(url, prefix=prefix), limit), "job", keys)
        left, bare, size, longest = _redis_keys(url, f"{prefix}:*")
        later = f"all expire within {_days(longest)}" if left else "-"
        return StateLeft(name, keys, left, bare, size, later)
    if store == "redis":  # a peer: its keys are the lock keys themselves
        prefix = f"bench:g:{tag}"
        _cycles(make(kind, url, limit), prefix, keys)
        left, bare, size, _ = _redis_keys(url, f"{prefix}:*")
        return StateLeft(name, keys, left, bare, size, "-")
    if store == "postgres":
        table = f"bench_g_{tag}"
        adapter = make(kind, _with(url, table=table, retention=str(PG_RETENTION)), limit)
        _cycles(adapter, "job", keys)
        left, size = _postgres_rows(url, table)
        time.sleep(PG_RETENTION + 0.5)
        more = math.ceil(left / 32) + 2  # an acquire and a release delete 16 rows each
        for _ in range(more):
            adapter.release(adapter.acquire("next"))
        after, _ = _postgres_rows(url, table)
        later = f"{after} after the retention ({PG_RETENTION:g} s) and {more} cycles"
        return StateLeft(name, keys, left, None, size, later)
    path = url.removeprefix("sqlite:///").split("?")[0].replace(".db", f"-g-{tag}.db")
    _cycles(make(kind, f"sqlite:///{path}", limit), "job", keys)
    left, size = _sqlite_rows(path, "remotelock_locks")
    return StateLeft(name, keys, left, None, size, "-")


__all__ = ["KEYS", "LIMIT", "PERMIT_KEYS", "PG_RETENTION", "StateLeft", "state_left"]
