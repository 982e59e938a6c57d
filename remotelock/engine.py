"""The I/O of a lock: the sync engine, and what it shares with its async sibling.

The async engine (:mod:`remotelock.async_engine`) has the same method names; it lives
apart so that synchronous programs never import asyncio (a Lambda cold start pays
for what it uses).

Each acquire makes one attempt straight away (no retry controller is built when the
lock is free, the common case) and only then hands over to tenacity. An attempt
checks ``skip_if`` first, then asks the store, and checks ``skip_if`` once more right
after taking the lock (double-checked locking), so a cache refreshed a moment ago is
never refreshed twice. Any interruption (an exception from ``skip_if``, Ctrl-C, task
cancellation) gives back whatever the interrupted attempt may have taken.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from . import policy
from .errors import StoreError
from .lease import Lease, Renewer
from .stores.base import Handover, QueuedStore, Store

if TYPE_CHECKING:
    import asyncio

    from .binding import Binding
    from .lock import RemoteLock

log = logging.getLogger("remotelock.lock")

Skip = Callable[[], Any] | None


class _Taken(NamedTuple):
    fence: int
    started: float  # monotonic time before the request: the lease's local deadline counts from it
    lease: float  # seconds the store granted (shorter than the ttl for a handed-over lock)


# Tokens only need to be unique: 128 bits from a private generator seeded by the OS
# (not the `random` module's, which programs seed for reproducibility), reseeded in
# every forked child so that parent and child never draw the same tokens.
_tokens = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _tokens.seed(os.urandom(32)))


def new_token() -> str:
    """A fresh lock token (32 hex digits)."""
    return f"{_tokens.getrandbits(128):032x}"


class _Attempts:
    """One acquire's state (engines are shared by concurrent threads and tasks)."""

    __slots__ = ("busy_at", "count", "handed", "inflight", "queued", "started", "token")

    def __init__(self) -> None:
        self.token = new_token()
        self.started = time.monotonic()
        self.count = 0
        self.queued = False  # an attempt found the lock busy (a queueing store queued us)
        self.busy_at = self.started  # when the last attempt found it busy
        self.handed: Handover | None = None  # the lock was handed to us while we waited
        self.inflight: asyncio.Future[int | None] | None = None

    def take(self, fence: int | None, started: float, ttl: float) -> object:
        """The outcome of a request made at ``started`` (``None``: busy, now queued)."""
        if fence is None:
            self.queued = True
            self.busy_at = started
            return policy.BUSY
        return _Taken(fence, started, ttl)

    def take_handed(self) -> _Taken | None:
        """The lock handed over during the last wait, if any (consumed once).

        Its lease was granted after our last busy attempt, so counting from then errs
        early, which is the safe side.
        """
        handed, self.handed = self.handed, None
        if handed is None:
            return None
        return _Taken(handed.fencing_token, self.busy_at, handed.lease)


def _first_renewal(lease: Lease, outcome: object) -> float:
    """Renew after a third of the lease the store granted (short for a handed-over lock)."""
    granted = outcome.lease if isinstance(outcome, _Taken) else lease.ttl
    return min(lease.ttl, granted) / 3


class _Engine:
    """What both engines share: turning attempt outcomes into leases and errors."""

    def __init__(self, lock: RemoteLock) -> None:
        self.lock = lock

    def _issue(self, token: str, taken: _Taken, attempts: int) -> Lease:
        lock = self.lock
        lease = Lease(lock.key, token, taken.fence, lock.ttl, taken.started + taken.lease)
        lease._lock = lock
        lease._on_lost = lock.settings.on_lost
        log.debug(
            "acquired lock %r (token %s…, fencing token %d) after %d attempt(s)",
            lock.key,
            token[:8],
            taken.fence,
            attempts,
        )
        return lease

    def _settle(self, outcome: object, state: _Attempts) -> Lease | None:
        if isinstance(outcome, _Taken):
            return self._issue(state.token, outcome, state.count)
        if outcome is policy.SKIPPED:
            log.debug("skipped lock %r: skip_if is true", self.lock.key)
            return None
        raise self.lock._timeout(state.count, time.monotonic() - state.started)

    def _released(self, lease: Lease, ok: bool) -> bool:
        if ok:
            log.debug("released lock %r (token %s…)", lease.key, lease.token[:8])
        elif lease.mark_lost(
            "release found the lock no longer held by this lease "
            "(its lease had run out, or another holder took it over)"
        ):
            lease.run_on_lost()
        return ok


class SyncEngine(_Engine):
    """Blocking I/O for :class:`~remotelock.RemoteLock` on a sync :class:`Store`."""

    def __init__(self, lock: RemoteLock, binding: Binding) -> None:
        super().__init__(lock)
        self.store: Store = binding.store  # the configured store, or a permit view of it
        self.source = binding.source  # what the user configured
        self.queue: QueuedStore | None = binding.queue

    def _sleep(self, state: _Attempts, skip: Skip) -> Callable[[float], None]:
        queue, key = self.queue, self.lock.key
        if queue is None:
            return functools.partial(self.store.wait, key)
        # A caller with skip_if must hear of every release: it may not need the lock.
        every_release = skip is not None

        def wait_turn(seconds: float) -> None:
            state.handed = queue.wait_turn(key, state.token, seconds, every_release)

        return wait_turn

    def acquire(self, skip: Skip, stop: policy.StopStrategy, blocking: bool) -> Lease | None:
        """A lease, ``None`` if skipped, or :class:`LockTimeout` when ``stop`` fires."""
        state = _Attempts()
        try:
            outcome = self._attempt(state, skip)
            if outcome is policy.BUSY and blocking:
                first = [outcome]

                def attempt() -> object:
                    return first.pop() if first else self._attempt(state, skip)

                wait = self.lock.settings.wait or policy.default_wait(self.store.capabilities)
                retrying = policy.retrying(wait, stop, self._sleep(state, skip))
                outcome = retrying(attempt)
        except BaseException as exc:
            if not isinstance(exc, StoreError):
                self._give_back(state)
            raise
        if self.queue is not None and state.queued and not isinstance(outcome, _Taken):
            self._leave(self.queue, state)
        lease = self._settle(outcome, state)
        if lease is not None:
            Renewer.for_store(self.store).add(lease, first=_first_renewal(lease, outcome))
        return lease

    def _attempt(self, state: _Attempts, skip: Skip) -> object:
        state.count += 1
        outcome: object = state.take_handed()
        if outcome is None:
            if skip is not None and skip():
                return policy.SKIPPED
            started = time.monotonic()
            fence = self.store.acquire(self.lock.key, state.token, self.lock.ttl)
            outcome = state.take(fence, started, self.lock.ttl)
            if outcome is policy.BUSY:
                return outcome
        if skip is not None and skip():
            self.store.release(self.lock.key, state.token)
            return policy.SKIPPED
        return outcome

    def _give_back(self, state: _Attempts) -> None:
        try:
            self.store.release(self.lock.key, state.token)
            if self.queue is not None and state.queued:
                self.queue.leave(self.lock.key, state.token)
        except Exception as exc:
            log.debug(
                "could not give back lock %r after an interrupted acquire: %s", self.lock.key, exc
            )

    def _leave(self, queue: QueuedStore, state: _Attempts) -> None:
        try:
            queue.leave(self.lock.key, state.token)
        except StoreError as exc:  # the queue entry expires on its own
            log.debug("could not leave the queue of lock %r: %s", self.lock.key, exc)

    def release(self, lease: Lease) -> bool:
        """Release ``lease`` (once); stop renewing it first."""
        if lease.released:
            return False
        lease.released = True
        Renewer.for_store(self.store).discard(lease)
        return self._released(lease, self.store.release(lease.key, lease.token))

    def extend(self, lease: Lease, ttl: float) -> bool:
        """Reset the lease to ``ttl`` seconds; a refusal marks it lost."""
        started = time.monotonic()
        ok = self.store.extend(lease.key, lease.token, ttl)
        if ok:
            lease.ttl = ttl
            lease.deadline = started + ttl
        elif lease.mark_lost("extend found the lock no longer held by this lease"):
            lease.run_on_lost()
        return ok

    def locked(self) -> bool:
        """Whether any owner holds the key now."""
        return self.store.owner(self.lock.key) is not None


__all__ = ["SyncEngine", "new_token"]
