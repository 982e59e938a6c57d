"""DynamoDBStore's shared (reader) locks: the item they leave, its TTL, fences across
kinds, the writers' mark, crashed readers, the cost in requests, and waiting (DynamoDB
pushes nothing: the other side polls).

The rules themselves are checked by the contract (tests/contract/test_shared.py).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from remotelock.stores.dynamodb.aio import AsyncDynamoDBStore
from remotelock.stores.dynamodb.common import RETAIN, now_us
from remotelock.stores.dynamodb.reader_expressions import SLOTS
from remotelock.stores.dynamodb.store import DynamoDBStore
from remotelock.stores.readers import WRITER_GRACE
from tests.helpers.crossproc import assert_readers_writers, most_at_once, run_counter
from tests.servers.dynamodb import DynamoDBLocal

pytestmark = pytest.mark.dynamodb

TABLE = "remotelock_test"  # the dynamodb_store fixture's table; every test uses fresh keys


@pytest.fixture
def key() -> str:
    return f"rw:{uuid.uuid4().hex}"


@pytest.fixture
def client(dynamodb_server: DynamoDBLocal) -> Any:
    """A plain client, for looking at (and tampering with) items."""
    import boto3

    return boto3.session.Session().client(
        "dynamodb", region_name="us-east-1", endpoint_url=dynamodb_server.endpoint
    )


@pytest.fixture
def make(dynamodb_server: DynamoDBLocal) -> Iterator[Any]:
    """Stores with options of the test's own, on the shared table."""
    made: list[DynamoDBStore] = []

    def make(**options: object) -> DynamoDBStore:
        store = DynamoDBStore.from_url(dynamodb_server.url(TABLE, **options))
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def item(client: Any, key: str) -> dict[str, Any]:
    found = client.get_item(TableName=TABLE, Key={"pk": {"S": f"lock:{key}"}}, ConsistentRead=True)
    return found.get("Item", {})  # type: ignore[no-any-return]


def entries(found: dict[str, Any], name: str) -> dict[str, int]:
    return {token: int(value["N"]) for token, value in found.get(name, {}).get("M", {}).items()}


def writes(store: DynamoDBStore) -> list[str]:
    """The UpdateItem requests ``store`` sends from now on (refused ones included)."""
    sent: list[str] = []
    store.client.meta.events.register(
        "before-call.dynamodb.UpdateItem", lambda **_: sent.append("UpdateItem")
    )
    return sent


def rising(fences: list[int | None]) -> bool:
    return all(a is not None and b is not None and a < b for a, b in itertools.pairwise(fences))


# -- the item --------------------------------------------------------------------------------


def test_released_readers_leave_only_empty_maps_under_ttl(
    dynamodb_store: DynamoDBStore, client: Any, key: str
) -> None:
    store = dynamodb_store
    for round_ in range(3):
        tokens = [f"r{round_}-{n}" for n in range(3)]
        for token in tokens:
            assert store.acquire_shared(key, token, 30) is not None
        assert store.acquire(key, "w", 30) is None  # refused by readers: marks the key
        for token in tokens:
            assert store.release_shared(key, token) is True
        assert store.acquire(key, "w", 30) is not None  # drops the mark
        assert store.release(key, "w") is True
    found = item(client, key)
    assert entries(found, "readers") == {}
    assert entries(found, "rfences") == {}
    assert "mark" not in found
    assert "rend" not in found
    assert "token" not in found
    assert len(found["rgone"]["M"]) <= SLOTS
    # The TTL attribute is always there: DynamoDB deletes the item a day after it.
    assert int(found["expires"]["N"]) >= now_us() // 1_000_000 + RETAIN


def test_the_ttl_stays_past_every_readers_lease(
    dynamodb_store: DynamoDBStore, client: Any, key: str
) -> None:
    store = dynamodb_store
    assert store.acquire_shared(key, "long", 3600) is not None
    long_end = entries(item(client, key), "readers")["long"]
    assert store.acquire_shared(key, "short", 10) is not None  # leaves rend and the TTL
    assert store.extend_shared(key, "short", 20) is True
    assert store.release_shared(key, "long") is True
    found = item(client, key)
    assert int(found["rend"]["N"]) == long_end  # an upper bound, never lowered by a reader
    assert int(found["expires"]["N"]) >= long_end // 1_000_000 + RETAIN
    assert store.shared_holders(key) == ["short"]
    assert store.acquire(key, "w", 10) is None  # the short reader still holds it


def test_the_record_of_releasing_readers_is_bounded(
    dynamodb_store: DynamoDBStore, client: Any, key: str
) -> None:
    store = dynamodb_store
    tokens = [uuid.uuid4().hex for _ in range(5 * SLOTS)]
    for token in tokens:
        assert store.acquire_shared(key, token, 30) is not None
        assert store.release_shared(key, token) is True
        assert store.release_shared(key, token) is True  # a retry after a lost reply
    gone = item(client, key)["rgone"]["M"]
    assert len(gone) <= SLOTS
    assert all(len(record["SS"]) == 1 for record in gone.values())
    assert store.release_shared(key, tokens[-1]) is True  # the latest is remembered
    assert store.release_shared(key, "never-held") is False


def test_a_reader_that_takes_again_loses_its_release_record(
    dynamodb_store: DynamoDBStore, client: Any, key: str
) -> None:
    store = dynamodb_store
    assert store.acquire_shared(key, "r", 30) is not None
    assert store.release_shared(key, "r") is True
    assert store.acquire_shared(key, "r", 0.2) is not None  # the same token again
    time.sleep(0.4)
    assert store.release_shared(key, "r") is False  # this lease ran out: no stale True
    assert entries(item(client, key), "readers") == {}  # and its entry went
    assert store.release_shared(key, "r") is False


def test_crashed_readers_are_dropped(make: Any, client: Any, key: str) -> None:
    store = make(skew=0)
    for n in range(5):  # readers that die holding their leases
        assert store.acquire_shared(key, f"crashed{n}", 0.2) is not None
    assert store.acquire_shared(key, "live", 60) is not None
    time.sleep(0.4)
    # A key only readers use: the next reader's write sees the dead entries and drops them.
    assert store.acquire_shared(key, "next", 60) is not None
    found = item(client, key)
    assert sorted(entries(found, "readers")) == ["live", "next"]
    assert sorted(entries(found, "rfences")) == ["live", "next"]


def test_a_writer_is_not_held_back_by_crashed_readers(make: Any, client: Any, key: str) -> None:
    store = make(skew=0)
    assert store.acquire_shared(key, "long", 60) is not None
    assert store.acquire_shared(key, "crashed", 0.2) is not None
    assert store.release_shared(key, "long") is True  # rend still says 60 s from now
    time.sleep(0.4)
    sent = writes(store)
    assert store.acquire(key, "w", 30) is not None  # refused, drops the dead entry, takes
    assert len(sent) == 3
    assert entries(item(client, key), "readers") == {}


def test_fences_rise_across_kinds_after_ttl_deletes_the_item(
    dynamodb_store: DynamoDBStore, client: Any, key: str
) -> None:
    store = dynamodb_store
    fences: list[int | None] = []
    for round_ in range(6):
        token = f"t{round_}"
        if round_ % 2:
            fences.append(store.acquire(key, token, 30))
            assert store.release(key, token) is True
        else:
            fences.append(store.acquire_shared(key, token, 30))
            assert store.release_shared(key, token) is True
        if round_ % 3 == 2:  # as DynamoDB's TTL would, a day later
            client.delete_item(TableName=TABLE, Key={"pk": {"S": f"lock:{key}"}})
    fences.append(store.acquire_shared(key, "a", 30))
    fences.append(store.acquire_shared(key, "b", 30))
    assert store.acquire_shared(key, "a", 30) == fences[-2]  # a retry: the same fence
    assert rising(fences), fences
    assert fences[0] is not None
    assert fences[0] > now_us() - 60_000_000  # seeded from the clock in microseconds


def test_an_item_of_an_earlier_version_gets_the_readers_maps(
    dynamodb_store: DynamoDBStore, client: Any, key: str
) -> None:
    store = dynamodb_store
    far = now_us() + 3_600_000_000
    ttl = {"N": str(far // 1_000_000 + RETAIN)}
    old = {"pk": {"S": f"lock:{key}"}, "fence": {"N": "41"}, "expires": ttl}
    client.put_item(TableName=TABLE, Item={**old, "token": {"S": "t"}, "lease": {"N": str(far)}})
    assert store.acquire_shared(key, "r", 30) is None  # the old lock still counts
    client.put_item(TableName=TABLE, Item={**old, "released": {"SS": ["t"]}})
    sent = writes(store)
    assert store.acquire_shared(key, "r", 30) == 42  # refused (no map), then made
    assert len(sent) == 2
    assert store.acquire_shared(key, "s", 30) == 43  # from now on one write
    assert len(sent) == 3
    assert store.acquire(key, "w", 30) is None
    assert sorted(store.shared_holders(key)) == ["r", "s"]


# -- the writers' mark -----------------------------------------------------------------------


def test_the_mark_covers_the_readers_and_only_grows(make: Any, client: Any, key: str) -> None:
    store = make(skew=0.2)
    assert store.acquire_shared(key, "long", 20) is not None
    assert store.acquire_shared(key, "short", 5) is not None
    long_end = entries(item(client, key), "readers")["long"]
    sent = writes(store)
    assert store.acquire(key, "w", 30) is None
    assert len(sent) == 2  # the refused take and the mark
    marked = int(item(client, key)["mark"]["N"])
    assert marked == long_end + 200_000 + round(WRITER_GRACE * 1_000_000)
    assert store.release_shared(key, "long") is True
    assert store.acquire(key, "w", 30) is None  # the mark covers it already: one write
    assert len(sent) == 4
    assert int(item(client, key)["mark"]["N"]) == marked  # a shorter reader never lowers it
    assert store.acquire_shared(key, "late", 30) is None  # behind the writer
    assert store.extend_shared(key, "short", 60) is True  # a holder renews regardless
    assert store.acquire(key, "w", 30) is None  # the reader renewed: the mark moves on
    assert int(item(client, key)["mark"]["N"]) > marked
    assert store.release_shared(key, "short") is True
    assert store.acquire(key, "w", 30) is not None
    assert "mark" not in item(client, key)


def test_force_release_drops_readers_and_the_mark(
    dynamodb_store: DynamoDBStore, client: Any, key: str
) -> None:
    store = dynamodb_store
    assert store.acquire_shared(key, "r", 30) is not None
    assert store.acquire(key, "w", 30) is None
    assert store.force_release(key) is False  # no exclusive lease was there
    found = item(client, key)
    assert entries(found, "readers") == {}
    assert "mark" not in found
    assert store.acquire_shared(key, "again", 30) is not None
    assert store.force_release(f"{key}:never-used") is False
    assert item(client, f"{key}:never-used") == {}  # no item made for it


def test_ls_lists_writers_not_readers(dynamodb_store: DynamoDBStore, key: str) -> None:
    store = dynamodb_store
    assert store.acquire_shared(f"{key}:read", "r", 30) is not None
    assert store.acquire(f"{key}:write", "w", 30) is not None
    assert [info.key for info in store.iter_locks(key)] == [f"{key}:write"]
    assert store.owner(f"{key}:read") is None


# -- clocks and cost -------------------------------------------------------------------------


def test_the_skew_margin_delays_a_writer_but_not_the_readers_own_view(make: Any, key: str) -> None:
    store = make(skew=1.0)
    assert store.acquire_shared(key, "r", 0.2) is not None
    time.sleep(0.4)
    assert store.extend_shared(key, "r", 10) is False  # by its own clock the lease is over
    assert store.shared_holders(key) == ["r"]  # others wait out the margin
    assert store.acquire(key, "w", 10) is None
    time.sleep(1.0)
    assert store.acquire(key, "w", 10) is not None


def test_each_shared_step_is_one_write(dynamodb_store: DynamoDBStore, key: str) -> None:
    store = dynamodb_store
    assert store.acquire(key, "w", 10) is not None  # this version's take makes the maps
    assert store.release(key, "w") is True
    sent = writes(store)
    assert store.acquire_shared(key, "a", 10) is not None
    assert store.acquire_shared(key, "b", 10) is not None
    assert store.extend_shared(key, "a", 10) is True
    assert store.release_shared(key, "a") is True
    assert store.release_shared(key, "b") is True
    assert store.acquire(key, "w", 10) is not None
    assert len(sent) == 6
    assert store.acquire_shared(f"{key}:new", "a", 10) is not None  # no item yet: 2
    assert len(sent) == 8


# -- waiting (polled) ------------------------------------------------------------------------


def test_a_writers_wait_ends_when_a_reader_elsewhere_releases(make: Any, key: str) -> None:
    reader, writer = make(), make(poll_max=0.2)
    assert reader.acquire_shared(key, "r", 60) is not None
    assert writer.acquire(key, "w", 60) is None
    threading.Timer(0.3, reader.release_shared, args=(key, "r")).start()
    started = time.monotonic()
    writer.wait(key, 30)
    assert time.monotonic() - started < 0.3 + 1
    assert writer.acquire(key, "w", 60) is not None


def test_a_readers_wait_ends_with_the_mark(make: Any, key: str) -> None:
    store = make(skew=0.1)
    assert store.acquire_shared(key, "r", 0.3) is not None
    assert store.acquire(key, "w", 10) is None  # and never comes back
    assert store.acquire_shared(key, "late", 10) is None
    started = time.monotonic()
    store.wait_shared(key, 30)
    waited = time.monotonic() - started
    assert 0.3 + 0.1 + WRITER_GRACE - 0.2 < waited < 0.3 + 0.1 + WRITER_GRACE + 1
    assert store.acquire_shared(key, "late", 10) is not None


def test_an_async_readers_wait_ends_when_a_writer_elsewhere_releases(make: Any, key: str) -> None:
    holder, waiter = make(), make(poll_max=0.2)
    assert holder.acquire(key, "w", 60) is not None
    twin = waiter.as_async()
    assert isinstance(twin, AsyncDynamoDBStore)

    async def main() -> float:
        started = time.monotonic()
        asyncio.get_running_loop().call_later(0.3, holder.release, key, "w")
        await twin.wait_shared(key, 30)
        return time.monotonic() - started

    assert asyncio.run(main()) < 0.3 + 1
    assert asyncio.run(twin.acquire_shared(key, "r", 60)) is not None


@pytest.mark.slow
def test_readers_and_writers_across_processes(
    dynamodb_server: DynamoDBLocal, tmp_path: Path
) -> None:
    url = dynamodb_server.url(TABLE, poll=0.01, poll_max=0.05)
    final, sections = run_counter(
        url, f"rw:{tmp_path.name}", tmp_path, processes=6, count=24, work=0.005, mix=4
    )
    assert final == 6 * 24 // 4  # every exclusive read-modify-write counted
    assert_readers_writers(sections)
    assert most_at_once([s for s in sections if s["kind"] == "shared"]) >= 2
