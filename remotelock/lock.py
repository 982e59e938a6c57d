"""RemoteLock: take a lock on tenacity, hold it on a renewed lease, give it back token-checked.

:class:`RemoteLock` is the façade: configuration, validation, the ``with`` /
``async with`` protocol, and the decisions that need no I/O (what an attempt's outcome
means, when a lost lease becomes :class:`LockLost`). The I/O lives in two sibling
engines with the same method names, :class:`~remotelock.engine.SyncEngine` and
:class:`~remotelock.async_engine.AsyncEngine`.
"""

from __future__ import annotations

import logging
import threading
import weakref
from contextvars import ContextVar
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import tenacity

from . import config, policy
from ._time import Seconds, to_seconds
from .binding import async_binding, sync_binding
from .errors import LockLost, LockTimeout, StoreError
from .lease import Lease, OnLost
from .stores.base import AsyncStore, Store

if TYPE_CHECKING:
    from .async_engine import AsyncEngine
    from .engine import SyncEngine

log = logging.getLogger(__name__)

# The leases entered with `with lock:` in the current thread or task, innermost last.
# A ContextVar (not a thread-local, not an attribute) lets one RemoteLock object serve
# many threads and tasks at once, each exiting exactly the lease it entered.
_entered: ContextVar[tuple[Lease, ...]] = ContextVar("remotelock_entered", default=())
# Guards each lock's set of leases from acquire() (rarely contended; one for all).
_issued_mutex = threading.Lock()


@dataclass(frozen=True)
class LockSettings:
    """A lock's validated configuration (shared by every lock a decorator creates)."""

    store: Store | AsyncStore | None
    ttl: float
    wait: policy.WaitStrategy | None  # None: the store's default (policy.default_wait)
    stop: policy.StopStrategy
    on_lost: OnLost | None
    raise_on_lost: bool
    limit: int = 1  # at most this many holders at once (1: a plain lock)

    @classmethod
    def build(
        cls,
        *,
        store: object = None,
        ttl: object = 30.0,
        wait: object = None,
        stop: object = None,
        on_lost: object = None,
        raise_on_lost: object = True,
        limit: object = 1,
    ) -> LockSettings:
        """Validate every argument, naming it in the error."""
        if store is not None and not isinstance(store, (Store, AsyncStore)):
            raise TypeError(
                f"store must be a lock store (e.g. SQLiteStore(), RedisStore.from_url(url)), "
                f"got {store!r}; for a URL use remotelock.stores.store_from_url(url)"
            )
        if on_lost is not None and not callable(on_lost):
            raise TypeError(f"on_lost must be callable (it receives the Lease), got {on_lost!r}")
        if not isinstance(raise_on_lost, bool):
            raise TypeError(f"raise_on_lost must be True or False, got {raise_on_lost!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a whole number of holders >= 1, got {limit!r}")
        return cls(
            store=store,
            ttl=to_seconds(ttl, "ttl"),
            wait=policy.check_wait(wait),
            stop=policy.check_stop(stop),
            on_lost=on_lost,
            raise_on_lost=raise_on_lost,
            limit=limit,
        )


class RemoteLock:
    """A lock whose owner may be any process (or machine) sharing the same store.

    .. code-block:: python

        lock = RemoteLock("nightly-report", store=SQLiteStore(), ttl=60)
        with lock as lease:
            build_report(fencing_token=lease.fencing_token)

    Each acquisition gets a fresh random token and a lease of ``ttl`` seconds that a
    background thread (or task) renews about every ``ttl / 3`` while it is held. Waiting
    runs on tenacity: ``wait`` bounds the pause between attempts (a release notification
    ends it sooner) and ``stop`` decides when to give up with :class:`LockTimeout`.

    :param key: the lock's name; every holder of the same key excludes the others.
    :param store: where the lock lives; default: :func:`remotelock.configure`, then
        ``REMOTELOCK_URL``, then a SQLite file in the user's cache directory.
    :param ttl: lease length in seconds (or a ``timedelta``). A holder that dies keeps
        the lock at most this long.
    :param wait: tenacity wait strategy (upper bound between attempts).
    :param stop: tenacity stop strategy (default: give up after 60 s).
    :param on_lost: called with the :class:`Lease` when it is found lost while held.
    :param limit: at most this many holders at once (counted permits; default 1, a
        plain lock). Every caller of one key must use the same limit.
    :param raise_on_lost: leaving the block after the lease was lost raises
        :class:`LockLost` (``True``, default) or only logs a warning (``False``).
    """

    def __init__(
        self,
        key: str,
        *,
        store: Store | AsyncStore | None = None,
        ttl: Seconds = 30.0,
        wait: policy.WaitStrategy | None = None,
        stop: policy.StopStrategy | None = None,
        on_lost: OnLost | None = None,
        raise_on_lost: bool = True,
        limit: int = 1,
    ) -> None:
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, got {key!r} ({type(key).__name__})")
        if not key:
            raise ValueError("key must not be empty")
        self.key = key
        self.settings = LockSettings.build(
            store=store,
            ttl=ttl,
            wait=wait,
            stop=stop,
            on_lost=on_lost,
            raise_on_lost=raise_on_lost,
            limit=limit,
        )
        self._sync: SyncEngine | None = None
        self._async: AsyncEngine | None = None
        self._issued: weakref.WeakSet[Lease] | None = None

    @classmethod
    def _from_settings(cls, key: str, settings: LockSettings) -> RemoteLock:
        """A lock from already-validated settings (the decorator's per-call path)."""
        lock = cls.__new__(cls)
        lock.key = key
        lock.settings = settings
        lock._sync = None
        lock._async = None
        lock._issued = None
        return lock

    @property
    def ttl(self) -> float:
        """Lease length in seconds."""
        return self.settings.ttl

    # -- engines ----------------------------------------------------------------------

    def _sync_engine(self) -> SyncEngine:
        if self._sync is not None and self.settings.store is not None:
            return self._sync  # the common case: an explicit store, already bound
        from .engine import SyncEngine

        store = config.resolve_store(self.settings.store)
        if self._sync is None or self._sync.source is not store:
            self._sync = SyncEngine(self, sync_binding(store, self.settings.limit))
        return self._sync

    def _async_engine(self) -> AsyncEngine:
        if self._async is not None and self.settings.store is not None:
            return self._async
        from .async_engine import AsyncEngine

        store = config.resolve_store(self.settings.store)
        if self._async is None or self._async.source is not store:
            self._async = AsyncEngine(self, async_binding(store, self.settings.limit))
        return self._async

    # -- decisions without I/O, shared by both engines ----------------------------------

    def _stop_for(self, timeout: Seconds | None) -> policy.StopStrategy:
        if timeout is None:
            return self.settings.stop
        if timeout == 0:
            return tenacity.stop_after_attempt(1)
        return tenacity.stop_after_delay(to_seconds(timeout, "timeout"))

    def _timeout(self, attempts: int, waited: float) -> LockTimeout:
        log.debug("gave up on lock %r after %d attempts in %.3f s", self.key, attempts, waited)
        return LockTimeout(self.key, attempts, waited)

    def _check_not_entered(self) -> None:
        if any(lease._lock is self for lease in _entered.get()):
            raise RuntimeError(
                f"lock {self.key!r} is already held in this thread/task: RemoteLock is not "
                "reentrant, and waiting for yourself would only time out"
            )

    def _lost_on_exit(self, lease: Lease, raised: bool) -> None:
        if not lease.lost:
            return
        if raised or not self.settings.raise_on_lost:
            return  # the loss was logged when found; never mask the block's own error
        raise LockLost(self.key, lease.fencing_token, lease.lost_reason)

    def _pick(self, lease: Lease | None, action: str) -> Lease:
        if lease is not None:
            if lease._lock is not self:
                raise ValueError(f"{lease!r} was not issued by this lock ({self!r})")
            return lease
        for entered in reversed(_entered.get()):
            if entered._lock is self and not entered.released:
                return entered
        with _issued_mutex:
            held = [held for held in self._issued or () if not held.released]
        if len(held) == 1:
            return held[0]
        if not held:
            raise RuntimeError(f"cannot {action} lock {self.key!r}: this lock holds no lease")
        raise RuntimeError(
            f"cannot {action} lock {self.key!r}: it holds {len(held)} leases in other "
            "threads/tasks; pass the lease (or call lease.release())"
        )

    # -- sync API -------------------------------------------------------------------

    @overload
    def acquire(self, blocking: Literal[True] = True, timeout: Seconds | None = None) -> Lease: ...
    @overload
    def acquire(self, blocking: bool, timeout: Seconds | None = None) -> Lease | None: ...

    def acquire(self, blocking: bool = True, timeout: Seconds | None = None) -> Lease | None:
        """Wait for the lock and return its :class:`Lease`.

        :param blocking: ``False`` makes a single attempt and returns ``None`` if busy.
        :param timeout: give up after this many seconds instead of using ``stop``
            (``0``: a single attempt).
        :raises LockTimeout: ``stop`` (or ``timeout``) fired while the lock was busy.
        :raises StoreUnavailable: the store could not be reached.
        """
        return self._track(self._acquire(blocking, timeout))

    def _acquire(self, blocking: bool, timeout: Seconds | None) -> Lease | None:
        self._check_not_entered()
        try:
            return self._sync_engine().acquire(None, self._stop_for(timeout), blocking)
        except LockTimeout:
            if blocking:
                raise
            return None

    def release(self, lease: Lease | None = None) -> bool:
        """Release ``lease`` (default: the one this thread entered, or the only one held).

        :returns: ``False`` (and logs a WARNING) if the lock was no longer held by the
            lease: its lease had run out, or it was taken over. Never raises for that.
        """
        return self._sync_engine().release(self._pick(lease, "release"))

    def extend(self, ttl: Seconds | None = None, *, lease: Lease | None = None) -> bool:
        """Reset the lease to ``ttl`` (default: the lock's ttl) seconds from now.

        :returns: ``False`` if the lease was already lost (it is then marked lost).
        """
        seconds = self.ttl if ttl is None else to_seconds(ttl, "ttl")
        return self._sync_engine().extend(self._pick(lease, "extend"), seconds)

    def locked(self) -> bool:
        """Whether anyone holds the lock now (a snapshot: it may change at once)."""
        return self._sync_engine().locked()

    def __enter__(self) -> Lease:
        # Blocking and without skip_if: a lease or LockTimeout, never None.
        lease = cast(Lease, self._acquire(True, None))
        _entered.set((*_entered.get(), lease))
        return lease

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish(self._pop_entered(), raised=exc_type is not None)

    def hold(self, skip: Any = None) -> Lease | None:
        """Acquire, or return ``None`` if ``skip()`` is true (before or between attempts)."""
        return self._sync_engine().acquire(skip, self.settings.stop, True)

    def finish(self, lease: Lease, raised: bool) -> None:
        """Release after the protected code ran; raise :class:`LockLost` if it was lost."""
        try:
            self._sync_engine().release(lease)
        except StoreError as exc:
            self._release_failed(lease, exc)
        self._lost_on_exit(lease, raised)

    # -- async API ------------------------------------------------------------------

    @overload
    async def aacquire(
        self, blocking: Literal[True] = True, timeout: Seconds | None = None
    ) -> Lease: ...
    @overload
    async def aacquire(self, blocking: bool, timeout: Seconds | None = None) -> Lease | None: ...

    async def aacquire(
        self, blocking: bool = True, timeout: Seconds | None = None
    ) -> Lease | None:
        """Async :meth:`acquire`; cancelling it never leaves the lock taken."""
        return self._track(await self._aacquire(blocking, timeout))

    async def _aacquire(self, blocking: bool, timeout: Seconds | None) -> Lease | None:
        self._check_not_entered()
        try:
            return await self._async_engine().acquire(None, self._stop_for(timeout), blocking)
        except LockTimeout:
            if blocking:
                raise
            return None

    async def arelease(self, lease: Lease | None = None) -> bool:
        """Async :meth:`release`; completes even if the calling task is cancelled."""
        return await self._async_engine().release(self._pick(lease, "release"))

    async def aextend(self, ttl: Seconds | None = None, *, lease: Lease | None = None) -> bool:
        """Async :meth:`extend`."""
        seconds = self.ttl if ttl is None else to_seconds(ttl, "ttl")
        return await self._async_engine().extend(self._pick(lease, "extend"), seconds)

    async def alocked(self) -> bool:
        """Async :meth:`locked`."""
        return await self._async_engine().locked()

    async def __aenter__(self) -> Lease:
        lease = cast(Lease, await self._aacquire(True, None))
        _entered.set((*_entered.get(), lease))
        return lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.afinish(self._pop_entered(), raised=exc_type is not None)

    async def ahold(self, skip: Any = None) -> Lease | None:
        """Async :meth:`hold`; ``skip`` may be sync or async."""
        return await self._async_engine().acquire(skip, self.settings.stop, True)

    async def afinish(self, lease: Lease, raised: bool) -> None:
        """Async :meth:`finish`."""
        try:
            await self._async_engine().release(lease)
        except StoreError as exc:
            self._release_failed(lease, exc)
        self._lost_on_exit(lease, raised)

    # -- helpers ----------------------------------------------------------------------

    def _track(self, lease: Lease | None) -> Lease | None:
        """Remember a lease from acquire(), so release() without arguments finds it."""
        if lease is not None:
            with _issued_mutex:
                if self._issued is None:
                    self._issued = weakref.WeakSet()
                self._issued.add(lease)
        return lease

    def _pop_entered(self) -> Lease:
        stack = _entered.get()
        for index in range(len(stack) - 1, -1, -1):
            if stack[index]._lock is self:
                _entered.set(stack[:index] + stack[index + 1 :])
                return stack[index]
        raise RuntimeError(f"lock {self.key!r}: __exit__ without a matching __enter__")

    def _release_failed(self, lease: Lease, exc: StoreError) -> None:
        # The protected code has finished; turning an unreachable store into an error
        # here would make callers retry work that already happened. The lease expires
        # on its own; it only counts as lost if it may already have run out.
        log.warning(
            "could not release lock %r (it will expire within %.1f s): %s",
            self.key,
            lease.remaining(),
            exc,
        )
        if lease.remaining() <= 0 and lease.mark_lost(f"release failed: {exc}"):
            lease.run_on_lost()

    def __repr__(self) -> str:
        return f"RemoteLock({self.key!r}, store={self.settings.store!r}, ttl={self.ttl:g})"


__all__ = ["LockSettings", "RemoteLock"]
