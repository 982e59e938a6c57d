"""AsyncDynamoDBStore: the asyncio twin of the DynamoDB store (:mod:`.store`).

Each step (shared ones too) runs the sync store's step in a worker thread (boto3
blocks; see the sync store's docs for why there is no aioboto3 side). Waiting
(``wait``, ``wait_shared``, ``wait_permit``) is the exception: it sleeps on the event
loop and sends only its polls to a thread, so a thousand tasks waiting
for locks hold no thread between their polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..shared.threaded import (
    ThreadedAsyncAdminStore,
    ThreadedPermits,
    ThreadedResults,
    ThreadedShared,
    in_thread,
)
from .common import LOCK, PERMITS, Busy
from .readers import SHARED
from .store import DynamoDBStore
from .waiting import steps


class AsyncDynamoDBStore(
    ThreadedShared, ThreadedResults, ThreadedPermits, ThreadedAsyncAdminStore
):
    """The asyncio twin of :class:`DynamoDBStore`, sharing its client and options.

    Get it with ``DynamoDBStore(...).as_async()``, or build it the same ways:
    ``AsyncDynamoDBStore.from_url("dynamodb://locks?region=eu-west-1")``.
    """

    sync: DynamoDBStore

    def __init__(self, store: DynamoDBStore) -> None:
        super().__init__(store)
        self.default_wait = store.default_wait  # see policy.store_wait

    @classmethod
    def from_url(cls, url: str, **options: object) -> AsyncDynamoDBStore:
        """The twin of ``DynamoDBStore.from_url(url, **options)``."""
        twin = DynamoDBStore.from_url(url, **options).as_async()
        assert isinstance(twin, cls)
        return twin

    async def wait(self, key: str, timeout: float) -> None:
        """See :meth:`DynamoDBStore.wait`; sleeps on the event loop between polls."""
        store = self.sync
        await self._wait_on(LOCK + key, timeout, lambda: store._lock_busy(store._read(key)))

    async def wait_shared(self, key: str, timeout: float) -> None:
        """See :meth:`DynamoDBStore.wait_shared`; sleeps on the event loop between polls."""
        store = self.sync
        await self._wait_on(SHARED + key, timeout, lambda: store._shared_busy(store._read(key)))

    async def wait_permit(self, key: str, timeout: float) -> None:
        """See :meth:`DynamoDBStore.wait_permit`."""
        store = self.sync
        await self._wait_on(PERMITS + key, timeout, lambda: store._permits_busy(key))

    async def _wait_on(self, slot: str, timeout: float, look: Callable[[], Busy | None]) -> None:
        deadline = time.monotonic() + timeout
        busy = self.sync._refusals.take(slot) or await in_thread(look)
        if busy is None:
            return
        plan = steps(busy, deadline, self.sync.poll, self.sync.poll_max)
        step = next(plan)
        while True:
            await asyncio.sleep(step.pause)
            if not step.poll:
                return
            busy = await in_thread(look)
            if busy is None:
                return
            step = plan.send(busy)

    async def aclose(self) -> None:
        """Close the shared client the sync store built (see :meth:`DynamoDBStore.close`)."""
        self.sync.close()


__all__ = ["AsyncDynamoDBStore"]
