"""store_from_url and lazy loading."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from remotelock import StoreConfigError
from remotelock.stores import MemoryStore, SQLiteStore, store_from_url


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
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(StoreConfigError, match=message):
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
