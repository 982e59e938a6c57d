"""A PostgreSQL store's own connections: a crowd of acquires never makes a holder's
release or renewal queue behind it (one connection is kept for them), and a step
waits for a connection for as long as other steps keep giving them back, failing
only when none came back within ``timeout`` (the steps holding them are stuck)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from remotelock.errors import StoreUnavailable
from remotelock.stores.postgres.aio import AsyncPostgresStore
from remotelock.stores.postgres.busy import MAINTENANCE, SlotCount
from remotelock.stores.postgres.connections import Slots
from remotelock.stores.postgres.connections_aio import AsyncSlots
from remotelock.stores.postgres.store import PostgresStore
from tests.servers.postgres import PostgresServer

# -- the rule, free of I/O ------------------------------------------------------------


def test_one_connection_is_kept_for_the_steps_that_hold_leases() -> None:
    count: SlotCount[str] = SlotCount(3)
    assert count.take_now(urgent=False)
    assert count.take_now(urgent=False)
    assert not count.take_now(urgent=False)  # the third is kept back
    assert count.take_now(urgent=True)
    assert not count.take_now(urgent=True)
    count.queue(False, "acquire")
    count.queue(True, "release")
    assert count.give() == "release"  # maintenance first
    assert count.give() is None  # two lent: the acquire may not have the kept one
    assert count.give() == "acquire"
    assert count.lent == 2
    assert count.gives == 3
    assert {
        "release",
        "extend",
        "release_permit",
        "extend_permit",
        "release_shared",
        "extend_shared",
    } == MAINTENANCE


def test_a_single_connection_serves_everyone() -> None:
    count: SlotCount[str] = SlotCount(1)
    assert count.take_now(urgent=False)
    count.queue(True, "release")
    count.queue(False, "acquire")
    assert count.give() == "release"
    assert count.give() == "acquire"


# -- the drivers ------------------------------------------------------------------------


def test_a_thread_waits_as_long_as_connections_come_back() -> None:
    slots = Slots(1, timeout=1.0)
    slots.take(urgent=False)
    got: list[int] = []

    def step(n: int) -> None:
        slots.take(urgent=False)
        got.append(n)
        threading.Event().wait(0.6)  # the step's work: each wait is longer than...
        slots.give()

    threads = [threading.Thread(target=step, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    threading.Event().wait(0.6)
    slots.give()
    for thread in threads:
        thread.join(30)
    assert sorted(got) == [0, 1, 2]  # ...than the timeout for the last one: 1.8 s in all


def test_a_thread_gives_up_when_no_connection_comes_back() -> None:
    slots = Slots(1, timeout=0.2)
    slots.take(urgent=True)
    with pytest.raises(psycopg.OperationalError, match="none given back"):
        slots.take(urgent=True)
    assert not any(slots.count.queues)
    slots.give()
    slots.take(urgent=False)  # nothing left behind by the one that gave up


def test_a_task_waits_as_long_as_connections_come_back() -> None:
    async def main() -> list[int]:
        slots = AsyncSlots(1, timeout=1.0)
        await slots.take(urgent=False)
        got: list[int] = []

        async def step(n: int) -> None:
            await slots.take(urgent=False)
            got.append(n)
            await asyncio.sleep(0.6)
            slots.give()

        tasks = [asyncio.create_task(step(n)) for n in range(3)]
        await asyncio.sleep(0.6)
        slots.give()
        await asyncio.gather(*tasks)
        return got

    assert sorted(asyncio.run(main())) == [0, 1, 2]


def test_a_task_gives_up_when_no_connection_comes_back_and_a_cancelled_one_passes_on() -> None:
    async def main() -> None:
        slots = AsyncSlots(1, timeout=0.2)
        await slots.take(urgent=True)
        with pytest.raises(psycopg.OperationalError, match="none given back"):
            await slots.take(urgent=True)
        assert not any(slots.count.queues)
        first = asyncio.create_task(slots.take(urgent=False))
        second = asyncio.create_task(slots.take(urgent=False))
        await asyncio.sleep(0.05)
        slots.give()  # handed to the first...
        first.cancel()  # ...which is cancelled before it runs: the slot goes on
        await asyncio.wait_for(second, 5)
        assert slots.count.lent == 1

    asyncio.run(main())


# -- on a server --------------------------------------------------------------------------


@pytest.fixture
def table(postgres_server: PostgresServer) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}, {name}_permits")


@pytest.mark.postgres
def test_a_release_goes_past_acquires_that_wait_for_a_connection(
    postgres_server: PostgresServer, table: str
) -> None:
    store = PostgresStore.from_url(f"{postgres_server.url}?table={table}&pool_size=3&timeout=1")
    fence = store.acquire("k", "holder", 30)
    assert fence is not None
    source = store._source
    held = [source.take(), source.take()]  # the acquires' share: every one of it in use
    tried: list[int | None] = []
    crowd = threading.Thread(target=lambda: tried.append(store.acquire("other", "t", 30)))
    crowd.start()
    crowd.join(0.3)
    assert crowd.is_alive()  # waiting for a connection...
    assert store.release("k", "holder")  # ...while the release has the kept one
    assert store.extend("other", "nobody", 30) is False  # and so does a renewal
    assert crowd.is_alive()
    for conn in held:
        source.give(conn, ok=True)
    crowd.join(30)
    assert tried == [tried[0]]
    assert tried[0] is not None
    held = [source.take(), source.take(), source.take(urgent=True)]
    try:
        with pytest.raises(StoreUnavailable, match="none given back"):  # still bounded
            store.release("other", "t")
    finally:
        for conn in held:
            source.give(conn, ok=True)


@pytest.mark.postgres
def test_an_async_release_goes_past_acquires_that_wait_for_a_connection(
    postgres_server: PostgresServer, table: str
) -> None:
    async def main() -> None:
        store = AsyncPostgresStore.from_url(
            f"{postgres_server.url}?table={table}&pool_size=2&timeout=1"
        )
        assert await store.acquire("k", "holder", 30) is not None
        held = await store._source.take()
        crowd = asyncio.create_task(store.acquire("other", "t", 30))
        await asyncio.sleep(0.2)
        assert not crowd.done()
        assert await store.release("k", "holder")
        assert not crowd.done()
        await store._source.give(held, ok=True)
        assert await asyncio.wait_for(crowd, 30) is not None
        await store.aclose()

    asyncio.run(main())
