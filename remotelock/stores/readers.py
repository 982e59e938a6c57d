"""Shared (reader) locks: the optional store steps behind ``RemoteLock(key, shared=True)``.

A key can be held by one exclusive holder (:class:`~remotelock.stores.base.Store`'s
``acquire``) **or** by any number of shared holders, never both. A store that offers
shared locks keeps both kinds of a key in one place, so that each step stays one atomic
step (one script, one statement, one transaction):

- ``acquire_shared`` succeeds while no unexpired exclusive lease holds the key and no
  writer is waiting (below), or at once for a token that already holds a shared lease
  (a retry after a lost reply: it resets the lease and returns the same fencing token).
- The **exclusive** ``acquire`` of such a store also fails while an unexpired shared
  lease is held. When that is why it fails, it records that a writer waits: until the
  last of those shared leases ends, plus :data:`WRITER_GRACE`. Until then no new reader
  enters, so a stream of readers cannot starve a writer (writer preference). A writer
  that stops trying (it gave up, or died) holds back new readers at most that long; a
  writer that keeps waiting renews the mark with each refused attempt, and its wait
  ends when the last reader leaves or the readers' leases end. A successful exclusive
  acquire clears the mark. On a store that queues its writers
  (:class:`~remotelock.stores.base.QueuedStore`), a writer refused by readers takes its
  place in line as for a busy lock, and the last reader's release lets the first in
  line in.
- Fencing tokens come from **one sequence per key** across both kinds: every shared or
  exclusive acquisition gets a token strictly greater than any the key gave before.
- ``release_shared`` and ``extend_shared`` are token-checked like their exclusive
  twins. The release of the last shared lease wakes the key's waiting writers; the
  release of the exclusive lease wakes its waiting readers too, and the exclusive
  ``wait`` (or ``wait_turn``) counts shared leases as holders: it lasts at most until
  the last of them ends.
- ``owner(key)`` still answers for the exclusive holder only; ``shared_holders(key)``
  lists the readers.

The contract is :class:`remotelock.testing.SharedContract`.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

WRITER_GRACE: Final = 1.0
"""Seconds a refused writer's mark outlives the shared leases that refused it: time for
the writer, woken when those leases end, to try again before new readers may enter."""


@runtime_checkable
class SharedStore(Protocol):
    """Optional: shared (reader) leases beside the exclusive lock of the same key."""

    def acquire_shared(self, key: str, token: str, ttl: float) -> int | None:
        """Try once to take a shared lease of ``key`` for ``ttl`` seconds; never blocks.

        :returns: the new fencing token, or ``None`` while an exclusive lease holds the
            key or a writer waits for it.
        """
        ...

    def release_shared(self, key: str, token: str) -> bool:
        """Give back ``token``'s shared lease; ``False`` if it holds none (or it ran out)."""
        ...

    def extend_shared(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s shared lease to ``ttl`` seconds if it still holds it."""
        ...

    def shared_holders(self, key: str) -> list[str]:
        """The tokens holding a shared lease of ``key`` now."""
        ...

    def wait_shared(self, key: str, timeout: float) -> None:
        """Block until a reader may enter ``key`` (the exclusive lease was released or
        ran out, or the writers' mark lapsed), or ``timeout`` seconds pass."""
        ...


@runtime_checkable
class AsyncSharedStore(Protocol):
    """Async twin of :class:`SharedStore`."""

    async def acquire_shared(self, key: str, token: str, ttl: float) -> int | None:
        """See :meth:`SharedStore.acquire_shared`."""
        ...

    async def release_shared(self, key: str, token: str) -> bool:
        """See :meth:`SharedStore.release_shared`."""
        ...

    async def extend_shared(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`SharedStore.extend_shared`."""
        ...

    async def shared_holders(self, key: str) -> list[str]:
        """See :meth:`SharedStore.shared_holders`."""
        ...

    async def wait_shared(self, key: str, timeout: float) -> None:
        """See :meth:`SharedStore.wait_shared`."""
        ...


__all__ = ["WRITER_GRACE", "AsyncSharedStore", "SharedStore"]
