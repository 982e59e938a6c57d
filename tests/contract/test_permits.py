"""The counted-permit contract, against every store that has permits (sync and async)."""

from __future__ import annotations

import pytest

from remotelock.testing import BlockingStore, PermitContract


class TestPermits(PermitContract):
    """Runs with the ``store`` fixture, parametrised over every store in conftest."""


class TestAsyncPermits(PermitContract):
    @pytest.fixture
    def store(self, blocking_async_store: BlockingStore) -> BlockingStore:
        return blocking_async_store
