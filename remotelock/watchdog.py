"""The watchdog: tells a holder its lease is lost at the lease's local deadline.

One thread per process that does no I/O at all: it sleeps until the earliest local
deadline of any lease it watches and declares the lease lost at that moment if no
renewal pushed the deadline out, then runs ``on_lost``. So a holder learns of a lost
lease on time whatever the store is doing (a renewal call hung on a black-holed
server), and even while its event loop is blocked. ``lease.lost`` itself is exact
whenever it is read; the watchdog is what makes ``on_lost`` (and ``remotelock run``'s
stop) happen on time.
"""

from __future__ import annotations

import os
import time

from .lease import Lease
from .timers import LeaseWorker, done


class Watchdog(LeaseWorker):
    """Declares a lease lost at its local deadline unless a renewal pushed it out."""

    name = "remotelock-watchdog"

    def watch(self, lease: Lease) -> None:
        """Start watching ``lease`` (until it is released or lost)."""
        lease._watched = True
        self.schedule(lease, lease.deadline)

    def _handle(self, leases: list[Lease]) -> None:
        later: list[tuple[Lease, float]] = []  # renewed meanwhile: look again then
        for lease in leases:
            if done(lease):
                continue
            if lease.deadline > time.monotonic():
                later.append((lease, lease.deadline))
            elif lease.settle_deadline():
                lease.notify_lost()
        self.schedule_many(later)


WATCHDOG = Watchdog()
"""The process's watchdog (a thread only while some lease is watched)."""


def watch(lease: Lease) -> None:
    """Have the process's watchdog keep an eye on ``lease``'s deadline."""
    WATCHDOG.watch(lease)


def unwatch(lease: Lease) -> None:
    """``lease`` is released: the watchdog may forget it."""
    if lease._watched:
        WATCHDOG.discard(lease)


def _forget_all() -> None:
    # After fork the child has none of the parent's threads, and a mutex a parent
    # thread held would stay locked forever: start over. The parent's leases are the
    # parent's: the child holds none of them.
    global WATCHDOG
    WATCHDOG = Watchdog()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)


__all__ = ["WATCHDOG", "Watchdog", "unwatch", "watch"]
