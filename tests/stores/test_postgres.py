"""PostgresStore on a real PostgreSQL: table, URLs, wake-ups, timeouts, failures."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
import tenacity
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from remotelock import (
    RemoteLock,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    config,
    remote_locked,
)
from remotelock.stores import AsyncPostgresStore, PostgresStore, store_from_url
from remotelock.stores.postgres.schema import fences_of
from remotelock.stores.postgres.sql import RELEASED_MARGIN, permits_table
from tests.faults.proxy import FaultProxy
from tests.helpers.crossproc import (
    ROOT,
    assert_exclusive,
    kill_holder_and_take_over,
    pause_holder_past_its_ttl,
    run_counter,
)
from tests.helpers.outage import stop_server_while_waiting
from tests.servers.postgres import PostgresServer
from tests.servers.redis import free_port

pytestmark = pytest.mark.postgres

# A waiter that is not woken sleeps this long: finishing far sooner proves a wake-up.
NEVER = 30


def fresh_table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


class Target(NamedTuple):
    """Where a test keeps its locks: the session server and a table of its own."""

    server: str
    table: str

    @property
    def url(self) -> str:
        return f"{self.server}?table={self.table}"


@pytest.fixture
def target(postgres_server: PostgresServer) -> Target:
    return Target(postgres_server.url, fresh_table())


def acquire_patiently(store: Any, key: str) -> float:
    """Take ``key`` with a 30 s pause between attempts; the seconds it took."""
    started = time.monotonic()
    lock = RemoteLock(
        key,
        store=store,
        ttl=30,
        wait=tenacity.wait_fixed(NEVER),
        stop=tenacity.stop_after_delay(60),
    )
    lock.acquire().release()
    return time.monotonic() - started


def listening(store: PostgresStore, key: str) -> None:
    """Wait until the store's listener is active (the first wait starts it)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        store.wait(key, 0.01)
        run = store._listener.run
        if run is not None and run.ready:
            return
    raise AssertionError("the listener did not start within 10 s")


def release_later(store: Any, key: str, token: str, delay: float = 0.3) -> threading.Timer:
    timer = threading.Timer(delay, store.release, args=(key, token))
    timer.start()
    return timer


# -- URLs and options -------------------------------------------------------------------


def test_url_options_and_overrides(postgres_server: PostgresServer) -> None:
    store = store_from_url(
        f"{postgres_server.url}?table=jobs&schema=locks&timeout=2.5&pool_size=3"
        "&listen=false&application_name=mine"
    )
    assert isinstance(store, PostgresStore)
    assert (store.table, store.schema, store.timeout) == ("jobs", "locks", 2.5)
    assert (store.pool_size, store.listen) == (3, False)
    params = conninfo_to_dict(store._source.dsn)  # type: ignore[union-attr]
    assert params["application_name"] == "mine"
    assert params["connect_timeout"] == "3"
    assert "statement_timeout=2500" in str(params["options"])
    assert "lock_timeout=2500" in str(params["options"])
    overridden = PostgresStore.from_url(
        f"{postgres_server.url}?timeout=2.5&connect_timeout=9", timeout=1, connect_timeout=7
    )
    assert overridden.timeout == 1
    assert conninfo_to_dict(overridden._source.dsn)["connect_timeout"] == "7"  # type: ignore[union-attr]


def test_postgres_scheme_and_remotelock_url(
    postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = postgres_server.url.replace("postgresql://", "postgres://")
    monkeypatch.setenv(config.URL_VARIABLE, f"{server}?table={fresh_table()}")
    store = config.resolve_store()
    assert isinstance(store, PostgresStore)
    with RemoteLock("k") as lease:
        assert store.owner("k") == lease.token


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("table=bad-name", "table"),
        ("schema=1x", "schema"),
        ("timeout=soon", "timeout"),
        ("timeout=0", "timeout"),
        ("pool_size=0", "pool_size"),
        ("listen=maybe", "listen"),
        ("colour=blue", "colour"),
    ],
)
def test_bad_urls(query: str, match: str) -> None:
    with pytest.raises(StoreConfigError, match=match):
        store_from_url(f"postgresql://localhost/db?{query}")


def test_a_store_needs_exactly_one_source() -> None:
    with pytest.raises(StoreConfigError, match="exactly one"):
        PostgresStore()
    with pytest.raises(StoreConfigError, match="psycopg"):
        PostgresStore(object())


def test_building_from_a_url_does_not_connect() -> None:
    started = time.monotonic()
    store = PostgresStore.from_url(f"postgresql://127.0.0.1:{free_port()}/x?timeout=1")
    assert time.monotonic() - started < 1  # cheap: nothing happens before first use
    with pytest.raises(StoreUnavailable) as caught:
        store.acquire("k", "t", 5)
    assert isinstance(caught.value.__cause__, psycopg.OperationalError)
    assert time.monotonic() - started < 10


# -- the table ---------------------------------------------------------------------------------


def test_table_layout_and_fences_kept_by_the_row(
    postgres_server: PostgresServer, admin: psycopg.Connection[Any]
) -> None:
    table = fresh_table()
    store = PostgresStore.from_url(f"{postgres_server.url}?table={table}")
    assert store.acquire("k", "a", 30) == 1
    columns = admin.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    assert columns == [
        ("key", "text"),
        ("token", "text"),
        ("fence", "bigint"),
        ("expires_at", "timestamp with time zone"),
        ("released_by", "text"),
        ("readers", "jsonb"),  # shared leases live in the lock's row (stores.readers)
        ("readers_released", "jsonb"),
        ("writer_mark", "timestamp with time zone"),
    ]
    assert store.release("k", "a") is True
    query = sql.SQL("SELECT token, fence, released_by FROM {}").format(sql.Identifier(table))
    assert admin.execute(query).fetchall() == [(None, 1, "a")]  # the row and its fence stay
    assert store.acquire("k", "b", 30) == 2
    store.close()


def test_schema_option(postgres_server: PostgresServer, admin: psycopg.Connection[Any]) -> None:
    schema = f"s_{uuid.uuid4().hex[:8]}"
    store = PostgresStore.from_url(f"{postgres_server.url}?schema={schema}&table=locks")
    assert repr(store) == f"PostgresStore(table='{schema}.locks')"
    assert store.acquire("k", "a", 30) == 1
    found = admin.execute("SELECT to_regclass(%s)::text", (f"{schema}.locks",)).fetchone()
    assert found == (f"{schema}.locks",)
    assert [info.key for info in store.iter_locks()] == ["k"]
    store.close()


def test_an_existing_table_needs_no_create_privilege(
    target: Target, admin: psycopg.Connection[Any]
) -> None:
    PostgresStore.from_url(target.url).acquire("made-by-a-migration", "t", 1)
    role = f"app_{uuid.uuid4().hex[:8]}"
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    for grant in ("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}", "GRANT USAGE ON {} TO {}"):
        relation = target.table if "DELETE" in grant else fences_of(target.table)
        admin.execute(sql.SQL(grant).format(sql.Identifier(relation), sql.Identifier(role)))
    as_app = target.server.replace("postgres@", f"{role}@")
    store = PostgresStore.from_url(f"{as_app}?table={target.table}")
    assert store.acquire("k", "a", 30) is not None
    assert store.release("k", "a") is True
    other = PostgresStore.from_url(f"{as_app}?table={fresh_table()}")
    with pytest.raises(StoreError, match="permission denied") as caught:
        other.acquire("k", "a", 30)  # creating a table does need the privilege
    assert not isinstance(caught.value, StoreUnavailable)
    store.close()
    other.close()


@pytest.mark.slow
def test_many_processes_creating_the_table_at_once(
    postgres_server: PostgresServer, admin: psycopg.Connection[Any]
) -> None:
    table = fresh_table()
    script = (
        "import sys\n"
        "from remotelock.stores import store_from_url\n"
        "store = store_from_url(sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "print(store.acquire('shared', sys.argv[2], 30), store.acquire(sys.argv[2], 't', 30))\n"
    )
    args = [sys.executable, "-c", script, f"{postgres_server.url}?table={table}"]
    pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    procs = [subprocess.Popen([*args, f"p{n}"], cwd=ROOT, **pipes) for n in range(10)]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
    for proc in procs:  # all at once: every process finds the table missing
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    results = [proc.communicate(timeout=60)[0].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert sum(shared != "None" for shared, _ in results) == 1  # one winner
    assert len({int(own) for _, own in results}) == 10  # one table, one sequence: all differ
    tables = admin.execute("SELECT count(*) FROM pg_tables WHERE tablename = %s", (table,))
    assert tables.fetchone() == (1,)


# -- wake-ups ------------------------------------------------------------------------------------


def test_a_release_elsewhere_wakes_the_waiter(target: Target) -> None:
    holder, waiter = PostgresStore.from_url(target.url), PostgresStore.from_url(target.url)
    assert holder.acquire("k", "h", 60) is not None
    listening(waiter, "k")
    timer = release_later(holder, "k", "h")
    started = time.monotonic()
    waiter.wait("k", NEVER)  # one wait: only a notification can end it early
    assert time.monotonic() - started < NEVER / 3
    assert holder.owner("k") is None
    timer.join()
    holder.close()
    waiter.close()


def test_long_keys_are_woken_too(target: Target) -> None:
    key = "long:" + "x" * 3000  # over the payload limit: notified by digest
    holder, waiter = PostgresStore.from_url(target.url), PostgresStore.from_url(target.url)
    assert holder.acquire(key, "h", 60) is not None
    listening(waiter, key)
    timer = release_later(holder, key, "h")
    started = time.monotonic()
    waiter.wait(key, NEVER)
    assert time.monotonic() - started < NEVER / 3
    timer.join()
    holder.close()
    waiter.close()


def test_a_wait_ends_with_the_holders_lease(target: Target) -> None:
    holder, waiter = PostgresStore.from_url(target.url), PostgresStore.from_url(target.url)
    assert holder.acquire("k", "crashed", 0.5) is not None  # never released
    assert acquire_patiently(waiter, "k") < NEVER / 3
    holder.close()
    waiter.close()


def test_without_listen_waiters_poll(target: Target) -> None:
    store = PostgresStore.from_url(target.url, listen=False)
    assert store.acquire("k", "h", 60) is not None
    timer = release_later(store, "k", "h")
    assert acquire_patiently(store, "k") < NEVER / 3
    timer.join()
    store.close()


def test_an_unreachable_listener_never_blocks_waiters(
    target: Target, caplog: pytest.LogCaptureFixture
) -> None:
    store = PostgresStore.from_url(
        target.url, listen_url=f"postgresql://127.0.0.1:{free_port()}/x"
    )
    assert store.acquire("k", "h", 60) is not None
    with caplog.at_level(logging.DEBUG, logger="remotelock.stores.postgres"):
        timer = release_later(store, "k", "h")
        assert acquire_patiently(store, "k") < NEVER / 3  # polling still finds it free
        timer.join()
    assert any("listener lost its connection" in r.getMessage() for r in caplog.records)
    store.close()


# -- connections passed in ------------------------------------------------------------------------


@pytest.mark.parametrize("autocommit", [True, False])
def test_a_connection_passed_in(target: Target, autocommit: bool) -> None:
    conn = psycopg.connect(target.server, autocommit=autocommit)
    table = target.table
    store = PostgresStore(conn, table=table, timeout=4)
    other = PostgresStore.from_url(target.url)
    with RemoteLock("k", store=store) as lease:
        assert other.owner("k") == lease.token  # committed, visible elsewhere
    assert other.acquire("k", "o", 60) is not None
    listening(store, "k")  # its listener found the server from the connection's settings
    timer = release_later(other, "k", "o")
    assert acquire_patiently(store, "k") < NEVER / 3
    timer.join()
    with conn.cursor() as cursor:
        assert cursor.execute("SHOW statement_timeout").fetchone() == ("4s",)
    store.close()
    other.close()
    assert not conn.closed  # the caller's connection stays the caller's
    conn.close()


def test_a_pool_passed_in(target: Target) -> None:
    from psycopg_pool import ConnectionPool

    table = target.table
    with ConnectionPool(target.server, min_size=1, max_size=2, open=True) as pool:
        store = PostgresStore(pool, table=table)
        with RemoteLock("k", store=store) as lease:
            assert store.owner("k") == lease.token
        assert [info.key for info in store.iter_locks()] == []
        store.close()


# -- timeouts and failures ---------------------------------------------------------------------


@pytest.mark.parametrize("given", [False, True], ids=["url", "given-connection"])
def test_a_row_lock_held_elsewhere_is_busy_not_unavailable(
    target: Target, admin: psycopg.Connection[Any], given: bool
) -> None:
    conn = psycopg.connect(target.server) if given else None  # not autocommit
    if conn is not None:
        store = PostgresStore(conn, table=target.table, timeout=0.5)
    else:
        store = PostgresStore.from_url(target.url, timeout=0.5)
    assert store.acquire("k", "a", 30) is not None
    assert store.release("k", "a") is True
    table = sql.Identifier(target.table)
    with admin.transaction():  # another session holds the row lock
        admin.execute(sql.SQL("SELECT 1 FROM {} WHERE key = 'k' FOR UPDATE").format(table))
        started = time.monotonic()
        assert store.acquire("k", "b", 30) is None  # the key looks free but is being taken
        assert time.monotonic() - started < 10
    assert store.acquire("k", "b", 30) is not None  # the same store works once it is free
    store.close()
    if conn is not None:
        conn.close()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (psycopg.OperationalError("connection refused"), StoreUnavailable),
        (psycopg.errors.QueryCanceled("statement timeout"), StoreUnavailable),
        (psycopg.InterfaceError("the connection is closed"), StoreUnavailable),
        (psycopg.errors.InsufficientPrivilege("permission denied"), StoreError),
    ],
)
def test_driver_errors_become_store_errors(
    monkeypatch: pytest.MonkeyPatch, error: Exception, expected: type[Exception]
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(psycopg, "connect", broken)
    store = PostgresStore.from_url("postgresql://localhost/db")
    with pytest.raises(expected) as caught:
        store.acquire("k", "t", 5)
    assert caught.value.__cause__ is error
    if expected is StoreError:
        assert not isinstance(caught.value, StoreUnavailable)


def test_a_dropped_table_is_a_store_error(target: Target, admin: psycopg.Connection[Any]) -> None:
    store = PostgresStore.from_url(target.url)
    store.acquire("k", "t", 5)
    admin.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(target.table)))
    with pytest.raises(StoreError) as caught:
        store.acquire("k", "t", 5)
    assert isinstance(caught.value.__cause__, psycopg.errors.UndefinedTable)
    store.close()


def test_frozen_server_gives_store_unavailable_not_a_hang(
    private_postgres: PostgresServer,
) -> None:
    store = PostgresStore.from_url(private_postgres.url, timeout=1)
    store.acquire("warm", "t", 5)
    private_postgres.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no reply"):
            store.acquire("k", "t", 5)
        assert time.monotonic() - started < 1 + 2 + 5  # timeout + guard grace, not forever
    finally:
        private_postgres.thaw()
    assert store.acquire("k", "t", 5) is not None  # a fresh connection once it answers
    store.close()


def test_server_stopped_while_waiting_then_restarted(private_postgres: PostgresServer) -> None:
    store = PostgresStore.from_url(private_postgres.url, timeout=2)
    assert stop_server_while_waiting(store, private_postgres) < 15  # not the 30 s stop
    store.close()


def test_a_dropped_store_is_collected(target: Target) -> None:
    import gc
    import weakref

    store = PostgresStore.from_url(target.url)
    store.acquire("k", "h", 30)
    listening(store, "k")  # a running listener thread must not keep the store alive
    ref = weakref.ref(store)
    del store
    gc.collect()
    assert ref() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_store_keeps_working_after_fork(target: Target) -> None:
    store = PostgresStore.from_url(target.url)
    assert store.acquire("parent", "p", 30) is not None
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # child: must open its own connections, never reuse the parent's
        try:
            ok = store.acquire("child", "c", 30) is not None and store.owner("parent") == "p"
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    assert store.owner("child") == "c"  # the parent's idle connection survived the child
    store.close()


# -- across processes ----------------------------------------------------------------------------


@pytest.mark.slow
def test_paused_holder_loses_the_lock_and_fencing_tells_them_apart(target: Target) -> None:
    store = PostgresStore.from_url(target.url)
    successor = pause_holder_past_its_ttl(target.url, store)
    assert store.owner("k") == successor.token  # the new holder still holds it
    successor.release()
    store.close()


@pytest.mark.slow
def test_killed_holder_frees_the_lock_within_its_ttl(target: Target) -> None:
    store = PostgresStore.from_url(target.url)
    assert kill_holder_and_take_over(target.url, store, ttl=2.0) <= 2.0 + 1
    store.close()


@pytest.mark.slow
def test_counter_across_processes_on_postgres(target: Target, tmp_path: Path) -> None:
    final, sections = run_counter(target.url, "counter", tmp_path, processes=8, count=200)
    assert final == 1600
    assert_exclusive(sections)


# -- asyncio ---------------------------------------------------------------------------------


async def test_native_async_twin(postgres_store: PostgresStore) -> None:
    import asyncio

    twin = postgres_store.as_async()
    assert isinstance(twin, AsyncPostgresStore)
    assert postgres_store.as_async() is twin

    @remote_locked("k", store=postgres_store, ttl=5)
    async def work(*, fencing_token: int | None = None) -> int | None:
        await asyncio.sleep(0.01)
        return fencing_token

    results = await asyncio.gather(*(work() for _ in range(5)))
    assert sorted(results) == sorted(set(results))  # type: ignore[type-var]
    await twin.aclose()


async def test_an_async_connection_passed_in(target: Target) -> None:
    import asyncio

    conn = await psycopg.AsyncConnection.connect(target.server, autocommit=True)
    store = AsyncPostgresStore(conn, table=target.table)
    other = PostgresStore.from_url(target.url)
    try:
        assert other.acquire("k", "o", 60) is not None
        deadline = time.monotonic() + 10
        while not store._listener.ready():  # the first wait starts the listener task
            assert time.monotonic() < deadline
            await store.wait("k", 0.01)
        asyncio.get_running_loop().call_later(0.3, other.release, "k", "o")
        started = time.monotonic()
        async with RemoteLock("k", store=store, wait=tenacity.wait_fixed(NEVER)) as lease:
            assert time.monotonic() - started < NEVER / 3  # woken by the notification
            assert other.owner("k") == lease.token
    finally:
        await store.aclose()
        other.close()
        await conn.close()


async def test_an_async_pool_passed_in(target: Target) -> None:
    from psycopg_pool import AsyncConnectionPool

    async with AsyncConnectionPool(target.server, min_size=1, max_size=2, open=False) as pool:
        store = AsyncPostgresStore(pool, table=target.table)
        async with RemoteLock("k", store=store) as lease:
            assert await store.owner("k") == lease.token
        assert [info async for info in store.iter_locks()] == []
        assert await store.force_release("k") is False
        await store.aclose()


# -- repeated releases: a retry after a lost reply is not a loss ------------------------------


def test_a_repeated_release_by_the_releasing_token_is_true(target: Target) -> None:
    store = PostgresStore.from_url(target.url)
    assert store.acquire("k", "a", 30) == 1
    assert store.release("k", "a") is True
    assert store.release("k", "a") is True  # what a retry after a lost reply does
    assert store.acquire("k", "b", 30) == 2
    assert store.release("k", "a") is True  # still a's own release; it changes nothing
    assert store.owner("k") == "b"
    assert store.release("k", "c") is False
    assert store.release("k", "b") is True
    assert store.release("k", "a") is False  # the key's last release is b's now
    assert store.release("k", "b") is True
    store.close()


def test_a_lease_that_was_lost_still_releases_false(target: Target) -> None:
    store = PostgresStore.from_url(target.url)
    assert store.acquire("k", "a", 0.2) == 1
    time.sleep(0.4)
    assert store.release("k", "a") is False  # expired, though no one took the key
    assert store.acquire("k", "b", 30) == 2
    assert store.release("k", "a") is False  # taken over
    assert store.release("k", "b") is True
    assert store.release("k", "a") is False  # the successor released it, not a
    assert store.acquire("k", "c", 30) == 3
    assert store.force_release("k") is True
    assert store.release("k", "c") is False  # force-released
    assert store.acquire("k", "d", 30) == 4
    assert store.release("k", "d") is True
    assert store.acquire("k", "d", 0.2) == 5  # the same token again: its release is history
    time.sleep(0.4)
    assert store.release("k", "d") is False
    store.close()


def test_a_repeated_permit_release_by_the_releasing_token_is_true(target: Target) -> None:
    store = PostgresStore.from_url(target.url)
    assert store.acquire_permit("p", "a", 30, 2) == 1
    assert store.acquire_permit("p", "b", 30, 2) == 2
    assert store.release_permit("p", "a") is True
    assert store.release_permit("p", "a") is True
    assert store.permit_holders("p") == ["b"]
    assert store.release_permit("p", "z") is False
    assert store.acquire_permit("p", "c", 0.2, 2) == 3
    time.sleep(0.4)
    assert store.release_permit("p", "c") is False  # ran out: never given back
    assert store.acquire_permit("p", "a", 0.2, 2) == 4  # the same token again
    time.sleep(0.4)
    assert store.release_permit("p", "a") is False
    assert store.release_permit("p", "b") is True
    store.close()


def test_the_record_of_permit_releases_is_bounded(
    target: Target, admin: psycopg.Connection[Any]
) -> None:
    store = PostgresStore.from_url(target.url)
    tokens = [f"t{n}" for n in range(RELEASED_MARGIN + 2)]  # limit 1: keeps 1 + margin
    for token in tokens:
        assert store.acquire_permit("p", token, 30, 1) is not None
        assert store.release_permit("p", token) is True
    assert store.release_permit("p", tokens[0]) is False  # fell off the record
    assert store.release_permit("p", tokens[1]) is True
    query = sql.SQL("SELECT released FROM {}").format(sql.Identifier(permits_table(target.table)))
    assert admin.execute(query).fetchone() == (tokens[1:],)
    store.close()


async def test_repeated_async_releases_are_true(target: Target) -> None:
    store = AsyncPostgresStore.from_url(target.url)
    assert await store.acquire("k", "a", 30) == 1
    assert await store.release("k", "a") is True
    assert await store.release("k", "a") is True
    assert await store.acquire_permit("p", "a", 30, 1) == 1
    assert await store.release_permit("p", "a") is True
    assert await store.release_permit("p", "a") is True
    await store.aclose()


def test_a_table_made_by_an_older_version_is_upgraded(
    target: Target, admin: psycopg.Connection[Any]
) -> None:
    locks, permits = sql.Identifier(target.table), sql.Identifier(permits_table(target.table))
    for statement in (  # the layout before released_by and released, in use
        "CREATE TABLE {} (key text PRIMARY KEY, token text, fence bigint NOT NULL,"
        " expires_at timestamptz NOT NULL)",
        "CREATE TABLE {} (key text PRIMARY KEY, lim integer NOT NULL, fence bigint NOT NULL,"
        " holders jsonb NOT NULL)",
        "INSERT INTO {} VALUES ('k', 'old', 5, now() + interval '1 hour')",
        "INSERT INTO {} VALUES ('p', 2, 3, jsonb_build_object("
        "'old', jsonb_build_array(3, extract(epoch FROM now()) + 3600)))",
    ):
        table = permits if "lim" in statement or "'p'" in statement else locks
        admin.execute(sql.SQL(statement).format(table))
    store = PostgresStore.from_url(target.url)
    assert store.owner("k") == "old"  # the held lock survived the upgrade
    assert store.release("k", "old") is True
    assert store.release("k", "old") is True
    assert store.acquire("k", "new", 30) == 6
    assert store.release_permit("p", "old") is True
    assert store.release_permit("p", "old") is True
    assert store.acquire_permit("p", "new", 30, 2) == 4
    store.close()
    again = PostgresStore.from_url(target.url)  # an upgraded table is used as it is
    assert again.owner("k") == "new"
    again.close()


# The reply to a release lost on the wire: the release ran and committed, the client's
# connection was reset instead of answered, and the store retried on a new connection.
RELEASE_MARKER = b"pg_notify"  # in the release statements only (of those these tests run)


def test_a_release_whose_reply_was_lost_returns_true(
    postgres_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    url = f"{postgres_proxy.url(postgres_server.url)}?table={fresh_table()}"
    store = PostgresStore.from_url(url)
    assert store.acquire("k", "a", 30) == 1
    postgres_proxy.drop_reply_to(RELEASE_MARKER)
    assert store.release("k", "a") is True
    assert postgres_proxy.replies_dropped == 1
    assert store.owner("k") is None
    assert store.acquire_permit("p", "a", 30, 2) == 1
    postgres_proxy.drop_reply_to(RELEASE_MARKER)
    assert store.release_permit("p", "a") is True
    assert postgres_proxy.replies_dropped == 2
    assert store.permit_holders("p") == []
    store.close()


def test_a_lost_release_reply_is_not_a_lost_lock(
    postgres_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    url = f"{postgres_proxy.url(postgres_server.url)}?table={fresh_table()}"
    store = PostgresStore.from_url(url)
    with RemoteLock("k", store=store) as lease:  # leaving it raises LockLost if lost
        postgres_proxy.drop_reply_to(RELEASE_MARKER)
    assert postgres_proxy.replies_dropped == 1
    assert not lease.lost
    with RemoteLock("k", store=store, limit=2):
        postgres_proxy.drop_reply_to(RELEASE_MARKER)
    assert postgres_proxy.replies_dropped == 2
    store.close()


async def test_a_lost_async_release_reply_is_not_a_lost_lock(
    postgres_proxy: FaultProxy, postgres_server: PostgresServer
) -> None:
    url = f"{postgres_proxy.url(postgres_server.url)}?table={fresh_table()}"
    store = AsyncPostgresStore.from_url(url)
    async with RemoteLock("k", store=store) as lease:
        postgres_proxy.drop_reply_to(RELEASE_MARKER)
    assert postgres_proxy.replies_dropped == 1
    assert not lease.lost
    assert await store.owner("k") is None
    await store.aclose()
