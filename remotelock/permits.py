"""``limit=N``: counted permits, seen by the lock layer as an ordinary store.

A :class:`~remotelock.stores.base.PermitStore` has its own protocol (a permit set is
not a lock), but once the limit is fixed, taking, renewing and giving back one permit
is exactly what the lock layer does with a lock. :class:`PermitView` makes that
translation, so waiting (tenacity, wake-ups), renewal, ``skip_if``, ``LockLost`` and
cancellation safety work for permits without a second implementation.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .stores.base import FAIR, NOTIFY, AsyncPermitStore, PermitStore

# A freed permit wakes a waiter, but a holder that releases and takes a permit again
# at once often wins it back, and the woken waiter goes back to sleep. So permit
# waiters keep the short polling bound of stores without wake-ups: a push is a bonus.
_NOT_PERMITS = frozenset({FAIR, NOTIFY})


class PermitView:
    """``store``'s permits of one ``limit``, through the :class:`Store` protocol."""

    def __init__(self, store: PermitStore, limit: int) -> None:
        self.store = store
        self.limit = limit
        # Permits are not queued: the first waiter to try after a release gets it.
        self.capabilities = store.capabilities - _NOT_PERMITS

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        return self.store.acquire_permit(key, token, ttl, self.limit)

    def release(self, key: str, token: str) -> bool:
        return self.store.release_permit(key, token)

    def extend(self, key: str, token: str, ttl: float) -> bool:
        return self.store.extend_permit(key, token, ttl)

    def owner(self, key: str) -> str | None:
        """A holder's token if every permit is taken (``locked()`` is then true)."""
        holders = self.store.permit_holders(key)
        return holders[0] if len(holders) >= self.limit else None

    def wait(self, key: str, timeout: float) -> None:
        self.store.wait_permit(key, timeout)

    def __repr__(self) -> str:
        return f"{self.store!r} (limit={self.limit})"


class AsyncPermitView:
    """The async twin of :class:`PermitView`."""

    def __init__(self, store: AsyncPermitStore, limit: int) -> None:
        self.store = store
        self.limit = limit
        self.capabilities = store.capabilities - _NOT_PERMITS

    async def acquire(self, key: str, token: str, ttl: float) -> int | None:
        return await self.store.acquire_permit(key, token, ttl, self.limit)

    async def release(self, key: str, token: str) -> bool:
        return await self.store.release_permit(key, token)

    async def extend(self, key: str, token: str, ttl: float) -> bool:
        return await self.store.extend_permit(key, token, ttl)

    async def owner(self, key: str) -> str | None:
        holders = await self.store.permit_holders(key)
        return holders[0] if len(holders) >= self.limit else None

    async def wait(self, key: str, timeout: float) -> None:
        await self.store.wait_permit(key, timeout)

    def __repr__(self) -> str:
        return f"{self.store!r} (limit={self.limit})"


# One view per (store, limit), so that all leases of it share one renewal thread.
_views: weakref.WeakKeyDictionary[Any, dict[int, Any]] = weakref.WeakKeyDictionary()
_views_mutex = threading.Lock()


def permit_view(store: object, limit: int, *, asynchronous: bool) -> Any:
    """The (cached) view of ``store``'s permits with ``limit``.

    :raises TypeError: the store has no counted permits.
    """
    kind = AsyncPermitStore if asynchronous else PermitStore
    if not isinstance(store, kind):
        raise TypeError(
            f"{store!r} has no counted permits, so limit={limit} cannot be used with it; "
            "use a store that has them (memory, SQLite, Redis, PostgreSQL)"
        )
    with _views_mutex:
        try:
            by_limit = _views.setdefault(store, {})
        except TypeError:  # a store that cannot be weakly referenced: not cached
            by_limit = {}
        view = by_limit.get(limit)
        if view is None:
            view_class = AsyncPermitView if asynchronous else PermitView
            view = by_limit[limit] = view_class(store, limit)  # type: ignore[arg-type]
        return view


__all__ = ["AsyncPermitView", "PermitView", "permit_view"]
