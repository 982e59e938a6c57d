"""``shared=True``: a store's shared (reader) leases, seen by the lock layer as a store.

A shared lease is taken, renewed and given back exactly as a lock is, only through the
store's ``*_shared`` steps (:class:`~remotelock.stores.readers.SharedStore`). Like
:class:`~remotelock.permits.PermitView` for counted permits, :class:`SharedView` makes
that translation once, so waiting, renewal, ``skip_if``, ``LockLost`` and cancellation
safety work for readers without a second implementation. One class serves sync and
async stores: each method hands back what the store's method returns.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .stores.base import FAIR
from .stores.readers import AsyncSharedStore, SharedStore

# Readers are not queued: a writer's release wakes every waiting reader, and all of
# them may enter together.
_NOT_READERS = frozenset({FAIR})


class SharedView:
    """``store``'s shared leases, through the :class:`~remotelock.stores.base.Store` protocol."""

    def __init__(self, store: SharedStore | AsyncSharedStore) -> None:
        self.store: Any = store
        self.capabilities = store.capabilities - _NOT_READERS  # type: ignore[union-attr]
        self.default_wait = getattr(store, "default_wait", None)  # see policy.store_wait

    def acquire(self, key: str, token: str, ttl: float) -> Any:
        return self.store.acquire_shared(key, token, ttl)

    def release(self, key: str, token: str) -> Any:
        return self.store.release_shared(key, token)

    def extend(self, key: str, token: str, ttl: float) -> Any:
        return self.store.extend_shared(key, token, ttl)

    def owner(self, key: str) -> Any:
        """The exclusive holder, if any: what keeps a reader out (``locked()``)."""
        return self.store.owner(key)

    def wait(self, key: str, timeout: float) -> Any:
        return self.store.wait_shared(key, timeout)

    def __repr__(self) -> str:
        return f"{self.store!r} (shared)"


# One view per store, so that all shared leases of it share one renewal thread.
_views: weakref.WeakKeyDictionary[Any, SharedView] = weakref.WeakKeyDictionary()
_views_mutex = threading.Lock()


def shared_view(store: object, *, asynchronous: bool) -> SharedView:
    """The (cached) view of ``store``'s shared leases.

    :raises TypeError: the store has no shared locks.
    """
    kind = AsyncSharedStore if asynchronous else SharedStore
    if not isinstance(store, kind):
        raise TypeError(
            f"{store!r} has no shared locks, so shared=True cannot be used with it; "
            "use a store that has them (memory, SQLite, Redis, PostgreSQL, DynamoDB)"
        )
    with _views_mutex:
        try:
            view = _views.get(store)
        except TypeError:  # a store that cannot be weakly referenced: not cached
            return SharedView(store)
        if view is None:
            view = _views[store] = SharedView(store)
        return view


__all__ = ["SharedView", "shared_view"]
