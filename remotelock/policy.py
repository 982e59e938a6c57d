"""How a lock waits: tenacity strategies, checked once, turned into a retry controller.

The acquire loop is a ``tenacity.Retrying`` (or ``AsyncRetrying``) whose attempts
return ``BUSY`` while another owner holds the lock, and whose ``sleep`` is the
store's ``wait``: the ``wait=`` strategy is only the upper bound between attempts,
and a release notification ends the sleep early. When ``stop=`` fires, the
controller hands back a :class:`GaveUp` marker instead of tenacity's ``RetryError``,
and the lock layer raises :class:`~remotelock.LockTimeout`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

import tenacity
from tenacity.stop import stop_base
from tenacity.wait import wait_base

WaitStrategy = Callable[[tenacity.RetryCallState], float]
StopStrategy = Callable[[tenacity.RetryCallState], bool]

DEFAULT_WAIT: Final[WaitStrategy] = tenacity.wait_random_exponential(multiplier=0.002, max=0.05)
"""Full-jitter backoff from 2 ms up to 50 ms, for stores without release notifications.

Jitter keeps processes that started together from polling in lockstep (tenacity's own
advice for contention between processes). The 50 ms ceiling means that even on a store
that cannot wake its waiters, a waiter notices a free lock within about 50 ms.
"""

PUSHED_WAIT: Final[WaitStrategy] = tenacity.wait_random(min=0.1, max=0.5)
"""Between 0.1 and 0.5 s (jittered), for stores that wake waiters on release (``notify``).

There a release ends the wait at once, so the bound only matters when no wake-up
comes (a waiter ahead in line that crashed); short early waits would only make
sleeping waiters poll the store, slowing every handover down.
"""

DEFAULT_STOP: Final[StopStrategy] = tenacity.stop_after_delay(60)
"""Give up after 60 s of waiting (then :class:`~remotelock.LockTimeout`)."""


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


BUSY: Final = _Marker("BUSY")
"""Attempt outcome: another owner holds the lock; try again after a wait."""

SKIPPED: Final = _Marker("SKIPPED")
"""Attempt outcome: ``skip_if`` was true; run without the lock."""


@dataclass(frozen=True)
class GaveUp:
    """Outcome when ``stop`` fired: how many attempts were made."""

    attempts: int


def default_wait(capabilities: frozenset[str]) -> WaitStrategy:
    """The wait used when none is given: longer bounds where releases wake waiters."""
    return PUSHED_WAIT if "notify" in capabilities else DEFAULT_WAIT


def check_wait(wait: object, name: str = "wait") -> WaitStrategy | None:
    """Validate a ``wait=`` argument (``None``: the store's default, see :func:`default_wait`)."""
    if wait is None:
        return None
    if isinstance(wait, wait_base) or (callable(wait) and not isinstance(wait, type)):
        return wait
    raise TypeError(
        f"{name} must be a tenacity wait strategy such as tenacity.wait_fixed(0.1) "
        f"(or a callable taking a RetryCallState), got {wait!r}"
    )


def check_stop(stop: object, name: str = "stop") -> StopStrategy:
    """Validate a ``stop=`` argument (``None`` means the default)."""
    if stop is None:
        return DEFAULT_STOP
    if isinstance(stop, stop_base) or (callable(stop) and not isinstance(stop, type)):
        return stop
    raise TypeError(
        f"{name} must be a tenacity stop strategy such as tenacity.stop_after_delay(10) "
        f"(or a callable taking a RetryCallState), got {stop!r}"
    )


def _is_busy(outcome: object) -> bool:
    return outcome is BUSY


def _gave_up(state: tenacity.RetryCallState) -> GaveUp:
    return GaveUp(state.attempt_number)


def retrying(
    wait: WaitStrategy, stop: StopStrategy, sleep: Callable[[float], None]
) -> tenacity.Retrying:
    """A fresh sync controller (one per acquire: controllers keep per-run state)."""
    return tenacity.Retrying(
        wait=wait,
        stop=stop,
        sleep=sleep,
        retry=tenacity.retry_if_result(_is_busy),
        retry_error_callback=_gave_up,
    )


def async_retrying(
    wait: WaitStrategy, stop: StopStrategy, sleep: Callable[[float], Awaitable[Any]]
) -> tenacity.AsyncRetrying:
    """The asyncio twin of :func:`retrying`."""
    return tenacity.AsyncRetrying(
        wait=wait,
        stop=stop,
        sleep=sleep,
        retry=tenacity.retry_if_result(_is_busy),
        retry_error_callback=_gave_up,
    )


__all__ = [
    "BUSY",
    "DEFAULT_STOP",
    "DEFAULT_WAIT",
    "PUSHED_WAIT",
    "SKIPPED",
    "GaveUp",
    "StopStrategy",
    "WaitStrategy",
    "async_retrying",
    "check_stop",
    "check_wait",
    "default_wait",
    "retrying",
]
