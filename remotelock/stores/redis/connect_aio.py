"""The asyncio RedisStore's clients, scripts and doorbells: one set per event loop.

Hand-written, beside its sync twin :mod:`remotelock.stores.redis.connect`, because
this is where the two stores really differ. An asyncio connection belongs to the loop
that opened it (``asyncio.run`` twice must not share a connection pool), so a store
built from a URL builds a client per event loop, and each loop gets its own doorbell
(its reader is a task on that loop). A client passed in is used on whatever loop runs.
The store source, :mod:`remotelock.stores.redis.aio`, calls these by the same names
as the generated sync store calls :class:`~remotelock.stores.redis.connect.Clients`.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from ..base import AsyncStore
from .build import build_client, make_client
from .clients import Options, parse_url
from .common import lease_client_of, refuse_url
from .doorbell_aio import AsyncDoorbell
from .lua import SCRIPTS


class _Bound:
    """A client, the one for releases and renewals, and the scripts registered on the
    first (a script object runs on the client it was registered with unless told)."""

    __slots__ = ("client", "lease", "scripts")

    def __init__(self, client: Any, lease: Any = None) -> None:
        self.client = client
        self.lease = client if lease is None else lease
        self.scripts = {name: client.register_script(src) for name, src in SCRIPTS.items()}


class AsyncClients:
    """An async store's client (given, or one per event loop) and its doorbells."""

    def __init__(self, source: _Bound | tuple[str, dict[str, Any]], prefix: str) -> None:
        self._source = source  # the client passed in, or how to build one per loop
        self._prefix = prefix
        self._per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bound] = (
            weakref.WeakKeyDictionary()
        )
        self._doorbells: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncDoorbell] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def of(cls, client: Any, prefix: str, store: str) -> AsyncClients:
        """The clients of a store built with ``client`` (or by ``from_url``)."""
        if isinstance(client, cls):
            return client
        refuse_url(client, store)
        return cls(_Bound(client), prefix)

    @classmethod
    def from_url(cls, url: str, options: dict[str, Any]) -> tuple[AsyncClients, Options]:
        """Clients built from ``url`` (see :func:`~.clients.parse_url`) on each loop,
        and the store's own options from it."""
        client_url, own, kwargs = parse_url(url, dict(options), asynchronous=True)
        build_client(client_url, kwargs, asynchronous=True)  # fail now, not on first use
        return cls((client_url, kwargs), own.prefix), own

    def _bound(self) -> _Bound:
        if isinstance(self._source, _Bound):
            return self._source
        loop = asyncio.get_running_loop()
        bound = self._per_loop.get(loop)
        if bound is None:
            url, kwargs = self._source
            client = make_client(url, dict(kwargs), asynchronous=True)
            lease = lease_client_of(client)
            bound = self._per_loop[loop] = _Bound(client, lease)
        return bound

    @property
    def client(self) -> Any:
        """The client for the running event loop."""
        return self._bound().client

    @property
    def lease(self) -> Any:
        """The client for releases and renewals on the running event loop."""
        return self._bound().lease

    @property
    def scripts(self) -> dict[str, Any]:
        """The scripts registered on :attr:`client`."""
        return self._bound().scripts

    def doorbell(self) -> AsyncDoorbell:
        """The wake-ups of the running event loop (one subscriber connection each)."""
        loop = asyncio.get_running_loop()
        doorbell = self._doorbells.get(loop)
        if doorbell is None:
            doorbell = self._doorbells[loop] = AsyncDoorbell(self.client, self._prefix)
        return doorbell

    def untimed(self) -> bool:
        """Never warned about: an asyncio caller can bound a hung call by cancelling it."""
        return False

    def where(self) -> str | None:
        """Nothing: the clients are per event loop, so the repr names none."""
        return None

    def twin(self, store: AsyncStore) -> AsyncStore:
        """An async store is its own async twin."""
        return store

    async def aclose(self) -> None:
        """Close the running loop's doorbell, and its client (or the one passed in)."""
        loop = asyncio.get_running_loop()
        doorbell = self._doorbells.pop(loop, None)
        if doorbell is not None:
            await doorbell.aclose()
        bound = self._per_loop.pop(loop, None)
        if isinstance(self._source, _Bound):
            bound = self._source
        if bound is not None:
            await bound.client.aclose()
            if bound.lease is not bound.client:
                await bound.lease.aclose()


__all__ = ["AsyncClients"]
