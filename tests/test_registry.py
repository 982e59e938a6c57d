"""store_from_url and lazy loading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from remotelock import StoreConfigError
from remotelock.stores import Capability, MemoryStore, SQLiteStore, store_from_url


def test_memory_urls_share_instances() -> None:
    default = store_from_url("memory://")
    assert isinstance(default, MemoryStore)
    assert store_from_url("memory://") is default
    named = store_from_url("memory://jobs")
    assert named is not default
    assert store_from_url("memory://jobs") is named


def test_sqlite_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    absolute = store_from_url(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(absolute, SQLiteStore)
    assert absolute.path == tmp_path / "a.db"
    monkeypatch.chdir(tmp_path)
    relative = store_from_url("sqlite:///rel/b.db?busy_timeout=2.5&table=my_locks")
    assert isinstance(relative, SQLiteStore)
    assert relative.path == Path("rel/b.db")
    assert relative.busy_timeout == 2.5
    assert relative.table == "my_locks"
    overridden = store_from_url("sqlite:///c.db?busy_timeout=2.5", busy_timeout=9)
    assert isinstance(overridden, SQLiteStore)
    assert overridden.busy_timeout == 9
    default = store_from_url("sqlite://")
    assert isinstance(default, SQLiteStore)
    assert default.path.name == "locks.sqlite3"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mongodb://x", "unknown store URL scheme 'mongodb'"),
        ("", "non-empty"),
        ("sqlite://host/x.db", "no host"),
        ("sqlite:///x.db?busy_timeout=soon", "busy_timeout"),
        ("sqlite:///x.db?colour=blue", "unknown sqlite:// option 'colour'"),
        ("sqlite:///x.db?table=drop;table", "identifier"),
        ("sqlite:///:memory:", "MemoryStore"),
        ("memory://?colour=blue", "unknown memory:// option 'colour'"),
        ("redsi://localhost", "did you mean redis://"),
        ("redis://[::1/0", "malformed store URL"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(StoreConfigError, match=message):
        store_from_url(url)


@pytest.mark.parametrize(
    ("url", "options", "problem"),
    [
        # Each redis-py connection class takes its own options: TLS ones only rediss://,
        # TCP keepalives not unix://; single_connection_client only as a keyword.
        ("redis://h/0?socket_keepalive=yes&health_check_interval=5&client_name=x", {}, None),
        ("redis://h/0?max_connections=5&retry_on_timeout=true", {}, None),
        ("rediss://h/0?ssl_cert_reqs=none&ssl_check_hostname=false", {}, None),
        ("redis://h/0?ssl_cert_reqs=none", {}, "unknown Redis option 'ssl_cert_reqs'"),
        ("unix:///tmp/r.sock?db=2", {}, None),
        ("unix:///tmp/r.sock?socket_keepalive=true", {}, "'socket_keepalive'"),
        ("redis://h/0?socket_timout=1", {}, "did you mean 'socket_timeout'"),
        ("redis://h/0", {"socket_timeout": 1, "encoding": "latin-1"}, None),
        ("redis://h/0", {"sockettimeout": 1}, "'sockettimeout'"),
        ("redis://h/0?single_connection_client=true", {}, "keyword argument"),
        ("redis://h/0?health_check_interval=often", {}, "'health_check_interval'"),
        ("redis://h/0/1", {}, "database number"),
        ("redis+sentinel://h:26379/main/1?socket_keepalive=true", {}, None),
        ("redis+sentinel://h:26379/main/1?colour=blue", {}, "'colour'"),
        ("redis+cluster://h:7000/2", {}, "only database 0"),
        ("redis+cluster://h:7000?colour=blue", {}, "'colour'"),
    ],
)
def test_redis_options_are_those_redis_py_takes(
    url: str, options: dict[str, Any], problem: str | None
) -> None:
    """Checked against redis-py's own signatures at construction (no server needed:
    building a plain or Sentinel client does not connect)."""
    if problem is None:
        store_from_url(url, **options)
    else:
        with pytest.raises(StoreConfigError, match=problem):
            store_from_url(url, **options)


def test_redis_query_values_are_typed_for_sentinel_and_cluster() -> None:
    from remotelock.stores.redis.aio import AsyncRedisStore
    from remotelock.stores.redis.store import RedisStore

    store = store_from_url("redis+sentinel://h:26379/main?socket_timeout=1.5&db=3")
    assert isinstance(store, RedisStore)
    kwargs = store.client.connection_pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["db"]) == (1.5, 3)
    cluster = AsyncRedisStore.from_url("redis+cluster://h:7000?socket_timeout=1.5")
    assert cluster is not None


@pytest.mark.parametrize(
    ("query", "problem"),
    [
        ("colour=blue", "unknown PostgreSQL option 'colour'"),
        ("sslmod=require", "did you mean 'sslmode'"),
        ("pool_size=many", "pool_size"),
        ("ssl=true&sslmode=require&connect_timeout=3&application_name=x", None),
    ],
)
def test_postgres_options_are_ours_or_libpqs(query: str, problem: str | None) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://app:pw@localhost/db?{query}"
    if problem is None:
        store_from_url(url)
    else:
        with pytest.raises(StoreConfigError, match=problem):
            store_from_url(url)


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import remotelock.stores as registry

    # A store module whose driver is not installed (None in sys.modules: ImportError).
    monkeypatch.setitem(sys.modules, "psycopg", None)
    monkeypatch.delitem(sys.modules, "tests.helpers.needs_psycopg", raising=False)
    monkeypatch.setitem(registry._SCHEMES, "fakepg", "tests.helpers.needs_psycopg:Store")
    with pytest.raises(StoreConfigError, match=r"remotelock\[postgres\]") as caught:
        store_from_url("fakepg://localhost/db")
    assert isinstance(caught.value.__cause__, ImportError)


def test_import_loads_no_driver() -> None:
    code = (
        "import sys, remotelock, remotelock.stores; "
        "from remotelock.stores import SQLiteStore, MemoryStore; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('redis', 'psycopg')]; "
        "print(bad); raise SystemExit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_unknown_attribute() -> None:
    import remotelock.stores

    with pytest.raises(AttributeError, match="NoSuchStore"):
        _ = remotelock.stores.NoSuchStore


def test_require_refuses_a_store_without_a_capability(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/locks.db"
    assert store_from_url(url, require={Capability.CROSS_PROCESS, "expiry"}) is not None
    with pytest.raises(StoreConfigError, match="cross_host"):
        store_from_url(url, require=[Capability.CROSS_HOST])  # one machine's file only
    with pytest.raises(StoreConfigError, match="cross_process"):
        store_from_url("memory://", require=["cross_process"])
    with pytest.raises(StoreConfigError, match="unknown store capability 'teleport'"):
        store_from_url("memory://", require=["teleport"])


def test_capabilities_are_an_enum_that_is_also_strings() -> None:
    declared = MemoryStore().capabilities
    assert all(isinstance(capability, Capability) for capability in declared)
    assert "notify" in declared  # third-party code that names them keeps working
    assert Capability("notify") is Capability.NOTIFY
    assert str(Capability.FENCING) == "fencing"


SYNC_PROGRAM = """
import builtins, sys
seen = []
real = builtins.__import__
def spy(name, globals=None, *args, **kwargs):
    caller = (globals or {}).get("__name__") or ""
    if name.split(".")[0] == "asyncio" and caller.startswith("remotelock"):
        seen.append(caller)
    return real(name, globals, *args, **kwargs)
builtins.__import__ = spy
import remotelock
from remotelock.stores import MemoryStore, PostgresStore, RedisStore, SQLiteStore
from remotelock import RemoteLock, remote_locked
with RemoteLock("k", store=MemoryStore()):
    pass
aio = [m for m in sys.modules if m.startswith("remotelock") and m.endswith(("aio", "_engine"))]
print(seen, aio)
raise SystemExit(1 if seen or aio else 0)
"""


def test_a_sync_program_loads_no_asyncio_of_ours() -> None:
    """Drivers may import asyncio themselves; remotelock's own modules never do for a
    sync program, and none of the asyncio sides (``aio``, the async engine) is loaded."""
    result = subprocess.run([sys.executable, "-c", SYNC_PROGRAM], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
