"""The shared-lock contract, against every store that has shared locks (sync and async)."""

from __future__ import annotations

import pytest

from remotelock.testing import BlockingStore, SharedContract


class TestShared(SharedContract):
    """Runs with the ``store`` fixture, parametrised over every store in conftest."""


class TestAsyncShared(SharedContract):
    @pytest.fixture
    def store(self, blocking_async_store: BlockingStore) -> BlockingStore:
        return blocking_async_store
