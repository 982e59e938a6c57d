"""The handle of a held lock: who holds it, its fencing token, and whether it is still sure.

A lease is *surely held* only until its local deadline: the moment, on this process's
monotonic clock, by which the store's own expiry cannot yet have come, counted from
the start of the request that granted or last renewed it and shortened by a small
margin (clock drift between machines, thread scheduling). Past that moment the lease
is lost, whatever the store is doing: ``lease.lost`` says so the instant the deadline
passes, without waiting for any background thread or any reply, and the process-wide
watchdog (:mod:`remotelock.renewal`) runs ``on_lost`` at that moment.

A lease lives until it is released or lost, whether or not the caller keeps a
reference to it (``lock.acquire()`` with the result dropped is the ``threading.Lock``
idiom): the renewal keeps it, not the caller.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._checks import check_ttl

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger(__name__)

OnLost = Callable[["Lease"], Any]

# Losses are rare; one mutex for all leases keeps "first to find it" exact and makes a
# renewal's new deadline and a loss exclude each other.
_MUTEX = threading.Lock()

DRIFT: float = 0.001
"""Share of a lease kept back for clock drift between this machine and the store's."""
SLACK_SHARE: float = 0.02
"""Share of a lease (at most :data:`SLACK_MAX` seconds) kept back so that ``on_lost``
runs before the store's expiry even when the watchdog thread is scheduled late."""
SLACK_MAX: float = 0.05


def local_deadline(started: float, granted: float) -> float:
    """The monotonic time by which a lease granted for ``granted`` seconds by a request
    that started at ``started`` is no longer surely held."""
    return started + granted - granted * DRIFT - min(granted * SLACK_SHARE, SLACK_MAX) - 0.001


class Lease:
    """A held lock: who holds it (``token``), its ``fencing_token``, and whether it was lost.

    Pass ``fencing_token`` along with every write to the resource the lock protects;
    a resource that refuses tokens lower than the largest it has seen turns a paused
    or partitioned former holder into a harmless one.

    A lease is also a context manager that releases it, so ``with lock.acquire():``
    and ``async with await lock.aacquire():`` work as they read.
    """

    __slots__ = (
        "__weakref__",
        "_keeper",
        "_loop",
        "_lost",
        "_on_lost",
        "_trouble",
        "_watched",
        "attempts",
        "deadline",
        "depth",
        "fencing_token",
        "key",
        "lost_reason",
        "released",
        "streak",
        "telemetry",
        "token",
        "ttl",
    )

    def __init__(
        self,
        key: str,
        token: str,
        fencing_token: int,
        ttl: float,
        deadline: float,
        *,
        keeper: Any,  # the engine that issued it: releases, extends and finishes it
        on_lost: OnLost | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        attempts: int = 0,
    ) -> None:
        self.key = key
        self.token = token
        self.fencing_token = fencing_token
        self.ttl = ttl
        self.deadline = deadline
        """Monotonic time until which the lease is surely held (see :func:`local_deadline`)."""
        self.lost_reason = ""
        self.released = False
        self.depth = 1
        """How many times its owner entered it (a reentrant lock); released at 0."""
        self.attempts = attempts
        """How many attempts the acquire that issued it made."""
        self.telemetry: Any = None  # its holding span, while one is open
        self.streak: Any = None  # a barging hold the process may keep (remotelock.streak)
        self._lost = False
        self._keeper = keeper
        self._on_lost = on_lost
        self._loop = loop  # async leases: the event loop that runs ``on_lost``
        self._trouble = ""  # why the last renewal failed, if it did
        self._watched = False  # the watchdog knows its deadline

    @property
    def lost(self) -> bool:
        """True once the lock may no longer be held by this lease: a renewal or release
        found it gone, or its local deadline passed before a renewal succeeded."""
        return self._lost or (not self.released and time.monotonic() >= self.deadline)

    def remaining(self) -> float:
        """Seconds the lease surely has left by the local clock (0 once it may have ended)."""
        if self._lost:
            return 0.0
        return max(0.0, self.deadline - time.monotonic())

    # -- state changes, shared by the engines and the renewal ------------------------------

    def renewed(self, started: float, ttl: float) -> bool:
        """A renewal that started at ``started`` succeeded: push the deadline out.

        ``False`` if the lease was already lost (a late success does not revive it: the
        holder may already have been told).
        """
        with _MUTEX:
            if self._lost or time.monotonic() >= self.deadline:
                return False
            self.ttl = ttl
            self.deadline = local_deadline(started, ttl)
            self._trouble = ""
            return True

    def reenter(self) -> bool:
        """Enter once more (a reentrant lock); ``False`` if it was released meanwhile."""
        with _MUTEX:
            if self.released:
                return False
            self.depth += 1
            return True

    def leave(self) -> bool:
        """Leave one of several entries; ``False`` for the last (the caller releases)."""
        with _MUTEX:
            if self.depth <= 1:
                return False
            self.depth -= 1
            return True

    def begin_release(self) -> bool:
        """Mark the lease released; ``True`` for the one caller that does it first."""
        with _MUTEX:
            if self.released:
                return False
            self.released = True
            return True

    def mark_lost(self, reason: str) -> bool:
        """Record the loss; ``True`` the first time (the caller then runs ``on_lost``)."""
        with _MUTEX:
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

    def settle_deadline(self) -> bool:
        """Mark the lease lost if its deadline has passed; ``True`` if this call did."""
        if self._lost or time.monotonic() < self.deadline:
            return False
        if self._trouble:
            return self.mark_lost(
                f"the store could not be reached before the lease ran out ({self._trouble})"
            )
        return self.mark_lost("its lease ran out before a renewal succeeded")

    def run_on_lost(self) -> None:
        """Call ``on_lost`` here and now (errors are logged, never raised); a coroutine it
        returns runs as a task on the running event loop."""
        if self._on_lost is None:
            return
        try:
            result = self._on_lost(self)
        except Exception:
            log.exception("on_lost callback for lock %r failed", self.key)
            return
        if inspect.isawaitable(result):
            _run_awaitable(result, self.key)

    def notify_lost(self) -> None:
        """Run ``on_lost`` from a background thread without blocking it.

        Sync leases run it in a thread of its own (it may do I/O); async leases run it
        on their event loop (it may be a coroutine function, and asyncio objects are not
        thread-safe).
        """
        if self._on_lost is None:
            return
        loop = self._loop
        if loop is None:
            threading.Thread(
                target=self.run_on_lost, name="remotelock-on-lost", daemon=True
            ).start()
            return
        try:
            loop.call_soon_threadsafe(self.run_on_lost)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            log.debug("lock %r lost after its event loop closed", self.key)

    # -- operations, through the engine that issued the lease -----------------------------

    def release(self) -> bool:
        """Release this lease; see :meth:`RemoteLock.release <remotelock.RemoteLock.release>`."""
        return bool(self._sync_keeper("release").release(self))

    def extend(self, ttl: float | None = None) -> bool:
        """Reset this lease to ``ttl`` seconds from now (default: its current length); see
        :meth:`RemoteLock.extend <remotelock.RemoteLock.extend>`."""
        seconds = self.ttl if ttl is None else check_ttl(ttl)
        return bool(self._sync_keeper("extend").extend(self, seconds))

    async def arelease(self) -> bool:
        """Release this lease (async leases)."""
        return bool(await self._async_keeper("arelease").release(self))

    async def aextend(self, ttl: float | None = None) -> bool:
        """Extend this lease (async leases)."""
        seconds = self.ttl if ttl is None else check_ttl(ttl)
        return bool(await self._async_keeper("aextend").extend(self, seconds))

    def __enter__(self) -> Lease:
        self._sync_keeper("with")
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._sync_keeper("with").finish(self, raised=exc_type is not None)

    async def __aenter__(self) -> Lease:
        self._async_keeper("async with")
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        await self._async_keeper("async with").finish(self, raised=exc_type is not None)

    def _sync_keeper(self, use: str) -> Any:
        if self._keeper.asynchronous:
            hint = {"with": "async with", "release": "await lease.arelease()"}
            raise TypeError(
                f"{self!r} was taken by async code: use "
                f"{hint.get(use, 'await lease.aextend()')} instead of {use}"
            )
        return self._keeper

    def _async_keeper(self, use: str) -> Any:
        if not self._keeper.asynchronous:
            hint = {"async with": "with", "arelease": "lease.release()"}
            raise TypeError(
                f"{self!r} was taken by sync code: use "
                f"{hint.get(use, 'lease.extend()')} instead of {use}"
            )
        return self._keeper

    def __repr__(self) -> str:
        state = "lost" if self.lost else "released" if self.released else "held"
        return (
            f"Lease(key={self.key!r}, token={self.token[:8]!r}…, "
            f"fencing_token={self.fencing_token}, {state})"
        )


# Coroutines started by ``on_lost`` callbacks: the loop only keeps weak references.
_pending: set[Any] = set()


def _run_awaitable(result: Any, key: str) -> None:
    import asyncio

    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no running loop in this thread
        if inspect.iscoroutine(result):
            result.close()
        log.error("the async on_lost callback of lock %r needs a running event loop", key)
        return
    task = asyncio.ensure_future(result, loop=loop)
    _pending.add(task)
    task.add_done_callback(_pending.discard)


__all__ = ["DRIFT", "Lease", "OnLost", "local_deadline"]
