"""DynamoDBStore on AWS's DynamoDB Local: URLs, the table, the items, fences, waiting.

The contract, conformance and generic suites run against it too (``STORE_KINDS``);
these are the DynamoDB specifics. Failures, other processes and throttling are in
``test_dynamodb_failures.py``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from typing import Any

import pytest

from remotelock import RemoteLock, StoreConfigError, config, remote_locked
from remotelock.stores import AsyncDynamoDBStore, DynamoDBStore, store_from_url
from remotelock.stores.dynamodb.common import RELEASED_MARGIN, RETAIN, now_us
from tests.servers.dynamodb import DynamoDBLocal

pytestmark = pytest.mark.dynamodb

MARK = "s3cr3t"


def fresh_table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def url(dynamodb_server: DynamoDBLocal) -> str:
    """A URL of a table of the test's own (created by the store on first use)."""
    return dynamodb_server.url(fresh_table())


@pytest.fixture
def client(dynamodb_server: DynamoDBLocal) -> Any:
    """A plain client, for looking at (and tampering with) tables and items."""
    import boto3

    return boto3.session.Session().client(
        "dynamodb", region_name="us-east-1", endpoint_url=dynamodb_server.endpoint
    )


@pytest.fixture
def fresh_sessions(monkeypatch: pytest.MonkeyPatch) -> None:
    """No boto3 session kept from earlier tests (one caches the credentials it found)."""
    from remotelock.stores.dynamodb import client as clients

    monkeypatch.setattr(clients, "_sessions", {})


def hidden(exc: BaseException) -> None:
    """No secret in ``exc`` or anything chained to it."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        assert MARK not in f"{current} {current!r} {current.args}", current
        pending += [current.__cause__, current.__context__]


# -- URLs and options ----------------------------------------------------------------------------


def test_url_options_and_overrides(aws_environment: dict[str, str]) -> None:
    store = store_from_url(
        "dynamodb://locks.v1?region=eu-west-1&timeout=2.5&skew=0.3&poll=0.1&poll_max=2"
        "&create=false"
    )
    assert isinstance(store, DynamoDBStore)
    assert (store.table, store.region, store.timeout, store.skew) == (
        "locks.v1",
        "eu-west-1",
        2.5,
        0.3,
    )
    assert (store.poll, store.poll_max, store.create) == (0.1, 2.0, False)
    assert store.client.meta.config.read_timeout == 2.5
    assert store.client.meta.config.connect_timeout == 2.5
    overridden = DynamoDBStore.from_url("dynamodb://locks?region=eu-west-1&timeout=2.5", timeout=7)
    assert overridden.timeout == 7
    assert AsyncDynamoDBStore.from_url("dynamodb://locks?region=eu-west-1").sync.table == "locks"
    assert "eu-west-1" in repr(store)


def test_remotelock_url(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.URL_VARIABLE, url)
    store = config.resolve_store()
    assert isinstance(store, DynamoDBStore)
    with RemoteLock("k") as lease:
        assert store.owner("k") == lease.token


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("dynamodb://ab?region=eu-west-1", "table name"),
        ("dynamodb://bad%2Fname?region=eu-west-1", "table name"),
        ("dynamodb://locks/extra?region=eu-west-1", "names only its table"),
        ("dynamodb://locks?region=eu-west-1&timeout=soon", "timeout"),
        ("dynamodb://locks?region=eu-west-1&timeout=0", "timeout"),
        ("dynamodb://locks?region=eu-west-1&skew=-1", "skew"),
        ("dynamodb://locks?region=eu-west-1&poll=1&poll_max=0.5", "poll_max"),
        ("dynamodb://locks?region=eu-west-1&create=maybe", "create"),
        ("dynamodb://locks?region=eu-west-1&timout=1", "did you mean 'timeout'"),
        ("dynamodb://locks?region=eu-west-1&endpoint_url=ftp://h", "http"),
        ("dynamodb://locks?region=eu-west-1&aws_secret_access_key=s3cr3t-key", "in a URL"),
        ("dynamodb://locks?region=eu-west-1&aws_session_token=s3cr3t-token", "in a URL"),
        ("dynamodb://key:s3cr3t-key@locks?region=eu-west-1", "no credentials"),
        ("dynamodb://locks?endpoint_url=http://me:s3cr3t-pw@127.0.0.1:1", "credentials"),
    ],
)
def test_bad_urls_are_config_errors_without_secrets(
    given: str, says: str, aws_environment: dict[str, str]
) -> None:
    with pytest.raises(StoreConfigError, match=says) as caught:
        store_from_url(given)
    hidden(caught.value)


def test_bad_keywords() -> None:
    with pytest.raises(StoreConfigError, match="colour"):
        DynamoDBStore.from_url("dynamodb://locks?region=eu-west-1", colour="blue")
    with pytest.raises(StoreConfigError, match="either a client"):
        DynamoDBStore("locks", client=object(), region="eu-west-1")


@pytest.mark.usefixtures("fresh_sessions")
def test_no_region_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(StoreConfigError, match="region"):
        store_from_url("dynamodb://locks")


def test_unknown_profile_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    with pytest.raises(StoreConfigError, match="nosuchprofile"):
        store_from_url("dynamodb://locks?region=eu-west-1&profile=nosuchprofile")


def test_wrong_credentials_are_a_config_error_without_the_secret(url: str) -> None:
    # DynamoDB Local takes any key id of letters and digits: this one it refuses.
    store = DynamoDBStore.from_url(
        url, aws_access_key_id="not-a-key!", aws_secret_access_key="s3cr3t-secret-key"
    )
    with pytest.raises(StoreConfigError, match="credentials") as caught:
        store.acquire("k" * 100_000, "t", 5)
    hidden(caught.value)
    assert len(str(caught.value)) < 2000  # a long key is quoted by its start only
    assert MARK not in repr(store)
    store.close()


@pytest.mark.usefixtures("fresh_sessions")
def test_missing_credentials_are_a_config_error(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    store = DynamoDBStore.from_url(url, profile=None)
    with pytest.raises(StoreConfigError, match="NoCredentialsError"):
        store.acquire("k", "t", 5)
    store.close()


# -- the table -------------------------------------------------------------------------------


def test_the_table_is_created_on_first_use(url: str, client: Any) -> None:
    store = DynamoDBStore.from_url(url)
    assert store.acquire("k", "t", 30) is not None
    table = client.describe_table(TableName=store.table)["Table"]
    assert table["KeySchema"] == [{"AttributeName": "pk", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    ttl = client.describe_time_to_live(TableName=store.table)["TimeToLiveDescription"]
    assert (ttl["TimeToLiveStatus"], ttl["AttributeName"]) == ("ENABLED", "expires")
    store.close()


def test_many_stores_creating_the_table_at_once(url: str) -> None:
    """Separate stores (as in separate processes) all find the table missing; one
    creates it, the others wait for it; exactly one of them gets the shared lock."""
    stores = [DynamoDBStore.from_url(url) for _ in range(8)]
    barrier = threading.Barrier(len(stores))
    results: list[int | None] = []

    def first_use(index: int) -> None:
        barrier.wait()
        results.append(stores[index].acquire("shared", f"t{index}", 30))

    threads = [threading.Thread(target=first_use, args=(n,)) for n in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 8
    assert sum(result is not None for result in results) == 1
    for store in stores:
        store.close()


def test_a_table_made_elsewhere_is_used_as_it_is(
    dynamodb_server: DynamoDBLocal, client: Any
) -> None:
    table = fresh_table()
    client.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    store = DynamoDBStore.from_url(dynamodb_server.url(table, create="false"))
    assert store.acquire("k", "t", 30) is not None
    ttl = client.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "DISABLED"  # not ours to change
    store.close()


def test_a_missing_table_without_create_is_a_config_error(dynamodb_server: DynamoDBLocal) -> None:
    store = DynamoDBStore.from_url(dynamodb_server.url(fresh_table(), create="false"))
    with pytest.raises(StoreConfigError, match="does not exist"):
        store.acquire("k", "t", 30)
    store.close()


def test_a_table_of_another_shape_is_a_config_error(
    dynamodb_server: DynamoDBLocal, client: Any
) -> None:
    table = fresh_table()
    client.create_table(
        TableName=table,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    store = DynamoDBStore.from_url(dynamodb_server.url(table))
    with pytest.raises(StoreConfigError, match="key schema"):
        store.acquire("k", "t", 30)
    store.close()


# -- items and fences ----------------------------------------------------------------------------


def item(client: Any, table: str, pk: str) -> dict[str, Any]:
    found = client.get_item(TableName=table, Key={"pk": {"S": pk}}, ConsistentRead=True)
    return found.get("Item", {})  # type: ignore[no-any-return]


def test_item_layout_and_fences_seeded_from_the_clock(url: str, client: Any) -> None:
    store = DynamoDBStore.from_url(url)
    before = now_us()
    fence = store.acquire("k", "t", 30)
    assert fence is not None
    assert fence > before  # seeded from the clock in microseconds
    held = item(client, store.table, "lock:k")
    assert held["token"] == {"S": "t"}
    assert int(held["fence"]["N"]) == fence
    lease_end = int(held["lease"]["N"])
    assert int(held["expires"]["N"]) >= lease_end // 1_000_000 + RETAIN  # TTL past the lease
    assert store.release("k", "t") is True
    kept = item(client, store.table, "lock:k")
    assert "token" not in kept
    assert kept["released"] == {"SS": ["t"]}
    assert store.acquire("k", "u", 30) == fence + 1  # the item keeps the counter
    store.close()


def test_fences_keep_growing_after_ttl_deletes_the_item(url: str, client: Any) -> None:
    store = DynamoDBStore.from_url(url)
    fences: list[int] = []
    for token in ("a", "b", "c"):
        fence = store.acquire("k", token, 30)
        assert fence is not None
        fences.append(fence)
        assert store.release("k", token)
        client.delete_item(TableName=store.table, Key={"pk": {"S": "lock:k"}})  # as TTL would
    permit_fences: list[int] = []
    for token in ("a", "b"):
        fence = store.acquire_permit("p", token, 30, 2)
        assert fence is not None
        permit_fences.append(fence)
        assert store.release_permit("p", token)
        client.delete_item(TableName=store.table, Key={"pk": {"S": "permits:p"}})
    assert fences == sorted(set(fences)), fences
    assert permit_fences == sorted(set(permit_fences)), permit_fences
    store.close()


def test_the_record_of_permit_releases_is_bounded(url: str, client: Any) -> None:
    store = DynamoDBStore.from_url(url)
    for n in range(RELEASED_MARGIN + 10):
        assert store.acquire_permit("p", f"t{n}", 30, 2) is not None
        assert store.release_permit("p", f"t{n}") is True
    released = item(client, store.table, "permits:p")["released"]["M"]
    assert len(released) <= 2 + RELEASED_MARGIN
    last = f"t{RELEASED_MARGIN + 9}"
    assert store.release_permit("p", last) is True  # the latest releases are remembered
    store.close()


def test_crashed_permit_holders_are_dropped_when_their_room_is_needed(
    url: str, client: Any
) -> None:
    store = DynamoDBStore.from_url(url, skew=0)
    assert store.acquire_permit("p", "crashed", 0.2, 2) is not None
    assert store.acquire_permit("p", "live", 30, 2) is not None
    time.sleep(0.4)
    assert store.acquire_permit("p", "new", 30, 2) is not None  # takes the crashed one's room
    holders = item(client, store.table, "permits:p")["holders"]["M"]
    assert sorted(holders) == ["live", "new"]
    assert store.acquire_permit("p", "more", 30, 2) is None
    store.close()


# -- clocks and waiting ----------------------------------------------------------------------


def test_the_skew_margin_delays_takeover_but_not_the_holders_own_view(url: str) -> None:
    store = DynamoDBStore.from_url(url, skew=1.0)
    assert store.acquire("k", "holder", 0.2) is not None
    time.sleep(0.4)
    assert store.extend("k", "holder", 10) is False  # by its own clock the lease is over
    assert store.acquire("k", "other", 10) is None  # others wait out the margin too
    assert store.owner("k") == "holder"
    time.sleep(1.0)
    assert store.acquire("k", "other", 10) is not None
    store.close()


def test_a_wait_ends_with_the_holders_lease_plus_the_margin(url: str) -> None:
    store = DynamoDBStore.from_url(url, skew=0.2)
    started = time.monotonic()  # the lease runs from the request, not from its reply
    assert store.acquire("k", "holder", 0.5) is not None
    store.wait("k", 30)
    assert 0.5 + 0.2 - 0.05 < time.monotonic() - started < 0.5 + 0.2 + 1
    assert store.acquire("k", "waiter", 10) is not None
    store.close()


def test_a_waiter_polls_with_backoff(url: str) -> None:
    """Reads while waiting: a few in the first second, then about one a second."""
    store = DynamoDBStore.from_url(url, poll=0.05, poll_max=1.0)
    assert store.acquire("k", "holder", 60) is not None
    reads: list[str] = []
    store.client.meta.events.register(
        "before-call.dynamodb.GetItem", lambda **_: reads.append("get")
    )
    started = time.monotonic()
    store.wait("k", 3.0)
    assert 3.0 - 0.05 < time.monotonic() - started < 3.0 + 0.5
    assert 3 <= len(reads) <= 9, reads
    store.close()


def test_a_release_elsewhere_is_noticed_by_polling(url: str) -> None:
    holder, waiter = DynamoDBStore.from_url(url), DynamoDBStore.from_url(url, poll_max=0.2)
    assert holder.acquire("k", "h", 60) is not None
    threading.Timer(0.3, holder.release, args=("k", "h")).start()
    started = time.monotonic()
    waiter.wait("k", 30)
    assert time.monotonic() - started < 0.3 + 1
    holder.close()
    waiter.close()


def test_a_waiting_lock_tries_only_when_the_key_looks_free(url: str) -> None:
    """A lock's default wait on DynamoDB tries (a billed write) when the key looks free,
    at the latest every 10-20 poll_max, not every 2-50 ms; reads find the release
    within about poll_max."""
    from remotelock.policy import store_wait

    holder = DynamoDBStore.from_url(url)
    waiter = DynamoDBStore.from_url(url, poll_max=0.5)
    assert store_wait(waiter) is waiter.default_wait
    assert store_wait(waiter.as_async()) is waiter.default_wait
    calls: list[str] = []
    for name in ("UpdateItem", "GetItem"):
        waiter.client.meta.events.register(
            f"before-call.dynamodb.{name}", lambda name=name, **_: calls.append(name)
        )
    assert holder.acquire("k", "h", 60) is not None
    released: list[float] = []

    def release() -> None:
        released.append(time.monotonic())
        holder.release("k", "h")

    threading.Timer(3.0, release).start()
    with RemoteLock("k", store=waiter, ttl=10):
        got = time.monotonic()
    writes, reads = calls.count("UpdateItem"), calls.count("GetItem")
    # The first try, the try that wins and the release; at the 2-50 ms default of
    # other stores 3 s of waiting made about 90 writes.
    assert writes <= 4, calls
    assert reads <= 3 / (0.5 / 2) + 6, calls
    assert got - released[0] < 0.5 + 1.0
    holder.close()
    waiter.close()


# -- asyncio -------------------------------------------------------------------------------------


async def test_async_twin(dynamodb_store: DynamoDBStore) -> None:
    import asyncio

    twin = dynamodb_store.as_async()
    assert isinstance(twin, AsyncDynamoDBStore)
    assert dynamodb_store.as_async() is twin

    @remote_locked(f"k{uuid.uuid4().hex}", store=dynamodb_store, ttl=5)
    async def work(*, fencing_token: int | None = None) -> int | None:
        await asyncio.sleep(0.01)
        return fencing_token

    results = await asyncio.gather(*(work() for _ in range(5)))
    assert sorted(results) == sorted(set(results))  # type: ignore[type-var]


async def test_async_waits_hold_no_thread(dynamodb_store: DynamoDBStore) -> None:
    """Many tasks waiting at once sleep on the event loop, not in worker threads."""
    import asyncio

    twin = dynamodb_store.as_async()
    key = f"k{uuid.uuid4().hex}"
    assert await twin.acquire(key, "holder", 60) is not None
    threads = threading.active_count()
    waits = [asyncio.ensure_future(twin.wait(key, 1.0)) for _ in range(50)]
    await asyncio.sleep(0.5)
    assert threading.active_count() < threads + 10
    await asyncio.gather(*waits)


def test_a_sync_store_loads_no_asyncio_side(url: str) -> None:
    import subprocess

    code = (
        "import sys; from remotelock.stores import store_from_url; "
        f"s = store_from_url({url!r}); s.acquire('k', 't', 5); "
        "bad = [m for m in sys.modules if m.startswith('remotelock') and m.endswith('aio')]; "
        "raise SystemExit(1 if bad else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# -- the Lambda example ----------------------------------------------------------------------


def test_the_lambda_example_refreshes_once(
    dynamodb_server: DynamoDBLocal, client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util
    from concurrent.futures import ThreadPoolExecutor

    from tests.helpers.crossproc import ROOT

    cache = fresh_table()
    client.create_table(
        TableName=cache,
        AttributeDefinitions=[{"AttributeName": "source", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "source", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    monkeypatch.setenv(config.URL_VARIABLE, dynamodb_server.url(fresh_table()))
    monkeypatch.setenv("CACHE_TABLE", cache)
    monkeypatch.setenv("DYNAMODB_ENDPOINT", dynamodb_server.endpoint)
    path = ROOT / "examples" / "lambda_dynamodb" / "handler.py"
    spec = importlib.util.spec_from_file_location("lambda_dynamodb_handler", path)
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with ThreadPoolExecutor(6) as pool:
        replies = list(pool.map(lambda _: example.handler({"source": "ecb"}, None), range(6)))
    bodies = [json.loads(reply["body"]) for reply in replies]
    assert sum(body["refreshed"] for body in bodies) == 1
    assert len({body["value"] for body in bodies}) == 1
