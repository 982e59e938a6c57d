"""The connections behind the sync PostgresStore, one set per process.

Hand-written, beside the async :mod:`remotelock.stores.postgres.connections_aio`,
because the two sides differ in kind, not just by ``await``: sync connections serve
every thread of the process, so a store keeps one set of them, guarded by thread
locks; asyncio connections belong to the event loop that opened them, so the async
store keeps a set per loop. Classes and methods have the same names on both sides
(less ``Async``), so the store's steps, generated from
:mod:`remotelock.stores.postgres.aio`, call this side's. What the sides share is free
of I/O, in :mod:`remotelock.stores.postgres.common`.

A store built from a URL connects on demand in the calling thread and keeps up to
``pool_size`` idle connections, so a server that comes back is used at once and a
server that is down fails at once, with no pool threads in between. A connection or
pool passed in is used as given. Nothing here survives ``os.fork()``: the child
starts with no connections (the parent's stay referenced, never used or closed, so
the parent keeps them).

:class:`Connected` also holds what only the sync store has: ``as_async()``, which
hands out the async twin, and closing the connections and the listener thread when
the store is collected (an event loop's connections and listener task end with it).
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from ..base import AsyncStore
from ..shared.threaded import threaded
from .busy import SlotCount, full_pause, none_given_back
from .common import (
    ORPHANED,
    Configured,
    Given,
    forget_in_child,
    given_conninfo,
    is_pool,
    not_a_connection,
    server_conninfo,
    stayed_busy,
)
from .listener import Listener

Conn = psycopg.Connection[Any]
T = TypeVar("T")
Run = Callable[[Conn], T]
"""A step's work on the connection it was given."""


class Slots:
    """The slots of :class:`OwnConnections` for threads (the rule is
    :class:`~.busy.SlotCount`'s). A step waits for as long as other steps keep giving
    slots back; it fails only when none came back for ``timeout`` seconds, which means
    every step holding one is stuck (each is bounded by the same ``timeout``)."""

    def __init__(self, size: int, timeout: float) -> None:
        self.count: SlotCount[threading.Event] = SlotCount(size)
        self.timeout = timeout
        self.mutex = threading.Lock()

    def take(self, urgent: bool) -> None:
        with self.mutex:
            if self.count.take_now(urgent):
                return
            turn = threading.Event()
            self.count.queue(urgent, turn)
            seen = self.count.gives
        while not turn.wait(self.timeout):
            with self.mutex:
                if turn.is_set():
                    return
                if self.count.gives == seen:
                    self.count.withdraw(urgent, turn)
                    raise none_given_back(self.count.size, self.timeout)
                seen = self.count.gives

    def give(self) -> None:
        with self.mutex:
            turn = self.count.give()
            if turn is not None:
                turn.set()  # the slot is its own now


class OwnConnections:
    """Connections opened from a conninfo: at most ``size`` at a time, idle ones kept."""

    reusable = True

    def __init__(self, base: str, dsn: str, size: int, timeout: float) -> None:
        self.base = base  # as the caller gave it
        self.dsn = dsn  # plus the store's timeouts: what the store connects with
        self.size = size
        self.timeout = timeout
        self._reset()
        forget_in_child(self)

    def _reset(self) -> None:
        self.idle: list[Conn] = []
        self.mutex = threading.Lock()
        self.slots = Slots(self.size, self.timeout)

    def take(self, urgent: bool = False) -> Conn:
        self.slots.take(urgent)
        deadline = time.monotonic() + self.timeout
        try:
            attempt = 0
            while True:
                with self.mutex:
                    if self.idle:
                        return self.idle.pop()
                try:
                    return psycopg.connect(self.dsn, autocommit=True)
                except psycopg.OperationalError as exc:
                    # A full server: wait for one of ours to come back, or a slot.
                    pause = full_pause(exc, attempt, deadline)
                    if pause is None:
                        raise
                    time.sleep(pause)
                    attempt += 1
        except BaseException:
            self.slots.give()
            raise

    def give(self, conn: Conn, ok: bool) -> None:
        try:
            if ok and not conn.closed:
                with self.mutex:
                    self.idle.append(conn)
                    return
            with contextlib.suppress(psycopg.Error):
                conn.close()
        finally:
            self.slots.give()

    def flush(self) -> None:
        """Close the idle connections (after one was found dead, the others may be too)."""
        with self.mutex:
            idle, self.idle = self.idle, []
        for conn in idle:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    close = flush

    def conninfo(self) -> str:
        """How to reach the server (for the listener's own connection)."""
        return self.base

    def forget_after_fork(self) -> None:
        ORPHANED.extend(self.idle)
        self._reset()


class _Given(Given, ABC):
    """A connection or pool passed in (see :class:`~.common.Given`)."""

    @abstractmethod
    def take(self, urgent: bool = False) -> Conn: ...

    @abstractmethod
    def give(self, conn: Conn, ok: bool) -> None: ...

    def close(self) -> None:
        return None  # the caller's: the caller closes it

    def conninfo(self) -> str:
        """How to reach the same server (for the listener's own connection)."""
        conn = self.take()
        try:
            return given_conninfo(conn.info)
        finally:
            self.give(conn, ok=True)


class GivenConnection(_Given):
    """One connection passed in: used by one thread at a time, never replaced."""

    reusable = False

    def __init__(self, conn: Conn, timeout: float) -> None:
        super().__init__(timeout)
        self.conn = conn
        self.mutex = threading.Lock()

    def take(self, urgent: bool = False) -> Conn:
        self.check_fork()
        if not self.mutex.acquire(timeout=self.timeout):
            raise stayed_busy("the store's connection", self.timeout)
        return self.conn

    def give(self, conn: Conn, ok: bool) -> None:
        try:
            if not ok and not conn.closed and not conn.autocommit:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()  # a failed statement left its transaction aborted
        finally:
            self.mutex.release()

    def flush(self) -> None:
        return None


class GivenPool(_Given):
    """A ``psycopg_pool.ConnectionPool`` passed in (it replaces broken connections)."""

    reusable = True
    what = "pool"

    def __init__(self, pool: Any, timeout: float) -> None:
        super().__init__(timeout)
        self.pool = pool

    def take(self, urgent: bool = False) -> Conn:
        self.check_fork()
        return self.pool.getconn(timeout=self.timeout)  # type: ignore[no-any-return]

    def give(self, conn: Conn, ok: bool) -> None:
        if not ok and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.close()  # the pool sees it closed and replaces it
        self.pool.putconn(conn)

    def flush(self) -> None:
        self.pool.check()


Source = OwnConnections | GivenConnection | GivenPool


class Connected(Configured):
    """PostgresStore's connections and listener, chosen by what it was given, and what
    only the sync store has: closing them when it is collected, and ``as_async()``.

    The generated store class can hold no sync-only method (the generator only drops
    lines from the async source), so this base class, which each side hand-writes
    anyway, carries them.
    """

    _source: Source
    _listener: Listener
    _twin: AsyncStore | None

    def _connect(self, connection: Any) -> None:
        """Use ``connection`` (a connection or pool), or connect by ``_conninfo``."""
        if self._conninfo is not None:
            dsn = server_conninfo(self._conninfo, self.timeout)
            self._source = OwnConnections(self._conninfo, dsn, self.pool_size, self.timeout)
        elif isinstance(connection, psycopg.Connection):
            self._source = GivenConnection(connection, self.timeout)
        elif is_pool(connection):
            self._source = GivenPool(connection, self.timeout)
        else:
            raise not_a_connection(
                connection, "a psycopg.Connection or a psycopg_pool.ConnectionPool"
            )
        self._listener = Listener(self._source, self.listen_url, self.timeout, self._sql.listen)
        self._twin = None
        # The finalizer holds the two, not the store, so a dropped store is collected.
        weakref.finalize(self, _close, self._source, self._listener)

    def as_async(self) -> AsyncStore:
        """The async twin: native asyncio connections for a store built from a URL or
        conninfo (same table, same options); else this store's steps in worker threads."""
        if self._twin is None:
            if self._conninfo is not None:
                from .aio import AsyncPostgresStore  # asyncio only for async callers

                self._twin = AsyncPostgresStore(
                    conninfo=self._conninfo,
                    table=self.table,
                    schema=self.schema,
                    timeout=self.timeout,
                    pool_size=self.pool_size,
                    listen=self.listen,
                    listen_url=self.listen_url,
                )
            else:
                self._twin = threaded(self)  # type: ignore[arg-type]
        return self._twin


def _close(source: Source, listener: Listener) -> None:
    listener.close()
    source.close()


__all__ = [
    "Conn",
    "Connected",
    "GivenConnection",
    "GivenPool",
    "Listener",
    "OwnConnections",
    "Run",
    "Source",
]
