"""PostgresStore's shared (reader) leases: their row, their fences, their wake-ups.

A key's readers and a waiting writer's mark live in the key's lease row (columns
``readers``, ``readers_released``, ``writer_mark``), so every step stays one statement.
These tests check what the contract cannot see: the row goes a retention after the
last reader (or the mark), fences rise across both kinds once the row is gone, one
NOTIFY wakes a writer and every waiting reader, and busy steps take no row lock.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from psycopg import sql

from remotelock.stores import AsyncPostgresStore, PostgresStore
from remotelock.stores.postgres.busy import MAINTENANCE
from remotelock.stores.postgres.sql import RELEASED_MARGIN, channel
from remotelock.stores.postgres.waiting import PASS_ON, Waiters
from remotelock.stores.readers import WRITER_GRACE
from tests.faults.proxy import FaultProxy
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.postgres

RETENTION = 1.0  # the shortest the store allows
TIMEOUT = 4.0  # each step's bound: a wait for a row lock that lasted this long fails
NEVER = 30.0  # a waiter that is not woken sleeps this long


@pytest.fixture
def store(postgres_server: PostgresServer, table: str) -> Iterator[PostgresStore]:
    url = f"{postgres_server.url}?table={table}"
    store = PostgresStore.from_url(url, retention=RETENTION, timeout=TIMEOUT)
    yield store
    store.close()


def row(admin: psycopg.Connection[Any], table: str, key: str) -> dict[str, Any] | None:
    """The key's row: its columns, plus whether `expires_at` is ahead and by how much."""
    query = sql.SQL(
        "SELECT token, fence, readers, readers_released, writer_mark, expires_at > now(),"
        " EXTRACT(EPOCH FROM expires_at - now())::float8 FROM {} WHERE key = %s"
    ).format(sql.Identifier(table))
    found = admin.execute(query, (key,)).fetchone()
    if found is None:
        return None
    names = ("token", "fence", "readers", "released", "mark", "ahead", "left")
    return dict(zip(names, found, strict=True))


def sweep(store: PostgresStore) -> None:
    """Acquire and release another key a few times: each statement sweeps old rows."""
    for _ in range(3):
        assert store.acquire("sweeper", "s", 30) is not None
        assert store.release("sweeper", "s") is True


def lock_row(admin: psycopg.Connection[Any], table: str, key: str) -> None:
    """Take the row lock of ``key`` in ``admin``'s open transaction (held until it ends)."""
    query = sql.SQL("SELECT 1 FROM {} WHERE key = %s FOR UPDATE").format(sql.Identifier(table))
    assert admin.execute(query, (key,)).fetchone() == (1,)


# -- the row: nothing stays ----------------------------------------------------------------


def test_released_readers_leave_their_row_for_the_retention_only(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    for token in ("a", "b"):
        assert store.acquire_shared("k", token, 30) is not None
    assert store.release_shared("k", "a") is True
    assert (row(admin, table, "k") or {})["ahead"] is True  # b still holds it
    assert store.release_shared("k", "b") is True
    left = row(admin, table, "k")
    assert left is not None
    assert (left["token"], left["readers"], left["mark"]) == (None, None, None)
    assert left["ahead"] is False
    assert left["released"] == ["a", "b"]  # for a retry after a lost reply
    assert store.release_shared("k", "b") is True
    time.sleep(RETENTION + 0.2)
    sweep(store)
    assert row(admin, table, "k") is None
    assert store.release_shared("k", "b") is False  # the record went with the row


def test_readers_that_run_out_leave_no_row(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire_shared("k", "a", 0.2) is not None
    time.sleep(0.2 + RETENTION + 0.2)
    sweep(store)
    assert row(admin, table, "k") is None
    assert store.release_shared("k", "a") is False


def test_a_live_mark_keeps_its_row_and_a_lapsed_one_goes_with_it(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire_shared("k", "long", 30) is not None
    assert store.acquire_shared("k", "short", 0.3) is not None
    assert store.acquire("k", "writer", 30) is None  # marks the key until long's end + grace
    mark = (row(admin, table, "k") or {})["mark"]
    assert mark is not None
    assert store.release_shared("k", "long") is True  # `expires_at` drops to short's end
    time.sleep(0.3 + RETENTION + 0.2)  # short ran out a retention ago
    sweep(store)
    kept = row(admin, table, "k")
    assert kept is not None
    assert kept["mark"] == mark  # the mark still holds readers back
    assert store.acquire_shared("k", "late", 30) is None
    lapse = sql.SQL("UPDATE {} SET writer_mark = now() - interval '1 s' WHERE key = 'k'")
    admin.execute(lapse.format(sql.Identifier(table)))  # as if 30 s had passed
    sweep(store)
    assert row(admin, table, "k") is None


def test_the_release_record_stays_bounded(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire_shared("k", "stays", 30) is not None
    for n in range(RELEASED_MARGIN + 20):
        assert store.acquire_shared("k", f"r{n}", 30) is not None
        assert store.release_shared("k", f"r{n}") is True
    released = (row(admin, table, "k") or {})["released"]
    assert len(released) <= 2 + RELEASED_MARGIN
    assert released[-1] == f"r{RELEASED_MARGIN + 19}"


def test_expires_at_follows_the_last_reader(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire_shared("k", "long", 30) is not None
    assert store.acquire_shared("k", "short", 5) is not None
    assert 29 < (row(admin, table, "k") or {})["left"] <= 30
    assert store.release_shared("k", "long") is True
    assert 4 < (row(admin, table, "k") or {})["left"] <= 5
    assert store.extend_shared("k", "short", 2) is True  # shorter: the row follows it
    assert 1 < (row(admin, table, "k") or {})["left"] <= 2
    assert store.acquire_shared("k", "short", 0.5) is not None  # a retry: same rule
    assert 0 < (row(admin, table, "k") or {})["left"] <= 0.5
    started = time.monotonic()
    store.wait("k", NEVER)  # a writer's wait ends with the readers' leases
    assert time.monotonic() - started < 0.5 + 2


# -- fences -----------------------------------------------------------------------------------


def test_fences_rise_across_both_kinds_once_the_row_is_gone(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    first = store.acquire_shared("k", "r1", 30)
    assert store.release_shared("k", "r1") is True
    time.sleep(RETENTION + 0.2)
    sweep(store)
    assert row(admin, table, "k") is None
    second = store.acquire("k", "w1", 30)
    assert store.release("k", "w1") is True
    drop = sql.SQL("DELETE FROM {} WHERE key = 'k'").format(sql.Identifier(table))
    admin.execute(drop)  # gone by hand too
    third = store.acquire_shared("k", "r2", 30)
    fourth = store.acquire_shared("k", "r3", 30)
    assert store.acquire_shared("k", "r2", 30) == third  # a reader's retry keeps its fence
    for token in ("r2", "r3"):
        assert store.release_shared("k", token) is True
    fifth = store.acquire("k", "w2", 30)
    fences = [fence or 0 for fence in (first, second, third, fourth, fifth)]
    assert 0 not in fences
    assert fences == sorted(set(fences)), fences


# -- wake-ups -----------------------------------------------------------------------------------


def notifications(conn: psycopg.Connection[Any], seconds: float) -> list[str]:
    return [note.payload for note in conn.notifies(timeout=seconds)]


def test_only_the_last_readers_release_notifies(
    store: PostgresStore, postgres_server: PostgresServer, table: str
) -> None:
    with psycopg.connect(postgres_server.url, autocommit=True) as listening:
        listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel(None, table))))
        for token in ("a", "b"):
            assert store.acquire_shared("k", token, 30) is not None
        assert store.acquire("k", "writer", 30) is None
        assert store.release_shared("k", "a") is True
        assert notifications(listening, 0.3) == []
        assert store.release_shared("k", "b") is True
        assert notifications(listening, 0.5) == ["k"]
        assert store.extend_shared("k", "b", 30) is False  # released: nothing to renew


def test_a_notification_wakes_one_writer_and_every_reader() -> None:
    waiters: Waiters[str] = Waiters()
    for wake in ("w1", "w2"):
        waiters.add("k", wake)
    for wake in ("r1", "r2"):
        waiters.add("k", wake, every=True)
    woken: set[str] = set()
    first = waiters.notified("k", 0.0, woken.__contains__)
    assert first == ["w1", "r1", "r2"]
    woken |= set(first)
    waiters.tried("k")  # the writer used its wake-up (a reader's try never does)
    assert waiters.overdue(PASS_ON, woken.__contains__) == []
    for wake in ("w1", "r1", "r2"):
        waiters.discard("k", wake)
    assert waiters.of("k") == ["w2"]
    assert waiters.notified("k", 1.0, woken.__contains__) == ["w2"]
    waiters.discard("k", "w2")
    assert not waiters


def test_one_release_wakes_a_waiting_writer_and_every_waiting_reader(
    store: PostgresStore,
) -> None:
    assert store.acquire("k", "holder", 60) is not None
    store.wait("k", 0.05)  # start the listener: every wait below listens
    with ThreadPoolExecutor(4) as pool:
        started = time.monotonic()
        waits = [pool.submit(store.wait_shared, "k", NEVER) for _ in range(3)]
        waits.append(pool.submit(store.wait, "k", NEVER))
        time.sleep(0.3)
        assert store.release("k", "holder") is True
        for waited in waits:
            waited.result(timeout=NEVER + 5)
    assert time.monotonic() - started < 5


async def test_async_readers_all_wake_on_the_writers_release(
    store: PostgresStore,
) -> None:
    twin = store.as_async()
    assert isinstance(twin, AsyncPostgresStore)
    assert await twin.acquire("k", "holder", 60) is not None
    await twin.wait("k", 0.05)
    started = time.monotonic()
    waits = [asyncio.ensure_future(twin.wait_shared("k", NEVER)) for _ in range(3)]
    await asyncio.sleep(0.3)
    assert await twin.release("k", "holder") is True
    await asyncio.wait_for(asyncio.gather(*waits), NEVER + 5)
    assert time.monotonic() - started < 5
    assert [await twin.acquire_shared("k", f"r{n}", 30) is not None for n in range(3)] == [
        True
    ] * 3
    await twin.aclose()


def test_a_reader_waits_out_a_writers_mark(store: PostgresStore) -> None:
    assert store.acquire_shared("k", "reader", 0.3) is not None
    assert store.acquire("k", "writer", 30) is None  # and never comes back
    started = time.monotonic()
    store.wait_shared("k", NEVER)  # until the reader's end + grace
    waited = time.monotonic() - started
    assert 0.3 + WRITER_GRACE - 0.3 < waited < 0.3 + WRITER_GRACE + 2
    assert store.acquire_shared("k", "late", 30) is not None


def test_force_release_drops_readers_and_mark(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire_shared("k", "reader", 30) is not None
    assert store.acquire("k", "writer", 30) is None
    assert store.force_release("k") is False  # no exclusive lease was there
    assert store.shared_holders("k") == []
    assert store.release_shared("k", "reader") is False  # it never gave its lease back
    gone = row(admin, table, "k")
    assert gone is not None
    assert (gone["readers"], gone["mark"]) == (None, None)
    assert store.acquire_shared("k", "late", 30) is not None  # no mark holds it back
    assert store.release_shared("k", "late") is True
    assert store.acquire("k", "writer", 30) is not None
    assert store.force_release("k") is True


# -- contention ---------------------------------------------------------------------------------


def test_refused_steps_take_no_row_lock(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire_shared("k", "reader", 30) is not None
    assert store.acquire("k", "writer", 30) is None  # sets the mark (takes the row once)
    with admin.transaction():
        lock_row(admin, table, "k")  # a reader is renewing right now
        started = time.monotonic()
        assert store.acquire("k", "writer", 30) is None  # the mark covers it: no wait
        assert store.acquire_shared("k", "late", 30) is None  # refused by the mark
        assert time.monotonic() - started < TIMEOUT / 2
    assert store.release_shared("k", "reader") is True
    assert store.acquire("k", "writer", 30) is not None
    with admin.transaction():
        lock_row(admin, table, "k")
        started = time.monotonic()
        assert store.acquire_shared("k", "late", 30) is None  # the writer holds it
        assert time.monotonic() - started < TIMEOUT / 2


def test_a_reader_that_may_enter_a_row_locked_elsewhere_is_busy_not_an_error(
    store: PostgresStore, admin: psycopg.Connection[Any], table: str
) -> None:
    assert store.acquire_shared("k", "first", 30) is not None
    with admin.transaction():
        lock_row(admin, table, "k")
        started = time.monotonic()
        assert store.acquire_shared("k", "second", 30) is None  # the short lock wait
        assert time.monotonic() - started < TIMEOUT
    assert store.acquire_shared("k", "second", 30) is not None
    assert {"release_shared", "extend_shared"} <= MAINTENANCE  # the kept connection's


def test_a_lost_release_shared_reply_is_not_a_lost_lease(
    postgres_proxy: FaultProxy, postgres_server: PostgresServer, table: str
) -> None:
    store = PostgresStore.from_url(f"{postgres_proxy.url(postgres_server.url)}?table={table}")
    assert store.acquire_shared("k", "a", 30) is not None
    assert store.acquire_shared("k", "b", 30) is not None
    postgres_proxy.drop_reply_to(b"jsonb_path_query_array")  # in RELEASE_SHARED only
    assert store.release_shared("k", "a") is True  # ran, reply lost, retried: True
    assert postgres_proxy.replies_dropped == 1
    assert store.shared_holders("k") == ["b"]
    store.close()


# -- layout ---------------------------------------------------------------------------------


def test_a_table_of_the_previous_layout_gets_the_reader_columns(
    postgres_server: PostgresServer, admin: psycopg.Connection[Any], table: str
) -> None:
    admin.execute(
        sql.SQL(
            "CREATE TABLE {} (key text PRIMARY KEY, token text, fence bigint NOT NULL,"
            " expires_at timestamptz NOT NULL, released_by text)"
        ).format(sql.Identifier(table))
    )
    admin.execute(
        sql.SQL("INSERT INTO {} VALUES ('k', 'old', 7, now() + interval '1 hour', NULL)").format(
            sql.Identifier(table)
        )
    )
    store = PostgresStore.from_url(f"{postgres_server.url}?table={table}")
    assert store.owner("k") == "old"  # the held lock survived the upgrade
    assert store.acquire_shared("k", "reader", 30) is None
    assert store.release("k", "old") is True
    assert (store.acquire_shared("k", "reader", 30) or 0) > 7
    columns = {
        name
        for (name,) in admin.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s", (table,)
        )
    }
    assert {"readers", "readers_released", "writer_mark"} <= columns
    store.close()


def test_racing_readers_and_writers_never_mix_and_never_fail(
    postgres_server: PostgresServer, table: str
) -> None:
    """Threads taking two keys as readers or writers for a few seconds: every step
    answers (busy is an answer), and no writer ever shares a key."""
    url = f"{postgres_server.url}?table={table}"
    store = PostgresStore.from_url(url, pool_size=8, timeout=TIMEOUT)
    mutex = threading.Lock()
    held: dict[tuple[str, str], int] = {}
    overlaps: list[str] = []
    taken = {"exclusive": 0, "shared": 0}

    def take(key: str, kind: str, other: str) -> None:
        with mutex:  # counted after the acquire committed, uncounted before the release
            if held.get((key, other)) or (kind == "exclusive" and held.get((key, kind))):
                overlaps.append(f"{kind} {key} while {held}")
            held[key, kind] = held.get((key, kind), 0) + 1
            taken[kind] += 1

    def leave(key: str, kind: str) -> None:
        with mutex:
            held[key, kind] -= 1

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        end = time.monotonic() + 3
        while time.monotonic() < end:
            key, token = f"k{rnd.randrange(2)}", uuid.uuid4().hex
            if rnd.random() < 0.3:
                if store.acquire(key, token, 10) is None:
                    store.wait(key, 0.05)
                    continue
                take(key, "exclusive", "shared")
                leave(key, "exclusive")
                assert store.release(key, token) is True
            else:
                if store.acquire_shared(key, token, 10) is None:
                    store.wait_shared(key, 0.05)
                    continue
                take(key, "shared", "exclusive")
                time.sleep(rnd.random() * 0.003)
                leave(key, "shared")
                assert store.release_shared(key, token) is True

    with ThreadPoolExecutor(8) as pool:
        for done in [pool.submit(work, seed) for seed in range(8)]:
            done.result()
    store.close()
    assert overlaps == []
    assert taken["exclusive"] > 0, taken
    assert taken["shared"] > 0, taken
