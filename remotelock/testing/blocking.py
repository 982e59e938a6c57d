"""BlockingStore: an async store driven from sync code, so one suite checks both twins."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from ..stores.base import (
    AsyncLockAdmin,
    AsyncPermitStore,
    AsyncQueuedStore,
    AsyncResultStore,
    AsyncStore,
    Dismissed,
    Handover,
    LockInfo,
)
from ..stores.readers import AsyncSharedStore

T = TypeVar("T")


class BlockingStore:
    """A sync :class:`Store` face for an :class:`AsyncStore`, run on a private loop thread."""

    def __init__(self, store: AsyncStore) -> None:
        self.store = store
        self.capabilities = store.capabilities
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the store's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=120)

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        return self.run(self.store.acquire(key, token, ttl))

    def release(self, key: str, token: str) -> bool:
        return self.run(self.store.release(key, token))

    def extend(self, key: str, token: str, ttl: float) -> bool:
        return self.run(self.store.extend(key, token, ttl))

    def owner(self, key: str) -> str | None:
        return self.run(self.store.owner(key))

    def wait(self, key: str, timeout: float) -> None:
        self.run(self.store.wait(key, timeout))

    def close(self) -> None:
        """Run the store's ``aclose``/``close`` if any, then stop the loop."""
        closer = getattr(self.store, "aclose", None) or getattr(self.store, "close", None)
        if closer is not None:
            result = closer()
            if asyncio.iscoroutine(result):
                self.run(result)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __repr__(self) -> str:
        return f"BlockingStore({self.store!r})"


class _BlockingAdmin:
    """Mixin: the admin operations of an async store, run to completion."""

    store: Any
    run: Any

    def force_release(self, key: str) -> bool:
        return bool(self.run(self.store.force_release(key)))

    def iter_locks(self, prefix: str = "") -> Iterator[LockInfo]:
        admin = self.store

        async def collect() -> list[LockInfo]:
            return [info async for info in admin.iter_locks(prefix)]

        return iter(self.run(collect()))


class _BlockingQueued:
    """Mixin: the queued waiting of an async store, run to completion."""

    store: Any
    run: Any

    def acquire_watching(self, key: str, token: str, ttl: float) -> int | None:
        step = getattr(self.store, "acquire_watching", self.store.acquire)
        return self.run(step(key, token, ttl))  # type: ignore[no-any-return]

    def wait_turn(
        self, key: str, token: str, timeout: float, every_release: bool = False
    ) -> Handover | Dismissed | None:
        return self.run(self.store.wait_turn(key, token, timeout, every_release))  # type: ignore[no-any-return]

    def leave(self, key: str, token: str) -> None:
        self.run(self.store.leave(key, token))


class _BlockingPermits:
    """Mixin: the counted permits of an async store, run to completion."""

    store: Any
    run: Any

    def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        return self.run(self.store.acquire_permit(key, token, ttl, limit))  # type: ignore[no-any-return]

    def release_permit(self, key: str, token: str) -> bool:
        return bool(self.run(self.store.release_permit(key, token)))

    def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        return bool(self.run(self.store.extend_permit(key, token, ttl)))

    def permit_holders(self, key: str) -> list[str]:
        return list(self.run(self.store.permit_holders(key)))

    def wait_permit(self, key: str, timeout: float) -> None:
        self.run(self.store.wait_permit(key, timeout))


class _BlockingShared:
    """Mixin: the shared locks of an async store, run to completion."""

    store: Any
    run: Any

    def acquire_shared(self, key: str, token: str, ttl: float) -> int | None:
        return self.run(self.store.acquire_shared(key, token, ttl))  # type: ignore[no-any-return]

    def release_shared(self, key: str, token: str) -> bool:
        return bool(self.run(self.store.release_shared(key, token)))

    def extend_shared(self, key: str, token: str, ttl: float) -> bool:
        return bool(self.run(self.store.extend_shared(key, token, ttl)))

    def shared_holders(self, key: str) -> list[str]:
        return list(self.run(self.store.shared_holders(key)))

    def wait_shared(self, key: str, timeout: float) -> None:
        self.run(self.store.wait_shared(key, timeout))


class _BlockingResults:
    """Mixin: the kept results of an async store, run to completion."""

    store: Any
    run: Any

    @property
    def max_result_bytes(self) -> int:
        return int(self.store.max_result_bytes)

    def put_result(self, key: str, data: bytes, ttl: float) -> None:
        self.run(self.store.put_result(key, data, ttl))

    def get_result(self, key: str) -> bytes | None:
        return self.run(self.store.get_result(key))  # type: ignore[no-any-return]


_COMBINED: dict[tuple[type, ...], type[BlockingStore]] = {}


def blocking(store: AsyncStore) -> BlockingStore:
    """A sync face for ``store``, keeping its optional abilities."""
    mixins: tuple[type, ...] = ()
    if isinstance(store, AsyncQueuedStore):
        mixins += (_BlockingQueued,)
    if isinstance(store, AsyncPermitStore):
        mixins += (_BlockingPermits,)
    if isinstance(store, AsyncLockAdmin):
        mixins += (_BlockingAdmin,)
    if isinstance(store, AsyncResultStore):
        mixins += (_BlockingResults,)
    if isinstance(store, AsyncSharedStore):
        mixins += (_BlockingShared,)
    cls = _COMBINED.get(mixins)
    if cls is None:
        cls = _COMBINED[mixins] = type("BlockingStore", (*mixins, BlockingStore), {})
    return cls(store)
