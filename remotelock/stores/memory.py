"""MemoryStore: locks shared by the threads and asyncio tasks of one process.

The unit-test store, and the right store when "only one at a time" only has to hold
inside one process (a web worker's background jobs, a test double for Redis).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl

from ..errors import LimitConflict, StoreConfigError
from .base import EXPIRY, FENCING, NOTIFY, TOKEN_CHECKED, LockInfo
from .kept import KeptResults
from .listing import PermitInfo
from .readers import WRITER_GRACE
from .shared.redact import redact, split_url

if TYPE_CHECKING:
    from typing_extensions import Self

    from .memory_aio import AsyncMemoryStore

Clock = Callable[[], float]
# Waiters wait on a slot: ("lock", key), ("shared", key) or ("permit", key).
Slot = tuple[str, str]


@dataclass
class _Held:
    token: str
    fence: int
    expires_at: float


@dataclass
class _Permits:
    limit: int
    holders: dict[str, _Held] = field(default_factory=dict)


class MemoryStore(KeptResults):
    """A lock table in this process's memory; thread-safe and task-safe.

    - URL: ``memory://`` (the process-wide shared instance) or ``memory://NAME``
      (a named shared instance). ``MemoryStore()`` makes a private one.
    - Layout: a dict ``key -> (token, fencing token, expiry)`` for locks, one of
      shared holders (and one of writers' marks) for shared locks, and one of permit
      sets for counted permits; released keys leave nothing behind. One counter
      feeds every fencing token, so a key's tokens strictly increase even after its
      entry is gone.
    - Clock: the injectable ``clock`` (default :func:`time.monotonic`), so tests can
      move time by hand.
    - Wake-ups: ``wait`` registers a per-key waker that ``release`` fires at once, and
      is also bounded by the holder's remaining lease, so an expired lock is noticed
      on time.
    """

    capabilities: frozenset[str] = frozenset({NOTIFY, FENCING, TOKEN_CHECKED, EXPIRY})

    _shared: ClassVar[dict[str, MemoryStore]] = {}
    _shared_mutex: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._mutex = threading.Lock()
        self._locks: dict[str, _Held] = {}
        self._permits: dict[str, _Permits] = {}
        self._readers: dict[str, dict[str, _Held]] = {}  # shared leases, by key
        self._marks: dict[str, float] = {}  # until when a refused writer holds readers back
        self._fence = 0
        self._wakers: dict[Slot, list[Callable[[], None]]] = {}
        self._twin: AsyncMemoryStore | None = None
        self._keep_results()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """The shared instance named by ``memory://NAME`` (``memory://`` is the default one)."""
        parts = split_url(url, "memory://")
        if parts.scheme != "memory":
            raise StoreConfigError(f"not a memory:// URL: {redact(url)!r}")
        query = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
        unknown = [*query, *(name for name in options if name != "clock")]
        if unknown:
            raise StoreConfigError(f"unknown memory:// option {unknown[0]!r}")
        name = parts.netloc + parts.path
        with cls._shared_mutex:
            store = cls._shared.get(name)
            if store is None:
                store = cls._shared[name] = cls(**options)
        return store  # type: ignore[return-value]

    def _next_fence(self) -> int:
        self._fence += 1
        return self._fence

    # -- the Store protocol ---------------------------------------------------------

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """Take ``key`` if free or expired; idempotent for the holding token."""
        with self._mutex:
            now = self._clock()
            held = self._locks.get(key)
            if held is not None and held.expires_at > now:
                if held.token != token:
                    return None
                held.expires_at = now + ttl
                return held.fence
            if key in self._readers:
                readers = self._live_readers(key, now)
                if readers:  # refused by readers: new ones wait behind this writer
                    until = max(reader.expires_at for reader in readers.values())
                    self._marks[key] = max(self._marks.get(key, 0.0), until + WRITER_GRACE)
                    return None
            self._marks.pop(key, None)
            self._locks[key] = _Held(token, self._next_fence(), now + ttl)
            return self._fence

    def release(self, key: str, token: str) -> bool:
        """Free ``key`` if ``token`` holds an unexpired lease on it."""
        with self._mutex:
            held = self._locks.get(key)
            if held is None or held.token != token:
                return False
            del self._locks[key]
            self._wake(("lock", key))
            self._wake(("shared", key))
            return held.expires_at > self._clock()

    def extend(self, key: str, token: str, ttl: float) -> bool:
        """Reset the lease if ``token`` still holds ``key``."""
        with self._mutex:
            now = self._clock()
            held = self._locks.get(key)
            if held is None or held.token != token or held.expires_at <= now:
                return False
            held.expires_at = now + ttl
            return True

    def extend_many(self, leases: Sequence[tuple[str, str, float]]) -> list[bool]:
        """:meth:`extend` for each ``(key, token, ttl)``, in one call."""
        return [self.extend(key, token, ttl) for key, token, ttl in leases]

    def owner(self, key: str) -> str | None:
        """The token holding ``key``, or ``None``."""
        with self._mutex:
            held = self._locks.get(key)
            if held is None or held.expires_at <= self._clock():
                return None
            return held.token

    def wait(self, key: str, timeout: float) -> None:
        """Sleep until ``key`` is released, its lease runs out, or ``timeout`` passes."""
        self._wait(("lock", key), timeout)

    # -- counted permits --------------------------------------------------------------

    def acquire_permit(self, key: str, token: str, ttl: float, limit: int) -> int | None:
        """Take one of ``limit`` permits of ``key`` (see :class:`PermitStore`)."""
        with self._mutex:
            now = self._clock()
            permits = self._live_permits(key, now)
            if permits is not None:
                held = permits.holders.get(token)
                if held is not None:
                    held.expires_at = now + ttl
                    return held.fence
                if permits.limit != limit:
                    raise LimitConflict(key, permits.limit, limit)
                if len(permits.holders) >= limit:
                    return None
            else:
                permits = self._permits[key] = _Permits(limit)
            fence = self._next_fence()
            permits.holders[token] = _Held(token, fence, now + ttl)
            return fence

    def release_permit(self, key: str, token: str) -> bool:
        """Give back ``token``'s permit of ``key``."""
        with self._mutex:
            permits = self._permits.get(key)
            held = permits.holders.pop(token, None) if permits is not None else None
            if held is None:
                return False
            self._live_permits(key, self._clock())
            self._wake(("permit", key))
            return held.expires_at > self._clock()

    def extend_permit(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s permit of ``key`` if it still holds it."""
        with self._mutex:
            now = self._clock()
            permits = self._live_permits(key, now)
            held = permits.holders.get(token) if permits is not None else None
            if held is None:
                return False
            held.expires_at = now + ttl
            return True

    def permit_holders(self, key: str) -> list[str]:
        """The tokens holding a permit of ``key``."""
        with self._mutex:
            permits = self._live_permits(key, self._clock())
            return [] if permits is None else list(permits.holders)

    def wait_permit(self, key: str, timeout: float) -> None:
        """Sleep until a permit of ``key`` frees (released or run out), or ``timeout``."""
        self._wait(("permit", key), timeout)

    def _live_permits(self, key: str, now: float) -> _Permits | None:
        """``key``'s permit set without its expired permits (``None`` once empty)."""
        permits = self._permits.get(key)
        if permits is None:
            return None
        for token in [t for t, held in permits.holders.items() if held.expires_at <= now]:
            del permits.holders[token]
        if not permits.holders:
            del self._permits[key]
            return None
        return permits

    # -- shared locks (see stores.readers) ---------------------------------------------

    def acquire_shared(self, key: str, token: str, ttl: float) -> int | None:
        """Take a shared lease of ``key`` (see :class:`~remotelock.stores.readers.SharedStore`)."""
        with self._mutex:
            now = self._clock()
            readers = self._live_readers(key, now)
            held = readers.get(token) if readers else None
            if held is not None:
                held.expires_at = now + ttl
                return held.fence
            writer = self._locks.get(key)
            if writer is not None and writer.expires_at > now:
                return None
            if self._marks.get(key, 0.0) > now:
                return None
            self._marks.pop(key, None)
            fence = self._next_fence()
            self._readers.setdefault(key, {})[token] = _Held(token, fence, now + ttl)
            return fence

    def release_shared(self, key: str, token: str) -> bool:
        """Give back ``token``'s shared lease of ``key``; the last one wakes writers."""
        with self._mutex:
            readers = self._readers.get(key)
            held = readers.pop(token, None) if readers is not None else None
            if held is None:
                return False
            if not self._live_readers(key, self._clock()):
                self._wake(("lock", key))
            return held.expires_at > self._clock()

    def extend_shared(self, key: str, token: str, ttl: float) -> bool:
        """Reset ``token``'s shared lease of ``key`` if it still holds it."""
        with self._mutex:
            now = self._clock()
            readers = self._live_readers(key, now)
            held = readers.get(token) if readers else None
            if held is None:
                return False
            held.expires_at = now + ttl
            return True

    def shared_holders(self, key: str) -> list[str]:
        """The tokens holding a shared lease of ``key``."""
        with self._mutex:
            return list(self._live_readers(key, self._clock()))

    def wait_shared(self, key: str, timeout: float) -> None:
        """Sleep until a reader may enter ``key``, or ``timeout`` passes."""
        self._wait(("shared", key), timeout)

    def _live_readers(self, key: str, now: float) -> dict[str, _Held]:
        """``key``'s shared holders without the expired ones (the entry goes once empty)."""
        readers = self._readers.get(key)
        if readers is None:
            return {}
        for token in [t for t, held in readers.items() if held.expires_at <= now]:
            del readers[token]
        if not readers:
            del self._readers[key]
        return readers

    # -- admin ----------------------------------------------------------------------

    def force_release(self, key: str) -> bool:
        """Delete ``key`` whoever holds it; ``True`` if an unexpired lease was there."""
        with self._mutex:
            held = self._locks.pop(key, None)
            self._readers.pop(key, None)
            self._marks.pop(key, None)
            self._wake(("lock", key))
            self._wake(("shared", key))
            return held is not None and held.expires_at > self._clock()

    def iter_permits(self, prefix: str = "") -> Iterator[PermitInfo]:
        """Every unexpired permit holder of the keys starting with ``prefix``."""
        with self._mutex:
            now = self._clock()
            found = [
                PermitInfo(key, permits.limit, held.token, held.fence, held.expires_at - now)
                for key, permits in sorted(self._permits.items())
                if key.startswith(prefix)
                for held in sorted(permits.holders.values(), key=lambda h: h.fence)
                if held.expires_at > now
            ]
        return iter(found)

    def iter_locks(self, prefix: str = "") -> Iterator[LockInfo]:
        """The unexpired locks whose key starts with ``prefix``."""
        with self._mutex:
            now = self._clock()
            found = [
                LockInfo(key, held.token, held.fence, held.expires_at - now)
                for key, held in self._locks.items()
                if key.startswith(prefix) and held.expires_at > now
            ]
        return iter(sorted(found, key=lambda info: info.key))

    def as_async(self) -> AsyncMemoryStore:
        """The async view of this store; it shares the same locks."""
        if self._twin is None:
            from .memory_aio import AsyncMemoryStore  # a sync program never loads it

            self._twin = AsyncMemoryStore(self)
        return self._twin

    # -- waking ---------------------------------------------------------------------

    def _wait(self, slot: Slot, timeout: float) -> None:
        event = threading.Event()
        bound = self._register(slot, event.set, timeout)
        if bound <= 0:
            return
        try:
            event.wait(bound)
        finally:
            self._unregister(slot, event.set)

    def _busy_for(self, slot: Slot, now: float) -> float:
        """Seconds until ``slot`` frees on its own (<= 0: it is free now)."""
        kind, key = slot
        if kind != "permit":
            held = self._locks.get(key)
            busy = 0.0 if held is None else held.expires_at - now
            if kind == "shared":  # a reader also waits for the writers' mark to lapse
                return max(busy, self._marks.get(key, 0.0) - now)
            readers = self._live_readers(key, now) if key in self._readers else {}
            return max([busy, *(reader.expires_at - now for reader in readers.values())])
        permits = self._live_permits(key, now)
        if permits is None or len(permits.holders) < permits.limit:
            return 0.0
        return min(held.expires_at for held in permits.holders.values()) - now

    def _register(self, slot: Slot, waker: Callable[[], None], timeout: float) -> float:
        """Register ``waker`` for ``slot``; return how long to wait (<= 0: don't)."""
        with self._mutex:
            busy_for = self._busy_for(slot, self._clock())
            if busy_for <= 0:
                return 0.0
            self._wakers.setdefault(slot, []).append(waker)
            return min(timeout, busy_for)

    def _unregister(self, slot: Slot, waker: Callable[[], None]) -> None:
        with self._mutex:
            wakers = self._wakers.get(slot)
            if wakers is not None and waker in wakers:
                wakers.remove(waker)
                if not wakers:
                    del self._wakers[slot]

    def _wake(self, slot: Slot) -> None:
        # Called with the mutex held; wakers only set events or schedule callbacks.
        for waker in self._wakers.pop(slot, ()):
            waker()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(locks={len(self._locks)})"


__all__ = ["MemoryStore"]
