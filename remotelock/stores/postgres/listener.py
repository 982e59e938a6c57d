"""The sync PostgresStore's listener: one LISTEN connection per process, read by a thread.

Hand-written, beside the async :mod:`remotelock.stores.postgres.listener_aio`,
because the two sides wait in different ways: here each waiting thread blocks on a
``threading.Event`` and a daemon thread reads the notifications, shared by the whole
process under a lock; there each waiting task awaits a future and a task per event
loop reads them. The names match (less ``Async``): the store's ``wait`` steps,
generated from :mod:`remotelock.stores.postgres.aio`, use ``waiter()`` and
``Waiter.wait()`` on either side. The bookkeeping both share is free of I/O, in
:mod:`remotelock.stores.postgres.waiting`.

The thread never holds the store, only its connection source, so a listening store
can still be collected (its finalizer stops the thread). A forked child starts with
no listener (the parent's connection stays referenced, never used or closed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import psycopg

from .common import ORPHANED, forget_in_child, log, server_conninfo
from .waiting import BACKOFF_FIRST, LISTEN_IDLE, Subscription, Waiters, next_backoff

if TYPE_CHECKING:
    from .connections import Conn, Source


class _Run:
    """One listener thread's state: its stop signal, connection and readiness."""

    __slots__ = ("conn", "ready", "stop")

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.ready = False  # LISTEN is active on ``conn``
        self.conn: Conn | None = None


class Waiter(Subscription[threading.Event]):
    """A waiting thread's event, set by the store's listener thread."""

    __slots__ = ()

    def __init__(self, listener: Listener | None, topic: str, every: bool = False) -> None:
        super().__init__(listener, topic, threading.Event(), every)

    def wait(self, seconds: float) -> None:
        self.wake.wait(seconds)

    def woken(self) -> bool:
        return self.wake.is_set()


class Listener:
    """One LISTEN connection per store per process, read by a daemon thread.

    Waiters subscribe to a payload (a key); each notification wakes the payload's
    longest waiter (see :class:`~.waiting.Waiters`). When the connection drops, every
    waiter is woken (it re-checks the lock) and the thread reconnects while anyone
    waits. It disconnects after ``LISTEN_IDLE`` seconds without waiters; the next
    waiter starts it again. It holds the connection source, never the store, so a
    listening store can still be collected (its finalizer stops the thread).
    """

    def __init__(
        self, source: Source, listen_url: str | None, timeout: float, listen: Any
    ) -> None:
        self._source = source
        self._listen_url = listen_url
        self._timeout = timeout
        self._dsn: str | None = None  # found on first connect
        self._listen = listen
        self._reset()
        forget_in_child(self)

    def _reset(self) -> None:
        self.mutex = threading.Lock()
        self.waiters: Waiters[threading.Event] = Waiters()
        self.run: _Run | None = None

    def waiter(self, topic: str, enabled: bool, every: bool = False) -> Waiter:
        """A waiter on ``topic`` (use it as a context manager); a poller if not ``enabled``;
        woken by every notification of ``topic`` if ``every`` (see :class:`Waiters`)."""
        return Waiter(self if enabled else None, topic, every)

    def subscribe(self, topic: str, wake: threading.Event, every: bool = False) -> bool:
        """Register a waiter; ``True`` if LISTEN is active, so no release can be missed."""
        with self.mutex:
            self.waiters.add(topic, wake, every)
            if self.run is None:
                self.run = _Run()
                threading.Thread(
                    target=self._loop, args=(self.run,), name="remotelock-listen", daemon=True
                ).start()
            return self.run.ready

    def unsubscribe(self, topic: str, wake: threading.Event) -> None:
        with self.mutex:
            self.waiters.discard(topic, wake)

    def is_ready(self) -> bool:
        """Whether LISTEN is active (a subscription made now cannot miss a release)."""
        run = self.run
        return run is not None and run.ready

    def tried(self, key: str, payload: Callable[[str], str]) -> None:
        """A step of this process tried the lock of ``key``, whose topic is
        ``payload(key)`` (see :class:`Waiters`). Every acquire calls it, so it returns at
        once unless a wake-up awaits its try; reading that without the mutex can only
        miss a try just made, which costs one early pass-on, never a lost wake-up."""
        if not self.waiters.expecting():
            return
        with self.mutex:
            self.waiters.tried(payload(key))

    def _wake(self, topic: str | None = None) -> None:
        """Wake the next waiter of ``topic`` and its ``every`` waiters (all when ``None``)."""
        with self.mutex:  # set under the mutex: the next notification sees it woken
            if topic is None:
                events = self.waiters.of(None)
            else:
                events = self.waiters.notified(topic, time.monotonic(), threading.Event.is_set)
            for event in events:
                event.set()

    def _pass_on(self) -> float:
        """Wake the next waiters where the woken one did not try; seconds to the next
        such check (at most half a second)."""
        with self.mutex:
            now = time.monotonic()
            for event in self.waiters.overdue(now, threading.Event.is_set):
                event.set()
            return self.waiters.next_due(now, 0.5)

    def _retire(self, run: _Run) -> None:
        """Stop ``run`` (call with the mutex held); the next waiter starts a new one."""
        run.stop.set()
        if self.run is run:
            self.run = None

    def _conninfo(self) -> str:
        if self._dsn is None:
            base = self._listen_url
            if base is None:
                base = self._source.conninfo()
            self._dsn = server_conninfo(base, self._timeout, listener=True)
        return self._dsn

    def _loop(self, run: _Run) -> None:
        backoff = BACKOFF_FIRST
        while not run.stop.is_set():
            try:
                with psycopg.connect(self._conninfo(), autocommit=True) as conn:
                    run.conn = conn
                    conn.execute(self._listen)
                    with self.mutex:
                        run.ready = True
                    backoff = BACKOFF_FIRST
                    self._read(conn, run)
            except Exception as exc:  # never let the thread die on a surprise
                log.debug("PostgreSQL listener lost its connection: %s", exc)
            finally:
                with self.mutex:
                    run.ready = False
                    run.conn = None
                self._wake()  # a release may have gone unheard: everyone re-checks
            if run.stop.wait(backoff):
                return
            backoff = next_backoff(backoff)
            with self.mutex:
                if not self.waiters:
                    self._retire(run)

    def _read(self, conn: Conn, run: _Run) -> None:
        quiet_since = time.monotonic()
        while True:
            for note in conn.notifies(timeout=self._pass_on()):
                self._wake(note.payload)
                self._pass_on()
            self._pass_on()
            with self.mutex:
                now = time.monotonic()
                if self.waiters:
                    quiet_since = now
                elif now - quiet_since > LISTEN_IDLE:
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
            ORPHANED.append(self.run.conn)
        self._reset()


__all__ = ["Listener", "Waiter"]
