"""Optional for a store: a line of waiters served in arrival order (see :mod:`.base`).

A store that queues knows *who* waits: a release hands the lock straight to the first
in line (:class:`Handover`), and a waiter that only waits to hear of the next release
(a ``skip_if`` caller, a *watcher*) is taken out of line by it (:class:`Dismissed`).
"""

from __future__ import annotations

from typing import Final, NamedTuple, Protocol, runtime_checkable


class Handover(NamedTuple):
    """The lock was handed straight to a queued waiter by the release that freed it."""

    fencing_token: int
    lease: float
    """Seconds the handed-over lease runs; the new holder renews it to its full length."""


class Dismissed:
    """The answer of :meth:`QueuedStore.wait_turn` to a *watcher*, a token that waits
    only to hear of the next release (a ``skip_if`` caller, queued by
    ``acquire_watching``): that release took it out of line, so it need not leave. If it
    still needs the lock, it acquires again (the store keeps its old place)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "DISMISSED"


DISMISSED: Final = Dismissed()


@runtime_checkable
class QueuedStore(Protocol):
    """Optional: a store that queues waiters and serves them in arrival order.

    A plain ``wait(key, timeout)`` cannot say *who* waits; a fair store must know, so
    that a release wakes each queued waiter and only the first in line may take the
    lock. The lock layer uses these methods instead of ``wait`` when a store has them.
    An ``acquire`` that finds the lock busy puts its token in the queue. A store may
    also have ``acquire_watching(key, token, ttl)``: the same, but a token it queues is
    a *watcher*, taken out of line by the next release (see :class:`Dismissed`).
    """

    def wait_turn(
        self, key: str, token: str, timeout: float, every_release: bool = False
    ) -> Handover | Dismissed | None:
        """Like :meth:`Store.wait`, as the queued waiter ``token``: return when its turn
        may have come (or, with ``every_release``, after any release), or at ``timeout``.

        :returns: a :class:`Handover` if the lock now belongs to ``token`` (no acquire
            needed), :data:`DISMISSED` if a release took the watcher ``token`` out of
            line, else ``None`` (try to acquire again).
        """
        ...

    def leave(self, key: str, token: str) -> None:
        """Take ``token`` out of the queue (it gave up, or no longer needs the lock)."""
        ...


@runtime_checkable
class AsyncQueuedStore(Protocol):
    """Async twin of :class:`QueuedStore`."""

    async def wait_turn(
        self, key: str, token: str, timeout: float, every_release: bool = False
    ) -> Handover | Dismissed | None:
        """See :meth:`QueuedStore.wait_turn`."""
        ...

    async def leave(self, key: str, token: str) -> None:
        """See :meth:`QueuedStore.leave`."""
        ...


__all__ = ["DISMISSED", "AsyncQueuedStore", "Dismissed", "Handover", "QueuedStore"]
