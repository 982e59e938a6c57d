"""ResultContract: the rules of kept results (what ``single_flight`` shares)."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from ..stores.base import ResultStore, Store
from .contract import _token


class ResultContract:
    """The rules of :class:`~remotelock.stores.base.ResultStore`.

    Runs with the ``store`` fixture; skipped for stores that keep no results.
    """

    @pytest.fixture
    def name(self) -> str:
        return f"results:{uuid.uuid4().hex}:a key with spaces/ünïcode"

    @pytest.fixture
    def results(self, store: Store) -> ResultStore:
        if not isinstance(store, ResultStore):
            pytest.skip(f"{store!r} keeps no results")
        return store

    def test_a_value_is_read_back(self, results: ResultStore, name: str) -> None:
        data = bytes(range(256)) * 4  # every byte value: binary, not text
        results.put_result(name, data, 30)
        assert results.get_result(name) == data

    def test_no_value_is_none(self, results: ResultStore, name: str) -> None:
        assert results.get_result(name) is None
        results.put_result(name, b"", 30)
        assert results.get_result(name) == b""  # empty, but kept

    def test_a_put_replaces(self, results: ResultStore, name: str) -> None:
        results.put_result(name, b"first", 30)
        results.put_result(name, b"second", 30)
        assert results.get_result(name) == b"second"

    def test_a_value_runs_out(self, results: ResultStore, name: str) -> None:
        results.put_result(name, b"brief", 0.3)
        results.put_result(name + "/kept", b"kept", 60)
        deadline = time.monotonic() + 10
        while results.get_result(name) is not None:
            assert time.monotonic() < deadline, "the value outlived its ttl by 10 s"
            time.sleep(0.05)
        assert results.get_result(name + "/kept") == b"kept"

    def test_a_large_value_up_to_the_limit(self, results: ResultStore, name: str) -> None:
        size = min(results.max_result_bytes, 256 * 1024)
        data = os.urandom(size)
        results.put_result(name, data, 30)
        assert results.get_result(name) == data

    def test_results_live_apart_from_locks(
        self, store: Store, results: ResultStore, name: str
    ) -> None:
        token = _token()
        assert store.acquire(name, token, 30) is not None
        results.put_result(name, b"value", 30)
        assert store.owner(name) == token
        assert store.release(name, token)
        assert results.get_result(name) == b"value"
        assert store.owner(name) is None
