"""AsyncSQLiteStore: the asyncio twin of :class:`~remotelock.stores.sqlite.store.SQLiteStore`."""

from __future__ import annotations

import time

from ..shared.threaded import (
    ThreadedAsyncAdminStore,
    ThreadedBatch,
    ThreadedPermits,
    ThreadedResults,
    ThreadedShared,
    resolve,
)
from .connections import BusyUntil, Slot
from .store import SQLiteStore


class AsyncSQLiteStore(
    ThreadedShared, ThreadedResults, ThreadedBatch, ThreadedPermits, ThreadedAsyncAdminStore
):
    """The asyncio twin of :class:`SQLiteStore`.

    Steps (shared ones too) run in worker threads (a busy file may block up to
    ``busy_timeout``). The waits (``wait``, ``wait_shared``, ``wait_permit``) run on the
    event loop instead: they only read, and WAL-mode reads never wait for a writer, so
    a hundred waiting tasks do not occupy a hundred threads.
    """

    sync: SQLiteStore

    def __init__(self, store: SQLiteStore) -> None:
        super().__init__(store)

    async def wait(self, key: str, timeout: float) -> None:
        """See :meth:`SQLiteStore.wait`; a release in this process wakes the task at once."""
        store = self.sync
        await self._await_on(("lock", key), lambda c: store._lock_busy_until(c, key), timeout)

    async def wait_permit(self, key: str, timeout: float) -> None:
        """See :meth:`SQLiteStore.wait_permit`."""
        store = self.sync
        await self._await_on(("permit", key), lambda c: store._permits_busy_until(c, key), timeout)

    async def wait_shared(self, key: str, timeout: float) -> None:
        """See :meth:`SQLiteStore.wait_shared`; waits on the event loop, like :meth:`wait`."""
        store = self.sync
        await self._await_on(("shared", key), lambda c: store._shared_busy_until(c, key), timeout)

    async def _await_on(self, slot: Slot, busy_until: BusyUntil, timeout: float) -> None:
        import asyncio

        store = self.sync
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        woken: asyncio.Future[None] = loop.create_future()

        def waker() -> None:
            loop.call_soon_threadsafe(resolve, woken)

        store._local.register(slot, waker)
        try:
            with store._translate("wait", slot[1]) as conn:
                for pause in store.pauses(conn, busy_until, deadline):
                    await asyncio.wait((woken,), timeout=pause)
                    if woken.done():
                        return
        finally:
            store._local.unregister(slot, waker)


__all__ = ["AsyncSQLiteStore"]
