"""The kept-results contract, against every store that keeps results (sync and async)."""

from __future__ import annotations

import pytest

from remotelock.testing import BlockingStore, ResultContract


class TestResults(ResultContract):
    """Runs with the ``store`` fixture, parametrised over every store in conftest."""


class TestAsyncResults(ResultContract):
    @pytest.fixture
    def store(self, blocking_async_store: BlockingStore) -> BlockingStore:
        return blocking_async_store
