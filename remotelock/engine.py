"""The I/O of a lock: the sync engine, and the decisions it shares with its async sibling.

The async engine (:mod:`remotelock.async_engine`) has the same method names; it lives
apart so that synchronous programs never import asyncio (a Lambda cold start pays
for what it uses).

Each acquire makes one attempt straight away (no retry controller is built when the
lock is free, the common case) and only then hands over to tenacity. An attempt
checks ``skip_if`` first, then asks the store, and checks ``skip_if`` once more right
after taking the lock (double-checked locking), so a cache refreshed a moment ago is
never refreshed twice. A lease whose reply came too late to leave it any time is
never handed out: the attempt counts as busy and the next one re-takes the lock with
the same token.

Whatever an acquire may have taken and not handed out is given back: at once after an
interruption (an exception from ``skip_if``, Ctrl-C, task cancellation), and in the
background after a store failure (the lost reply may have taken the lock, or left
this waiter in the queue), so the caller gets its error without waiting for it.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from . import cleanup, holders, policy, renewal
from .errors import LockLost, LockTimeout, StoreError
from .lease import Lease, local_deadline
from .stores.base import Handover, QueuedStore, Store

if TYPE_CHECKING:
    import asyncio

    from .binding import Binding
    from .lock import LockSettings

log = logging.getLogger("remotelock.lock")

Skip = Callable[[], Any] | None


class Taken(NamedTuple):
    """An attempt took the lock (or was handed it)."""

    fence: int
    started: float  # monotonic time before the request: the local deadline counts from it
    granted: float  # seconds the store granted (short for a handed-over lock)

    def deadline(self) -> float:
        return local_deadline(self.started, self.granted)


# Tokens only need to be unique: 128 bits from a private generator seeded by the OS
# (not the `random` module's, which programs seed for reproducibility), reseeded in
# every forked child so that parent and child never draw the same tokens.
_tokens = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _tokens.seed(os.urandom(32)))


def new_token() -> str:
    """A fresh lock token (32 hex digits)."""
    return f"{_tokens.getrandbits(128):032x}"


class Attempts:
    """One acquire's state (engines are shared by concurrent threads and tasks)."""

    __slots__ = ("busy_at", "count", "handed", "holds", "inflight", "queued", "started", "token")

    def __init__(self) -> None:
        self.token = new_token()
        self.started = time.monotonic()
        self.count = 0
        self.queued = False  # an attempt found the lock busy (a queueing store queued us)
        self.holds = False  # the store may count the lock as ours (handed, or a late reply)
        self.busy_at = self.started  # when the last attempt that found it busy started
        self.handed: Handover | None = None  # the lock was handed to us while we waited
        self.inflight: asyncio.Future[int | None] | None = None

    def busy(self, started: float) -> policy._Marker:
        self.queued = True
        self.busy_at = started
        return policy.BUSY

    def take_handed(self) -> Taken | None:
        """The lock handed over during the last wait, if any (consumed once).

        Its lease was granted after our last busy attempt started, so counting from
        then errs early, the safe side. If that leaves it less than half its time, the
        next attempt re-takes it instead (the same token: at once, with a fresh lease).
        """
        handed, self.handed = self.handed, None
        if handed is None:
            return None
        self.holds = True
        taken = Taken(handed.fencing_token, self.busy_at, handed.lease)
        if taken.deadline() - time.monotonic() < handed.lease / 2:
            return None
        return taken

    def late(self, taken: Taken) -> bool:
        """Whether ``taken`` came too late to leave its lease any time (then: busy)."""
        if taken.deadline() > time.monotonic():
            return False
        self.holds = True
        log.debug("the reply granting lock took longer than its lease; trying again")
        return True


def first_renewal(taken: Taken, ttl: float) -> float:
    """Seconds until the first renewal: a third into the lease the store granted."""
    return max(0.0, taken.started + min(ttl, taken.granted) / 3 - time.monotonic())


class Core:
    """What both engines share and that needs no I/O: leases, outcomes, errors."""

    asynchronous = False

    def __init__(self, key: str, settings: LockSettings, binding: Binding) -> None:
        self.key = key
        self.settings = settings
        self.store: Any = binding.store  # the configured store, its twin, or a permit view
        self.source = binding.source  # what the user configured
        self.queue: Any = binding.queue
        self.exclusive = settings.limit == 1

    def issue(self, token: str, taken: Taken, attempts: int, loop: Any = None) -> Lease:
        lease = Lease(
            self.key,
            token,
            taken.fence,
            self.settings.ttl,
            taken.deadline(),
            keeper=self,
            on_lost=self.settings.on_lost,
            loop=loop,
        )
        log.debug(
            "acquired lock %r (token %s…, fencing token %d) after %d attempt(s)",
            self.key,
            token[:8],
            taken.fence,
            attempts,
        )
        return lease

    def missed(self, outcome: object, state: Attempts) -> None:
        """An acquire that ended without the lock: ``None`` (skipped, not blocking) or
        :class:`LockTimeout`."""
        if outcome is policy.SKIPPED:
            log.debug("skipped lock %r: skip_if is true", self.key)
            return
        if outcome is policy.BUSY:
            return  # a non-blocking attempt found it busy
        waited = time.monotonic() - state.started
        log.debug("gave up on lock %r after %d attempts in %.3f s", self.key, state.count, waited)
        raise LockTimeout(self.key, state.count, waited)

    def released(self, lease: Lease, ok: bool) -> bool:
        if ok and not lease.lost:
            log.debug("released lock %r (token %s…)", lease.key, lease.token[:8])
            return True
        if not ok and lease.mark_lost(
            "release found the lock no longer held by this lease "
            "(its lease had run out, or another holder took it over)"
        ):
            lease.run_on_lost()
        return False

    def extended(self, lease: Lease, ok: bool, started: float, ttl: float) -> bool:
        if ok and lease.renewed(started, ttl):
            return True
        if lease.mark_lost("extend found the lock no longer held by this lease"):
            lease.run_on_lost()
        return False

    def lost_on_exit(self, lease: Lease, raised: bool) -> None:
        if lease.settle_deadline():
            lease.run_on_lost()
        if not lease.lost or raised or not self.settings.raise_on_lost:
            return  # a loss was logged when found; never mask the block's own error
        raise LockLost(self.key, lease.fencing_token, lease.lost_reason)

    def release_failed(self, lease: Lease, exc: StoreError) -> None:
        # The protected code has finished; turning an unreachable store into an error
        # here would make callers redo work that already happened. The release goes on
        # in the background, and the lease runs out on its own anyway.
        log.warning(
            "could not release lock %r now (retrying in the background; it expires "
            "within %.1f s anyway): %s",
            self.key,
            lease.ttl,
            exc,
        )

    def begin_release(self, lease: Lease) -> bool:
        """Claim the release of ``lease`` (once) and drop it from this process's books."""
        if not lease.begin_release():
            return False
        if lease.settle_deadline():
            lease.run_on_lost()
        if self.exclusive:
            holders.remove(self.source, self.key, lease)
        renewal.unwatch(lease)
        return True

    def check_owner(self) -> object:
        owner = holders.current_owner(self.asynchronous)
        if self.exclusive:
            holders.refuse_if_held(self.source, self.key, owner)
        return owner

    def hold(self, lease: Lease, owner: object) -> None:
        if self.exclusive:
            holders.add(self.source, self.key, owner, lease)
        renewal.watch(lease)

    def let_go_step(self, token: str) -> Callable[[], Any]:
        """The step that gives back whatever ``token`` may hold or wait for."""
        if self.queue is not None:
            return functools.partial(self.queue.leave, self.key, token)
        return functools.partial(self.store.release, self.key, token)


class SyncEngine(Core):
    """Blocking I/O for :class:`~remotelock.RemoteLock` on a sync :class:`Store`."""

    store: Store
    queue: QueuedStore | None

    def _sleep(self, state: Attempts, skip: Skip) -> Callable[[float], None]:
        queue, key = self.queue, self.key
        if queue is None:
            return functools.partial(self.store.wait, key)
        # A caller with skip_if must hear of every release: it may not need the lock.
        every_release = skip is not None

        def wait_turn(seconds: float) -> None:
            state.handed = queue.wait_turn(key, state.token, seconds, every_release)

        return wait_turn

    def acquire(self, skip: Skip, stop: policy.StopStrategy, blocking: bool) -> Lease | None:
        """A lease, ``None`` if skipped (or busy, not blocking), or :class:`LockTimeout`."""
        owner = self.check_owner()
        state = Attempts()
        try:
            outcome = self._attempt(state, skip)
            if outcome is policy.BUSY and blocking:
                first = [outcome]

                def attempt() -> object:
                    return first.pop() if first else self._attempt(state, skip)

                wait = self.settings.wait or policy.default_wait(self.store.capabilities)
                retrying = policy.retrying(wait, stop, self._sleep(state, skip), state.started)
                outcome = retrying(attempt)
        except StoreError:
            self._abandon(state)
            raise
        except BaseException:
            self._give_back(state)
            raise
        if not isinstance(outcome, Taken):
            if state.queued or state.holds:
                self._let_go(state)
            self.missed(outcome, state)
            return None
        lease = self.issue(state.token, outcome, state.count)
        self.hold(lease, owner)
        renewal.Renewer.for_store(self.store).add(lease, first_renewal(outcome, self.settings.ttl))
        return lease

    def _attempt(self, state: Attempts, skip: Skip) -> object:
        state.count += 1
        taken = state.take_handed()
        if taken is None:
            if skip is not None and skip():
                return policy.SKIPPED
            started = time.monotonic()
            fence = self.store.acquire(self.key, state.token, self.settings.ttl)
            if fence is None:
                return state.busy(started)
            taken = Taken(fence, started, self.settings.ttl)
        if state.late(taken):
            return policy.BUSY
        if skip is not None and skip():
            state.holds = False
            self.store.release(self.key, state.token)
            return policy.SKIPPED
        return taken

    def _give_back(self, state: Attempts) -> None:
        """After an interruption: give back now (the process may be about to exit)."""
        try:
            self.store.release(self.key, state.token)
            if self.queue is not None and state.queued:
                self.queue.leave(self.key, state.token)
        except Exception as exc:
            log.debug("could not give back lock %r after an interruption: %s", self.key, exc)
            self._abandon(state)

    def _abandon(self, state: Attempts) -> None:
        """After a store failure: give back in the background, for at most a lease."""
        cleanup.give_back(self.let_go_step(state.token), self.key, self.settings.ttl)

    def _let_go(self, state: Attempts) -> None:
        try:
            self.let_go_step(state.token)()
        except StoreError as exc:
            log.debug("could not leave the queue of lock %r: %s", self.key, exc)
            self._abandon(state)

    def release(self, lease: Lease) -> bool:
        """Release ``lease`` (once); stop renewing it first.

        :raises StoreError: the store could not be reached (the release is retried in
            the background until it succeeds or the lease has run out).
        """
        if not self.begin_release(lease):
            return False
        renewal.Renewer.for_store(self.store).discard(lease)
        try:
            ok = self.store.release(lease.key, lease.token)
        except StoreError:
            step = functools.partial(self.store.release, lease.key, lease.token)
            cleanup.give_back(step, lease.key, lease.ttl)
            raise
        return self.released(lease, ok)

    def extend(self, lease: Lease, ttl: float) -> bool:
        """Reset the lease to ``ttl`` seconds; a refusal marks it lost."""
        if lease.released or lease.lost:
            if lease.settle_deadline():
                lease.run_on_lost()
            return False
        started = time.monotonic()
        ok = self.store.extend(lease.key, lease.token, ttl)
        return self.extended(lease, ok, started, ttl)

    def finish(self, lease: Lease, raised: bool) -> None:
        """Release after the protected code ran; raise :class:`LockLost` if it was lost."""
        try:
            self.release(lease)
        except StoreError as exc:
            self.release_failed(lease, exc)
        self.lost_on_exit(lease, raised)

    def locked(self) -> bool:
        """Whether any owner holds the key now."""
        return self.store.owner(self.key) is not None


__all__ = ["Attempts", "Core", "SyncEngine", "Taken", "first_renewal", "new_token"]
