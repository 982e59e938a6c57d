"""Connections and wake-ups behind the sync PostgresStore, one set per process.

A store built from a URL connects on demand in the calling thread and keeps up to
``pool_size`` idle connections, so a server that comes back is used at once and a
server that is down fails at once, with no pool threads in between. A connection or
pool passed in is used as given. Nothing here survives ``os.fork()``: the child
starts with no connections and no listener (the parent's stay referenced, never
used or closed, so the parent keeps them).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from typing import Any, Final

import psycopg

from ...errors import StoreError
from .common import given_conninfo, log

_ORPHANED: list[object] = []  # inherited across fork: kept alive, never touched
_LISTEN_IDLE: Final = 30.0  # seconds without waiters before the listener disconnects
_BACKOFF_MAX: Final = 2.0


class OwnConnections:
    """Connections opened from a conninfo: at most ``size`` at a time, idle ones kept."""

    reusable = True

    def __init__(self, base: str, dsn: str, size: int, timeout: float) -> None:
        self.base = base  # as the caller gave it
        self.dsn = dsn  # plus the store's timeouts: what the store connects with
        self.size = size
        self.timeout = timeout
        self._reset()
        _STATES.add(self)

    def _reset(self) -> None:
        self.idle: list[psycopg.Connection[Any]] = []
        self.mutex = threading.Lock()
        self.slots = threading.BoundedSemaphore(self.size)

    def take(self) -> psycopg.Connection[Any]:
        if not self.slots.acquire(timeout=self.timeout):
            raise psycopg.OperationalError(
                f"all {self.size} connections of this store stayed busy for {self.timeout:g} s"
            )
        try:
            with self.mutex:
                if self.idle:
                    return self.idle.pop()
            return psycopg.connect(self.dsn, autocommit=True)
        except BaseException:
            self.slots.release()
            raise

    def give(self, conn: psycopg.Connection[Any], ok: bool) -> None:
        try:
            if ok and not conn.closed:
                with self.mutex:
                    self.idle.append(conn)
                    return
            with contextlib.suppress(psycopg.Error):
                conn.close()
        finally:
            self.slots.release()

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
        _ORPHANED.extend(self.idle)
        self._reset()


class GivenConnection:
    """One connection passed in: used by one thread at a time, never replaced."""

    reusable = False

    def __init__(self, conn: psycopg.Connection[Any], timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.pid = os.getpid()
        self.mutex = threading.Lock()

    def take(self) -> psycopg.Connection[Any]:
        if self.pid != os.getpid():
            raise StoreError(
                "a connection given to a PostgresStore cannot be used after os.fork(); "
                "build the store from a URL, or in the process that uses it"
            )
        if not self.mutex.acquire(timeout=self.timeout):
            raise psycopg.OperationalError(
                f"the store's connection stayed busy for {self.timeout:g} s"
            )
        return self.conn

    def give(self, conn: psycopg.Connection[Any], ok: bool) -> None:
        try:
            if not ok and not conn.closed and not conn.autocommit:
                with contextlib.suppress(psycopg.Error):
                    conn.rollback()  # a failed statement left its transaction aborted
        finally:
            self.mutex.release()

    def flush(self) -> None:
        return None

    def close(self) -> None:
        return None  # the caller's connection: the caller closes it

    def conninfo(self) -> str:
        """How to reach the same server (for the listener's own connection)."""
        conn = self.take()
        try:
            return given_conninfo(conn.info)
        finally:
            self.give(conn, ok=True)


class GivenPool:
    """A ``psycopg_pool.ConnectionPool`` passed in (it replaces broken connections)."""

    reusable = True

    def __init__(self, pool: Any, timeout: float) -> None:
        self.pool = pool
        self.timeout = timeout
        self.pid = os.getpid()

    def take(self) -> psycopg.Connection[Any]:
        if self.pid != os.getpid():
            raise StoreError(
                "a pool given to a PostgresStore cannot be used after os.fork(); "
                "build the store from a URL, or in the process that uses it"
            )
        return self.pool.getconn(timeout=self.timeout)  # type: ignore[no-any-return]

    def give(self, conn: psycopg.Connection[Any], ok: bool) -> None:
        if not ok and not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.close()  # the pool sees it closed and replaces it
        self.pool.putconn(conn)

    def flush(self) -> None:
        self.pool.check()

    def close(self) -> None:
        return None

    def conninfo(self) -> str:
        """How to reach the same server (for the listener's own connection)."""
        conn = self.take()
        try:
            return given_conninfo(conn.info)
        finally:
            self.give(conn, ok=True)


Source = OwnConnections | GivenConnection | GivenPool


class _Run:
    """One listener thread's state: its stop signal, connection and readiness."""

    __slots__ = ("conn", "ready", "stop")

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.ready = False  # LISTEN is active on ``conn``
        self.conn: psycopg.Connection[Any] | None = None


class Listener:
    """One LISTEN connection per store per process, read by a daemon thread.

    Waiters subscribe to a payload (a key); each notification sets the events of its
    payload's waiters. When the connection drops, every waiter is woken (it re-checks
    the lock) and the thread reconnects while anyone waits. It disconnects after
    ``_LISTEN_IDLE`` seconds without waiters; the next waiter starts it again.
    """

    def __init__(self, conninfo: Any, listen: Any) -> None:
        self._conninfo = conninfo  # a str, or a callable computing it on first use
        self._listen = listen
        self._reset()
        _STATES.add(self)

    def _reset(self) -> None:
        self.mutex = threading.Lock()
        self.waiters: dict[str, set[threading.Event]] = {}
        self.run: _Run | None = None

    def subscribe(self, topic: str, event: threading.Event) -> bool:
        """Register a waiter; ``True`` if LISTEN is active, so no release can be missed."""
        with self.mutex:
            self.waiters.setdefault(topic, set()).add(event)
            if self.run is None:
                self.run = _Run()
                threading.Thread(
                    target=self._loop, args=(self.run,), name="remotelock-listen", daemon=True
                ).start()
            return self.run.ready

    def unsubscribe(self, topic: str, event: threading.Event) -> None:
        with self.mutex:
            events = self.waiters.get(topic)
            if events is not None:
                events.discard(event)
                if not events:
                    del self.waiters[topic]

    def _dispatch(self, topic: str) -> None:
        with self.mutex:
            events = list(self.waiters.get(topic, ()))
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self.mutex:
            events = [event for events in self.waiters.values() for event in events]
        for event in events:
            event.set()

    def _retire(self, run: _Run) -> None:
        """Stop ``run`` (call with the mutex held); the next waiter starts a new one."""
        run.stop.set()
        if self.run is run:
            self.run = None

    def _loop(self, run: _Run) -> None:
        backoff = 0.05
        while not run.stop.is_set():
            try:
                if callable(self._conninfo):
                    self._conninfo = self._conninfo()
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    run.conn = conn
                    conn.execute(self._listen)
                    with self.mutex:
                        run.ready = True
                    backoff = 0.05
                    self._read(conn, run)
            except Exception as exc:  # never let the thread die on a surprise
                log.debug("PostgreSQL listener lost its connection: %s", exc)
            finally:
                with self.mutex:
                    run.ready = False
                    run.conn = None
                self._wake_all()  # a release may have gone unheard: everyone re-checks
            if run.stop.wait(backoff):
                return
            backoff = min(backoff * 2, _BACKOFF_MAX)
            with self.mutex:
                if not self.waiters:
                    self._retire(run)

    def _read(self, conn: psycopg.Connection[Any], run: _Run) -> None:
        quiet_since = time.monotonic()
        while True:
            for note in conn.notifies(timeout=0.5):
                self._dispatch(note.payload)
            with self.mutex:
                now = time.monotonic()
                if self.waiters:
                    quiet_since = now
                elif now - quiet_since > _LISTEN_IDLE:
                    self._retire(run)
                if run.stop.is_set():
                    return

    def close(self) -> None:
        """Stop listening (the thread disconnects within half a second)."""
        with self.mutex:
            if self.run is not None:
                self._retire(self.run)

    def forget_after_fork(self) -> None:
        if self.run is not None and self.run.conn is not None:
            _ORPHANED.append(self.run.conn)
        self._reset()


_STATES: weakref.WeakSet[OwnConnections | Listener] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for state in list(_STATES):
        state.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


__all__ = ["GivenConnection", "GivenPool", "Listener", "OwnConnections", "Source"]
