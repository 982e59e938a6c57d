"""The reply guard: a bound on every statement of the PostgreSQL stores, sync and async.

The guard exists because psycopg has no client-side read timeout: the server's
``statement_timeout`` ends slow statements, but a server that stops answering at all
(a frozen VM, a network black hole, SIGSTOP) would leave the caller blocked forever.
The guard shuts the socket of a statement that outlives ``timeout`` plus a grace
period; psycopg then fails the statement as a lost connection.

Both sides use it the same way (a watch around each step, in the step loop generated
from :mod:`remotelock.stores.postgres.aio`): shutting a socket wakes a blocked
``recv`` in a thread and an event loop's reader alike, so there is nothing to write
twice.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Any, Final

from .common import log

GUARD_GRACE: Final = 2.0
"""Seconds the reply guard allows beyond ``timeout`` (the server's own timeout fires first)."""


class _Watch:
    __slots__ = ("deadline", "fd", "fired")

    def __init__(self, fd: int, deadline: float) -> None:
        self.fd = fd
        self.deadline = deadline
        self.fired = False


class Guard:
    """Shuts the socket of any statement still unanswered at its deadline.

    One thread per process, running only while statements are in flight; a watch costs
    a dict insert and removal. Shutting a socket (not closing it) is safe from another
    thread: the blocked statement sees end-of-file and psycopg marks the connection
    broken, so it is never reused.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._watches: dict[int, _Watch] = {}
        self._thread: threading.Thread | None = None

    def watch(self, conn: Any, seconds: float) -> _Watch:
        watch = _Watch(conn.fileno(), time.monotonic() + seconds)
        with self._mutex:
            self._watches[id(watch)] = watch
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="remotelock-postgres-guard", daemon=True
                )
                self._thread.start()
        return watch

    def done(self, watch: _Watch) -> bool:
        """End a watch; ``True`` if the guard had fired (the connection is dead)."""
        with self._mutex:
            self._watches.pop(id(watch), None)
        return watch.fired

    def _run(self) -> None:
        idle_since = time.monotonic()
        while True:
            time.sleep(0.1)
            now = time.monotonic()
            with self._mutex:
                if not self._watches:
                    if now - idle_since > 5.0:
                        self._thread = None
                        return
                    continue
                idle_since = now
                for watch in self._watches.values():
                    if not watch.fired and watch.deadline <= now:
                        watch.fired = True
                        _shut(watch.fd)

    def forget_after_fork(self) -> None:
        self._mutex = threading.Lock()
        self._watches = {}
        self._thread = None


def _shut(fd: int) -> None:
    log.warning("PostgreSQL did not answer in time; dropping the connection (fd %d)", fd)
    with contextlib.suppress(OSError):
        dup = socket.socket(fileno=os.dup(fd))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()


GUARD: Final = Guard()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=GUARD.forget_after_fork)


__all__ = ["GUARD", "GUARD_GRACE", "Guard"]
