"""AWS Lambda fit: bound a decorated handler's wait and lease by its invocation.

A Lambda invocation has a hard deadline. Waiting for a lock past it ends in a Lambda
timeout (a killed execution environment, a retry by the caller), which is worse than
a clear :class:`~remotelock.LockTimeout` with time left to report it. So when a call
carries a Lambda context (anything with ``get_remaining_time_in_millis``), the lock:

- stops waiting ``margin`` seconds before the invocation ends (the handler keeps that
  much time to do its work), on top of the decorator's own ``stop``;
- takes a lease no longer than the invocation can still live, so a holder that hits
  the Lambda timeout and is frozen mid-section frees the lock within that time.

Nothing outlives the invocation: the lease is released (and its renewal dropped)
before the handler returns or raises, so a frozen and thawed environment holds no lock
and renews none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import tenacity
from tenacity.stop import stop_base

from ._checks import MIN_TTL

if TYPE_CHECKING:
    from .lock import LockSettings

DEFAULT_MARGIN = 1.0
"""Seconds kept for the handler itself after the wait (``lambda_margin=``)."""
MAX_MARGIN = 900.0
"""The longest a Lambda invocation can run (15 minutes): no margin can be larger."""

_SHORTEST_LEASE = MIN_TTL


def find_context(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any | None:
    """The Lambda context among a call's arguments, if there is one.

    Found by what it can do (``get_remaining_time_in_millis``), not by position or
    type, so ``(event, context)``, methods and keyword calls all work.
    """
    for value in (*args, *kwargs.values()):
        if callable(getattr(value, "get_remaining_time_in_millis", None)):
            return value
    return None


def fit(settings: LockSettings, context: Any, margin: float) -> LockSettings:
    """``settings`` bounded by the invocation's remaining time (see the module docs)."""
    remaining = context.get_remaining_time_in_millis() / 1000
    budget = max(0.0, remaining - margin)  # 0: still one attempt, then LockTimeout
    return dataclasses.replace(
        settings,
        # stop_any takes any stop callable at run time; its annotation says stop_base.
        stop=tenacity.stop_any(cast(stop_base, settings.stop), tenacity.stop_after_delay(budget)),
        ttl=min(settings.ttl, max(remaining, _SHORTEST_LEASE)),
    )


__all__ = ["DEFAULT_MARGIN", "MAX_MARGIN", "find_context", "fit"]
