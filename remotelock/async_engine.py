"""The async engine: asyncio I/O for :class:`~remotelock.RemoteLock`.

The sibling of :class:`~remotelock.engine.SyncEngine`, with the same method names and
the same decisions (shared through :class:`~remotelock.engine.Core`). Cancellation is
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
from typing import Any

from . import cleanup, policy, renewal
from .engine import Attempts, Core, Skip, Taken, first_renewal
from .errors import StoreError
from .lease import Lease
from .stores.base import AsyncQueuedStore, AsyncStore

log = logging.getLogger("remotelock.lock")


async def _shielded(coro: Awaitable[Any]) -> Any:
    return await asyncio.shield(cleanup.in_background(coro))


async def _call(fn: Callable[[], Any]) -> Any:
    result = fn()
    if inspect.isawaitable(result):
        result = await result
    return result


class AsyncEngine(Core):
    """Asyncio I/O for :class:`~remotelock.RemoteLock` on an :class:`AsyncStore`."""

    asynchronous = True
    store: AsyncStore
    queue: AsyncQueuedStore | None

    def _sleep(self, state: Attempts, skip: Skip) -> Callable[[float], Awaitable[None]]:
        queue, key = self.queue, self.key
        if queue is None:
            return functools.partial(self.store.wait, key)
        every_release = skip is not None

        async def wait_turn(seconds: float) -> None:
            state.handed = await queue.wait_turn(key, state.token, seconds, every_release)

        return wait_turn

    async def acquire(self, skip: Skip, stop: policy.StopStrategy, blocking: bool) -> Lease | None:
        """See :meth:`SyncEngine.acquire`; cancellation leaves no lock behind."""
        owner = self.check_owner()
        state = Attempts()
        try:
            outcome = await self._attempt(state, skip)
            if outcome is policy.BUSY and blocking:
                first = [outcome]

                async def attempt() -> object:
                    return first.pop() if first else await self._attempt(state, skip)

                wait = self.settings.wait or policy.default_wait(self.store.capabilities)
                sleep = self._sleep(state, skip)
                outcome = await policy.async_retrying(wait, stop, sleep, state.started)(attempt)
        except StoreError:
            self._abandon(state)
            raise
        except BaseException:
            await _shielded(self._give_back(state))
            raise
        if not isinstance(outcome, Taken):
            if state.queued or state.holds:
                await self._let_go(state)
            self.missed(outcome, state)
            return None
        lease = self.issue(state.token, outcome, state.count, asyncio.get_running_loop())
        self.hold(lease, owner)
        renew_in = first_renewal(outcome, self.settings.ttl)
        lease._renewal = renewal.start_async_renewal(lease, self.store, renew_in)
        return lease

    async def _attempt(self, state: Attempts, skip: Skip) -> object:
        state.count += 1
        taken = state.take_handed()
        if taken is None:
            if skip is not None and await _call(skip):
                return policy.SKIPPED
            started = time.monotonic()
            # Shielded: if this task is cancelled mid-request, the request still completes
            # and _give_back can see whether it took the lock.
            state.inflight = asyncio.ensure_future(
                self.store.acquire(self.key, state.token, self.settings.ttl)
            )
            fence = await asyncio.shield(state.inflight)
            if fence is None:
                return state.busy(started)
            taken = Taken(fence, started, self.settings.ttl)
        if state.late(taken):
            return policy.BUSY
        if skip is not None and await _call(skip):
            state.holds = False
            await self.store.release(self.key, state.token)
            return policy.SKIPPED
        return taken

    async def _give_back(self, state: Attempts) -> None:
        try:
            if state.inflight is not None:
                await asyncio.wait((state.inflight,))
            await self.store.release(self.key, state.token)
            if self.queue is not None and state.queued:
                await self.queue.leave(self.key, state.token)
        except Exception as exc:
            log.debug("could not give back lock %r after an interruption: %s", self.key, exc)
            self._abandon(state)

    def _abandon(self, state: Attempts) -> None:
        step = self.let_go_step(state.token)
        cleanup.in_background(cleanup.agive_back(step, self.key, self.settings.ttl))

    async def _let_go(self, state: Attempts) -> None:
        try:
            await self.let_go_step(state.token)()
        except StoreError as exc:
            log.debug("could not leave the queue of lock %r: %s", self.key, exc)
            self._abandon(state)

    async def release(self, lease: Lease) -> bool:
        """See :meth:`SyncEngine.release`; completes even if the caller is cancelled."""
        if not self.begin_release(lease):
            return False
        if lease._renewal is not None:
            lease._renewal.cancel()
        try:
            ok = await _shielded(self.store.release(lease.key, lease.token))
        except StoreError:
            step = functools.partial(self.store.release, lease.key, lease.token)
            cleanup.in_background(cleanup.agive_back(step, lease.key, lease.ttl))
            raise
        return self.released(lease, bool(ok))

    async def extend(self, lease: Lease, ttl: float) -> bool:
        """See :meth:`SyncEngine.extend`."""
        if lease.released or lease.lost:
            if lease.settle_deadline():
                lease.run_on_lost()
            return False
        started = time.monotonic()
        ok = await self.store.extend(lease.key, lease.token, ttl)
        return self.extended(lease, ok, started, ttl)

    async def finish(self, lease: Lease, raised: bool) -> None:
        """See :meth:`SyncEngine.finish`."""
        try:
            await self.release(lease)
        except StoreError as exc:
            self.release_failed(lease, exc)
        self.lost_on_exit(lease, raised)

    async def locked(self) -> bool:
        """Whether any owner holds the key now."""
        return await self.store.owner(self.key) is not None


__all__ = ["AsyncEngine"]
