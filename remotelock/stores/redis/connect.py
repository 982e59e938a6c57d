"""The sync RedisStore's client, scripts and doorbell: one of each per process.

Hand-written, beside its asyncio twin :mod:`remotelock.stores.redis.connect_aio`,
because this is where the two stores really differ. A sync redis-py client is safe to
share between threads (its pool hands each call its own connection), so the store
keeps exactly one, given or built from a URL, and registers its scripts on it once. A
forked child inherits that client (redis-py's pool reconnects after a fork) but not
the reader thread, so the doorbell is per process. Only the sync store has an async
twin to build, and only it warns about a client without ``socket_timeout``: a thread
blocked on a frozen server cannot be interrupted, an asyncio caller can cancel.
The generated :mod:`remotelock.stores.redis.store` calls these by the same names as
the asyncio store calls :class:`~remotelock.stores.redis.connect_aio.AsyncClients`.
"""

from __future__ import annotations

import os
from typing import Any

from ..base import AsyncStore, Store
from ..shared.threaded import threaded
from .build import build_client
from .clients import Options, parse_url
from .common import describe, lease_client_of, refuse_url
from .doorbell import Doorbell
from .lua import SCRIPTS


class Clients:
    """A sync store's client, its registered scripts, and this process's doorbell."""

    def __init__(
        self,
        client: Any,
        prefix: str,
        url: tuple[str, dict[str, Any]] | None = None,
        lease: Any = None,
    ) -> None:
        self.client = client
        self.lease = client if lease is None else lease  # for releases and renewals
        self.scripts: dict[str, Any] = {
            name: client.register_script(src) for name, src in SCRIPTS.items()
        }  # per client: a script object runs on the client it was registered with
        self._prefix = prefix
        self._url = url  # how the store was built, for its async twin
        self._twin: AsyncStore | None = None
        self._pid = os.getpid()
        self._doorbell = Doorbell(client, prefix)

    @classmethod
    def of(cls, client: Any, prefix: str, store: str) -> Clients:
        """The clients of a store built with ``client`` (or by ``from_url``)."""
        if isinstance(client, cls):
            return client
        refuse_url(client, store)
        return cls(client, prefix)

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any]) -> tuple[Clients, Options]:
        """A client built from ``url`` (see :func:`~.clients.parse_url`), and the store's
        own options from it."""
        client_url, own, kwargs = parse_url(url, dict(options))
        client = build_client(client_url, kwargs)
        lease = lease_client_of(client)
        return cls(client, own.prefix, (url, options), lease), own

    def doorbell(self) -> Doorbell:
        """The wake-ups of this process (a forked child starts its own reader)."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._doorbell = Doorbell(self.client, self._prefix)
        return self._doorbell

    def untimed(self) -> bool:
        """Whether the client has no ``socket_timeout`` (a frozen server hangs it)."""
        pool = getattr(self.client, "connection_pool", None)
        return pool is not None and pool.connection_kwargs.get("socket_timeout") is None

    def where(self) -> str | None:
        """Where the client points (for the store's repr; no password)."""
        return describe(self.client)

    def twin(self, store: Store) -> AsyncStore:
        """The store's async twin, built once: a native asyncio store with clients of
        its own for a URL-built store; else ``store`` run in worker threads (a client
        passed in is sync, and cannot be shared with an event loop)."""
        if self._twin is None:
            if self._url is not None:
                from .aio import AsyncRedisStore  # asyncio only for async callers

                url, options = self._url
                self._twin = AsyncRedisStore.from_url(url, **options)
            else:
                self._twin = threaded(store)
        return self._twin

    def close(self) -> None:
        """Stop the wake-up reader and close the client's connections."""
        self._doorbell.close()
        self.client.close()
        if self.lease is not self.client:
            self.lease.close()


__all__ = ["Clients"]
