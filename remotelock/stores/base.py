"""The store protocol: the few atomic steps every backend performs, and nothing more.

A store performs **one atomic step per call and never loops**. Waiting, retrying,
deadlines and lease renewal live above it, in :mod:`remotelock.lock` on tenacity.
Stores conform by shape (:class:`typing.Protocol`), not by inheritance; the contract
suite in :mod:`remotelock.testing` is what defines conformance.

Rules every store keeps (the contract suite pins each one):

- ``acquire`` is **non-blocking** despite its name: it takes the lock if it is free or
  its lease has run out, and returns at once either way.
- It returns a *fencing token*: an integer that strictly increases for a key on every
  successful acquire, also across releases and expiries. A protected resource that
  remembers the largest token it has seen can refuse a stale holder's late writes.
- Re-acquiring with the token that already holds the lock is idempotent: it returns
  the current fencing token and resets the lease. A retry after a lost reply is safe.
- ``release`` and ``extend`` compare the token first and return ``False`` when the
  token no longer holds the lock (released, expired or taken over). A stale holder
  can never delete or extend its successor's lock. An expired lease counts as lost,
  even if no one has taken the key since: exclusion was not guaranteed past expiry.
- ``wait`` may return early (that is its purpose: a release wakes waiters) but never
  later than its ``timeout``. A store without notifications may simply sleep.
- Keys are opaque strings; tokens come from the lock layer, never from the store.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, runtime_checkable

from .queued import DISMISSED, AsyncQueuedStore, Dismissed, Handover, QueuedStore


class Capability(str, enum.Enum):
    """What a store guarantees, declared as data in its ``capabilities`` frozenset.

    The contract suite skips what a store does not declare, and
    ``store_from_url(url, require=...)`` refuses a store that lacks what the caller
    needs. Members are also plain strings (``"notify"``), so stores written before the
    enum existed keep working.
    """

    CROSS_PROCESS = "cross_process"
    """Excludes other processes (of the same machine at least)."""
    CROSS_HOST = "cross_host"
    """Excludes processes on other machines."""
    NOTIFY = "notify"
    """``wait`` returns early when a lock is released (push wake-ups)."""
    FENCING = "fencing"
    """Fencing tokens are strictly increasing per key across every holder."""
    TOKEN_CHECKED = "token_checked"
    """``release``/``extend``/``acquire`` are atomic and compare the token on the server."""
    EXPIRY = "expiry"
    """Leases run out on their own after ``ttl`` seconds."""
    FAIR = "fair"
    """Waiters get the lock in arrival order (the store implements :class:`QueuedStore`)."""

    def __str__(self) -> str:
        return self.value


CROSS_PROCESS: Final = Capability.CROSS_PROCESS
CROSS_HOST: Final = Capability.CROSS_HOST
NOTIFY: Final = Capability.NOTIFY
FENCING: Final = Capability.FENCING
TOKEN_CHECKED: Final = Capability.TOKEN_CHECKED
EXPIRY: Final = Capability.EXPIRY
FAIR: Final = Capability.FAIR


def missing(capabilities: frozenset[str], required: object) -> list[Capability]:
    """Which of ``required`` (capabilities or their names) ``capabilities`` lacks.

    :raises ValueError: a name that is no capability (the message lists the known ones).
    """
    names = [required] if isinstance(required, str) else list(required)  # type: ignore[call-overload]
    wanted = []
    for name in names:
        try:
            wanted.append(Capability(name))
        except ValueError:
            known = ", ".join(member.value for member in Capability)
            raise ValueError(f"unknown store capability {name!r}; known: {known}") from None
    return [capability for capability in wanted if capability not in capabilities]


@dataclass(frozen=True)
class LockInfo:
    """What a store knows about one held lock (for tooling such as the CLI)."""

    key: str
    token: str
    fencing_token: int | None
    expires_in: float | None
    """Seconds until the lease runs out, by the store's clock; ``None`` if unknown."""


@runtime_checkable
class Store(Protocol):
    """A synchronous lock store. One call is one atomic step."""

    @property
    def capabilities(self) -> frozenset[str]:
        """What the store guarantees (:class:`Capability` members)."""
        ...

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """Try once to take ``key`` for ``token`` for ``ttl`` seconds; never blocks.

        :returns: the new fencing token, or ``None`` if another token holds the lock.
        """
        ...

    def release(self, key: str, token: str) -> bool:
        """Free ``key`` if ``token`` still holds it; ``False`` if it does not."""
        ...

    def extend(self, key: str, token: str, ttl: float) -> bool:
        """Reset the lease to ``ttl`` seconds from now if ``token`` still holds ``key``."""
        ...

    def owner(self, key: str) -> str | None:
        """The token holding ``key`` now, or ``None`` if it is free or expired."""
        ...

    def wait(self, key: str, timeout: float) -> None:
        """Block until ``key`` may be free (a release) or ``timeout`` seconds pass."""
        ...


@runtime_checkable
class AsyncStore(Protocol):
    """The asynchronous twin of :class:`Store`: same names, same rules, coroutines."""

    @property
    def capabilities(self) -> frozenset[str]:
        """What the store guarantees (:class:`Capability` members)."""
        ...

    async def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """See :meth:`Store.acquire`."""
        ...

    async def release(self, key: str, token: str) -> bool:
        """See :meth:`Store.release`."""
        ...

    async def extend(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`Store.extend`."""
        ...

    async def owner(self, key: str) -> str | None:
        """See :meth:`Store.owner`."""
        ...

    async def wait(self, key: str, timeout: float) -> None:
        """See :meth:`Store.wait`."""
        ...


@runtime_checkable
class BatchRenewal(Protocol):
    """Optional: renew many leases in one round trip (a process may hold thousands).

    Each item is ``(key, token, ttl)`` and is extended exactly as :meth:`Store.extend`
    would; the answers come back in the same order. The lock layer sends at most a
    hundred at a time.
    """

    def extend_many(self, leases: Sequence[tuple[str, str, float]]) -> list[bool]:
        """:meth:`Store.extend` for each item, in one step where the store can."""
        ...


@runtime_checkable
class AsyncBatchRenewal(Protocol):
    """Async twin of :class:`BatchRenewal`."""

    async def extend_many(self, leases: Sequence[tuple[str, str, float]]) -> list[bool]:
        """See :meth:`BatchRenewal.extend_many`."""
        ...


@runtime_checkable
class HasAsyncTwin(Protocol):
    """A sync store that can hand out its async twin (sharing config and state)."""

    def as_async(self) -> AsyncStore:
        """Return the async twin of this store (the same one on every call)."""
        ...


@runtime_checkable
class PermitStore(Protocol):
    """Optional: counted permits, "at most ``limit`` holders of ``key`` at once".

    A separate protocol from :class:`Store` (a permit set is not a lock), with the same
    rules per permit: each is a lease that runs out, carries a fencing token (strictly
    increasing per key across all its permits), and is released or extended only by
    the token holding it. The limit of a key is the one its first holder asked for
    and holds while any permit is held; asking for another raises
    :class:`~remotelock.errors.LimitConflict`.
    """

    @property
    def capabilities(self) -> frozenset[str]:
        """What the store guarantees (:class:`Capability` members)."""
        ...

    def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """Try once to take one of ``limit`` permits of ``key``; never blocks.

        :returns: the new fencing token, or ``None`` if all permits are taken.
        :raises LimitConflict: the key's permits are held with another limit.
        """
        ...

    def release_permit(self, key: str, token: str) -> bool:
        """Give back ``token``'s permit; ``False`` if it holds none (or it ran out)."""
        ...

    def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s permit to ``ttl`` seconds if it still holds it."""
        ...

    def permit_holders(self, key: str) -> list[str]:
        """The tokens holding a permit of ``key`` now."""
        ...

    def wait_permit(self, key: str, timeout: float) -> None:
        """Block until a permit of ``key`` may be free, or ``timeout`` seconds pass."""
        ...


@runtime_checkable
class AsyncPermitStore(Protocol):
    """Async twin of :class:`PermitStore`."""

    @property
    def capabilities(self) -> frozenset[str]:
        """What the store guarantees (:class:`Capability` members)."""
        ...

    async def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """See :meth:`PermitStore.acquire_permit`."""
        ...

    async def release_permit(self, key: str, token: str) -> bool:
        """See :meth:`PermitStore.release_permit`."""
        ...

    async def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`PermitStore.extend_permit`."""
        ...

    async def permit_holders(self, key: str) -> list[str]:
        """See :meth:`PermitStore.permit_holders`."""
        ...

    async def wait_permit(self, key: str, timeout: float) -> None:
        """See :meth:`PermitStore.wait_permit`."""
        ...


@runtime_checkable
class ResultStore(Protocol):
    """Optional: short-lived values beside the locks (what :func:`~remotelock.single_flight`
    shares). A value set by ``put_result`` is read back until its ``ttl`` has passed,
    then removed; result keys live apart from lock keys; callers keep values within
    ``max_result_bytes``."""

    max_result_bytes: int

    def put_result(self, key: str, data: bytes, ttl: float) -> None:
        """Keep ``data`` as ``key``'s value for ``ttl`` seconds."""
        ...

    def get_result(self, key: str) -> bytes | None:
        """``key``'s value, or ``None`` if it has none (or it ran out)."""
        ...


@runtime_checkable
class AsyncResultStore(Protocol):
    """Async twin of :class:`ResultStore`."""

    max_result_bytes: int

    async def put_result(self, key: str, data: bytes, ttl: float) -> None:
        """See :meth:`ResultStore.put_result`."""
        ...

    async def get_result(self, key: str) -> bytes | None:
        """See :meth:`ResultStore.get_result`."""
        ...


@runtime_checkable
class LockAdmin(Protocol):
    """Optional abilities for operators and the CLI; the decorator never needs them."""

    def force_release(self, key: str) -> bool:
        """Delete ``key`` whoever holds it (breaking a stuck lock); ``True`` if it was held."""
        ...

    def iter_locks(self, prefix: str = "") -> Iterator[LockInfo]:
        """The locks held now whose key starts with ``prefix``."""
        ...


@runtime_checkable
class AsyncLockAdmin(Protocol):
    """Async twin of :class:`LockAdmin`."""

    async def force_release(self, key: str) -> bool:
        """See :meth:`LockAdmin.force_release`."""
        ...

    def iter_locks(self, prefix: str = "") -> AsyncIterator[LockInfo]:
        """See :meth:`LockAdmin.iter_locks`."""
        ...


__all__ = [
    "CROSS_HOST",
    "CROSS_PROCESS",
    "DISMISSED",
    "EXPIRY",
    "FAIR",
    "FENCING",
    "NOTIFY",
    "TOKEN_CHECKED",
    "AsyncBatchRenewal",
    "AsyncLockAdmin",
    "AsyncPermitStore",
    "AsyncQueuedStore",
    "AsyncResultStore",
    "AsyncStore",
    "BatchRenewal",
    "Capability",
    "Dismissed",
    "Handover",
    "HasAsyncTwin",
    "LockAdmin",
    "LockInfo",
    "PermitStore",
    "QueuedStore",
    "ResultStore",
    "Store",
    "missing",
]
