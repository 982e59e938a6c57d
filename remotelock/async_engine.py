"""The async engine: asyncio I/O for :class:`~remotelock.RemoteLock`.

The sibling of :class:`~remotelock.engine.SyncEngine`, with the same method names and
the same attempt logic (shared through :mod:`remotelock.engine`). Cancellation is
the hard part here: a task cancelled while its acquire request is in flight lets the
request finish (shielded) and then gives back whatever it took; a release completes
even if the task that started it is cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from . import policy
from .engine import Skip, _Attempts, _Engine, _first_renewal, _Taken
from .errors import StoreError
from .lease import Lease, start_async_renewal
from .stores.base import AsyncQueuedStore, AsyncStore

if TYPE_CHECKING:
    from .binding import Binding
    from .lock import RemoteLock

log = logging.getLogger("remotelock.lock")


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

    def __init__(self, lock: RemoteLock, binding: Binding) -> None:
        super().__init__(lock)
        self.store: AsyncStore = binding.store  # the store, its twin, or a permit view
        self.source = binding.source  # what the user configured (maybe a sync store)
        self.queue: AsyncQueuedStore | None = binding.queue

    def _sleep(self, state: _Attempts, skip: Skip) -> Callable[[float], Awaitable[None]]:
        queue, key = self.queue, self.lock.key
        if queue is None:
            return functools.partial(self.store.wait, key)
        every_release = skip is not None

        async def wait_turn(seconds: float) -> None:
            state.handed = await queue.wait_turn(key, state.token, seconds, every_release)

        return wait_turn

    async def acquire(self, skip: Skip, stop: policy.StopStrategy, blocking: bool) -> Lease | None:
        """See :meth:`SyncEngine.acquire`; cancellation leaves no lock behind."""
        state = _Attempts()
        try:
            outcome = await self._attempt(state, skip)
            if outcome is policy.BUSY and blocking:
                first = [outcome]

                async def attempt() -> object:
                    return first.pop() if first else await self._attempt(state, skip)

                wait = self.lock.settings.wait or policy.default_wait(self.store.capabilities)
                retrying = policy.async_retrying(wait, stop, self._sleep(state, skip))
                outcome = await retrying(attempt)
        except BaseException as exc:
            if not isinstance(exc, StoreError):
                await _shielded(self._give_back(state))
            raise
        if self.queue is not None and state.queued and not isinstance(outcome, _Taken):
            await self._leave(self.queue, state)
        lease = self._settle(outcome, state)
        if lease is not None:
            renew_in = _first_renewal(lease, outcome)
            lease._renewal = start_async_renewal(lease, self.store, renew_in)
        return lease

    async def _attempt(self, state: _Attempts, skip: Skip) -> object:
        state.count += 1
        outcome: object = state.take_handed()
        if outcome is None:
            if skip is not None and await _call(skip):
                return policy.SKIPPED
            started = time.monotonic()
            # Shielded: if this task is cancelled mid-request, the request still completes
            # and _give_back can see whether it took the lock.
            state.inflight = asyncio.ensure_future(
                self.store.acquire(self.lock.key, state.token, self.lock.ttl)
            )
            fence = await asyncio.shield(state.inflight)
            outcome = state.take(fence, started, self.lock.ttl)
            if outcome is policy.BUSY:
                return outcome
        if skip is not None and await _call(skip):
            await self.store.release(self.lock.key, state.token)
            return policy.SKIPPED
        return outcome

    async def _give_back(self, state: _Attempts) -> None:
        try:
            if state.inflight is not None:
                await asyncio.wait((state.inflight,))
            await self.store.release(self.lock.key, state.token)
            if self.queue is not None and state.queued:
                await self.queue.leave(self.lock.key, state.token)
        except Exception as exc:
            log.debug(
                "could not give back lock %r after an interrupted acquire: %s", self.lock.key, exc
            )

    async def _leave(self, queue: AsyncQueuedStore, state: _Attempts) -> None:
        try:
            await queue.leave(self.lock.key, state.token)
        except StoreError as exc:  # the queue entry expires on its own
            log.debug("could not leave the queue of lock %r: %s", self.lock.key, exc)

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


__all__ = ["AsyncEngine"]
