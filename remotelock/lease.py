"""The handle of a held lock, and the background renewal that keeps it held.

Renewal extends the lease about every ``ttl / 3``, so a holder that runs longer than
``ttl`` keeps its lock while a crashed holder's lock still runs out. If a renewal finds
the lock gone, the lease is marked lost at once (``lease.lost``) and ``on_lost`` runs;
the lock layer raises :class:`~remotelock.LockLost` when the holder lets go.

Sync leases share one renewal thread per store (starting a thread per lock would cost
more than a Redis round trip); async leases each get a task on their event loop.
"""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from .errors import RemoteLockError

if TYPE_CHECKING:
    import asyncio

    from .stores.base import AsyncStore, Store

log = logging.getLogger(__name__)

OnLost = Callable[["Lease"], Any]

# How soon to retry a renewal that failed because the store was unreachable.
_RETRY_FRACTION = 0.1
# A renewal thread with nothing to renew for this long exits (a new lease restarts it).
_IDLE_SECONDS = 5.0
# Losses are rare; one mutex for all leases keeps "first to find it" exact.
_LOST_MUTEX = threading.Lock()


class Lease:
    """A held lock: who holds it (``token``), its ``fencing_token``, and whether it was lost.

    Pass ``fencing_token`` along with every write to the resource the lock protects;
    a resource that refuses tokens lower than the largest it has seen turns a paused
    or partitioned former holder into a harmless one.
    """

    __slots__ = (
        "__weakref__",
        "_lock",
        "_lost",
        "_on_lost",
        "_renewal",
        "deadline",
        "fencing_token",
        "key",
        "lost_reason",
        "released",
        "token",
        "ttl",
    )

    def __init__(
        self, key: str, token: str, fencing_token: int, ttl: float, deadline: float
    ) -> None:
        self.key = key
        self.token = token
        self.fencing_token = fencing_token
        self.ttl = ttl
        # Monotonic time by which the lease surely ends unless renewed (counted from
        # before the request that took or renewed it, so it errs early).
        self.deadline = deadline
        self.lost_reason = ""
        self.released = False
        self._lost = False  # set once, by whichever thread finds the loss
        self._on_lost: OnLost | None = None
        self._lock: Any = None  # the RemoteLock that issued it (set by the lock layer)
        self._renewal: asyncio.Task[None] | None = None  # async leases: the renewal task

    @property
    def lost(self) -> bool:
        """True once the lock was found expired or taken over while this lease held it."""
        return self._lost

    def remaining(self) -> float:
        """Seconds the lease surely has left by the local clock (0 once it may have ended)."""
        return max(0.0, self.deadline - time.monotonic())

    def mark_lost(self, reason: str) -> bool:
        """Record the loss; ``True`` the first time (the caller then runs ``on_lost``)."""
        with _LOST_MUTEX:
            if self._lost:
                return False
            self.lost_reason = reason
            self._lost = True
        log.warning(
            "lock %r lost (token %s…, fencing token %d): %s",
            self.key,
            self.token[:8],
            self.fencing_token,
            reason,
        )
        return True

    def run_on_lost(self) -> Any:
        """Call the ``on_lost`` callback (errors are logged, never raised into renewal)."""
        if self._on_lost is None:
            return None
        try:
            return self._on_lost(self)
        except Exception:
            log.exception("on_lost callback for lock %r failed", self.key)
            return None

    # Operations go through the RemoteLock that issued the lease.

    def release(self) -> bool:
        """Release this lease (sync stores); see :meth:`RemoteLock.release`."""
        return bool(self._lock.release(self))

    def extend(self, ttl: float | None = None) -> bool:
        """Extend this lease (sync stores); see :meth:`RemoteLock.extend`."""
        return bool(self._lock.extend(ttl, lease=self))

    async def arelease(self) -> bool:
        """Release this lease (async); see :meth:`RemoteLock.arelease`."""
        return bool(await self._lock.arelease(self))

    async def aextend(self, ttl: float | None = None) -> bool:
        """Extend this lease (async); see :meth:`RemoteLock.aextend`."""
        return bool(await self._lock.aextend(ttl, lease=self))

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self.released else "held"
        return (
            f"Lease(key={self.key!r}, token={self.token[:8]!r}…, "
            f"fencing_token={self.fencing_token}, {state})"
        )


def _after_renewal(
    lease: Lease, ok: bool | BaseException, started: float
) -> tuple[float | None, bool]:
    """Apply one renewal's result: ``(delay until the next one or None, lost just now)``."""
    if lease.released:
        return None, False
    if ok is True:
        lease.deadline = started + lease.ttl
        return lease.ttl / 3, False
    if ok is False:
        return None, lease.mark_lost("a renewal found the lock no longer held by this lease")
    log.warning("renewing lock %r failed: %s", lease.key, ok)
    if time.monotonic() + lease.ttl * _RETRY_FRACTION >= lease.deadline:
        reason = f"the store could not be reached before the lease ran out ({ok})"
        return None, lease.mark_lost(reason)
    return lease.ttl * _RETRY_FRACTION, False


class Renewer:
    """One daemon thread renewing every sync lease of one store, earliest first."""

    # Weak values: an idle renewer (its thread gone) is dropped with nothing to leak.
    _instances: ClassVar[weakref.WeakValueDictionary[int, Renewer]] = weakref.WeakValueDictionary()
    _instances_mutex: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, store: Store) -> None:
        self.store = store
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, weakref.ref[Lease]]] = []
        self._order = itertools.count()
        self._running = False
        self._wake_at = math.inf  # when the thread plans to look at the heap again
        self._stale = 0  # entries of released leases still in the heap

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

    @classmethod
    def _forget_all(cls) -> None:
        # After fork the child has none of the parent's threads, and a mutex a parent
        # thread held would stay locked forever: start over with fresh objects.
        cls._instances = weakref.WeakValueDictionary()
        cls._instances_mutex = threading.Lock()

    def add(self, lease: Lease, first: float | None = None) -> None:
        """Start renewing ``lease``: first after ``first`` seconds (default ``ttl / 3``)."""
        with self._cond:
            due = time.monotonic() + (lease.ttl / 3 if first is None else first)
            heapq.heappush(self._heap, (due, next(self._order), weakref.ref(lease)))
            if self._running:
                # Wake the thread only if it now has to renew sooner than it planned:
                # waking it for every lease would cost each acquire a thread switch.
                if due < self._wake_at:
                    self._cond.notify()
                return
            self._running = True
            self._wake_at = math.inf
        name = f"remotelock-renewer-{type(self.store).__name__}"
        threading.Thread(target=self._run, name=name, daemon=True).start()

    def discard(self, lease: Lease) -> None:
        """Note that ``lease`` was released (its entry is dropped lazily, in bulk).

        Most leases are released long before their first renewal; letting their
        entries pile up until then would keep thousands of dead objects alive for the
        garbage collector to walk over and over.
        """
        with self._cond:
            self._stale += 1
            if self._stale > 64 and self._stale * 2 > len(self._heap):
                self._heap = [entry for entry in self._heap if _live(entry[2]())]
                heapq.heapify(self._heap)
                self._stale = 0

    def _run(self) -> None:
        while True:
            with self._cond:
                lease = self._next_due()
                if lease is None:
                    self._running = False
                    return
            started = time.monotonic()
            try:
                ok: bool | BaseException = self.store.extend(lease.key, lease.token, lease.ttl)
            except RemoteLockError as exc:
                ok = exc
            except Exception as exc:
                log.exception("renewing lock %r raised", lease.key)
                ok = exc
            delay, lost = _after_renewal(lease, ok, started)
            if lost:
                lease.run_on_lost()
            if delay is not None:
                with self._cond:
                    due = time.monotonic() + delay
                    heapq.heappush(self._heap, (due, next(self._order), weakref.ref(lease)))

    def _next_due(self) -> Lease | None:
        """Wait (holding the condition) for the next due, still-held lease; None when idle."""
        idle_until: float | None = None
        while True:
            while self._heap and not _live(self._heap[0][2]()):
                heapq.heappop(self._heap)
            now = time.monotonic()
            if self._heap:
                idle_until = None
                due, _, ref = self._heap[0]
                if due <= now:
                    heapq.heappop(self._heap)
                    self._wake_at = math.inf  # busy renewing: new leases may notify
                    return ref()
                self._wake_at = due
            else:
                idle_until = idle_until or now + _IDLE_SECONDS
                if now >= idle_until:
                    return None
                self._wake_at = idle_until
            self._cond.wait(self._wake_at - now)


def _live(lease: Lease | None) -> bool:
    return lease is not None and not lease.released and not lease.lost


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=Renewer._forget_all)


def start_async_renewal(
    lease: Lease, store: AsyncStore, first: float | None = None
) -> asyncio.Task[None]:
    """Renew ``lease`` in a task on the running loop; cancel the task to stop."""
    import asyncio

    return asyncio.get_running_loop().create_task(
        _renew_async(lease, store, lease.ttl / 3 if first is None else first),
        name=f"remotelock-renew:{lease.key}",
    )


async def _renew_async(lease: Lease, store: AsyncStore, first: float) -> None:
    import asyncio

    delay: float | None = first
    while delay is not None:
        await asyncio.sleep(delay)
        started = time.monotonic()
        try:
            ok: bool | BaseException = await store.extend(lease.key, lease.token, lease.ttl)
        except RemoteLockError as exc:
            ok = exc
        except Exception as exc:
            log.exception("renewing lock %r raised", lease.key)
            ok = exc
        delay, lost = _after_renewal(lease, ok, started)
        if lost and inspect.isawaitable(pending := lease.run_on_lost()):
            await pending


__all__ = ["Lease", "OnLost", "Renewer", "start_async_renewal"]
