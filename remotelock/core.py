"""Everything a lock decides, written once, without I/O: the engines only drive it.

Each operation (acquire, release, extend, finish, locked) is a *machine*: a generator
that decides every step and, whenever it needs the outside world (a store call,
``skip_if``, tenacity's decision engine), yields a :class:`Call` and is sent the result,
or has the exception thrown into it. The two engines are drivers a dozen lines long:
:class:`~remotelock.engine.SyncEngine` makes each call, and
:class:`~remotelock.async_engine.AsyncEngine` awaits it (letting a call that changes the
store finish even if the task is cancelled). tenacity is built the same way: one
decision engine (``BaseRetrying.iter``), sync and async loops around it.

What cannot be the same in both worlds is a handful of hooks without I/O each engine
fills in: which event loop a lease belongs to, how renewal starts and stops (a shared
thread or a task), how a give-back runs in the background (a thread or a task), and
which tenacity controller decides.

The acquire machine makes one attempt straight away (no controller is built when the
lock is free, the common case) and only then hands over to tenacity. An attempt checks
``skip_if`` first, then asks the store, and checks ``skip_if`` again after a busy
answer (before sleeping) or right after taking the lock (double-checked locking). A
lease whose reply came too late to leave it any time is never handed out: the attempt
counts as busy, and the next one re-takes the lock with the same token. Whatever an
acquire may have taken and not handed out is given back: at once after an interruption
(an exception from ``skip_if``, Ctrl-C, task cancellation), in the background after a
store failure (the lost reply may have taken the lock, or left this waiter in the
queue).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar, cast

import tenacity

from . import holders, policy, streak, watchdog
from .attempts import Attempts, first_renewal
from .errors import LockLost, LockTimeout, StoreError
from .lease import Lease
from .outcomes import BUSY, SKIPPED, Attempt, Busy, GaveUp, Outcome, Skipped, Taken
from .stores.base import DISMISSED

if TYPE_CHECKING:
    from .binding import Binding
    from .lock import LockSettings

log = logging.getLogger("remotelock.lock")

T = TypeVar("T")
Skip = Callable[[], Any] | None


class Call(NamedTuple):
    """One call a machine needs made; its result is sent back in."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()
    shield: bool = False
    """It changes the store: an async caller lets it finish even if cancelled, so that
    whatever it took can be given back."""


Machine = Generator[Call, Any, T]


class Thrown(BaseException):
    """Carries a ``StopIteration`` from a call into a machine and out again.

    Raised inside a generator as itself, it would turn into ``RuntimeError`` (PEP 479),
    and a ``skip_if`` that raises it must reach its caller unchanged.
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def carry(error: BaseException) -> BaseException:
    """``error`` as it may be thrown into a machine."""
    return Thrown(error) if isinstance(error, StopIteration) else error


class Core:
    """A lock's decisions for one key and store; an engine adds the I/O."""

    asynchronous: ClassVar[bool] = False
    keeps: ClassVar[bool] = False  # may keep a barging holder's lock in the process

    def __init__(self, key: str, settings: LockSettings, binding: Binding) -> None:
        self.key = key
        self.settings = settings
        self.store: Any = binding.store  # the configured store, its twin, or a permit view
        self.source = binding.source  # what the user configured
        self.queue: Any = binding.queue  # the store again if it queues waiters, else None
        self.exclusive = settings.limit == 1  # one lease per owner (a lock, or a reader)
        self.shared = settings.shared
        # Leases recorded per owner: to refuse a second entry, or to let it in.
        self.tracked = self.exclusive or settings.reentrant
        can = hasattr(self.queue, "acquire_watching")  # skip_if callers watch (see Dismissed)
        self.watchable = can and settings.limit == 1 and not self.shared
        # The barging window within which a released lock may be kept (remotelock.streak);
        # 0: every release goes to the store.
        keeps = self.keeps and self.exclusive and not self.shared and not settings.reentrant
        barging = getattr(self.store, "barging", 0.0) if keeps and streak.enabled() else 0.0
        self.window = float(barging or 0.0)

    # -- the hooks each engine fills in (no I/O in any of them) --------------------------

    def current_loop(self) -> Any:
        """The event loop a new lease belongs to (``None`` for sync code)."""
        return None

    def start_renewal(self, lease: Lease, first: float) -> None:
        """Renew ``lease`` from ``first`` seconds on, and have the watchdog watch it
        (from its acquire, or at the latest from its first renewal)."""
        raise NotImplementedError

    def stop_renewal(self, lease: Lease) -> None:
        raise NotImplementedError

    def later(self, step: Callable[[], Any], within: float) -> None:
        """Retry ``step`` in the background until it succeeds, for at most ``within`` s."""
        raise NotImplementedError

    def controller(
        self, wait: policy.WaitStrategy, stop: policy.StopStrategy, started: float
    ) -> tenacity.BaseRetrying:
        return policy.controller(wait, stop, started, asynchronous=self.asynchronous)

    # -- acquire --------------------------------------------------------------------------

    def acquiring(
        self, skip: Skip, stop: policy.StopStrategy, blocking: bool
    ) -> Machine[Lease | None]:
        """A lease; ``None`` if skipped (or busy, not blocking); or :class:`LockTimeout`."""
        owner = holders.current_owner(self.asynchronous)
        if self.settings.reentrant:
            held: Lease | None = holders.reenter(self.source, self.key, owner, self.shared)
            if held is not None:
                return held
        elif self.exclusive:
            holders.refuse_if_held(self.source, self.key, owner, self.shared)
        back = False  # the caller came straight back after its process released the key
        if self.window and skip is None:
            kept, back = yield Call(streak.KEEPER.take, (self.store, self.key))
            if kept is not None:
                lease, first = self._take_over(kept)
                return self._hold(lease, owner, first)
        state = Attempts(watching=skip is not None and self.watchable)
        try:
            outcome: Outcome = yield from self._attempt(state, skip)
            if outcome is BUSY and blocking:
                outcome = yield from self._retry(state, skip, stop)
        except StoreError:
            self._abandon(state)
            raise
        except GeneratorExit:
            raise
        except BaseException:
            yield from self._give_back(state)
            raise
        if not isinstance(outcome, Taken):
            if state.queued or state.holds:
                yield from self._let_go(state)
            self._missed(outcome, state)
            return None
        lease = self._issue(state.token, outcome, state.count, back)
        return self._hold(lease, owner, first_renewal(outcome, self.settings.ttl))

    def _hold(self, lease: Lease, owner: object, first: float) -> Lease:
        """``lease`` is ``owner``'s from now on, renewed from ``first`` seconds on."""
        if self.tracked:
            holders.add(self.source, self.key, owner, lease)
        self.start_renewal(lease, first)
        return lease

    def _attempt(self, state: Attempts, skip: Skip) -> Machine[Attempt]:
        state.count += 1
        taken = state.take_handed()
        if taken is None:
            if skip is not None and (yield Call(skip)):
                return SKIPPED
            started = time.monotonic()
            request = (self.key, state.token, self.settings.ttl)
            step = self.queue.acquire_watching if state.watching else self.store.acquire
            fence = yield Call(step, request, shield=True)
            if fence is None:
                busy = state.busy(started, self.queue is not None)  # skip, then sleep
                return SKIPPED if skip is not None and (yield Call(skip)) else busy
            taken = Taken(fence, started, self.settings.ttl)
        if state.late(taken):
            return BUSY
        if skip is not None and (yield Call(skip)):
            state.holds = False
            yield Call(self.store.release, (self.key, state.token), shield=True)
            return SKIPPED
        return taken

    def _retry(self, state: Attempts, skip: Skip, stop: policy.StopStrategy) -> Machine[Outcome]:
        """Attempts and sleeps until tenacity's decision engine says stop (it decides;
        the sleeps are the store's wake-up waits, so a release ends them early).

        The attempt after each sleep is made at once: the controller has no ``before``
        hook to run first, and retries only a busy answer, so anything else is the
        outcome without asking it (a hand-over then costs no decision at all).
        """
        wait = self.settings.wait or policy.store_wait(self.store)
        retrying = self.controller(wait, stop, state.started)
        retrying.begin()
        call_state = tenacity.RetryCallState(retrying, fn=None, args=(), kwargs={})
        call_state.set_result(BUSY)  # the first attempt, made before the controller existed
        while True:
            decision = yield Call(retrying.iter, (call_state,))
            if isinstance(decision, tenacity.DoAttempt):
                call_state.set_result((yield from self._attempt(state, skip)))
            elif isinstance(decision, tenacity.DoSleep):
                call_state.prepare_for_next_attempt()
                yield from self._sleep(state, skip, float(decision))
                attempt = yield from self._attempt(state, skip)
                if attempt is not BUSY:
                    return attempt
                call_state.set_result(attempt)
            else:
                return cast(Outcome, decision)

    def _sleep(self, state: Attempts, skip: Skip, seconds: float) -> Machine[None]:
        if self.queue is None:
            yield Call(self.store.wait, (self.key, seconds))
            return
        # A caller with skip_if must hear of every release: it may not need the lock.
        request = (self.key, state.token, seconds, skip is not None)
        handed = yield Call(self.queue.wait_turn, request)
        if handed is DISMISSED:  # out of line: it acquires again (at its old place)
            state.queued = state.watching = False
            handed = None
        state.handed = handed

    def _give_back(self, state: Attempts) -> Machine[None]:
        """After an interruption: give back now (the process may be about to exit)."""
        try:
            yield Call(self.store.release, (self.key, state.token), shield=True)
            if self.queue is not None and state.queued:
                yield Call(self.queue.leave, (self.key, state.token), shield=True)
        except Exception as exc:
            log.debug("could not give back lock %r after an interruption: %s", self.key, exc)
            self._abandon(state)

    def _let_go(self, state: Attempts) -> Machine[None]:
        try:
            yield Call(self._let_go_step(state.token), shield=True)
        except StoreError as exc:
            log.debug("could not leave the queue of lock %r: %s", self.key, exc)
            self._abandon(state)

    def _abandon(self, state: Attempts) -> None:
        """After a store failure: give back in the background, for at most a lease."""
        self.later(self._let_go_step(state.token), self.settings.ttl)

    def _let_go_step(self, token: str) -> Callable[[], Any]:
        """The step that gives back whatever ``token`` may hold or wait for."""
        if self.queue is not None:
            return functools.partial(self.queue.leave, self.key, token)
        return functools.partial(self.store.release, self.key, token)

    def _issue(self, token: str, taken: Taken, attempts: int, back: bool) -> Lease:
        log.debug(
            "acquired lock %r (token %s…, fencing token %d) after %d attempt(s)",
            self.key, token[:8], taken.fence, attempts,
        )  # fmt: skip
        lease = Lease(
            self.key, token, taken.fence, self.settings.ttl, taken.deadline(), keeper=self,
            on_lost=self.settings.on_lost, loop=self.current_loop(), attempts=attempts,
        )  # fmt: skip
        if self.window:
            lease.streak = streak.Streak.begin(taken.fence, self.window, back)
        return lease

    def _take_over(self, kept: streak.Kept) -> tuple[Lease, float]:
        """The lock this process kept after a release, with no request (see
        remotelock.streak), and when to renew it first: once two thirds of its lease
        are left, as if it had been renewed when the kept lease last was."""
        ttl, last = self.settings.ttl, kept.lease
        lease = Lease(
            self.key, last.token, last.fencing_token + 1, ttl, last.deadline, keeper=self,
            on_lost=self.settings.on_lost, loop=None, attempts=1,
        )  # fmt: skip
        lease.streak = kept.streak
        log.debug("took over kept lock %r (fencing token %d)", self.key, lease.fencing_token)
        return lease, max(0.0, last.deadline - time.monotonic() - ttl * 2 / 3)

    def _missed(self, outcome: Busy | Skipped | GaveUp, state: Attempts) -> None:
        if isinstance(outcome, GaveUp):
            waited = time.monotonic() - state.started
            log.debug(
                "gave up on lock %r after %d attempts in %.3f s", self.key, state.count, waited
            )
            raise LockTimeout(self.key, state.count, waited)
        if outcome is SKIPPED:
            log.debug("skipped lock %r: skip_if is true", self.key)

    # -- release, extend, finish, locked -----------------------------------------------

    def releasing(self, lease: Lease) -> Machine[bool]:
        """Release ``lease`` (once); ``False`` if it was lost.

        :raises StoreError: the store could not be reached (the release is retried in
            the background until it succeeds or the lease has run out).
        """
        if lease.depth > 1 and lease.leave():  # a reentrant lock's inner entry: held on
            return not lease.lost
        if not lease.begin_release():
            return False
        if lease.settle_deadline():
            lease.run_on_lost()
        if self.tracked:
            holders.remove(self.source, self.key, lease)
        watchdog.unwatch(lease)
        self.stop_renewal(lease)
        if lease.streak and not lease.lost and streak.KEEPER.keep(self.store, lease, lease.streak):
            log.debug("released lock %r, kept for this process for a moment", lease.key)
            return True
        # A barging hold this process is done with goes to the first in line at once:
        # were the store's window still open, the process would take it straight back.
        args = (lease.key, lease.token, True) if lease.streak else (lease.key, lease.token)
        try:
            ok = yield Call(self.store.release, args, shield=True)
        except StoreError:
            self.later(functools.partial(self.store.release, *args), lease.ttl)
            raise
        if ok and not lease.lost:
            log.debug("released lock %r (token %s…)", lease.key, lease.token[:8])
            return True
        if not ok and lease.mark_lost(
            "release found the lock no longer held by this lease "
            "(its lease had run out, or another holder took it over)"
        ):
            lease.run_on_lost()
        return False

    def extending(self, lease: Lease, ttl: float) -> Machine[bool]:
        """Reset the lease to ``ttl`` seconds; a refusal marks it lost."""
        if lease.released or lease.lost:
            if lease.settle_deadline():
                lease.run_on_lost()
            return False
        started = time.monotonic()
        ok = yield Call(self.store.extend, (lease.key, lease.token, ttl))
        if ok and lease.renewed(started, ttl):
            return True
        if lease.mark_lost("extend found the lock no longer held by this lease"):
            lease.run_on_lost()
        return False

    def finishing(self, lease: Lease, raised: bool) -> Machine[None]:
        """Release after the protected code ran; raise :class:`LockLost` if it was lost."""
        try:
            yield from self.releasing(lease)
        except StoreError as exc:
            # The protected code has finished; turning an unreachable store into an error
            # here would make callers redo work that already happened. The release goes
            # on in the background, and the lease runs out on its own anyway.
            log.warning(
                "could not release lock %r now (retrying in the background; it expires "
                "within %.1f s anyway): %s", self.key, lease.ttl, exc,
            )  # fmt: skip
        if lease.settle_deadline():
            lease.run_on_lost()
        if lease.lost and not raised and self.settings.raise_on_lost:
            raise LockLost(self.key, lease.fencing_token, lease.lost_reason)
        # Otherwise the loss was logged when found; never mask the block's own error.

    def checking(self) -> Machine[bool]:
        """Whether any owner holds the key now (a lock kept for this process is
        released first: nobody in it holds it)."""
        if self.window:
            yield Call(streak.KEEPER.release, (self.store, self.key))
        return (yield Call(self.store.owner, (self.key,))) is not None


__all__ = ["Call", "Core", "Machine", "Thrown", "carry"]
