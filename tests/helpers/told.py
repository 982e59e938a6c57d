"""Checking that a holder is told of a lost lease on time, whatever silenced its store."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from remotelock import Lease, LockLost, RemoteLock

LATE = 0.15  # how late the watchdog may run on a loaded machine


def told_in_time(
    store: Any, silence: Callable[[], None], restore: Callable[[], None], ttl: float = 1.0
) -> None:
    """Hold a lock on ``store`` past one renewal, ``silence()`` the store (a frozen
    server, a black hole), and check that ``on_lost`` ran by the lease's local deadline
    and no later than a lease after the store went silent; then ``restore()`` it and
    check that leaving the block raises :class:`LockLost`."""
    told: list[tuple[float, float]] = []
    told_event = threading.Event()

    def on_lost(lease: Lease) -> None:
        told.append((time.monotonic(), lease.deadline))
        told_event.set()

    lock = RemoteLock("silenced", store=store, ttl=ttl, on_lost=on_lost)
    lease = lock.acquire()
    time.sleep(ttl / 2)  # one renewal done
    silence()
    try:
        silent_at = time.monotonic()
        assert told_event.wait(ttl + 10)
        at, deadline = told[0]
        assert lease.lost
        assert at - deadline < LATE, "told after the local deadline"
        assert at - silent_at < ttl + LATE, "told later than a lease after the store went silent"
    finally:
        restore()
    with pytest.raises(LockLost):
        lock.finish(lease, raised=False)


__all__ = ["LATE", "told_in_time"]
