"""Which store a lock uses when none is passed: one small resolution function.

Order: the ``store=`` argument, then :func:`configure`, then the ``REMOTELOCK_URL``
environment variable, then the embedded default (a SQLite file in the user's cache
directory). Resolution happens on a lock's first use, never at import or decoration,
so decorating a function touches nothing outside the process.
"""

from __future__ import annotations

import os
import threading
from typing import Final

from .errors import StoreConfigError
from .stores import store_from_url
from .stores.base import AsyncStore, Store

AnyStore = Store | AsyncStore

URL_VARIABLE: Final = "REMOTELOCK_URL"
LAMBDA_VARIABLE: Final = "AWS_LAMBDA_FUNCTION_NAME"

_mutex = threading.Lock()
_configured: AnyStore | None = None
_by_url: dict[str, AnyStore] = {}


def configure(*, store: AnyStore | str | None) -> None:
    """Set the store used by every lock that is not given one (``None`` resets).

    :param store: a store object, or a URL for :func:`~remotelock.stores.store_from_url`.

    .. code-block:: python

        remotelock.configure(store="redis://cache.internal:6379/0")
    """
    global _configured
    resolved = _from_url(store) if isinstance(store, str) else store
    if resolved is not None and not isinstance(resolved, (Store, AsyncStore)):
        raise TypeError(f"store must be a lock store or a URL, got {store!r}")
    with _mutex:
        _configured = resolved


def resolve_store(store: AnyStore | None = None) -> AnyStore:
    """The store to use: ``store`` if given, else the configured, env or default one.

    :raises StoreConfigError: inside AWS Lambda with nothing configured, because the
        embedded default (a file on this instance's disk) cannot exclude the others.
    """
    if store is not None:
        return store
    if _configured is not None:
        return _configured
    url = os.environ.get(URL_VARIABLE)
    if url:
        return _from_url(url)
    if os.environ.get(LAMBDA_VARIABLE):
        raise StoreConfigError(
            "no lock store is configured, and this is AWS Lambda: the embedded SQLite "
            "default is a file on this execution environment's own disk, so it cannot "
            "exclude other concurrent instances. Set REMOTELOCK_URL (e.g. a dynamodb://, "
            "redis:// or postgresql:// URL) or pass store=..."
        )
    return _from_url("sqlite://")


def _from_url(url: str) -> AnyStore:
    # One store per URL per process: its connections and wake-ups are shared.
    with _mutex:
        store = _by_url.get(url)
        if store is None:
            store = _by_url[url] = store_from_url(url)
        return store


__all__ = ["LAMBDA_VARIABLE", "URL_VARIABLE", "configure", "resolve_store"]
