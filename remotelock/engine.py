"""The I/O of a lock: two sibling engines, sync and async, with the same method names.

Each acquire makes one attempt straight away (no retry controller is built when the
lock is free, the common case) and only then hands over to tenacity. An attempt
checks ``skip_if`` first, then asks the store, and checks ``skip_if`` once more right
after taking the lock (double-checked locking), so a cache refreshed a moment ago is
never refreshed twice. Any interruption (an exception from ``skip_if``, Ctrl-C, task
cancellation) gives back whatever the interrupted attempt may have taken.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import policy
from .errors import StoreError
from .lease import Lease, Renewer, start_async_renewal
from .stores.base import AsyncStore, Store

if TYPE_CHECKING:
    from .lock import RemoteLock

log = logging.getLogger("remotelock.lock")

Skip = Callable[[], Any] | None


@dataclass(frozen=True)
class _Taken:
    fence: int
    started: float  # monotonic time before the request: the lease's local deadline counts from it


class _Attempts:
    """One acquire's state (engines are shared by concurrent threads and tasks)."""

    def __init__(self) -> None:
        self.token = secrets.token_urlsafe(16)
        self.started = time.monotonic()
        self.count = 0
        self.inflight: asyncio.Future[int | None] | None = None


class _Engine:
    """What both engines share: the lock, and the leases it holds right now."""

    def __init__(self, lock: RemoteLock) -> None:
        self.lock = lock
        self._held: weakref.WeakSet[Lease] = weakref.WeakSet()
        self._held_mutex = threading.Lock()

    def held(self) -> list[Lease]:
        """The leases issued by this engine and not yet released."""
        with self._held_mutex:
            return [lease for lease in self._held if not lease.released]

    def _issue(self, token: str, taken: _Taken, attempts: int) -> Lease:
        lock = self.lock
        lease = Lease(lock.key, token, taken.fence, lock.ttl, deadline=taken.started + lock.ttl)
        lease._lock = lock
        lease._on_lost = lock.settings.on_lost
        with self._held_mutex:
            self._held.add(lease)
        log.debug(
            "acquired lock %r (token %s…, fencing token %d) after %d attempt(s)",
            lock.key,
            token[:8],
            taken.fence,
            attempts,
        )
        return lease

    def _settle(self, outcome: object, state: _Attempts) -> Lease | None:
        if isinstance(outcome, _Taken):
            return self._issue(state.token, outcome, state.count)
        if outcome is policy.SKIPPED:
            log.debug("skipped lock %r: skip_if is true", self.lock.key)
            return None
        raise self.lock._timeout(state.count, time.monotonic() - state.started)

    def _released(self, lease: Lease, ok: bool) -> bool:
        if ok:
            log.debug("released lock %r (token %s…)", lease.key, lease.token[:8])
        elif lease.mark_lost(
            "release found the lock no longer held by this lease "
            "(its lease had run out, or another holder took it over)"
        ):
            lease.run_on_lost()
        return ok


class SyncEngine(_Engine):
    """Blocking I/O for :class:`~remotelock.RemoteLock` on a sync :class:`Store`."""

    def __init__(self, lock: RemoteLock, store: Store) -> None:
        super().__init__(lock)
        self.store = store

    def acquire(self, skip: Skip, stop: policy.StopStrategy, blocking: bool) -> Lease | None:
        """A lease, ``None`` if skipped, or :class:`LockTimeout` when ``stop`` fires."""
        state = _Attempts()
        try:
            outcome = self._attempt(state, skip)
            if outcome is policy.BUSY and blocking:
                first = [outcome]

                def attempt() -> object:
                    return first.pop() if first else self._attempt(state, skip)

                sleep = functools.partial(self.store.wait, self.lock.key)
                outcome = policy.retrying(self.lock.settings.wait, stop, sleep)(attempt)
        except BaseException as exc:
            if not isinstance(exc, StoreError):
                self._give_back(state.token)
            raise
        lease = self._settle(outcome, state)
        if lease is not None:
            Renewer.for_store(self.store).add(lease)
        return lease

    def _attempt(self, state: _Attempts, skip: Skip) -> object:
        state.count += 1
        if skip is not None and skip():
            return policy.SKIPPED
        started = time.monotonic()
        fence = self.store.acquire(self.lock.key, state.token, self.lock.ttl)
        if fence is None:
            return policy.BUSY
        if skip is not None and skip():
            self.store.release(self.lock.key, state.token)
            return policy.SKIPPED
        return _Taken(fence, started)

    def _give_back(self, token: str) -> None:
        try:
            self.store.release(self.lock.key, token)
        except Exception as exc:
            log.debug(
                "could not give back lock %r after an interrupted acquire: %s", self.lock.key, exc
            )

    def release(self, lease: Lease) -> bool:
        """Release ``lease`` (once); stop renewing it first."""
        if lease.released:
            return False
        lease.released = True
        return self._released(lease, self.store.release(lease.key, lease.token))

    def extend(self, lease: Lease, ttl: float) -> bool:
        """Reset the lease to ``ttl`` seconds; a refusal marks it lost."""
        started = time.monotonic()
        ok = self.store.extend(lease.key, lease.token, ttl)
        if ok:
            lease.ttl = ttl
            lease.deadline = started + ttl
        elif lease.mark_lost("extend found the lock no longer held by this lease"):
            lease.run_on_lost()
        return ok

    def locked(self) -> bool:
        """Whether any owner holds the key now."""
        return self.store.owner(self.lock.key) is not None


# Tasks that must finish even if whoever started them is cancelled (a release, the
# give-back after an interrupted acquire). The loop only keeps weak references.
_background: set[asyncio.Task[Any]] = set()


async def _shielded(coro: Any) -> Any:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return await asyncio.shield(task)


async def _call(fn: Callable[[], Any]) -> Any:
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


class AsyncEngine(_Engine):
    """Asyncio I/O for :class:`~remotelock.RemoteLock` on an :class:`AsyncStore`."""

    def __init__(self, lock: RemoteLock, store: AsyncStore, *, source: object) -> None:
        super().__init__(lock)
        self.store = store
        self.source = source  # what the user configured (a sync store served through a twin)

    async def acquire(self, skip: Skip, stop: policy.StopStrategy, blocking: bool) -> Lease | None:
        """See :meth:`SyncEngine.acquire`; cancellation leaves no lock behind."""
        state = _Attempts()
        try:
            outcome = await self._attempt(state, skip)
            if outcome is policy.BUSY and blocking:
                first = [outcome]

                async def attempt() -> object:
                    return first.pop() if first else await self._attempt(state, skip)

                sleep = functools.partial(self.store.wait, self.lock.key)
                retrying = policy.async_retrying(self.lock.settings.wait, stop, sleep)
                outcome = await retrying(attempt)
        except BaseException as exc:
            if not isinstance(exc, StoreError):
                await _shielded(self._give_back(state))
            raise
        lease = self._settle(outcome, state)
        if lease is not None:
            lease._renewal = start_async_renewal(lease, self.store)
        return lease

    async def _attempt(self, state: _Attempts, skip: Skip) -> object:
        state.count += 1
        if skip is not None and await _call(skip):
            return policy.SKIPPED
        started = time.monotonic()
        # Shielded: if this task is cancelled mid-request, the request still completes
        # and _give_back can see whether it took the lock.
        state.inflight = asyncio.ensure_future(
            self.store.acquire(self.lock.key, state.token, self.lock.ttl)
        )
        fence = await asyncio.shield(state.inflight)
        if fence is None:
            return policy.BUSY
        if skip is not None and await _call(skip):
            await self.store.release(self.lock.key, state.token)
            return policy.SKIPPED
        return _Taken(fence, started)

    async def _give_back(self, state: _Attempts) -> None:
        try:
            if state.inflight is not None:
                await asyncio.wait((state.inflight,))
            await self.store.release(self.lock.key, state.token)
        except Exception as exc:
            log.debug(
                "could not give back lock %r after an interrupted acquire: %s", self.lock.key, exc
            )

    async def release(self, lease: Lease) -> bool:
        """See :meth:`SyncEngine.release`; completes even if the caller is cancelled."""
        if lease.released:
            return False
        lease.released = True
        if lease._renewal is not None:
            lease._renewal.cancel()
        ok = await _shielded(self.store.release(lease.key, lease.token))
        return self._released(lease, bool(ok))

    async def extend(self, lease: Lease, ttl: float) -> bool:
        """See :meth:`SyncEngine.extend`."""
        started = time.monotonic()
        ok = await self.store.extend(lease.key, lease.token, ttl)
        if ok:
            lease.ttl = ttl
            lease.deadline = started + ttl
        elif lease.mark_lost("extend found the lock no longer held by this lease"):
            lease.run_on_lost()
        return ok

    async def locked(self) -> bool:
        """Whether any owner holds the key now."""
        return await self.store.owner(self.lock.key) is not None


__all__ = ["AsyncEngine", "SyncEngine"]
