"""Which store a lock uses when none is passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from remotelock import RemoteLock, StoreConfigError, configure, remote_locked
from remotelock.config import resolve_store
from remotelock.stores import MemoryStore, SQLiteStore


def test_explicit_store_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = MemoryStore()
    configure(store=MemoryStore())
    monkeypatch.setenv("REMOTELOCK_URL", "memory://env")
    assert resolve_store(explicit) is explicit


def test_configured_store_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    configured = MemoryStore()
    configure(store=configured)
    monkeypatch.setenv("REMOTELOCK_URL", "memory://env")
    assert resolve_store() is configured


def test_configure_accepts_a_url_and_resets() -> None:
    configure(store="memory://configured")
    first = resolve_store()
    assert isinstance(first, MemoryStore)
    configure(store=None)
    assert isinstance(resolve_store(), SQLiteStore)
    with pytest.raises(TypeError, match="store"):
        configure(store=42)  # type: ignore[arg-type]


def test_environment_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTELOCK_URL", "memory://from-env")
    store = resolve_store()
    assert isinstance(store, MemoryStore)
    assert resolve_store() is store  # one store per URL per process


def test_embedded_default_is_sqlite_in_the_cache_dir(tmp_path: Path) -> None:
    store = resolve_store()
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "cache" / "remotelock" / "locks.sqlite3"

    @remote_locked("default-store")
    def work(*, fencing_token: int | None = None) -> int | None:
        return fencing_token

    assert isinstance(work(), int)
    assert store.path.exists()


def test_lambda_without_a_store_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "my-function")
    with pytest.raises(StoreConfigError, match=r"cannot\s+exclude other concurrent instances"):
        resolve_store()

    @remote_locked("k")
    def handler(event: object, context: object) -> None:
        pass

    with pytest.raises(StoreConfigError, match="REMOTELOCK_URL"):
        handler({}, None)
    with pytest.raises(StoreConfigError):
        RemoteLock("k").acquire()


def test_lambda_with_a_configured_store_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "my-function")
    monkeypatch.setenv("REMOTELOCK_URL", "memory://lambda")
    assert isinstance(resolve_store(), MemoryStore)
