"""What the Redis store, its async twin and its permits share: names, replies, errors.

Kept apart from the stores so that each of them (and the permit mixin they share)
can import it at module level: no module of this package imports another store module.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, Final, NamedTuple

import redis.exceptions as rex

from ..base import (
    CROSS_HOST,
    CROSS_PROCESS,
    EXPIRY,
    FAIR,
    FENCING,
    NOTIFY,
    TOKEN_CHECKED,
)
from ..shared.translate import Translate

CAPABILITIES: Final = frozenset(
    {CROSS_PROCESS, CROSS_HOST, NOTIFY, FENCING, TOKEN_CHECKED, EXPIRY, FAIR}
)


class Layout(NamedTuple):
    """The Redis names of one lock; they share one hash tag (one Cluster slot)."""

    base: str  # ``<prefix>:{<key>}``: the lock scripts' KEYS[1]
    lock: str  # the holder's token, with the lease as its expiry
    fence: str  # the fencing counter
    bell: str  # the pub/sub channel of its wake-ups


@functools.lru_cache(maxsize=4096)
def layout(prefix: str, key: str) -> Layout:
    """``<prefix>:{<key>}:lock`` and friends. ``%`` and ``}`` in the key are escaped,
    so the hash tag is always the whole key and never ends early or comes out empty."""
    base = f"{prefix}:{{{key.replace('%', '%25').replace('}', '%7D')}}}"
    return Layout(base, f"{base}:lock", f"{base}:fence", f"{base}:bell")


class Queued:
    """What a store knows of one of its tokens in line, from its last busy acquire."""

    __slots__ = ("asked", "holder_ends", "seen")

    def __init__(self, asked: float, reply: int) -> None:
        self.asked = asked  # when that acquire was sent: later wake-ups are for this wait
        self.seen = asked  # when the server last heard from the waiter (its grace runs)
        # When the holder's lease ends: a waiter never sleeps past it, so an expired
        # lock is noticed on time (0: free, but another waiter is first in line).
        self.holder_ends = time.monotonic() - reply / 1000 if reply < 0 else math.inf

    def bound(self, timeout: float) -> float:
        """The deadline of a wait of ``timeout`` seconds starting now."""
        return min(time.monotonic() + timeout, self.holder_ends + 0.001)


def key_of(redis_key: str, prefix: str) -> str | None:
    """The lock key a ``...:lock`` Redis key belongs to (``None`` if it is not one)."""
    head = prefix + ":{"
    if not (redis_key.startswith(head) and redis_key.endswith("}:lock")):
        return None
    return redis_key[len(head) : -len("}:lock")].replace("%7D", "}").replace("%25", "%")


def ms(seconds: float) -> int:
    """Whole milliseconds for PX/PEXPIRE, never rounded down to 0 (that would be no lease)."""
    return max(1, math.ceil(seconds * 1000))


def text(value: Any) -> str | None:
    """A reply as ``str`` whether the client decodes responses or not."""
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


_UNAVAILABLE: Final = (
    rex.ConnectionError,
    rex.TimeoutError,
    OSError,
    rex.ReadOnlyError,
    rex.ClusterDownError,
    rex.TryAgainError,
)


class translate(Translate):
    """Redis errors become StoreErrors (connection trouble: StoreUnavailable)."""

    __slots__ = ()
    unavailable = _UNAVAILABLE
    failed = (rex.RedisError, rex.RedisClusterException)


__all__ = [
    "CAPABILITIES",
    "Layout",
    "Queued",
    "key_of",
    "layout",
    "ms",
    "text",
    "translate",
]
