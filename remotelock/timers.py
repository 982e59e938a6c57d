"""A daemon thread that acts on leases when they come due: the watchdog's and the renewal's.

Both keep a heap of leases by the time something must happen to them (a deadline to
check, a renewal to send), sleep until the earliest, take every lease due by then, and
act on them. The thread runs only while there is work and exits after a while without
any (new work starts a new one). Nothing a lease holds can stop it for the others: if
it fails anyway, every lease it served is marked lost at once rather than silently
left to expire.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time

from .lease import Lease

log = logging.getLogger("remotelock.lease")

IDLE_SECONDS = 5.0
"""A worker thread with nothing to do for this long exits (new work restarts it)."""


def done(lease: Lease) -> bool:
    """Whether nothing more is to be done for ``lease`` (released, or lost)."""
    return lease.released or lease._lost


class DueHeap:
    """Leases by due time (strong references: a held lease lives until it is done)."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, int, Lease]] = []
        self.order = itertools.count()

    def push(self, due: float, lease: Lease) -> None:
        heapq.heappush(self.entries, (due, next(self.order), lease))

    def pop_due(self, by: float, most: int) -> list[Lease]:
        """Up to ``most`` leases due by ``by``, earliest first (finished ones dropped)."""
        found: list[Lease] = []
        while self.entries and len(found) < most:
            due, _, lease = self.entries[0]
            if done(lease):
                heapq.heappop(self.entries)
            elif due <= by:
                heapq.heappop(self.entries)
                found.append(lease)
            else:
                break
        return found

    def next_due(self) -> float:
        return self.entries[0][0] if self.entries else math.inf

    def compact(self) -> None:
        self.entries = [entry for entry in self.entries if not done(entry[2])]
        heapq.heapify(self.entries)


class Worker:
    """A daemon thread that acts on leases as they come due, several at a time."""

    name = "remotelock-worker"
    coalesce = 0.0
    """Also take leases due this many seconds from now: acting on them together is
    cheaper than waking again for each (a renewal a few ms early costs nothing)."""
    batch = 1000
    """Most leases taken at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap = DueHeap()
        self._running = False
        self._wake_at = math.inf  # when the thread plans to look at the heap again
        self._stale = 0  # entries of finished leases still in the heap

    def schedule(self, lease: Lease, due: float) -> None:
        """Act on ``lease`` at monotonic time ``due``."""
        with self._cond:
            self._heap.push(due, lease)
            if self._running:
                # Wake the thread only if it must act sooner than it planned: waking it
                # for every lease would cost each acquire a thread switch.
                if due < self._wake_at:
                    self._cond.notify()
                return
            self._running = True
            self._wake_at = math.inf
        threading.Thread(target=self._main, name=self.name, daemon=True).start()

    def discard(self, lease: Lease) -> None:
        """Note that ``lease`` is done; its entries are dropped lazily, in bulk.

        Most leases are released long before anything is due for them; keeping their
        entries until then would keep thousands of dead objects alive.
        """
        with self._cond:
            self._stale += 1
            if self._stale > 64 and self._stale * 2 > len(self._heap.entries):
                self._heap.compact()
                self._stale = 0

    def _next(self) -> list[Lease]:
        """Wait (holding the condition) for the next due leases; empty when idle."""
        idle_until: float | None = None
        while True:
            now = time.monotonic()
            leases = self._heap.pop_due(now + self.coalesce, self.batch)
            if leases:
                self._wake_at = math.inf  # busy: new work may notify
                return leases
            due = self._heap.next_due()
            if due == math.inf:
                idle_until = idle_until or now + IDLE_SECONDS
                if now >= idle_until:
                    return []
                due = idle_until
            else:
                idle_until = None
            self._wake_at = due
            self._cond.wait(due - now)

    def _main(self) -> None:
        leases: list[Lease] = []
        try:
            while True:
                with self._cond:
                    leases = self._next()
                    if not leases:
                        self._running = False
                        return
                self._handle(leases)
        except BaseException as exc:
            self._failed(exc, leases)

    def _handle(self, leases: list[Lease]) -> None:
        raise NotImplementedError

    def _failed(self, exc: BaseException, current: list[Lease]) -> None:
        """The thread dies: every lease it served is lost (never silently unrenewed)."""
        with self._cond:
            leases = [entry[2] for entry in self._heap.entries]
            self._heap = DueHeap()
            self._running = False
        leases.extend(current)
        log.critical("%s failed; its leases count as lost", self.name, exc_info=exc)
        for lease in leases:
            if not lease.released and lease.mark_lost(f"{self.name} failed: {exc!r}"):
                lease.notify_lost()


__all__ = ["IDLE_SECONDS", "DueHeap", "Worker", "done"]
