"""The sync engine: runs a lock's machines (:mod:`remotelock.core`) with blocking calls.

Its asyncio sibling (:mod:`remotelock.async_engine`) drives the same machines; it lives
apart so that synchronous programs never import asyncio (a Lambda cold start pays for
what it uses). What differs between the two is only what cannot be the same: how a
call is made, and the hooks (renewal on a shared thread per store, give-backs on the
process's cleanup thread).
"""

from __future__ import annotations

from typing import Any, TypeVar

from . import cleanup, policy, telemetry
from .core import Core, Machine, Skip, Thrown, carry
from .lease import Lease
from .renewal import Renewer

T = TypeVar("T")


def run(machine: Machine[T]) -> T:
    """Drive ``machine`` to its end: make each call it yields, send back the result (or
    throw the exception into it), and return what it returns."""
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
            reply = call.fn(*call.args)
        except BaseException as exc:  # the machine decides: give back, then re-raise
            error = carry(exc)


class SyncEngine(Core):
    """Blocking I/O for :class:`~remotelock.RemoteLock` on a sync store."""

    keeps = True  # a release runs no later than a background thread gets to it

    def start_renewal(self, lease: Lease, first: float) -> None:
        Renewer.for_store(self.store).add(lease, first)

    def stop_renewal(self, lease: Lease) -> None:
        Renewer.for_store(self.store).discard(lease)

    def later(self, step: Any, within: float) -> None:
        cleanup.give_back(step, self.key, within)

    def acquire(self, skip: Skip, stop: policy.StopStrategy, blocking: bool) -> Lease | None:
        """A lease, ``None`` if skipped (or busy, not blocking), or :class:`LockTimeout`."""
        if not telemetry.active():
            return run(self.acquiring(skip, stop, blocking))
        with telemetry.acquiring(self.key, self.source) as note:
            note.lease = run(self.acquiring(skip, stop, blocking))
            note.outcome = telemetry.outcome(note.lease, blocking)
        return note.lease  # type: ignore[no-any-return]

    def release(self, lease: Lease) -> bool:
        """See :meth:`Core.releasing`."""
        try:
            return run(self.releasing(lease))
        finally:
            telemetry.released(lease)

    def extend(self, lease: Lease, ttl: float) -> bool:
        """See :meth:`Core.extending`."""
        return run(self.extending(lease, ttl))

    def finish(self, lease: Lease, raised: bool) -> None:
        """See :meth:`Core.finishing`."""
        try:
            run(self.finishing(lease, raised))
        finally:
            telemetry.released(lease)

    def locked(self) -> bool:
        """Whether any owner holds the key now."""
        return run(self.checking())


__all__ = ["SyncEngine", "run"]
