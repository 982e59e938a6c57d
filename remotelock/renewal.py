"""Keeping leases held, and telling their holders at once when they no longer are.

Two jobs, kept apart on purpose:

- **Renewal** extends each held lease about every third of its length, so a holder
  that runs longer than ``ttl`` keeps its lock while a crashed holder's lock still
  runs out. Sync leases share one scheduling thread per store (:class:`Renewer`: a
  thread per lock would cost more than a round trip), which hands each call to a
  few worker threads, so one hung call holds up no other lease; async leases each
  get a task on their event loop (:func:`start_async_renewal`), whose every renewal
  is cancelled when the lease runs out. Renewal does I/O, so a call can hang as long
  as the store lets it (a black-holed server holds it until the socket timeout); its
  late answer can no longer revive the lease.
- **The watchdog** (:class:`Watchdog`, one thread per process) does no I/O at all: it
  sleeps until the earliest local deadline of any held lease and declares the lease
  lost at that moment if no renewal pushed the deadline out, then runs ``on_lost``.
  So a holder learns of a lost lease on time whatever the store is doing, and even
  while its event loop is blocked.

Nothing a single lease holds can stop either job: lease lengths are bounded when the
lock is configured, and if the renewal thread ever fails, every lease it served is
marked lost at once rather than silently left to expire.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import math
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from .errors import RemoteLockError, StoreUnavailable
from .lease import Lease

if TYPE_CHECKING:
    import asyncio

    from .stores.base import AsyncStore, Store

log = logging.getLogger("remotelock.lease")

RETRY_SHARE = 0.1
"""After a failed renewal, try again after this share of the lease."""
IDLE_SECONDS = 5.0
"""A background thread with nothing to do for this long exits (new work restarts it)."""


def _done(lease: Lease) -> bool:
    return lease.released or lease._lost


def after_renewal(lease: Lease, ok: bool | BaseException, started: float) -> float | None:
    """Apply one renewal's result; the delay until the next renewal, or ``None`` to stop."""
    if lease.released:
        return None
    if ok is True:
        if not lease.renewed(started, lease.ttl):
            return None  # its deadline passed while the renewal was on its way
        return max(0.0, started + lease.ttl / 3 - time.monotonic())
    if ok is False:
        if lease.mark_lost("a renewal found the lock no longer held by this lease"):
            lease.notify_lost()
        return None
    # Warn once when trouble starts; a failing store would otherwise fill the log.
    log.log(logging.DEBUG if lease._trouble else logging.WARNING,
            "renewing lock %r failed: %s", lease.key, ok)  # fmt: skip
    lease._trouble = str(ok)
    left = lease.deadline - time.monotonic()
    if left <= 0:
        return None  # the watchdog declares the loss at the deadline
    return min(lease.ttl * RETRY_SHARE, left)


class _Heap:
    """Leases by due time (strong references: a held lease lives until it is done)."""

    def __init__(self) -> None:
        self.entries: list[tuple[float, int, Lease]] = []
        self.order = itertools.count()

    def push(self, due: float, lease: Lease) -> None:
        heapq.heappush(self.entries, (due, next(self.order), lease))

    def pop_due(self, now: float) -> Lease | None:
        while self.entries and _done(self.entries[0][2]):
            heapq.heappop(self.entries)
        if self.entries and self.entries[0][0] <= now:
            return heapq.heappop(self.entries)[2]
        return None

    def next_due(self) -> float:
        return self.entries[0][0] if self.entries else math.inf

    def compact(self) -> None:
        self.entries = [entry for entry in self.entries if not _done(entry[2])]
        heapq.heapify(self.entries)


class _Worker:
    """A daemon thread that runs while it has work and exits when idle for a while."""

    name = "remotelock-worker"

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap = _Heap()
        self._running = False
        self._wake_at = math.inf  # when the thread plans to look at the heap again
        self._stale = 0  # entries of finished leases still in the heap

    def _schedule(self, lease: Lease, due: float) -> None:
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

        Most leases are released long before their first renewal; keeping their
        entries until then would keep thousands of dead objects alive.
        """
        with self._cond:
            self._stale += 1
            if self._stale > 64 and self._stale * 2 > len(self._heap.entries):
                self._heap.compact()
                self._stale = 0

    def _next(self) -> Lease | None:
        """Wait (holding the condition) for the next due lease; ``None`` when idle."""
        idle_until: float | None = None
        while True:
            now = time.monotonic()
            lease = self._heap.pop_due(now)
            if lease is not None:
                self._wake_at = math.inf  # busy: new work may notify
                return lease
            due = self._heap.next_due()
            if due == math.inf:
                idle_until = idle_until or now + IDLE_SECONDS
                if now >= idle_until:
                    return None
                due = idle_until
            else:
                idle_until = None
            self._wake_at = due
            self._cond.wait(due - now)

    def _main(self) -> None:
        lease: Lease | None = None
        try:
            while True:
                with self._cond:
                    lease = self._next()
                    if lease is None:
                        self._running = False
                        return
                self._handle(lease)
        except BaseException as exc:
            self._failed(exc, lease)

    def _handle(self, lease: Lease) -> None:
        raise NotImplementedError

    def _failed(self, exc: BaseException, current: Lease | None) -> None:
        """The thread dies: every lease it served is lost (never silently unrenewed)."""
        with self._cond:
            leases = [entry[2] for entry in self._heap.entries]
            self._heap = _Heap()
            self._running = False
        if current is not None:
            leases.append(current)
        log.critical("%s failed; its leases count as lost", self.name, exc_info=exc)
        for lease in leases:
            if not lease.released and lease.mark_lost(f"{self.name} failed: {exc!r}"):
                lease.notify_lost()


class Watchdog(_Worker):
    """Declares a lease lost at its local deadline unless a renewal pushed it out."""

    name = "remotelock-watchdog"

    def watch(self, lease: Lease) -> None:
        """Start watching ``lease`` (until it is released or lost)."""
        lease._watched = True
        self._schedule(lease, lease.deadline)

    def _handle(self, lease: Lease) -> None:
        if _done(lease):
            return
        if lease.deadline > time.monotonic():
            self._schedule(lease, lease.deadline)  # renewed meanwhile: look again then
        elif lease.settle_deadline():
            lease.notify_lost()


class Renewer(_Worker):
    """One daemon thread renewing every sync lease of one store, earliest first."""

    name = "remotelock-renewer"

    _instances: ClassVar[weakref.WeakValueDictionary[int, Renewer]] = weakref.WeakValueDictionary()
    _instances_mutex: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.name = f"remotelock-renewer-{type(store).__name__}"
        self._calls = _Calls(f"remotelock-renew-{type(store).__name__}")

    @classmethod
    def for_store(cls, store: Store) -> Renewer:
        """The renewer of ``store`` (created on first use)."""
        renewer = cls._instances.get(id(store))
        if renewer is not None and renewer.store is store:
            return renewer
        with cls._instances_mutex:
            renewer = cls._instances.get(id(store))
            if renewer is None or renewer.store is not store:
                renewer = cls._instances[id(store)] = cls(store)
            return renewer

    def add(self, lease: Lease, first: float) -> None:
        """Renew ``lease`` from ``first`` seconds from now on."""
        self._schedule(lease, time.monotonic() + first)

    def _handle(self, lease: Lease) -> None:
        if not lease._watched:
            # Watched from its first renewal on, not from its acquire: most leases are
            # released long before, and a third of a lease is far ahead of its deadline.
            WATCHDOG.watch(lease)
        if not _done(lease) and lease.deadline > time.monotonic():
            self._calls.submit(functools.partial(self._renew, lease))

    def _renew(self, lease: Lease) -> None:
        """One renewal, on a worker thread: a call that hangs holds up only itself."""
        started = time.monotonic()
        if _done(lease) or lease.deadline <= started:
            return  # too late to renew: the watchdog declares the loss
        try:
            ok: bool | BaseException = self.store.extend(lease.key, lease.token, lease.ttl)
        except RemoteLockError as exc:
            ok = exc
        except Exception as exc:
            log.exception("renewing lock %r raised", lease.key)
            ok = exc
        except BaseException as exc:  # nothing a store reports: this lease's renewal is over
            log.critical("renewing lock %r failed for good", lease.key, exc_info=exc)
            if lease.mark_lost(f"its renewal failed: {exc!r}"):
                lease.notify_lost()
            return
        delay = after_renewal(lease, ok, started)
        if delay is not None:
            self._schedule(lease, time.monotonic() + delay)


class _Calls:
    """A few daemon threads that make one renewer's store calls, started when needed
    and gone when idle.

    A renewal call can hang as long as the store lets it (a half-open connection holds
    it until the socket timeout); on its own thread it holds up no other lease's
    renewal, and the watchdog still ends its lease on time.
    """

    def __init__(self, name: str, size: int = 4) -> None:
        self._name = name
        self._size = size
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._mutex = threading.Lock()
        self._threads = 0
        self._idle = 0

    def submit(self, job: Callable[[], None]) -> None:
        self._jobs.put(job)
        with self._mutex:
            if self._idle or self._threads >= self._size:
                return  # an idle thread takes it, or the next one that frees up
            self._threads += 1
        threading.Thread(target=self._work, name=self._name, daemon=True).start()

    def _work(self) -> None:
        while True:
            with self._mutex:
                self._idle += 1
            try:
                job = self._jobs.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._mutex:
                    self._idle -= 1
                    if self._jobs.empty():  # else a job came just now: stay for it
                        self._threads -= 1
                        return
                continue
            with self._mutex:
                self._idle -= 1
            try:
                job()
            except BaseException:  # a renewal handles its own errors; never die silently
                log.exception("%s: a renewal failed", self._name)


WATCHDOG = Watchdog()
"""The process's watchdog (a thread only while some lease is held)."""


def _forget_all() -> None:
    # After fork the child has none of the parent's threads, and a mutex a parent
    # thread held would stay locked forever: start over with fresh objects. The
    # parent's leases are the parent's: the child holds none of them.
    global WATCHDOG
    WATCHDOG = Watchdog()
    Renewer._instances = weakref.WeakValueDictionary()
    Renewer._instances_mutex = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)


def watch(lease: Lease) -> None:
    """Have the process's watchdog keep an eye on ``lease``'s deadline."""
    WATCHDOG.watch(lease)


def unwatch(lease: Lease) -> None:
    """``lease`` is released: the watchdog may forget it."""
    if lease._watched:
        WATCHDOG.discard(lease)


def start_async_renewal(lease: Lease, store: AsyncStore, first: float) -> asyncio.Task[None]:
    """Renew ``lease`` in a task on the running loop; cancel the task to stop."""
    import asyncio

    return asyncio.get_running_loop().create_task(
        _renew_async(lease, store, first), name=f"remotelock-renew:{lease.key[:40]}"
    )


async def _renew_async(lease: Lease, store: AsyncStore, first: float) -> None:
    import asyncio

    delay: float | None = first
    while delay is not None:
        await asyncio.sleep(delay)
        if _done(lease):
            return
        left = lease.deadline - time.monotonic()
        if left <= 0:
            return  # the watchdog declares the loss
        started = time.monotonic()
        try:
            # A renewal that cannot finish before the lease runs out is pointless.
            ok: bool | BaseException = await asyncio.wait_for(
                store.extend(lease.key, lease.token, lease.ttl), left
            )
        except asyncio.TimeoutError:
            ok = StoreUnavailable(f"no reply to renewing lock {lease.key!r} in {left:.3f} s")
        except RemoteLockError as exc:
            ok = exc
        except Exception as exc:
            log.exception("renewing lock %r raised", lease.key)
            ok = exc
        delay = after_renewal(lease, ok, started)


__all__ = [
    "IDLE_SECONDS",
    "RETRY_SHARE",
    "WATCHDOG",
    "Renewer",
    "Watchdog",
    "after_renewal",
    "start_async_renewal",
    "unwatch",
    "watch",
]
