"""PostgresStore leaves no row behind but held locks, and short-lived release records.

A released (or expired) key's row stays for the store's ``retention`` (it remembers
the key's last fencing token and who released it: a retried release still returns
True), then the acquires and releases of other keys delete it, a few rows each.
Fencing tokens come from the table's sequence, so they keep rising once a row is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from remotelock import RemoteLock, StoreConfigError
from remotelock.stores import AsyncPostgresStore, PostgresStore
from remotelock.stores.postgres.schema import expiry_of, fences_of
from remotelock.stores.postgres.sql import SWEEP_BATCH, permits_table
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.postgres

N = 2000  # distinct keys (the benchmark's scenario (g) takes 100,000)
RETENTION = 1.0  # the shortest the store allows


def rising(fences: list[int | None]) -> bool:
    """Whether every acquire got a fencing token, each larger than the one before."""
    pairs = itertools.pairwise(fences)
    return all(a is not None and b is not None and a < b for a, b in pairs)


@pytest.fixture
def store(postgres_server: PostgresServer, table: str) -> Iterator[PostgresStore]:
    store = PostgresStore.from_url(f"{postgres_server.url}?table={table}", retention=RETENTION)
    yield store
    store.close()


def rows(admin: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    """(key, token, held now) of every row, by key."""
    query = sql.SQL("SELECT key, token, expires_at > now() FROM {} ORDER BY key")
    return admin.execute(query.format(sql.Identifier(table))).fetchall()


def permit_rows(admin: psycopg.Connection[Any], table: str) -> list[str]:
    query = sql.SQL("SELECT key FROM {} ORDER BY key")
    return [r[0] for r in admin.execute(query.format(sql.Identifier(permits_table(table))))]


def sweep(store: PostgresStore, count: int, permits: bool = False) -> None:
    """``count`` acquire + release cycles of one key: each sweeps rows of other keys."""
    for _ in range(count):
        if permits:
            assert store.acquire_permit("sweeper", "s", 30, 5) is not None
            assert store.release_permit("sweeper", "s") is True
        else:
            assert store.acquire("sweeper", "s", 30) is not None
            assert store.release("sweeper", "s") is True


def cycles_for(rows: int) -> int:
    return rows // (2 * SWEEP_BATCH) + 2  # an acquire and a release each delete a batch


# -- no rows but held locks ---------------------------------------------------------------------


def test_many_keys_locked_once_leave_no_rows_once_the_retention_passed(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire("held", "h", 60) is not None
    for n in range(N):
        assert store.acquire(f"job:{n}", "t", 30) is not None
        assert store.release(f"job:{n}", "t") is True
    left = rows(admin, table)
    assert len(left) <= N + 1  # the release records, for the retention
    assert all(token is None and not held for key, token, held in left if key != "held")
    time.sleep(RETENTION + 0.2)
    sweep(store, cycles_for(N))
    assert rows(admin, table) == [("held", "h", True), ("sweeper", None, False)]
    time.sleep(RETENTION + 0.2)
    assert store.release("held", "h") is True  # sweeps the sweeper's record
    assert rows(admin, table) == [("held", None, False)]


def test_many_keys_with_a_limit_leave_no_rows_once_the_retention_passed(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire_permit("held", "h", 60, 5) is not None
    for n in range(N):
        for mine in ("a", "b", "c"):
            assert store.acquire_permit(f"job:{n}", mine, 30, 5) is not None
        assert store.extend_permit(f"job:{n}", "a", 30) is True
        for mine in ("a", "b", "c"):
            assert store.release_permit(f"job:{n}", mine) is True
    assert len(permit_rows(admin, table)) <= N + 1
    time.sleep(RETENTION + 0.2)
    sweep(store, cycles_for(N), permits=True)
    assert permit_rows(admin, table) == ["held", "sweeper"]
    assert store.permit_holders("held") == ["h"]  # a held permit's row stays


def test_expired_rows_of_keys_no_one_takes_again_go_too(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    for n in range(50):
        assert store.acquire(f"crashed:{n}", "t", 0.2) is not None
        assert store.acquire_permit(f"crashed:{n}", "t", 0.2, 2) is not None
    time.sleep(0.2 + RETENTION + 0.2)
    sweep(store, cycles_for(50))
    sweep(store, cycles_for(50), permits=True)
    assert [key for key, _, _ in rows(admin, table)] == ["sweeper"]
    assert permit_rows(admin, table) == ["sweeper"]


def test_the_sweep_skips_rows_locked_elsewhere_and_never_waits(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire("old", "t", 30) is not None
    assert store.release("old", "t") is True
    time.sleep(RETENTION + 0.2)
    with admin.transaction():
        query = sql.SQL("SELECT 1 FROM {} WHERE key = 'old' FOR UPDATE")
        admin.execute(query.format(sql.Identifier(table)))
        started = time.monotonic()
        sweep(store, 2)
        assert time.monotonic() - started < 2  # the locked row was skipped, not waited for
    assert [key for key, _, _ in rows(admin, table)] == ["old", "sweeper"]
    sweep(store, 1)
    assert [key for key, _, _ in rows(admin, table)] == ["sweeper"]


# -- the idempotent release, and its end ------------------------------------------------------


def test_a_repeated_release_is_true_until_the_record_is_swept(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire("k", "a", 30) is not None
    assert store.release("k", "a") is True
    assert store.release("k", "a") is True  # a retry after a lost reply
    assert store.acquire_permit("p", "a", 30, 2) is not None
    assert store.release_permit("p", "a") is True
    assert store.release_permit("p", "a") is True
    time.sleep(RETENTION + 0.2)
    sweep(store, 1)
    sweep(store, 1, permits=True)
    assert "k" not in [key for key, _, _ in rows(admin, table)]
    assert "p" not in permit_rows(admin, table)
    assert store.release("k", "a") is False  # too late: the record is gone
    assert store.release_permit("p", "a") is False


# -- fencing tokens rise without the row --------------------------------------------------------


def test_fences_rise_across_release_expiry_and_the_rows_removal(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    fences = [store.acquire("k", "a", 30)]
    assert store.release("k", "a") is True
    fences.append(store.acquire("k", "b", 0.2))  # on the release record
    time.sleep(0.2 + RETENTION + 0.2)
    sweep(store, 1)  # the expired row goes
    assert "k" not in [key for key, _, _ in rows(admin, table)]
    fences.append(store.acquire("k", "c", 30))  # a new row
    delete = sql.SQL("DELETE FROM {} WHERE key = 'k'").format(sql.Identifier(table))
    admin.execute(delete)  # the row removed by hand
    fences.append(store.acquire("k", "d", 30))
    assert rising(fences), fences


def test_permit_fences_rise_across_the_rows_removal(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    fences = [store.acquire_permit("p", "a", 30, 2), store.acquire_permit("p", "b", 30, 2)]
    assert store.release_permit("p", "a") is True
    assert store.release_permit("p", "b") is True
    time.sleep(RETENTION + 0.2)
    sweep(store, 1, permits=True)
    assert "p" not in permit_rows(admin, table)
    fences.append(store.acquire_permit("p", "c", 30, 2))
    delete = sql.SQL("DELETE FROM {}").format(sql.Identifier(permits_table(table)))
    admin.execute(delete)
    fences.append(store.acquire_permit("p", "d", 30, 2))
    assert rising(fences), fences


async def test_the_async_store_sweeps_too(
    postgres_server: PostgresServer, admin: psycopg.Connection[Any], table: str
) -> None:
    store = AsyncPostgresStore.from_url(f"{postgres_server.url}?table={table}&retention=1")
    for n in range(20):
        async with RemoteLock(f"job:{n}", store=store, ttl=30):
            pass
    await asyncio.sleep(RETENTION + 0.2)
    async with RemoteLock("last", store=store, ttl=30):
        pass
    assert [key for key, _, _ in rows(admin, table)] == ["last"]
    await store.aclose()


# -- layout and options ---------------------------------------------------------------------------


def test_a_table_of_the_previous_layout_gets_its_sequences_and_indexes(
    postgres_server: PostgresServer, admin: psycopg.Connection[Any], table: str
) -> None:
    locks, permits = sql.Identifier(table), sql.Identifier(permits_table(table))
    for statement, target in (  # the layout before the sequences, in use
        (
            "CREATE TABLE {} (key text PRIMARY KEY, token text, fence bigint NOT NULL,"
            " expires_at timestamptz NOT NULL, released_by text)",
            locks,
        ),
        (
            "CREATE TABLE {} (key text PRIMARY KEY, lim integer NOT NULL, fence bigint NOT"
            " NULL, holders jsonb NOT NULL, released jsonb NOT NULL DEFAULT '[]'::jsonb)",
            permits,
        ),
        ("INSERT INTO {} VALUES ('old', NULL, 41, now() - interval '1 day', 'x')", locks),
        ("INSERT INTO {} VALUES ('held', 'h', 7, now() + interval '1 hour', NULL)", locks),
        ("INSERT INTO {} VALUES ('p', 2, 9, '{{}}'::jsonb, '[]'::jsonb)", permits),
    ):
        admin.execute(sql.SQL(statement).format(target))
    store = PostgresStore.from_url(f"{postgres_server.url}?table={table}&retention=1")
    assert store.owner("held") == "h"
    assert store.acquire("new", "t", 30) == 42  # after the largest fence in the table
    assert store.acquire_permit("p", "t", 30, 2) == 10
    names = admin.execute(
        "SELECT relname FROM pg_class WHERE relname IN (%s, %s, %s, %s) ORDER BY relname",
        (fences_of(table), fences_of(permits_table(table)), expiry_of(table),
         expiry_of(permits_table(table))),
    ).fetchall()  # fmt: skip
    assert len(names) == 4
    assert store.release("new", "t") is True  # sweeps the old release record
    assert [key for key, _, _ in rows(admin, table)] == ["held", "new"]
    store.close()


def test_retention_from_the_url_and_keywords(postgres_server: PostgresServer) -> None:
    assert PostgresStore.from_url(postgres_server.url).retention == 60
    assert PostgresStore.from_url(f"{postgres_server.url}?timeout=40").retention == 80
    assert PostgresStore.from_url(f"{postgres_server.url}?retention=5").retention == 5
    assert PostgresStore.from_url(postgres_server.url, retention=7).retention == 7


@pytest.mark.parametrize("value", ["abc", "0.5", "-1", "1e9"])
def test_a_bad_retention_is_refused(postgres_server: PostgresServer, value: str) -> None:
    with pytest.raises(StoreConfigError, match="retention"):
        PostgresStore.from_url(f"{postgres_server.url}?retention={value}")
