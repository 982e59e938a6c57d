"""DynamoDBStore when things go wrong: other processes, outages, throttling, lost replies.

Behaviour runs against AWS's DynamoDB Local started by the suite; only throttling,
which DynamoDB Local never does, is simulated (botocore's ``Stubber``), and only to
check how the store translates and retries it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from remotelock import RemoteLock, StoreUnavailable
from remotelock.stores.dynamodb.store import DynamoDBStore
from tests.faults.fixtures import ProxyFactory
from tests.helpers.crossproc import (
    assert_exclusive,
    kill_holder_and_take_over,
    pause_holder_past_its_ttl,
    run_counter,
)
from tests.helpers.outage import stop_server_while_waiting
from tests.servers.dynamodb import DynamoDBLocal
from tests.servers.redis import free_port

pytestmark = pytest.mark.dynamodb


def fresh_table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


# -- across processes ------------------------------------------------------------------------


@pytest.mark.slow
def test_counter_across_processes(dynamodb_server: DynamoDBLocal, tmp_path: Path) -> None:
    url = dynamodb_server.url(fresh_table())
    final, sections = run_counter(url, "counter", tmp_path, processes=8, count=200)
    assert final == 1600
    assert_exclusive(sections)


@pytest.mark.slow
def test_paused_holder_loses_the_lock_and_fencing_tells_them_apart(
    dynamodb_server: DynamoDBLocal,
) -> None:
    url = dynamodb_server.url(fresh_table())
    store = DynamoDBStore.from_url(url)
    successor = pause_holder_past_its_ttl(url, store)
    assert store.owner("k") == successor.token  # the new holder still holds it
    successor.release()
    store.close()


@pytest.mark.slow
def test_killed_holder_frees_the_lock_within_its_ttl(dynamodb_server: DynamoDBLocal) -> None:
    url = dynamodb_server.url(fresh_table())
    store = DynamoDBStore.from_url(url)
    assert kill_holder_and_take_over(url, store, ttl=2.0) <= 2.0 + store.skew + 1
    store.close()


# -- the server goes away --------------------------------------------------------------------


def test_server_killed_while_waiting_then_restarted(private_dynamodb: DynamoDBLocal) -> None:
    """The waiter fails with StoreUnavailable at once (connection refused), not after
    its 30 s stop; the restarted server has forgotten the table (in memory), and the
    same store creates it again and locks."""
    table = fresh_table()
    warm = DynamoDBStore.from_url(private_dynamodb.url(table, timeout=30))
    warm.owner("warm")  # a fresh server's first requests (and the table) may take a while
    warm.close()
    store = DynamoDBStore.from_url(private_dynamodb.url(table, timeout=2))
    assert stop_server_while_waiting(store, private_dynamodb) < 2 + 1
    store.close()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_nothing_listening_is_unavailable_at_once(
    aws_environment: dict[str, str], asynchronous: bool
) -> None:
    url = f"dynamodb://locks?region=us-east-1&endpoint_url=http://127.0.0.1:{free_port()}"
    store = DynamoDBStore.from_url(url, timeout=2)
    twin = store.as_async()

    def acquire() -> object:
        if asynchronous:
            return asyncio.run(twin.acquire("k" * 100_000, "t", 5))
        return store.acquire("k" * 100_000, "t", 5)

    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="Could not connect") as caught:
        acquire()
    assert time.monotonic() - started < 2
    assert len(str(caught.value)) < 2000  # a long key is quoted by its start only
    store.close()


def test_frozen_server_gives_store_unavailable_not_a_hang(
    private_dynamodb: DynamoDBLocal,
) -> None:
    table = fresh_table()
    warm = DynamoDBStore.from_url(private_dynamodb.url(table, timeout=30))
    warm.owner("warm")  # a fresh server's first requests (and the table) may take a while
    warm.close()
    store = DynamoDBStore.from_url(private_dynamodb.url(table, timeout=1))
    store.acquire("warm", "t", 5)
    private_dynamodb.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="timeout"):
            store.acquire("k", "t", 5)
        assert time.monotonic() - started < 1 + 2  # the read timeout, not forever
    finally:
        private_dynamodb.thaw()
    assert store.acquire("k", "t", 5) is not None
    store.close()


# -- lost replies ------------------------------------------------------------------------------

# In the JSON body of the requests that give a lock back, and only there.
RELEASE_MARKER = b"REMOVE #t"
PERMIT_RELEASE_MARKER = b"REMOVE #h.#me, #fs.#me"
TAKE_MARKER = b"if_not_exists(#f"


@pytest.fixture
def proxied(fault_proxy: ProxyFactory, dynamodb_server: DynamoDBLocal) -> tuple[Any, str]:
    proxy = fault_proxy("127.0.0.1", dynamodb_server.port)
    url = dynamodb_server.url(fresh_table()).replace(
        dynamodb_server.endpoint, f"http://127.0.0.1:{proxy.port}"
    )
    return proxy, url


def test_a_release_whose_reply_was_lost_returns_true(proxied: tuple[Any, str]) -> None:
    """The release ran, its reply was lost (the connection reset), the store sent it
    again: the item names the token as the releaser, so the retry says True."""
    proxy, url = proxied
    store = DynamoDBStore.from_url(url)
    assert store.acquire("k", "a", 30) is not None
    proxy.drop_reply_to(RELEASE_MARKER)
    assert store.release("k", "a") is True
    assert proxy.replies_dropped == 1
    assert store.owner("k") is None
    assert store.acquire_permit("p", "a", 30, 2) is not None
    proxy.drop_reply_to(PERMIT_RELEASE_MARKER)
    assert store.release_permit("p", "a") is True
    assert proxy.replies_dropped == 2
    assert store.permit_holders("p") == []
    store.close()


def test_an_acquire_whose_reply_was_lost_returns_its_fence(proxied: tuple[Any, str]) -> None:
    proxy, url = proxied
    store = DynamoDBStore.from_url(url)
    proxy.drop_reply_to(TAKE_MARKER)
    fence = store.acquire("k", "a", 30)
    assert proxy.replies_dropped == 1
    assert fence is not None
    assert store.acquire("k", "a", 30) == fence  # the same lease, not a second one
    assert store.acquire("k", "b", 30) is None
    store.close()


def test_a_lost_release_reply_is_not_a_lost_lock(proxied: tuple[Any, str]) -> None:
    proxy, url = proxied
    store = DynamoDBStore.from_url(url)
    with RemoteLock("k", store=store) as lease:  # leaving it raises LockLost if lost
        proxy.drop_reply_to(RELEASE_MARKER)
    assert proxy.replies_dropped == 1
    assert not lease.lost
    store.close()


# -- throttling (simulated: DynamoDB Local never throttles) -----------------------------------

THROTTLED = "ProvisionedThroughputExceededException"


def stubbed(**options: Any) -> tuple[DynamoDBStore, Stubber]:
    """A store whose client answers from a stub (nothing is sent anywhere)."""
    import boto3

    client = boto3.session.Session().client(
        "dynamodb", region_name="us-east-1", endpoint_url="http://127.0.0.1:9"
    )
    stubber = Stubber(client)
    stubber.activate()
    return DynamoDBStore("locks", client=client, **options), stubber


def test_throttling_is_retried_within_the_timeout(aws_environment: dict[str, str]) -> None:
    store, stub = stubbed(timeout=5)
    for _ in range(3):
        stub.add_client_error("update_item", THROTTLED, http_status_code=400)
    stub.add_response("update_item", {"Attributes": {"fence": {"N": "7"}}})
    assert store.acquire("k", "t", 10) == 7
    stub.add_client_error("update_item", "ThrottlingException", http_status_code=400)
    stub.add_response("update_item", {})
    assert store.extend("k", "t", 10) is True  # throttled, then done: never "lost"
    stub.assert_no_pending_responses()


def test_lasting_throttling_is_unavailable_not_a_lost_lease(
    aws_environment: dict[str, str],
) -> None:
    store, stub = stubbed(timeout=0.3)
    for _ in range(50):
        stub.add_client_error("update_item", THROTTLED, http_status_code=400)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=THROTTLED) as caught:
        store.extend("k", "t", 10)
    assert time.monotonic() - started < 0.3 + 1.0  # the timeout, plus one last pause
    assert "tries" in str(caught.value)


def test_server_errors_are_retried_like_throttling(aws_environment: dict[str, str]) -> None:
    store, stub = stubbed(timeout=5)
    stub.add_client_error("get_item", "InternalServerError", http_status_code=500)
    stub.add_response("get_item", {"Item": {"token": {"S": "t"}, "lease": {"N": str(2**60)}}})
    assert store.owner("k") == "t"
