"""AsyncMemoryStore: the asyncio face of a :class:`~remotelock.stores.memory.MemoryStore`.

Same locks, awaitable methods: every step is a dictionary update under the store's
mutex, so only waiting needs the event loop (a release from any thread wakes a task
through ``call_soon_threadsafe``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from .base import LockInfo
from .kept import MAX_RESULT_BYTES
from .shared.threaded import resolve

if TYPE_CHECKING:
    from .memory import MemoryStore, Slot


class AsyncMemoryStore:
    """The asyncio face of a :class:`MemoryStore` (same locks, awaitable methods)."""

    def __init__(self, store: MemoryStore) -> None:
        self.sync = store
        self.capabilities = store.capabilities

    async def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """See :meth:`MemoryStore.acquire`."""
        return self.sync.acquire(key, token, ttl)

    async def release(self, key: str, token: str) -> bool:
        """See :meth:`MemoryStore.release`."""
        return self.sync.release(key, token)

    async def extend(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`MemoryStore.extend`."""
        return self.sync.extend(key, token, ttl)

    async def extend_many(self, leases: Sequence[tuple[str, str, float]]) -> list[bool]:
        """See :meth:`MemoryStore.extend_many`."""
        return self.sync.extend_many(leases)

    async def owner(self, key: str) -> str | None:
        """See :meth:`MemoryStore.owner`."""
        return self.sync.owner(key)

    async def wait(self, key: str, timeout: float) -> None:
        """See :meth:`MemoryStore.wait`; releases from any thread wake this task."""
        await self._wait(("lock", key), timeout)

    async def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """See :meth:`MemoryStore.acquire_permit`."""
        return self.sync.acquire_permit(key, token, ttl, limit)

    async def release_permit(self, key: str, token: str) -> bool:
        """See :meth:`MemoryStore.release_permit`."""
        return self.sync.release_permit(key, token)

    async def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`MemoryStore.extend_permit`."""
        return self.sync.extend_permit(key, token, ttl)

    async def permit_holders(self, key: str) -> list[str]:
        """See :meth:`MemoryStore.permit_holders`."""
        return self.sync.permit_holders(key)

    async def wait_permit(self, key: str, timeout: float) -> None:
        """See :meth:`MemoryStore.wait_permit`."""
        await self._wait(("permit", key), timeout)

    async def acquire_shared(self, key: str, token: str, ttl: float) -> int | None:
        """See :meth:`MemoryStore.acquire_shared`."""
        return self.sync.acquire_shared(key, token, ttl)

    async def release_shared(self, key: str, token: str) -> bool:
        """See :meth:`MemoryStore.release_shared`."""
        return self.sync.release_shared(key, token)

    async def extend_shared(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`MemoryStore.extend_shared`."""
        return self.sync.extend_shared(key, token, ttl)

    async def shared_holders(self, key: str) -> list[str]:
        """See :meth:`MemoryStore.shared_holders`."""
        return self.sync.shared_holders(key)

    async def wait_shared(self, key: str, timeout: float) -> None:
        """See :meth:`MemoryStore.wait_shared`."""
        await self._wait(("shared", key), timeout)

    max_result_bytes = MAX_RESULT_BYTES

    async def put_result(self, key: str, data: bytes, ttl: float) -> None:
        """See :meth:`MemoryStore.put_result`."""
        self.sync.put_result(key, data, ttl)

    async def get_result(self, key: str) -> bytes | None:
        """See :meth:`MemoryStore.get_result`."""
        return self.sync.get_result(key)

    async def _wait(self, slot: Slot, timeout: float) -> None:
        import asyncio  # only once a task waits: a sync program never loads asyncio

        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def waker() -> None:
            loop.call_soon_threadsafe(resolve, woken)

        bound = self.sync._register(slot, waker, timeout)
        if bound <= 0:
            return
        try:
            await asyncio.wait_for(woken, bound)
        except asyncio.TimeoutError:
            pass
        finally:
            self.sync._unregister(slot, waker)

    async def force_release(self, key: str) -> bool:
        """See :meth:`MemoryStore.force_release`."""
        return self.sync.force_release(key)

    async def iter_locks(self, prefix: str = "") -> AsyncIterator[LockInfo]:
        """See :meth:`MemoryStore.iter_locks`."""
        for info in self.sync.iter_locks(prefix):
            yield info

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sync!r})"


__all__ = ["AsyncMemoryStore"]
