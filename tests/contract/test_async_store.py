"""The store contract, against every store's async twin."""

from __future__ import annotations

import pytest

from remotelock.testing import BlockingStore, StoreContract


class TestAsyncStore(StoreContract):
    @pytest.fixture
    def store(self, blocking_async_store: BlockingStore) -> BlockingStore:
        return blocking_async_store
