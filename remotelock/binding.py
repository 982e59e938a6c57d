"""How a lock reaches its store: the checked face of a store an engine calls, once per store.

Working it out means ``isinstance`` checks against runtime-checkable protocols (several
microseconds each), finding an async twin, a permit view for ``limit > 1`` and a shared
view for readers. A decorated function creates a lock per call, so the answer is cached
per (store, limit or shared): a call then pays one dictionary lookup, and every lock of
one store shares the same twin and views (hence one renewal thread).
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from .permits import permit_view
from .reading import shared_view
from .stores.base import AsyncQueuedStore, AsyncStore, HasAsyncTwin, QueuedStore, Store
from .stores.shared.threaded import threaded


class Binding(NamedTuple):
    """What an engine calls for one configured store."""

    store: Any  # the store itself, its async twin, or a permit view of either
    source: object  # the store as configured (a lock re-binds when that changes)
    queue: Any  # ``store`` again if it queues waiters (QueuedStore / AsyncQueuedStore)


SHARED: Final = 0
"""The cache slot of a store's shared face (limits start at 1)."""

_Table = weakref.WeakKeyDictionary[Any, dict[int, Binding]]
_sync: _Table = weakref.WeakKeyDictionary()
_async: _Table = weakref.WeakKeyDictionary()
_mutex = threading.Lock()


def _cached(table: _Table, store: object, face: int, make: Callable[[], Binding]) -> Binding:
    try:
        found = table.get(store, {}).get(face)
    except TypeError:  # a store that cannot be weakly referenced: not cached
        return make()
    if found is None:
        found = make()  # outside the mutex: may build a twin; a racing duplicate is harmless
        with _mutex:
            found = table.setdefault(store, {}).setdefault(face, found)
    return found


def _is_async(store: object) -> bool:
    return inspect.iscoroutinefunction(getattr(store, "acquire", None))


def sync_binding(store: Store | AsyncStore, limit: int, shared: bool = False) -> Binding:
    """The face of ``store`` for blocking code.

    :raises TypeError: ``store`` is async, or has no counted permits for ``limit > 1``
        (or no shared locks for ``shared``).
    """

    def make() -> Binding:
        if not isinstance(store, Store) or _is_async(store):
            raise TypeError(
                f"{store!r} is an async store: use `async with` / `await aacquire()` "
                "(or decorate an `async def` function)"
            )
        face: Any = store if limit == 1 else permit_view(store, limit, asynchronous=False)
        if shared:
            face = shared_view(store, asynchronous=False)
        return Binding(face, store, face if isinstance(face, QueuedStore) else None)

    return _cached(_sync, store, SHARED if shared else limit, make)


def async_binding(store: Store | AsyncStore, limit: int, shared: bool = False) -> Binding:
    """The face of ``store`` for asyncio code: the store, its twin, or a thread-backed
    wrapper of a sync store.

    :raises TypeError: no counted permits for ``limit > 1`` (or no shared locks).
    """

    def make() -> Binding:
        twin: Any
        if _is_async(store):
            twin = store
        elif isinstance(store, HasAsyncTwin):
            twin = store.as_async()
        else:
            twin = threaded(store)  # type: ignore[arg-type]
        if limit > 1:
            twin = permit_view(twin, limit, asynchronous=True)
        elif shared:
            twin = shared_view(twin, asynchronous=True)
        return Binding(twin, store, twin if isinstance(twin, AsyncQueuedStore) else None)

    return _cached(_async, store, SHARED if shared else limit, make)


__all__ = ["Binding", "async_binding", "sync_binding"]
