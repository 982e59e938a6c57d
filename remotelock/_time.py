"""Normalise durations once, at the edge: seconds as float, ``timedelta`` accepted."""

from __future__ import annotations

import math
from datetime import timedelta

Seconds = float | int | timedelta
"""A duration: seconds (fractions allowed) or a :class:`datetime.timedelta`."""


def to_seconds(value: object, name: str) -> float:
    """Return ``value`` as positive, finite seconds or raise naming the argument ``name``."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds or a timedelta, got {value!r} "
            f"({type(value).__name__})"
        )
    else:
        seconds = float(value)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return seconds


__all__ = ["Seconds", "to_seconds"]
