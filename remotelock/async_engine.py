"""The async engine: runs a lock's machines (:mod:`remotelock.core`) on asyncio.

The sibling of :mod:`remotelock.engine`: the same machines, awaited. Cancellation is the
part only asyncio has: a call that changes the store (``Call.shield``) runs as a task
of its own, so a task cancelled while such a request is in flight lets it finish and
then gives back whatever it took; a release completes even if the task that started it
is cancelled. Sleeps are never shielded: cancelling a waiting task is immediate.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, TypeVar

from . import cleanup, policy, telemetry, watchdog
from .core import Call, Core, Machine, Skip, Thrown, carry
from .lease import Lease
from .renewal import AsyncRenewer

T = TypeVar("T")


async def run(machine: Machine[T]) -> T:
    """Drive ``machine`` to its end, awaiting each call it yields (see :func:`engine.run`)."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            call = machine.send(reply) if error is None else machine.throw(error)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        except Thrown as thrown:
            raise thrown.error from None
        reply, error = None, None
        try:
            reply = await _perform(call)
        except BaseException as exc:  # the machine decides: give back, then re-raise
            error = carry(exc)


async def _perform(call: Call) -> Any:
    result = call.fn(*call.args)  # a sync skip_if or tenacity decision returns at once
    if not inspect.isawaitable(result):
        return result
    if not call.shield:
        return await result
    task = cleanup.in_background(result)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait((task,))  # let the request land: what it took is given back
        raise


class AsyncEngine(Core):
    """Asyncio I/O for :class:`~remotelock.RemoteLock` on an async store (or twin)."""

    asynchronous = True

    def current_loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def start_renewal(self, lease: Lease, first: float) -> None:
        # Watched from the start: a blocked event loop could not arm it later.
        watchdog.watch(lease)
        AsyncRenewer.for_store(self.store).add(lease, first)

    def stop_renewal(self, lease: Lease) -> None:
        AsyncRenewer.for_store(self.store).discard(lease)

    def later(self, step: Any, within: float) -> None:
        cleanup.in_background(cleanup.agive_back(step, self.key, within))

    async def acquire(self, skip: Skip, stop: policy.StopStrategy, blocking: bool) -> Lease | None:
        """See :meth:`SyncEngine.acquire`; cancellation leaves no lock behind."""
        if not telemetry.active():
            return await run(self.acquiring(skip, stop, blocking))
        with telemetry.acquiring(self.key, self.source) as note:
            note.lease = await run(self.acquiring(skip, stop, blocking))
            note.outcome = telemetry.outcome(note.lease, blocking)
        return note.lease  # type: ignore[no-any-return]

    async def release(self, lease: Lease) -> bool:
        """See :meth:`Core.releasing`; completes even if the caller is cancelled."""
        try:
            return await run(self.releasing(lease))
        finally:
            telemetry.released(lease)

    async def extend(self, lease: Lease, ttl: float) -> bool:
        """See :meth:`Core.extending`."""
        return await run(self.extending(lease, ttl))

    async def finish(self, lease: Lease, raised: bool) -> None:
        """See :meth:`Core.finishing`."""
        try:
            await run(self.finishing(lease, raised))
        finally:
            telemetry.released(lease)

    async def locked(self) -> bool:
        """Whether any owner holds the key now."""
        return await run(self.checking())


__all__ = ["AsyncEngine", "run"]
