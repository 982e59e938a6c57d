"""``limit=N``: counted permits, seen by the lock layer as an ordinary store.

A :class:`~remotelock.stores.base.PermitStore` has its own protocol (a permit set is
not a lock), but once the limit is fixed, taking, renewing and giving back one permit
is exactly what the lock layer does with a lock. :class:`PermitView` makes that
translation, so waiting (tenacity, wake-ups), renewal, ``skip_if``, ``LockLost`` and
cancellation safety work for permits without a second implementation.

One class serves sync and async permit stores alike: each method hands back what the
store's method returns (a coroutine, for an async store, that the async engine awaits).
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from .stores.base import FAIR, AsyncPermitStore, PermitStore

# Permits are not queued (the first to try after a release gets it), but a store that
# pushes lock releases pushes permit releases too: its waiters sleep until a release
# rings, or the first held permit runs out, with the long wait of pushed stores (a
# woken waiter that loses the freed permit sleeps again until the next release).
_NOT_PERMITS = frozenset({FAIR})


def _then(result: Any, then: Callable[[Any], Any]) -> Any:
    """``then(result)``, or a coroutine of it if ``result`` is awaitable."""
    if inspect.isawaitable(result):
        return _later(result, then)
    return then(result)


async def _later(result: Awaitable[Any], then: Callable[[Any], Any]) -> Any:
    return then(await result)


class PermitView:
    """``store``'s permits of one ``limit``, through the :class:`Store` protocol."""

    def __init__(self, store: PermitStore | AsyncPermitStore, limit: int) -> None:
        self.store: Any = store
        self.limit = limit
        # Permits are not queued: the first waiter to try after a release gets it.
        self.capabilities = store.capabilities - _NOT_PERMITS
        self.default_wait = getattr(store, "default_wait", None)  # see policy.store_wait

    def acquire(self, key: str, token: str, ttl: float) -> Any:
        return self.store.acquire_permit(key, token, ttl, self.limit)

    def release(self, key: str, token: str) -> Any:
        return self.store.release_permit(key, token)

    def extend(self, key: str, token: str, ttl: float) -> Any:
        return self.store.extend_permit(key, token, ttl)

    def owner(self, key: str) -> Any:
        """A holder's token if every permit is taken (``locked()`` is then true)."""
        return _then(self.store.permit_holders(key), self._full)

    def wait(self, key: str, timeout: float) -> Any:
        return self.store.wait_permit(key, timeout)

    def _full(self, holders: list[str]) -> str | None:
        return holders[0] if len(holders) >= self.limit else None

    def __repr__(self) -> str:
        return f"{self.store!r} (limit={self.limit})"


# One view per (store, limit), so that all leases of it share one renewal thread.
_views: weakref.WeakKeyDictionary[Any, dict[int, PermitView]] = weakref.WeakKeyDictionary()
_views_mutex = threading.Lock()


def permit_view(store: object, limit: int, *, asynchronous: bool) -> PermitView:
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
            view = by_limit[limit] = PermitView(store, limit)
        return view


__all__ = ["PermitView", "permit_view"]
