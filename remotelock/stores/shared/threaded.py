"""Bridges between sync stores and asyncio.

A store step may block on I/O (a SQLite busy wait, a user's callable doing network
calls), so it must not run on the event loop: :func:`threaded` serves a sync store to
asyncio code by running each step with ``asyncio.to_thread``, keeping whichever
optional abilities (admin, queued waiting) the store has. Stores with a cheaper async
``wait`` override it in a subclass.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ..base import (
    BatchRenewal,
    Dismissed,
    Handover,
    LockAdmin,
    LockInfo,
    PermitStore,
    QueuedStore,
    ResultStore,
    Store,
)
from ..readers import SharedStore

if TYPE_CHECKING:
    import asyncio


T = TypeVar("T")


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread (asyncio imported only by async callers)."""
    import asyncio

    return await asyncio.to_thread(fn, *args)


class ThreadedAsyncStore:
    """The :class:`~remotelock.stores.base.AsyncStore` face of a sync :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.sync: Any = store
        self.capabilities = store.capabilities

    async def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """See :meth:`Store.acquire`."""
        return await in_thread(self.sync.acquire, key, token, ttl)

    async def release(self, key: str, token: str) -> bool:
        """See :meth:`Store.release`."""
        return bool(await in_thread(self.sync.release, key, token))

    async def extend(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`Store.extend`."""
        return bool(await in_thread(self.sync.extend, key, token, ttl))

    async def owner(self, key: str) -> str | None:
        """See :meth:`Store.owner`."""
        return await in_thread(self.sync.owner, key)

    async def wait(self, key: str, timeout: float) -> None:
        """Run the store's own ``wait`` in a worker thread."""
        await in_thread(self.sync.wait, key, timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sync!r})"


class ThreadedAdmin:
    """Mixin: the admin operations of a :class:`LockAdmin` store, in worker threads."""

    sync: Any

    async def force_release(self, key: str) -> bool:
        """See :meth:`LockAdmin.force_release`."""
        return bool(await in_thread(self.sync.force_release, key))

    async def iter_locks(self, prefix: str = "") -> AsyncIterator[LockInfo]:
        """See :meth:`LockAdmin.iter_locks`."""
        admin = self.sync
        for info in await in_thread(lambda: list(admin.iter_locks(prefix))):
            yield info


class ThreadedQueued:
    """Mixin: the queued waiting of a :class:`QueuedStore`, in worker threads."""

    sync: Any

    async def acquire_watching(self, key: str, token: str, ttl: float) -> int | None:
        """See :class:`QueuedStore` (a store without watchers queues ``token`` as usual)."""
        step = getattr(self.sync, "acquire_watching", self.sync.acquire)
        return await in_thread(step, key, token, ttl)

    async def wait_turn(
        self, key: str, token: str, timeout: float, every_release: bool = False
    ) -> Handover | Dismissed | None:
        """See :meth:`QueuedStore.wait_turn`."""
        return await in_thread(self.sync.wait_turn, key, token, timeout, every_release)

    async def leave(self, key: str, token: str) -> None:
        """See :meth:`QueuedStore.leave`."""
        await in_thread(self.sync.leave, key, token)


class ThreadedPermits:
    """Mixin: the counted permits of a :class:`PermitStore`, in worker threads."""

    sync: Any

    async def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """See :meth:`PermitStore.acquire_permit`."""
        return await in_thread(self.sync.acquire_permit, key, token, ttl, limit)

    async def release_permit(self, key: str, token: str) -> bool:
        """See :meth:`PermitStore.release_permit`."""
        return bool(await in_thread(self.sync.release_permit, key, token))

    async def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`PermitStore.extend_permit`."""
        return bool(await in_thread(self.sync.extend_permit, key, token, ttl))

    async def permit_holders(self, key: str) -> list[str]:
        """See :meth:`PermitStore.permit_holders`."""
        return list(await in_thread(self.sync.permit_holders, key))

    async def wait_permit(self, key: str, timeout: float) -> None:
        """See :meth:`PermitStore.wait_permit`."""
        await in_thread(self.sync.wait_permit, key, timeout)


class ThreadedShared:
    """Mixin: the shared locks of a :class:`~remotelock.stores.readers.SharedStore`,
    in worker threads."""

    sync: Any

    async def acquire_shared(self, key: str, token: str, ttl: float) -> int | None:
        """See :meth:`SharedStore.acquire_shared`."""
        return await in_thread(self.sync.acquire_shared, key, token, ttl)

    async def release_shared(self, key: str, token: str) -> bool:
        """See :meth:`SharedStore.release_shared`."""
        return bool(await in_thread(self.sync.release_shared, key, token))

    async def extend_shared(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`SharedStore.extend_shared`."""
        return bool(await in_thread(self.sync.extend_shared, key, token, ttl))

    async def shared_holders(self, key: str) -> list[str]:
        """See :meth:`SharedStore.shared_holders`."""
        return list(await in_thread(self.sync.shared_holders, key))

    async def wait_shared(self, key: str, timeout: float) -> None:
        """See :meth:`SharedStore.wait_shared`."""
        await in_thread(self.sync.wait_shared, key, timeout)


class ThreadedResults:
    """Mixin: the kept results of a :class:`ResultStore`, in worker threads."""

    sync: Any

    @property
    def max_result_bytes(self) -> int:
        """See :class:`ResultStore`."""
        return int(self.sync.max_result_bytes)

    async def put_result(self, key: str, data: bytes, ttl: float) -> None:
        """See :meth:`ResultStore.put_result`."""
        await in_thread(self.sync.put_result, key, data, ttl)

    async def get_result(self, key: str) -> bytes | None:
        """See :meth:`ResultStore.get_result`."""
        return await in_thread(self.sync.get_result, key)


class ThreadedBatch:
    """Mixin: the batched renewal of a :class:`BatchRenewal` store, in a worker thread."""

    sync: Any

    async def extend_many(self, leases: Sequence[tuple[str, str, float]]) -> list[bool]:
        """See :meth:`BatchRenewal.extend_many`."""
        return list(await in_thread(self.sync.extend_many, leases))


class ThreadedAsyncAdminStore(ThreadedAdmin, ThreadedAsyncStore):
    """:class:`ThreadedAsyncStore` for a store with the admin operations."""


_COMBINED: dict[tuple[type, ...], type[ThreadedAsyncStore]] = {}


def threaded(store: Store) -> ThreadedAsyncStore:
    """The async face of ``store``, keeping its optional abilities."""
    mixins: tuple[type, ...] = ()
    if isinstance(store, QueuedStore):
        mixins += (ThreadedQueued,)
    if isinstance(store, PermitStore):
        mixins += (ThreadedPermits,)
    if isinstance(store, BatchRenewal):
        mixins += (ThreadedBatch,)
    if isinstance(store, ResultStore):
        mixins += (ThreadedResults,)
    if isinstance(store, SharedStore):
        mixins += (ThreadedShared,)
    if isinstance(store, LockAdmin):
        mixins += (ThreadedAdmin,)
    cls = _COMBINED.get(mixins)
    if cls is None:
        name = "Threaded" + "".join(m.__name__.replace("Threaded", "") for m in mixins)
        cls = _COMBINED[mixins] = type(name + "AsyncStore", (*mixins, ThreadedAsyncStore), {})
    return cls(store)


def resolve(future: asyncio.Future[None]) -> None:
    """Complete ``future`` unless it already is (a waker may fire after a timeout)."""
    if not future.done():
        future.set_result(None)


__all__ = [
    "ThreadedAdmin",
    "ThreadedAsyncAdminStore",
    "ThreadedAsyncStore",
    "ThreadedPermits",
    "ThreadedQueued",
    "ThreadedResults",
    "resolve",
    "threaded",
]
