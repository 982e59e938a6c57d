"""The store contract, against every store (sync API)."""

from __future__ import annotations

from remotelock.testing import StoreContract


class TestStore(StoreContract):
    """Runs with the ``store`` fixture, parametrised over every store in conftest."""
