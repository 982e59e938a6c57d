"""Keeping leases held: one batched renewal loop per store and process (or event loop).

Each held lease is extended about every third of its length, so a holder that runs
longer than ``ttl`` keeps its lock while a crashed holder's lock still runs out. Renewal
does I/O, so it is kept apart from the watchdog (:mod:`remotelock.watchdog`), which
declares a lease lost at its local deadline whatever the renewal is doing.

- **One loop per store**: sync leases share a scheduling thread per store
  (:class:`Renewer`), which hands the calls to a few worker threads, so one hung call
  holds up no other lease; async leases share one task per store and event loop
  (:class:`AsyncRenewer`), whose every call is cancelled when the leases it renews run
  out. A process holding thousands of locks pays a handful of threads, tasks and
  connections, not one per lock.
- **Batched**: the leases that come due together (within :data:`COALESCE` seconds) are
  renewed together, up to :data:`BATCH` per store call, when the store can
  (:class:`~remotelock.stores.base.BatchRenewal`: one script or statement for all of
  them); otherwise one call each.
- **Under overload**, the leases closest to their deadline go first; a lease counts as
  lost only when its own deadline passes (or a renewal finds the lock gone).

Sync and async differ here on purpose: a thread against a task, and worker threads
against concurrent awaits; what they decide is shared (:func:`after_renewal`,
:func:`due_batches`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import RemoteLockError, StoreUnavailable
from .lease import Lease
from .stores.base import AsyncBatchRenewal, BatchRenewal
from .timers import IDLE_SECONDS, DueHeap, LeaseWorker, done
from .watchdog import watch

if TYPE_CHECKING:
    import asyncio

    from .stores.base import AsyncStore, Store

log = logging.getLogger("remotelock.lease")

RETRY_SHARE = 0.1
"""After a failed renewal, try again after this share of the lease."""
BATCH = 100
"""Most leases renewed by one store call."""
COALESCE = 0.05
"""Leases due within this many seconds of each other are renewed together."""

Result = bool | BaseException


def after_renewal(lease: Lease, ok: Result, started: float) -> float | None:
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


def due_batches(leases: list[Lease], batched: bool) -> Iterator[list[Lease]]:
    """The leases still worth renewing, closest to their deadline first, in batches (of
    one if the store renews one lease per call)."""
    now = time.monotonic()
    live = sorted(
        (lease for lease in leases if not done(lease) and lease.deadline > now),
        key=lambda lease: lease.deadline,
    )
    size = BATCH if batched else 1
    for start in range(0, len(live), size):
        yield live[start : start + size]


def _items(leases: list[Lease]) -> list[tuple[str, str, float]]:
    return [(lease.key, lease.token, lease.ttl) for lease in leases]


class Renewer(LeaseWorker):
    """One scheduling thread renewing every sync lease of one store, in batches."""

    name = "remotelock-renewer"
    coalesce = COALESCE

    _instances: ClassVar[weakref.WeakValueDictionary[int, Renewer]] = weakref.WeakValueDictionary()
    _instances_mutex: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.name = f"remotelock-renewer-{type(store).__name__}"
        self._batched = isinstance(store, BatchRenewal)
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
        self.schedule(lease, time.monotonic() + first)

    def _handle(self, leases: list[Lease]) -> None:
        for lease in leases:
            if not lease._watched:
                # Watched from its first renewal on, not from its acquire: most leases
                # are released long before, and a third of a lease is well ahead of
                # its deadline.
                watch(lease)
        for batch in due_batches(leases, self._batched):
            self._calls.submit(functools.partial(self._renew, batch))

    def _renew(self, batch: list[Lease]) -> None:
        """One store call for ``batch``, on a worker thread: a call that hangs holds up
        only its own batch."""
        started = time.monotonic()
        batch = [lease for lease in batch if not done(lease) and lease.deadline > started]
        if not batch:
            return  # too late to renew: the watchdog declares the loss
        try:
            results: list[Result]
            if self._batched:
                results = list(self.store.extend_many(_items(batch)))  # type: ignore[attr-defined]
            else:
                results = [self.store.extend(batch[0].key, batch[0].token, batch[0].ttl)]
        except RemoteLockError as exc:
            results = [exc] * len(batch)
        except Exception as exc:
            log.exception("renewing %d lock(s) raised", len(batch))
            results = [exc] * len(batch)
        except BaseException as exc:  # nothing a store reports: these renewals are over
            log.critical("renewing %d lock(s) failed for good", len(batch), exc_info=exc)
            for lease in batch:
                if lease.mark_lost(f"its renewal failed: {exc!r}"):
                    lease.notify_lost()
            return
        later: list[tuple[Lease, float]] = []
        for lease, ok in zip(batch, results, strict=True):
            delay = after_renewal(lease, ok, started)
            if delay is not None:
                later.append((lease, time.monotonic() + delay))
        self.schedule_many(later)


class _Calls:
    """A few daemon threads that make one renewer's store calls, started when needed
    and gone when idle."""

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


class AsyncRenewer:
    """One task renewing every async lease of one store on one event loop, in batches."""

    _instances: ClassVar[weakref.WeakKeyDictionary[Any, dict[int, AsyncRenewer]]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, store: AsyncStore, loop: asyncio.AbstractEventLoop) -> None:
        self.store = store
        self._loop = loop
        self._heap: DueHeap[Lease] = DueHeap(done)
        self._batched = isinstance(store, AsyncBatchRenewal)
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._wake_at = float("inf")
        self._calls: set[asyncio.Task[None]] = set()
        self._stale = 0

    @classmethod
    def for_store(cls, store: AsyncStore) -> AsyncRenewer:
        """The renewer of ``store`` on the running event loop (created on first use)."""
        import asyncio

        loop = asyncio.get_running_loop()
        by_store = cls._instances.setdefault(loop, {})
        renewer = by_store.get(id(store))
        if renewer is None or renewer.store is not store:
            renewer = by_store[id(store)] = cls(store, loop)
        return renewer

    def add(self, lease: Lease, first: float) -> None:
        """Renew ``lease`` from ``first`` seconds from now on."""
        due = time.monotonic() + first
        self._heap.push(due, lease)
        if self._task is None:
            import asyncio

            self._wakeup = asyncio.Event()
            self._task = self._loop.create_task(self._run(), name="remotelock-renew")
        elif due < self._wake_at and self._wakeup is not None:
            self._wakeup.set()

    def discard(self, lease: Lease) -> None:
        """``lease`` is done: forget it (in bulk), and let an idle task end."""
        self._stale += 1
        if self._stale > 64 and self._stale * 2 > len(self._heap.entries):
            self._heap.compact()
            self._stale = 0
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run(self) -> None:
        import asyncio

        assert self._wakeup is not None
        try:
            while True:
                now = time.monotonic()
                leases = self._heap.pop_due(now + COALESCE, 1000)
                if leases:
                    for batch in due_batches(leases, self._batched):
                        call = self._loop.create_task(self._renew(batch))
                        self._calls.add(call)
                        call.add_done_callback(self._calls.discard)
                    continue
                self._heap.compact()
                if not self._heap.entries:
                    return  # nothing held: the next lease starts a new task
                self._wake_at = self._heap.next_due()
                self._wakeup.clear()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self._wake_at - now)
        finally:
            self._task = None
            self._wake_at = float("inf")

    async def _renew(self, batch: list[Lease]) -> None:
        import asyncio

        started = time.monotonic()
        left = min(lease.deadline for lease in batch) - started
        if left <= 0:
            return  # the watchdog declares the loss
        try:
            # A renewal that cannot finish before the leases run out is pointless.
            if self._batched:
                results: list[Result] = list(
                    await asyncio.wait_for(self.store.extend_many(_items(batch)), left)  # type: ignore[attr-defined]
                )
            else:
                lease = batch[0]
                results = [
                    await asyncio.wait_for(
                        self.store.extend(lease.key, lease.token, lease.ttl), left
                    )
                ]
        except asyncio.TimeoutError:
            results = [StoreUnavailable(f"no reply to a renewal in {left:.3f} s")] * len(batch)
        except RemoteLockError as exc:
            results = [exc] * len(batch)
        except Exception as exc:
            log.exception("renewing %d lock(s) raised", len(batch))
            results = [exc] * len(batch)
        for lease, ok in zip(batch, results, strict=True):
            delay = after_renewal(lease, ok, started)
            if delay is not None:
                self.add(lease, delay)


async def _as_list(one: Any) -> list[Result]:
    return [await one]


def _forget_all() -> None:
    # After fork the child has none of the parent's threads, and a mutex a parent
    # thread held would stay locked forever: start over with fresh objects. The
    # parent's leases are the parent's: the child holds none of them.
    Renewer._instances = weakref.WeakValueDictionary()
    Renewer._instances_mutex = threading.Lock()
    AsyncRenewer._instances = weakref.WeakKeyDictionary()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)


__all__ = ["BATCH", "COALESCE", "RETRY_SHARE", "AsyncRenewer", "Renewer", "after_renewal"]
