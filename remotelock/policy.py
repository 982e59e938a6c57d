"""How a lock waits: tenacity strategies, checked once, turned into a retry controller.

The acquire loop runs on a ``tenacity.Retrying`` (or ``AsyncRetrying``) whose attempts
return ``BUSY`` while another owner holds the lock; its sleeps are the store's
``wait``: the ``wait=`` strategy is only the upper bound between attempts, and a
release notification ends the sleep early. When ``stop=`` fires, the controller hands
back a :class:`~remotelock.outcomes.GaveUp` instead of tenacity's ``RetryError``, and
the lock layer raises :class:`~remotelock.LockTimeout`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import tenacity
from tenacity.stop import stop_all, stop_any, stop_base
from tenacity.wait import wait_base

from .outcomes import BUSY, GaveUp

WaitStrategy = Callable[[tenacity.RetryCallState], float]
StopStrategy = Callable[[tenacity.RetryCallState], bool]

DEFAULT_WAIT: Final[WaitStrategy] = tenacity.wait_random_exponential(multiplier=0.002, max=0.05)
"""Full-jitter backoff from 2 ms up to 50 ms, for stores without release notifications.

Jitter keeps processes that started together from polling in lockstep (tenacity's own
advice for contention between processes). The 50 ms ceiling means that even on a store
that cannot wake its waiters, a waiter notices a free lock within about 50 ms.
"""

PUSHED_WAIT: Final[WaitStrategy] = tenacity.wait_random(min=10, max=20)
"""Between 10 and 20 s (jittered), for stores that wake waiters on release (``notify``).

There the store's wait ends at a release's wake-up or at the holder's lease end
(whichever comes first), so this bound only matters when neither comes: a wake-up
lost while the store's subscriber reconnected (the reconnection wakes every waiter
anyway). Shorter bounds only make sleeping waiters poll the store: at 0.1-0.5 s, a
thousand idle waiters cost 3,300 round trips a second; at 10-20 s, about 70.
"""

DEFAULT_STOP: Final[StopStrategy] = tenacity.stop_after_delay(60)
"""Give up after 60 s of waiting (then :class:`~remotelock.LockTimeout`)."""


def default_wait(capabilities: frozenset[str]) -> WaitStrategy:
    """The wait used when none is given: longer bounds where releases wake waiters."""
    return PUSHED_WAIT if "notify" in capabilities else DEFAULT_WAIT


def store_wait(store: object) -> WaitStrategy:
    """The wait for a lock on ``store`` when none is given: the store's own
    ``default_wait`` if it has one, else :func:`default_wait` of its capabilities.

    A store whose every attempt costs money, or whose own ``wait`` already polls
    cheaply until the lock looks free (DynamoDB: a refused acquire is a billed write,
    a look is a cheap read), says so with a longer bound than the 2-50 ms default.
    """
    own = getattr(store, "default_wait", None)
    if own is not None:
        return own  # type: ignore[no-any-return]
    return default_wait(getattr(store, "capabilities", frozenset()))


def _strategy(value: object, name: str, kind: type, example: str) -> Any:
    if isinstance(value, kind) or (callable(value) and not isinstance(value, type)):
        return value
    what = "wait" if kind is wait_base else "stop"
    raise TypeError(
        f"{name} must be a tenacity {what} strategy such as {example} "
        f"(or a callable taking a RetryCallState), got {value!r}"
    )


def check_wait(wait: object, name: str = "wait") -> WaitStrategy | None:
    """Validate a ``wait=`` argument (``None``: the store's default, see :func:`default_wait`)."""
    return None if wait is None else _strategy(wait, name, wait_base, "tenacity.wait_fixed(0.1)")


def check_stop(stop: object, name: str = "stop") -> StopStrategy:
    """Validate a ``stop=`` argument (``None`` means the default)."""
    example = "tenacity.stop_after_delay(10)"
    return DEFAULT_STOP if stop is None else _strategy(stop, name, stop_base, example)


def delay_of(stop: object) -> float | None:
    """Seconds after the start of waiting by which ``stop`` surely fires, if that can be
    told from the strategy (``stop_after_delay``, ``stop_before_delay`` and their
    ``|`` / ``&`` combinations); ``None`` otherwise.

    tenacity checks ``stop`` only after computing the next sleep, so a long ``wait``
    would carry a waiter far past its deadline (``timeout=1`` with ``wait_fixed(60)``
    would wait a minute). Knowing the deadline lets every sleep end at it.
    """
    delay = getattr(stop, "max_delay", None)
    if isinstance(delay, (int, float)) and not isinstance(delay, bool):
        return float(delay)
    if isinstance(stop, (stop_any, stop_all)):
        delays = [delay_of(inner) for inner in stop.stops]
        known = [found for found in delays if found is not None]
        if isinstance(stop, stop_any):
            return min(known) if known else None
        return max(known) if known and len(known) == len(delays) else None
    return None


class _Capped:
    """A wait strategy whose sleeps never go past an absolute deadline."""

    __slots__ = ("deadline", "wait")

    def __init__(self, wait: WaitStrategy, deadline: float) -> None:
        self.wait = wait
        self.deadline = deadline

    def __call__(self, state: tenacity.RetryCallState) -> float:
        return max(0.0, min(self.wait(state), self.deadline - time.monotonic()))


class _Until:
    """A stop strategy that also fires at an absolute deadline.

    The deadline counts from the lock's own start (its first attempt), which tenacity
    does not see: the controller starts after that attempt found the lock busy.
    """

    __slots__ = ("deadline", "stop")

    def __init__(self, stop: StopStrategy, deadline: float) -> None:
        self.stop = stop
        self.deadline = deadline

    def __call__(self, state: tenacity.RetryCallState) -> bool:
        return time.monotonic() >= self.deadline or self.stop(state)


def bounded(
    wait: WaitStrategy, stop: StopStrategy, started: float
) -> tuple[WaitStrategy, StopStrategy]:
    """``wait`` and ``stop`` held to the deadline ``stop`` implies, counted from ``started``."""
    delay = delay_of(stop)
    if delay is None:
        return wait, stop
    deadline = started + delay
    return _Capped(wait, deadline), _Until(stop, deadline)


def _is_busy(outcome: object) -> bool:
    return outcome is BUSY


def _gave_up(state: tenacity.RetryCallState) -> GaveUp:
    return GaveUp(state.attempt_number)


def controller(
    wait: WaitStrategy, stop: StopStrategy, started: float, *, asynchronous: bool
) -> tenacity.BaseRetrying:
    """A fresh retry controller for one acquire (controllers keep per-run state).

    The lock's engines drive it through tenacity's own decision engine
    (``BaseRetrying.iter``) and make its sleeps themselves (the store's wake-up wait),
    so it is never called directly: ``AsyncRetrying`` only where its decisions may
    have to await (async strategies), ``Retrying`` elsewhere.
    """
    wait, stop = bounded(wait, stop, started)
    kind = tenacity.AsyncRetrying if asynchronous else tenacity.Retrying
    return kind(
        wait=wait,
        stop=stop,
        retry=tenacity.retry_if_result(_is_busy),
        retry_error_callback=_gave_up,
    )


__all__ = [
    "DEFAULT_STOP",
    "DEFAULT_WAIT",
    "PUSHED_WAIT",
    "StopStrategy",
    "WaitStrategy",
    "bounded",
    "check_stop",
    "check_wait",
    "controller",
    "default_wait",
    "delay_of",
    "store_wait",
]
