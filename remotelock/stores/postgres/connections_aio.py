"""The connections behind AsyncPostgresStore, one set per event loop.

Hand-written, beside the sync :mod:`remotelock.stores.postgres.connections`, because
the two sides differ in kind, not just by ``await``: an asyncio connection belongs to
the event loop that opened it (``asyncio.run`` twice must not share one), so a store
built from a URL keeps its idle connections and its connection slots per event loop;
the sync store keeps one set per process, guarded by thread locks. Classes and
methods have the same names on both sides (less ``Async``), so the store's steps,
written once in :mod:`remotelock.stores.postgres.aio`, call either side's. What the
sides share is free of I/O, in :mod:`remotelock.stores.postgres.common`.

After ``os.fork()`` a child starts with no loops and no connections (the parent's stay
referenced, never used or closed, so the parent keeps them); a connection or pool
passed in cannot cross a fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg

from .busy import SlotCount, full_pause, none_given_back
from .common import (
    ORPHANED,
    Configured,
    Given,
    given_conninfo,
    is_pool,
    not_a_connection,
    server_conninfo,
    stayed_busy,
)
from .listener_aio import AsyncListener
from .loops import PerLoop

Conn = psycopg.AsyncConnection[Any]
T = TypeVar("T")
Run = Callable[[Conn], Awaitable[T]]
"""A step's work on the connection it was given."""


class AsyncSlots:
    """One event loop's connection slots (the rule is :class:`~.busy.SlotCount`'s). A
    step waits for as long as other steps keep giving slots back; it fails only when
    none came back for ``timeout`` seconds, which means every step holding one is
    stuck (each is bounded by the same ``timeout``)."""

    def __init__(self, size: int, timeout: float) -> None:
        self.count: SlotCount[asyncio.Future[None]] = SlotCount(size)
        self.timeout = timeout

    async def take(self, urgent: bool) -> None:
        if self.count.take_now(urgent):
            return
        turn = asyncio.get_running_loop().create_future()
        self.count.queue(urgent, turn)
        seen = self.count.gives
        try:
            while not turn.done():
                await asyncio.wait((turn,), timeout=self.timeout)
                if not turn.done():
                    if self.count.gives == seen:
                        raise none_given_back(self.count.size, self.timeout)
                    seen = self.count.gives
        except BaseException:
            if turn.done():
                self.give()  # handed over as the caller was cancelled: pass it on
            else:
                self.count.withdraw(urgent, turn)
            raise

    def give(self) -> None:
        turn = self.count.give()
        if turn is not None:
            turn.set_result(None)  # the slot is its own now


class _Idle:
    """One event loop's idle connections and connection slots."""

    def __init__(self, size: int, timeout: float) -> None:
        self.conns: list[Conn] = []
        self.slots = AsyncSlots(size, timeout)
        weakref.finalize(self, _finish, self.conns, os.getpid())


def _finish(idle: list[Conn], pid: int) -> None:
    # A loop that ended without aclose(): close the sockets without it (sync libpq call).
    # Never in a forked child: that would end the parent's sessions on the shared sockets.
    if os.getpid() != pid:
        ORPHANED.extend(idle)
        return
    for conn in idle:
        with contextlib.suppress(Exception):
            conn.pgconn.finish()
    idle.clear()


async def _close_all(idle: list[Conn]) -> None:
    conns, idle[:] = list(idle), []  # the same list: its loop's finalizer holds it
    for conn in conns:
        with contextlib.suppress(psycopg.Error):
            await conn.close()


class AsyncOwnConnections:
    """Connections opened from a conninfo: at most ``size`` at a time per event loop,
    idle ones kept per loop."""

    reusable = True

    def __init__(self, base: str, dsn: str, size: int, timeout: float) -> None:
        self.base = base  # as the caller gave it
        self.dsn = dsn  # plus the store's timeouts: what the store connects with
        self.size = size
        self.timeout = timeout
        self._loops = PerLoop(lambda: _Idle(size, timeout))
        # Which loop's slot a connection holds: close() may drop the loop's state
        # while a step still runs, and that step must give back the slot it took.
        self._lent: weakref.WeakKeyDictionary[Conn, _Idle] = weakref.WeakKeyDictionary()

    async def take(self, urgent: bool = False) -> Conn:
        idle = self._loops.get()
        await idle.slots.take(urgent)
        try:
            conn = await self._connect(idle, time.monotonic() + self.timeout)
        except BaseException:
            idle.slots.give()
            raise
        self._lent[conn] = idle
        return conn

    async def _connect(self, idle: _Idle, deadline: float) -> Conn:
        attempt = 0
        while True:
            if idle.conns:
                return idle.conns.pop()
            try:
                return await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            except psycopg.OperationalError as exc:
                # A full server: wait for one of ours to come back, or a slot.
                pause = full_pause(exc, attempt, deadline)
                if pause is None:
                    raise
                await asyncio.sleep(pause)
                attempt += 1

    async def give(self, conn: Conn, ok: bool) -> None:
        idle = self._lent.pop(conn)
        try:
            if ok and not conn.closed:
                idle.conns.append(conn)
                return
            with contextlib.suppress(psycopg.Error):
                await conn.close()
        finally:
            idle.slots.give()

    async def flush(self) -> None:
        """Close this loop's idle connections (after one was found dead, the others may
        be too)."""
        await _close_all(self._loops.get().conns)

    async def close(self) -> None:
        """Close this loop's idle connections and forget the loop."""
        idle = self._loops.pop()
        if idle is not None:
            await _close_all(idle.conns)

    async def conninfo(self) -> str:
        """How to reach the server (for the listener's own connection)."""
        return self.base


class _Given(Given, ABC):
    """A connection or pool passed in (see :class:`~.common.Given`)."""

    @abstractmethod
    async def take(self, urgent: bool = False) -> Conn: ...

    @abstractmethod
    async def give(self, conn: Conn, ok: bool) -> None: ...

    async def close(self) -> None:
        return None  # the caller's: the caller closes it

    async def conninfo(self) -> str:
        """How to reach the same server (for the listener's own connection)."""
        conn = await self.take()
        try:
            return given_conninfo(conn.info)
        finally:
            await self.give(conn, ok=True)


class AsyncGivenConnection(_Given):
    """One connection passed in: used by one step at a time, never replaced."""

    reusable = False

    def __init__(self, conn: Conn, timeout: float) -> None:
        super().__init__(timeout)
        self.conn = conn
        self._busy = PerLoop(asyncio.Lock)

    async def take(self, urgent: bool = False) -> Conn:
        self.check_fork()
        try:
            await asyncio.wait_for(self._busy.get().acquire(), self.timeout)
        except asyncio.TimeoutError:
            raise stayed_busy("the store's connection", self.timeout) from None
        return self.conn

    async def give(self, conn: Conn, ok: bool) -> None:
        try:
            if not ok and not conn.closed and not conn.autocommit:
                with contextlib.suppress(psycopg.Error):
                    await conn.rollback()  # a failed statement left its transaction aborted
        finally:
            self._busy.get().release()

    async def flush(self) -> None:
        return None


class AsyncGivenPool(_Given):
    """A ``psycopg_pool.AsyncConnectionPool`` passed in (it replaces broken connections)."""

    reusable = True
    what = "pool"

    def __init__(self, pool: Any, timeout: float) -> None:
        super().__init__(timeout)
        self.pool = pool

    async def take(self, urgent: bool = False) -> Conn:
        self.check_fork()
        return await self.pool.getconn(timeout=self.timeout)  # type: ignore[no-any-return]

    async def give(self, conn: Conn, ok: bool) -> None:
        if not ok and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                await conn.close()  # the pool sees it closed and replaces it
        await self.pool.putconn(conn)

    async def flush(self) -> None:
        await self.pool.check()


AsyncSource = AsyncOwnConnections | AsyncGivenConnection | AsyncGivenPool


class AsyncConnected(Configured):
    """AsyncPostgresStore's connections and listener, chosen by what it was given.

    Unlike its sync twin it registers no finalizer (each event loop's idle connections
    are finished when that loop's state goes, and a listener task ends when it idles)
    and has no ``as_async()``: it is the async store.
    """

    _source: AsyncSource
    _listener: AsyncListener

    def _connect(self, connection: Any) -> None:
        """Use ``connection`` (a connection or pool), or connect by ``_conninfo``."""
        if self._conninfo is not None:
            dsn = server_conninfo(self._conninfo, self.timeout)
            self._source = AsyncOwnConnections(self._conninfo, dsn, self.pool_size, self.timeout)
        elif isinstance(connection, psycopg.AsyncConnection):
            self._source = AsyncGivenConnection(connection, self.timeout)
        elif is_pool(connection):
            self._source = AsyncGivenPool(connection, self.timeout)
        else:
            raise not_a_connection(
                connection, "a psycopg.AsyncConnection or a psycopg_pool.AsyncConnectionPool"
            )
        self._listener = AsyncListener(
            self._source, self.listen_url, self.timeout, self._sql.listen
        )


__all__ = [
    "AsyncConnected",
    "AsyncGivenConnection",
    "AsyncGivenPool",
    "AsyncOwnConnections",
    "AsyncSource",
    "Conn",
    "Run",
]
