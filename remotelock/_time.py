"""Normalise durations once, at the edge: seconds as float, ``timedelta`` accepted."""

from __future__ import annotations

import math
from datetime import timedelta

Seconds = float | int | timedelta
"""A duration: seconds (fractions allowed) or a :class:`datetime.timedelta`."""


def to_seconds(value: object, name: str, *, zero: bool = False) -> float:
    """Return ``value`` as finite seconds (positive, or ``>= 0`` with ``zero``), or raise
    naming the argument ``name``.

    :raises TypeError: not a number or ``timedelta`` (``True``/``False`` included: a
        flag passed where a duration belongs is a mistake, not 1 or 0 seconds).
    :raises ValueError: negative, zero (unless allowed), infinite, NaN, or too large for
        a float.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta, got {value!r} "
            f"({type(value).__name__})"
        )
    else:
        try:
            seconds = float(value)
        except OverflowError:
            raise ValueError(f"{name} is too large to be a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        least = ">= 0" if zero else "positive"
        raise ValueError(f"{name} must be a {least}, finite number of seconds, got {value!r}")
    return seconds


__all__ = ["Seconds", "to_seconds"]
