"""Bad arguments fail at once with ValueError/TypeError naming the argument; keys and lease
lengths every store can hold are the only ones accepted."""

from __future__ import annotations

from typing import Any

import pytest

from remotelock import RemoteLock, remote_locked
from remotelock._checks import MAX_KEY_BYTES
from remotelock.stores import MemoryStore
from remotelock.stores.base import Store


@pytest.mark.parametrize("ttl", [10**12, 1e-9, 0.001, 8 * 24 * 3600, 10**400, -1, 0])
def test_ttl_out_of_range(ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        remote_locked("k", ttl=ttl)
    with pytest.raises(ValueError, match="ttl"):
        RemoteLock("k", ttl=ttl)


@pytest.mark.parametrize("ttl", [0.01, 7 * 24 * 3600])
def test_ttl_limits_are_accepted(ttl: float) -> None:
    assert RemoteLock("k", ttl=ttl).ttl == ttl


def test_extend_checks_its_ttl(memory_store: MemoryStore, key: str) -> None:
    lock = RemoteLock(key, store=memory_store)
    with lock as lease:
        for ttl in (10**12, 1e-9, 10**400):
            with pytest.raises(ValueError, match="ttl"):
                lock.extend(ttl)
            with pytest.raises(ValueError, match="ttl"):
                lease.extend(ttl)
        assert not lease.lost


@pytest.mark.parametrize(
    ("argument", "value", "error"),
    [
        ("limit", 10**400, ValueError),
        ("limit", 0, ValueError),
        ("limit", True, ValueError),
        ("lambda_margin", 10**400, ValueError),
        ("lambda_margin", -1, ValueError),
        ("lambda_margin", True, TypeError),
        ("raise_on_lost", 1, TypeError),
    ],
)
def test_other_numbers_out_of_range(argument: str, value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=argument):
        remote_locked("k", **{argument: value})


def test_long_keys_are_refused_with_a_short_message(memory_store: MemoryStore) -> None:
    huge = "k" * 1_000_000
    with pytest.raises(ValueError, match=str(MAX_KEY_BYTES)) as caught:
        RemoteLock(huge, store=memory_store)
    assert len(str(caught.value)) < 300
    assert "1000000 bytes" in str(caught.value)
    RemoteLock("é" * (MAX_KEY_BYTES // 2), store=memory_store)  # 1024 bytes: the limit


def test_long_rendered_keys_are_refused(memory_store: MemoryStore) -> None:
    @remote_locked("order:{order_id}", store=memory_store)
    def handle(order_id: str) -> str:
        return order_id

    assert handle("7") == "7"
    with pytest.raises(ValueError, match="longer than") as caught:
        handle("x" * 100_000)
    assert len(str(caught.value)) < 300


@pytest.mark.parametrize("key", ["\ud800", "a\udfffb", "nul\x00byte", ""])
def test_keys_no_store_can_hold(memory_store: MemoryStore, key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        RemoteLock(key, store=memory_store)


@pytest.mark.parametrize("key", [b"bytes", 7, None])
def test_keys_of_the_wrong_type(key: Any) -> None:
    with pytest.raises(TypeError, match="key"):
        RemoteLock(key)


def test_long_keys_never_reach_a_store(store: Store) -> None:
    """A key the size limit allows works on every store (PostgreSQL's index included)."""
    key = "ü" * (MAX_KEY_BYTES // 2)
    with RemoteLock(key, store=store) as lease:
        assert store.owner(key) == lease.token
    assert store.owner(key) is None
