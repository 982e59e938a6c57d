"""Contention on PostgreSQL is "busy", never an error: a busy acquire takes no row lock,
and a short lock wait that runs out reports the key busy instead of raising.

Row locks held by a separate connection stand in for the other sessions: the key's
row locked while another token holds the key (a busy acquire must not even wait), or
while it looks free (an acquire that may win waits briefly, then says busy).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from remotelock.stores import AsyncPostgresStore, PostgresStore
from remotelock.stores.postgres.sql import permits_table
from tests.helpers.crossproc import ROOT, assert_exclusive
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.postgres

TIMEOUT = 4.0  # each step's bound: a wait for a row lock that lasted this long fails the test


@pytest.fixture
def table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(postgres_server: PostgresServer, table: str) -> Iterator[PostgresStore]:
    store = PostgresStore.from_url(f"{postgres_server.url}?table={table}", timeout=TIMEOUT)
    yield store
    store.close()


def lock_row(admin: psycopg.Connection[Any], table: str, key: str) -> None:
    """Take the row lock of ``key`` in ``admin``'s open transaction (held until it ends)."""
    query = sql.SQL("SELECT 1 FROM {} WHERE key = %s FOR UPDATE").format(sql.Identifier(table))
    assert admin.execute(query, (key,)).fetchone() == (1,)


# -- locks ---------------------------------------------------------------------------------


def test_a_busy_acquire_takes_no_row_lock(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire("k", "holder", 60) == 1
    with admin.transaction():
        lock_row(admin, table, "k")  # someone is extending or releasing the lease right now
        started = time.monotonic()
        assert store.acquire("k", "other", 60) is None
        assert time.monotonic() - started < TIMEOUT / 2  # it never queued for the row
    assert store.owner("k") == "holder"


async def test_a_busy_async_acquire_takes_no_row_lock(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    twin = store.as_async()
    assert isinstance(twin, AsyncPostgresStore)
    assert await twin.acquire("k", "holder", 60) == 1
    with admin.transaction():
        lock_row(admin, table, "k")
        started = time.monotonic()
        assert await twin.acquire("k", "other", 60) is None
        assert time.monotonic() - started < TIMEOUT / 2
    await twin.aclose()


def test_a_free_looking_row_locked_elsewhere_is_busy_not_an_error(
    store: PostgresStore,
    admin: psycopg.Connection[Any],
    table: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert store.acquire("k", "a", 60) == 1
    assert store.release("k", "a") is True
    caplog.set_level(logging.DEBUG, logger="remotelock.stores.postgres")
    with admin.transaction():
        lock_row(admin, table, "k")  # another session is taking the free key
        started = time.monotonic()
        assert store.acquire("k", "b", 60) is None
        assert time.monotonic() - started < TIMEOUT  # the short lock wait, not the timeout
    assert any("busy" in record.getMessage() for record in caplog.records)
    assert store.owner("k") is None  # the busy try changed nothing
    assert (store.acquire("k", "b", 60) or 0) > 1  # a larger fence (the try may use one up)


def test_a_key_being_inserted_elsewhere_is_busy_not_an_error(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    store.owner("k")  # creates the table
    insert = sql.SQL(
        "INSERT INTO {} (key, token, fence, expires_at) VALUES ('new', 'x', 7, now() + '1h')"
    ).format(sql.Identifier(table))
    with admin.transaction():  # the first acquire of a key, not yet committed
        admin.execute(insert)
        started = time.monotonic()
        assert store.acquire("new", "b", 60) is None
        assert time.monotonic() - started < TIMEOUT
    assert store.owner("new") == "x"


async def test_an_async_acquire_of_a_row_locked_elsewhere_is_busy(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    twin: Any = store.as_async()
    assert await twin.acquire("k", "a", 60) == 1
    assert await twin.release("k", "a") is True
    with admin.transaction():
        lock_row(admin, table, "k")
        started = time.monotonic()
        assert await twin.acquire("k", "b", 60) is None
        assert time.monotonic() - started < TIMEOUT
    assert (await twin.acquire("k", "b", 60) or 0) > 1
    await twin.aclose()


def test_a_given_connection_outside_autocommit_stays_usable(
    postgres_server: PostgresServer, admin: psycopg.Connection[Any], table: str
) -> None:
    with psycopg.connect(postgres_server.url) as conn:  # not autocommit
        store = PostgresStore(conn, table=table, timeout=TIMEOUT)
        assert store.acquire("k", "a", 60) == 1
        assert store.release("k", "a") is True
        with admin.transaction():
            lock_row(admin, table, "k")
            assert store.acquire("k", "b", 60) is None
        assert (store.acquire("k", "b", 60) or 0) > 1  # the failed statement was rolled back
        store.close()


# -- counted permits ------------------------------------------------------------------------


def test_a_busy_permit_acquire_takes_no_row_lock(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire_permit("p", "a", 60, 2) == 1
    assert store.acquire_permit("p", "b", 60, 2) == 2
    with admin.transaction():
        lock_row(admin, permits_table(table), "p")
        started = time.monotonic()
        assert store.acquire_permit("p", "c", 60, 2) is None  # all taken
        assert time.monotonic() - started < TIMEOUT / 2
    assert sorted(store.permit_holders("p")) == ["a", "b"]


async def test_a_busy_async_permit_acquire_takes_no_row_lock(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    twin: Any = store.as_async()
    assert await twin.acquire_permit("p", "a", 60, 1) == 1
    with admin.transaction():
        lock_row(admin, permits_table(table), "p")
        started = time.monotonic()
        assert await twin.acquire_permit("p", "c", 60, 1) is None
        assert time.monotonic() - started < TIMEOUT / 2
    await twin.aclose()


def test_a_free_looking_permit_row_locked_elsewhere_is_busy_not_an_error(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire_permit("p", "a", 60, 2) == 1
    with admin.transaction():
        lock_row(admin, permits_table(table), "p")  # someone is taking the free permit
        started = time.monotonic()
        assert store.acquire_permit("p", "b", 60, 2) is None
        assert time.monotonic() - started < TIMEOUT
    assert (store.acquire_permit("p", "b", 60, 2) or 0) > 1


async def test_an_async_permit_acquire_of_a_row_locked_elsewhere_is_busy(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    twin: Any = store.as_async()
    assert await twin.acquire_permit("p", "a", 60, 2) == 1
    with admin.transaction():
        lock_row(admin, permits_table(table), "p")
        started = time.monotonic()
        assert await twin.acquire_permit("p", "b", 60, 2) is None
        assert time.monotonic() - started < TIMEOUT
    assert (await twin.acquire_permit("p", "b", 60, 2) or 0) > 1
    await twin.aclose()


# -- many processes ---------------------------------------------------------------------------

PROCESSES = 32
SECONDS = 8.0
COMMIT = 0.01  # seconds each acquire statement takes, as with a real disk's commit


def slow_commits(admin: psycopg.Connection[Any], table: str) -> None:
    """Make every INSERT statement on ``table`` (every acquire, busy or not) take
    ``COMMIT`` seconds longer, holding whatever row lock it took meanwhile: what a
    flush to a real disk or a synchronous standby does (the test server runs with
    fsync off, so its commits take no time and row locks are released at once)."""
    name = sql.Identifier(f"{table}_slow")
    admin.execute(
        sql.SQL(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql"
            " AS $$ BEGIN PERFORM pg_sleep({}); RETURN NULL; END $$"
        ).format(name, sql.Literal(COMMIT))
    )
    admin.execute(
        sql.SQL(
            "CREATE TRIGGER slow AFTER INSERT ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(table), name)
    )


@pytest.mark.slow
def test_many_processes_contending_see_busy_never_an_error(
    store: PostgresStore,
    admin: psycopg.Connection[Any],
    postgres_server: PostgresServer,
    table: str,
) -> None:
    """Every process cycles acquire/release on one key with a 0.2 s step timeout, so
    that busy acquires queueing on the row lock would soon run out of time: no step
    may fail, no release may find its lease lost, no two critical sections overlap."""
    store.owner("hot")  # creates the table
    slow_commits(admin, table)
    url = f"{postgres_server.url}?table={table}&timeout=0.2"
    argv = [sys.executable, "-m", "tests.helpers.contender", "--url", url, "--key", "hot"]
    argv += ["--processes", str(PROCESSES), "--seconds", str(SECONDS)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    errors = report["errors"]
    assert errors == [], f"{len(errors)} errors, e.g. {errors[:3]}"
    assert report["lost"] == 0
    assert len(report["sections"]) >= 10  # the key did change hands, many times
    assert_exclusive(report["sections"])
