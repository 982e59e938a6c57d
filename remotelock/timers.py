"""A daemon thread that acts on things when they come due: the watchdog's, the renewal's
and the kept locks' (:mod:`remotelock.streak`).

Each keeps a heap of items by the time something must happen to them (a deadline to
check, a renewal to send, a kept lock to release), sleeps until the earliest, takes
every item due by then, and acts on them. The thread runs only while there is work and
exits after a while without any (new work starts a new one). Nothing a lease holds can
stop it for the others: if it fails anyway, every lease it served is marked lost at
once rather than silently left to expire.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from .lease import Lease

log = logging.getLogger("remotelock.lease")

T = TypeVar("T")

IDLE_SECONDS = 5.0
"""A worker thread with nothing to do for this long exits (new work restarts it)."""


def done(lease: Lease) -> bool:
    """Whether nothing more is to be done for ``lease`` (released, or lost)."""
    return lease.released or lease._lost


class DueHeap(Generic[T]):
    """Items by due time (strong references: a held lease lives until it is done)."""

    def __init__(self, finished: Callable[[T], bool]) -> None:
        self.entries: list[tuple[float, int, T]] = []
        self.order = itertools.count()
        self.finished = finished  # nothing more to do for an item: dropped, not taken

    def push(self, due: float, item: T) -> None:
        heapq.heappush(self.entries, (due, next(self.order), item))

    def pop_due(self, by: float, most: int) -> list[T]:
        """Up to ``most`` items due by ``by``, earliest first (finished ones dropped)."""
        found: list[T] = []
        while self.entries and len(found) < most:
            due, _, item = self.entries[0]
            if self.finished(item):
                heapq.heappop(self.entries)
            elif due <= by:
                heapq.heappop(self.entries)
                found.append(item)
            else:
                break
        return found

    def next_due(self) -> float:
        return self.entries[0][0] if self.entries else math.inf

    def compact(self) -> None:
        self.entries = [entry for entry in self.entries if not self.finished(entry[2])]
        heapq.heapify(self.entries)


class Worker(Generic[T]):
    """A daemon thread that acts on items as they come due, several at a time."""

    name = "remotelock-worker"
    coalesce = 0.0
    """Also take items due this many seconds from now: acting on them together is
    cheaper than waking again for each (a renewal a few ms early costs nothing)."""
    batch = 1000
    """Most items taken at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: DueHeap[T] = DueHeap(self._finished)
        self._running = False
        self._wake_at = math.inf  # when the thread plans to look at the heap again
        self._stale = 0  # entries of finished items still in the heap

    def schedule(self, item: T, due: float) -> None:
        """Act on ``item`` at monotonic time ``due``."""
        with self._cond:
            self._heap.push(due, item)
            if self._runs_by(due):
                return
        self._start()

    def schedule_many(self, pairs: list[tuple[T, float]]) -> None:
        """:meth:`schedule` for each ``(item, due)``, under one hold of the condition (a
        renewal round reschedules a hundred leases at once)."""
        if not pairs:
            return
        with self._cond:
            earliest = math.inf
            for item, due in pairs:
                self._heap.push(due, item)
                earliest = min(earliest, due)
            if self._runs_by(earliest):
                return
        self._start()

    def _runs_by(self, due: float) -> bool:
        """Whether the thread runs and acts by ``due`` (told to, if it planned to look
        later); if not running, it is marked as running and the caller starts it.
        Called holding the condition."""
        if self._running:
            # Wake the thread only if it must act sooner than it planned: waking it for
            # every item would cost each acquire (or release) a thread switch.
            if due < self._wake_at:
                self._cond.notify()
            return True
        self._running = True
        self._wake_at = math.inf
        return False

    def _start(self) -> None:
        threading.Thread(target=self._main, name=self.name, daemon=True).start()

    def discard(self, item: T) -> None:
        """Note that ``item`` is done; its entries are dropped lazily, in bulk.

        Most leases are released long before anything is due for them; keeping their
        entries until then would keep thousands of dead objects alive.
        """
        with self._cond:
            self._stale += 1
            if self._stale > 64 and self._stale * 2 > len(self._heap.entries):
                self._heap.compact()
                self._stale = 0

    def _next(self) -> list[T]:
        """Wait (holding the condition) for the next due items; empty when idle."""
        idle_until: float | None = None
        while True:
            now = time.monotonic()
            items = self._heap.pop_due(now + self.coalesce, self.batch)
            if items:
                self._wake_at = math.inf  # busy: new work may notify
                return items
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
        items: list[T] = []
        try:
            while True:
                with self._cond:
                    items = self._next()
                    if not items:
                        self._running = False
                        return
                self._handle(items)
        except BaseException as exc:
            self._failed(exc, items)

    def _finished(self, item: T) -> bool:
        """Whether nothing more is to be done for ``item`` (checked holding the condition)."""
        raise NotImplementedError

    def _handle(self, items: list[T]) -> None:
        raise NotImplementedError

    def _failed(self, exc: BaseException, current: list[T]) -> None:
        """The thread dies (``current``: the items it was acting on)."""
        raise NotImplementedError


class LeaseWorker(Worker[Lease]):
    """A worker of leases: the watchdog's and the renewal's."""

    def _finished(self, item: Lease) -> bool:
        return done(item)

    def _failed(self, exc: BaseException, current: list[Lease]) -> None:
        """The thread dies: every lease it served is lost (never silently unrenewed)."""
        with self._cond:
            leases = [entry[2] for entry in self._heap.entries]
            self._heap = DueHeap(done)
            self._running = False
        leases.extend(current)
        log.critical("%s failed; its leases count as lost", self.name, exc_info=exc)
        for lease in leases:
            if not lease.released and lease.mark_lost(f"{self.name} failed: {exc!r}"):
                lease.notify_lost()


__all__ = ["IDLE_SECONDS", "DueHeap", "LeaseWorker", "Worker", "done"]
