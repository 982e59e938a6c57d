"""Store fixtures shared by the whole suite.

``store_kind`` parametrises over every store; a test (or the contract suite) takes
``store`` and never names a backend. Server-backed stores start their own throwaway
servers (see ``tests/servers``) only when a selected test needs them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from remotelock import config
from remotelock.stores.base import EXPIRY, Store
from remotelock.stores.callable import CallableStore
from remotelock.stores.memory import MemoryStore
from remotelock.stores.redis.store import RedisStore
from remotelock.stores.sqlite.store import SQLiteStore
from remotelock.testing import BlockingStore, blocking

if TYPE_CHECKING:
    from remotelock.stores.dynamodb.store import DynamoDBStore
    from remotelock.stores.postgres.store import PostgresStore
    from tests.servers.dynamodb import DynamoDBLocal
    from tests.servers.postgres import PostgresServer
    from tests.servers.redis import RedisServer

pytest_plugins = [
    "tests.servers.redis",
    "tests.servers.postgres",
    "tests.servers.dynamodb",
    "tests.faults.fixtures",
]

REQUIRE_STORES = os.environ.get("REMOTELOCK_REQUIRE_STORES") == "1"

# Every store the contract runs against; server-backed ones carry their marker.
STORE_KINDS: list[Any] = [
    "memory",
    "sqlite",
    "callable",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("dynamodb", marks=pytest.mark.dynamodb),
]
ASYNC_KINDS = STORE_KINDS


# Run alone, after the rest (``./dev.sh test`` runs the rest on two workers): tests of
# how closely a wait keeps its deadline, and tests that start many processes or keep
# a core busy, which a neighbouring worker would slow down enough to fail or flake.
SERIAL_MODULES: Final = (
    "tests/chaos/",
    "tests/test_deadlines.py",
    "tests/test_told_in_time.py",
    "tests/stores/test_batch_renewal.py",
    "tests/stores/test_redis_scale.py",
    "tests/stores/test_postgres_scale.py",
)
SERIAL_NAMES: Final = ("closely", "overrun")
# Leases of 0.3 s that must be granted in time: a store's reply slowed by a neighbour
# (DynamoDB Local's JVM above all) would make them late, and rightly not handed out.
SERIAL_TESTS: Final = {
    ("tests/conformance/test_redis_py_lock_tests.py", name)
    for name in (
        "test_abandoned_lock_expires_after_ttl",
        "test_async_lease_is_renewed_while_held",
        "test_fencing_tokens_increase",
        "test_lease_is_renewed_while_held",
        "test_releasing_expired_lock_taken_by_another",
    )
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that must not share the machine with another worker ``serial``."""
    root = Path(__file__).resolve().parent.parent
    for item in items:
        where = item.path.resolve().relative_to(root).as_posix()
        if (
            item.get_closest_marker("slow") is not None
            or where.startswith(SERIAL_MODULES)
            or any(name in item.name for name in SERIAL_NAMES)
            or (where, getattr(item, "originalname", item.name)) in SERIAL_TESTS
        ):
            item.add_marker(pytest.mark.serial)


def unavailable(what: str, why: str) -> None:
    """Skip, or fail when REMOTELOCK_REQUIRE_STORES=1 (so CI can never skip silently)."""
    message = f"{what} is not available: {why}"
    if REQUIRE_STORES:
        pytest.fail(message + " (REMOTELOCK_REQUIRE_STORES=1 forbids skipping)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No test sees the developer's REMOTELOCK_URL, Lambda env or configured store."""
    monkeypatch.delenv(config.URL_VARIABLE, raising=False)
    monkeypatch.delenv(config.LAMBDA_VARIABLE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(config, "_by_url", {})
    config.configure(store=None)
    yield
    config.configure(store=None)


@pytest.fixture
def memory_store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def redis_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    """A RedisStore on the session's server, with a key prefix of its own."""
    store = RedisStore.from_url(f"{redis_server.url}?prefix=test-{uuid.uuid4().hex[:12]}")
    yield store
    store.close()


@pytest.fixture
def redis_barging_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    """:func:`redis_store` with a barging window (its holders' processes keep a lock
    they come straight back for: remotelock.streak)."""
    url = f"{redis_server.url}?prefix=test-{uuid.uuid4().hex[:12]}&barging=0.5"
    store = RedisStore.from_url(url)
    yield store
    store.close()


@pytest.fixture
def postgres_store(postgres_server: PostgresServer) -> Iterator[PostgresStore]:
    """A PostgresStore on the session's server, with a table of its own (dropped after)."""
    import psycopg
    from psycopg import sql

    from remotelock.stores.postgres.store import PostgresStore

    table = f"test_{uuid.uuid4().hex[:12]}"
    store = PostgresStore.from_url(f"{postgres_server.url}?table={table}")
    yield store
    store.close()
    with psycopg.connect(postgres_server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))


@pytest.fixture
def dynamodb_store(dynamodb_server: DynamoDBLocal) -> Iterator[DynamoDBStore]:
    """A DynamoDBStore on the session's DynamoDB Local, in one shared table (the tests'
    keys are fresh)."""
    from remotelock.stores.dynamodb.store import DynamoDBStore

    store = DynamoDBStore.from_url(dynamodb_server.url("remotelock_test"))
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "locks.sqlite3")
    yield store
    store.close()


class DictLock:
    """The seed's three functions over a dict, with expiry (like its in-memory tests)."""

    def __init__(self) -> None:
        self.value: str | None = None
        self.expires = 0.0

    def get_lock(self, request_id: str) -> str | None:
        if self.value is not None and self.expires <= time.monotonic():
            self.value = None
        return self.value

    def set_lock(self, request_id: str, timeout: int) -> None:
        if self.get_lock(request_id) in (None, request_id):
            self.value, self.expires = request_id, time.monotonic() + timeout / 1000

    def release_lock(self, request_id: str) -> None:
        self.value = None


@pytest.fixture
def callable_store() -> _PerKeyCallableStore:
    # One CallableStore stands for one lock, so route each key to its own dict lock.
    return _PerKeyCallableStore()


class _PerKeyCallableStore:
    """CallableStores keyed by lock key, so the key-agnostic seed shape passes the contract."""

    capabilities = frozenset({EXPIRY})

    def __init__(self) -> None:
        self._stores: dict[str, CallableStore] = {}

    def _for(self, key: str) -> CallableStore:
        if key not in self._stores:
            lock = DictLock()
            self._stores[key] = CallableStore(
                lock.get_lock, lock.set_lock, lock.release_lock, capabilities=self.capabilities
            )
        return self._stores[key]

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        return self._for(key).acquire(key, token, ttl)

    def release(self, key: str, token: str) -> bool:
        return self._for(key).release(key, token)

    def extend(self, key: str, token: str, ttl: float) -> bool:
        return self._for(key).extend(key, token, ttl)

    def owner(self, key: str) -> str | None:
        return self._for(key).owner(key)

    def wait(self, key: str, timeout: float) -> None:
        self._for(key).wait(key, timeout)

    def as_async(self) -> Any:
        from remotelock.stores.shared.threaded import threaded

        return threaded(self)

    def __repr__(self) -> str:
        return "CallableStore(dict)"


@pytest.fixture(params=STORE_KINDS)
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(store_kind: str, request: pytest.FixtureRequest) -> Store:
    """Every sync store, one per parameter."""
    return request.getfixturevalue(f"{store_kind}_store")  # type: ignore[no-any-return]


@pytest.fixture(params=ASYNC_KINDS)
def blocking_async_store(request: pytest.FixtureRequest) -> Iterator[BlockingStore]:
    """Every store's async twin, driven through BlockingStore (for the contract suite)."""
    sync = request.getfixturevalue(f"{request.param}_store")
    adapter = blocking(sync.as_async())
    yield adapter
    adapter.close()


@pytest.fixture
def key() -> str:
    return f"test:{uuid.uuid4().hex}"
