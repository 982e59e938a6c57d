"""The store contract suite, shipped so that third-party stores can run it too.

.. code-block:: python

    # tests/test_my_store.py
    import pytest
    from remotelock.testing import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def store(self):
            return MyStore(...)

Every test takes the ``store`` fixture (a sync :class:`~remotelock.stores.base.Store`)
and never names a backend. An async store runs the same suite through
:class:`BlockingStore`, which drives it on a private event loop. Tests that need a
guarantee a store does not declare in ``capabilities`` are skipped, not failed.
Real-time checks use short leases and generous margins: a slow machine never fails
them, it only makes them wait longer.
"""

from __future__ import annotations

from .blocking import BlockingStore, blocking
from .contract import StoreContract, needs
from .permits import PermitContract
from .results import ResultContract
from .shared import SharedContract

__all__ = [
    "BlockingStore",
    "PermitContract",
    "ResultContract",
    "SharedContract",
    "StoreContract",
    "blocking",
    "needs",
]
