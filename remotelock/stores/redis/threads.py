"""How the sync doorbell runs its reader and puts its waiters to sleep: threads.

Hand-written, beside its asyncio twin :mod:`remotelock.stores.redis.tasks`, because
this is where the two worlds really differ: a sync waiter is a thread blocked on a
``threading.Event`` (set by the reader thread), and the reader is a daemon thread that
nobody can cancel, so it stops by itself within one read once its doorbell is closed.
The generated :mod:`remotelock.stores.redis.doorbell` calls these by the same names
as the asyncio doorbell calls its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from .bells import Waiter

Check = Callable[[], object]
"""One look at the server: a :class:`Handover`, ``None`` (re-check) or :data:`BUSY`."""
Refresh = Callable[[], "float | None"]
"""Keeps a queued waiter's place in line: when the server last heard of it (see
:class:`~.common.Keeper`), or ``None`` if it lost its place."""


class ThreadWaiter(Waiter):
    """A waiting thread: the reader sets its Event."""

    __slots__ = ("event",)

    def __init__(self, channel: str, role: str, token: str | None) -> None:
        super().__init__(channel, role, token)
        self.event = threading.Event()

    def signal(self) -> None:
        self.event.set()

    def rearm(self) -> None:
        super().rearm()
        self.event.clear()

    def sleep(self, seconds: float) -> None:
        """Until woken or ``seconds`` pass."""
        self.event.wait(seconds)


class ThreadReader:
    """Runs a doorbell's reader in a daemon thread (one per process at a time)."""

    __slots__ = ()

    def start(self, read: Callable[[], None]) -> None:
        threading.Thread(target=read, name="remotelock-redis-bells", daemon=True).start()

    def stop(self) -> None:
        """Nothing to wait for: the thread sees its doorbell closed within one read."""


__all__ = ["Check", "Refresh", "ThreadReader", "ThreadWaiter"]
