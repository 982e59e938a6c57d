"""RemoteLock: take a lock on tenacity, hold it on a renewed lease, give it back token-checked.

:class:`RemoteLock` is the façade: configuration, validation, the ``with`` /
``async with`` protocol, ``threading.Lock``-style ``acquire`` / ``release``, and which
lease a bare ``release()`` means. The I/O lives in two sibling engines with the same
method names, :class:`~remotelock.engine.SyncEngine` and
:class:`~remotelock.async_engine.AsyncEngine`, which get the key and the validated
settings, never the lock itself.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast, overload

import tenacity

from . import config, policy
from ._checks import check_key, check_ttl, key_preview
from ._time import Seconds, to_seconds
from .binding import async_binding, sync_binding
from .engine import SyncEngine
from .lease import Lease, OnLost
from .stores.base import AsyncStore, Store
from .stores.readers import AsyncSharedStore, SharedStore

if TYPE_CHECKING:
    from .async_engine import AsyncEngine

MAX_LIMIT: Final = 1_000_000
"""Most holders a counted lock (``limit=``) may have at once."""

_ONE_ATTEMPT: Final = tenacity.stop_after_attempt(1)

# The leases entered with `with lock:` in the current thread or task, innermost last.
# A ContextVar (not a thread-local, not an attribute) lets one RemoteLock object serve
# many threads and tasks at once, each exiting exactly the lease it entered.
_entered: ContextVar[tuple[tuple[RemoteLock, Lease], ...]] = ContextVar(
    "remotelock_entered", default=()
)
# Guards each lock's list of leases (rarely contended; one for all).
_leases_mutex = threading.Lock()


@dataclass(frozen=True)
class LockSettings:
    """A lock's validated configuration (shared by every lock a decorator creates)."""

    store: Store | AsyncStore | None
    ttl: float
    wait: policy.WaitStrategy | None  # None: the store's default (policy.store_wait)
    stop: policy.StopStrategy
    on_lost: OnLost | None
    raise_on_lost: bool
    limit: int = 1  # at most this many holders at once (1: a plain lock)
    reentrant: bool = False  # the holding thread or task may enter again at once
    shared: bool = False  # a shared (reader) lease: many at once, none with a writer

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
        reentrant: object = False,
        shared: object = False,
    ) -> LockSettings:
        """Validate every argument, naming it in the error."""
        if store is not None and not isinstance(store, (Store, AsyncStore)):
            raise TypeError(
                f"store must be a lock store (e.g. SQLiteStore(), RedisStore.from_url(url)), "
                f"got {type(store).__name__}; for a URL use remotelock.stores.store_from_url(url)"
            )
        if on_lost is not None and not callable(on_lost):
            raise TypeError(f"on_lost must be callable (it receives the Lease), got {on_lost!r}")
        if not isinstance(raise_on_lost, bool):
            raise TypeError(f"raise_on_lost must be True or False, got {raise_on_lost!r}")
        if not isinstance(reentrant, bool):
            raise TypeError(f"reentrant must be True or False, got {reentrant!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
            raise ValueError(
                f"limit must be a whole number of holders from 1 to {MAX_LIMIT}, got {limit!r}"
            )
        if not isinstance(shared, bool):
            raise TypeError(f"shared must be True or False, got {shared!r}")
        if shared and limit != 1:
            raise ValueError("shared=True cannot be combined with limit: readers are unlimited")
        if shared and store is not None and not isinstance(store, (SharedStore, AsyncSharedStore)):
            raise TypeError(
                f"shared=True needs a store with shared locks (memory, SQLite, Redis, "
                f"PostgreSQL, DynamoDB), and {type(store).__name__} has none"
            )
        return cls(
            store=store,
            ttl=check_ttl(ttl),
            wait=policy.check_wait(wait),
            stop=policy.check_stop(stop),
            on_lost=on_lost,
            raise_on_lost=raise_on_lost,
            limit=limit,
            reentrant=reentrant,
            shared=shared,
        )


class RemoteLock:
    """A lock whose owner may be any process (or machine) sharing the same store.

    .. code-block:: python

        lock = RemoteLock("nightly-report", store=SQLiteStore(), ttl=60)
        with lock as lease:
            build_report(fencing_token=lease.fencing_token)

    Each acquisition gets a fresh random token and a lease of ``ttl`` seconds that a
    background thread (or task) renews about every ``ttl / 3`` while it is held, until
    it is released, whether or not the caller keeps the :class:`Lease`. Waiting runs on
    tenacity: ``wait`` bounds the pause between attempts (a release notification ends
    it sooner) and ``stop`` decides when to give up with :class:`LockTimeout`.

    It is not reentrant unless asked: a thread (or task) that holds a key and asks for it
    again, with this or any other lock object of the same store, gets a
    :class:`RuntimeError` at once instead of waiting for itself. With
    ``reentrant=True`` it enters the lease it holds once more (no store round trip,
    the same fencing token), and the lease is released when the outermost entry is.

    :param key: the lock's name (at most 1024 bytes of UTF-8); every holder of the same
        key excludes the others.
    :param store: where the lock lives; default: :func:`remotelock.configure`, then
        ``REMOTELOCK_URL``, then a SQLite file in the user's cache directory.
    :param ttl: lease length in seconds (or a ``timedelta``), from 0.01 s to 7 days. A
        holder that dies keeps the lock at most this long.
    :param wait: tenacity wait strategy (upper bound between attempts).
    :param stop: tenacity stop strategy (default: give up after 60 s).
    :param on_lost: called with the :class:`Lease` when it is found lost while held.
    :param limit: at most this many holders at once (counted permits; default 1, a
        plain lock). Every caller of one key must use the same limit.
    :param raise_on_lost: leaving the block after the lease was lost raises
        :class:`LockLost` (``True``, default) or only logs a warning (``False``).
    :param reentrant: the thread (sync code) or task (async code) holding the key may
        take it again at once, through any reentrant lock object of the same key and
        store; each entry needs its release (or block exit). Other threads, tasks and
        processes wait as usual. A key held through a non-reentrant lock is refused.
    :param shared: a shared (reader) lock: any number of shared holders at once, none
        while an exclusive (default) holder of the same key holds it. A writer waiting
        for the readers to leave stops new readers from entering. Fencing tokens rise
        across both kinds. Not with ``limit``.
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
        reentrant: bool = False,
        shared: bool = False,
    ) -> None:
        self.key = check_key(key)
        self.settings = LockSettings.build(
            store=store, ttl=ttl, wait=wait, stop=stop, on_lost=on_lost,
            raise_on_lost=raise_on_lost, limit=limit, reentrant=reentrant, shared=shared,
        )  # fmt: skip
        self._sync: SyncEngine | None = None
        self._async: AsyncEngine | None = None
        self._leases: list[Lease] = []

    @classmethod
    def _from_settings(cls, key: str, settings: LockSettings) -> RemoteLock:
        """A lock from already-validated settings (the decorator's per-call path)."""
        lock = cls.__new__(cls)
        lock.key = check_key(key)
        lock.settings = settings
        lock._sync = None
        lock._async = None
        lock._leases = []
        return lock

    @property
    def ttl(self) -> float:
        """Lease length in seconds."""
        return self.settings.ttl

    # -- engines ----------------------------------------------------------------------

    def _sync_engine(self) -> SyncEngine:
        if self._sync is not None and self.settings.store is not None:
            return self._sync  # the common case: an explicit store, already bound
        store = config.resolve_store(self.settings.store)
        if self._sync is None or self._sync.source is not store:
            binding = sync_binding(store, self.settings.limit, self.settings.shared)
            self._sync = SyncEngine(self.key, self.settings, binding)
        return self._sync

    def _async_engine(self) -> AsyncEngine:
        if self._async is not None and self.settings.store is not None:
            return self._async
        from .async_engine import AsyncEngine  # asyncio only for async callers

        store = config.resolve_store(self.settings.store)
        if self._async is None or self._async.source is not store:
            binding = async_binding(store, self.settings.limit, self.settings.shared)
            self._async = AsyncEngine(self.key, self.settings, binding)
        return self._async

    # -- decisions without I/O ----------------------------------------------------------

    def _stop_for(self, blocking: object, timeout: object) -> policy.StopStrategy:
        """The stop strategy of one ``acquire`` call, with ``threading.Lock``'s rules."""
        if timeout is None or (
            isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout == -1
        ):
            return self.settings.stop if blocking else _ONE_ATTEMPT
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and timeout < 0:
            raise ValueError(
                f"timeout must be >= 0 seconds, or -1 or None to wait as the lock's stop= "
                f"strategy says, got {timeout!r}"
            )
        seconds = to_seconds(timeout, "timeout", zero=True)
        if not blocking:
            raise ValueError("a timeout cannot be given for a non-blocking acquire")
        return _ONE_ATTEMPT if seconds == 0 else tenacity.stop_after_delay(seconds)

    def _remember(self, lease: Lease | None) -> Lease | None:
        """Keep ``lease`` so that ``release()`` without arguments finds it."""
        if lease is not None:
            with _leases_mutex:
                if len(self._leases) >= 8:  # drop the released ones now and then
                    self._leases = [held for held in self._leases if not held.released]
                if not any(held is lease for held in self._leases):  # entered again
                    self._leases.append(lease)
        return lease

    def _pick(self, lease: Lease | None, action: str) -> Lease:
        with _leases_mutex:
            held = [found for found in self._leases if not found.released]
        if lease is not None:
            keeper = lease._keeper
            ours = any(found is lease for found in held)  # entered again, through us
            if keeper is not self._sync and keeper is not self._async and not ours:
                raise ValueError(f"{lease!r} was not issued by this lock ({self!r})")
            return lease
        for owner, entered in reversed(_entered.get()):
            if owner is self and not entered.released:
                return entered
        if len(held) == 1:
            return held[0]
        if not held:
            raise RuntimeError(f"cannot {action} lock {key_preview(self.key)}: it is not held")
        raise RuntimeError(
            f"cannot {action} lock {key_preview(self.key)}: this lock object holds "
            f"{len(held)} leases in other threads/tasks; pass the lease (or call "
            "lease.release())"
        )

    # -- sync API -------------------------------------------------------------------

    @overload
    def acquire(self, blocking: Literal[True] = True, timeout: Seconds | None = None) -> Lease: ...
    @overload
    def acquire(self, blocking: bool, timeout: Seconds | None = None) -> Lease | None: ...

    def acquire(self, blocking: bool = True, timeout: Seconds | None = None) -> Lease | None:
        """Wait for the lock and return its :class:`Lease` (as ``threading.Lock.acquire``).

        The lease is renewed until it is released (``lock.release()`` from any thread,
        ``lease.release()``, or ``with lock.acquire():``), whether or not the caller
        keeps it.

        :param blocking: ``False`` makes a single attempt and returns ``None`` if busy.
        :param timeout: give up after this many seconds instead of using ``stop``
            (``0``: a single attempt; ``-1`` or ``None``: as ``stop`` says). Not with
            ``blocking=False``.
        :raises LockTimeout: ``stop`` (or ``timeout``) fired while the lock was busy.
        :raises RuntimeError: this thread (or task) already holds the key.
        :raises StoreUnavailable: the store could not be reached.
        """
        stop = self._stop_for(blocking, timeout)
        return self._remember(self._sync_engine().acquire(None, stop, bool(blocking)))

    def release(self, lease: Lease | None = None) -> bool:
        """Release ``lease``; by default the one this thread or task entered with
        ``with``, else the only one this lock object holds (from any thread).

        :returns: ``False`` (and logs a WARNING) if the lock was no longer held by the
            lease: its lease had run out, or it was taken over. Never raises for that.
        :raises RuntimeError: nothing to release (or several leases: pass one).
        """
        return self._sync_engine().release(self._pick(lease, "release"))

    def extend(self, ttl: Seconds | None = None, *, lease: Lease | None = None) -> bool:
        """Reset the lease to ``ttl`` seconds from now (default: its current length, the
        lock's ttl unless an earlier extend changed it); renewals then keep that length.

        :returns: ``False`` if the lease was already lost (it is then marked lost).
        """
        held = self._pick(lease, "extend")
        seconds = held.ttl if ttl is None else check_ttl(ttl)
        return self._sync_engine().extend(held, seconds)

    def locked(self) -> bool:
        """Whether anyone holds the lock now (a snapshot: it may change at once)."""
        return self._sync_engine().locked()

    def __enter__(self) -> Lease:
        # Blocking and without skip_if: a lease or LockTimeout, never None.
        lease = cast(Lease, self._sync_engine().acquire(None, self.settings.stop, True))
        self._remember(lease)
        _entered.set((*_entered.get(), (self, lease)))
        return lease

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        self._sync_engine().finish(self._pop_entered(), raised=exc_type is not None)

    def hold(self, skip: Any = None) -> Lease | None:
        """Acquire, or return ``None`` if ``skip()`` is true (before or between attempts)."""
        return self._sync_engine().acquire(skip, self.settings.stop, True)

    def finish(self, lease: Lease, raised: bool) -> None:
        """Release after the protected code ran; raise :class:`LockLost` if it was lost."""
        self._sync_engine().finish(lease, raised)

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
        stop = self._stop_for(blocking, timeout)
        return self._remember(await self._async_engine().acquire(None, stop, bool(blocking)))

    async def arelease(self, lease: Lease | None = None) -> bool:
        """Async :meth:`release`; completes even if the calling task is cancelled."""
        return await self._async_engine().release(self._pick(lease, "release"))

    async def aextend(self, ttl: Seconds | None = None, *, lease: Lease | None = None) -> bool:
        """Async :meth:`extend`."""
        held = self._pick(lease, "extend")
        seconds = held.ttl if ttl is None else check_ttl(ttl)
        return await self._async_engine().extend(held, seconds)

    async def alocked(self) -> bool:
        """Async :meth:`locked`."""
        return await self._async_engine().locked()

    async def __aenter__(self) -> Lease:
        lease = cast(Lease, await self._async_engine().acquire(None, self.settings.stop, True))
        self._remember(lease)
        _entered.set((*_entered.get(), (self, lease)))
        return lease

    async def __aexit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        await self._async_engine().finish(self._pop_entered(), raised=exc_type is not None)

    async def ahold(self, skip: Any = None) -> Lease | None:
        """Async :meth:`hold`; ``skip`` may be sync or async."""
        return await self._async_engine().acquire(skip, self.settings.stop, True)

    async def afinish(self, lease: Lease, raised: bool) -> None:
        """Async :meth:`finish`."""
        await self._async_engine().finish(lease, raised)

    # -- helpers ----------------------------------------------------------------------

    def _pop_entered(self) -> Lease:
        stack = _entered.get()
        for index in range(len(stack) - 1, -1, -1):
            if stack[index][0] is self:
                _entered.set(stack[:index] + stack[index + 1 :])
                return stack[index][1]
        raise RuntimeError(f"lock {key_preview(self.key)}: __exit__ without a matching __enter__")

    def __repr__(self) -> str:
        shared = ", shared=True" if self.settings.shared else ""
        return (
            f"RemoteLock({key_preview(self.key)}, store={self.settings.store!r}, "
            f"ttl={self.ttl:g}{shared})"
        )


__all__ = ["MAX_LIMIT", "LockSettings", "RemoteLock"]
