"""Contention is not an outage: an acquire that runs out of time waiting for a row
lock reports the key busy, for the sync and async PostgreSQL stores alike; and a
server with no connection slot left is waited out, within the step's timeout.

The acquire statements (``ACQUIRE`` and ``ACQUIRE_PERMIT`` in
:mod:`remotelock.stores.postgres.sql`) wait for a row lock only when the key looked
free in their snapshot while another session was changing it, and then only for
:func:`lock_wait`. If that wait (or, on an overloaded server, ``statement_timeout``)
runs out, the key was being taken by someone else: the honest answer is "busy", and
the lock layer waits and tries again. A server that does not answer at all is still
:class:`~remotelock.errors.StoreUnavailable`: that comes from the connection or the
reply guard, never from these two errors, which only an answering server sends.

This module decides, free of I/O; ``fetch_or_busy`` in
:mod:`remotelock.stores.postgres.queries_aio` (and the sync module generated from it)
runs the statement and turns :data:`CONTENDED` into "busy".
"""

from __future__ import annotations

import random
import time
from typing import Any, Final

import psycopg

from .common import log, millis

LOCK_WAIT_MAX: Final = 0.5
"""Longest row-lock wait of one acquire, in seconds. The sessions that lock a lease row
run one short statement each, so a wait that lasts longer means the key is being
taken (or something outside the store holds the row): waiting on would only delay
the "busy" answer, and a waiter whose ``wait`` returns at once (the row looks free)
retries at this pace rather than in a tight loop."""

CONTENDED: Final = (psycopg.errors.LockNotAvailable, psycopg.errors.QueryCanceled)
"""``lock_timeout`` and ``statement_timeout`` (also a cancel by an operator): the server
answered, the statement just could not finish in time."""


def lock_wait(timeout: float) -> str:
    """``%(lock_wait)s`` of an acquire: milliseconds (text, as ``set_config`` takes it).

    At most half the step's ``timeout``: the lock wait ends well before the
    statement's own timeout, and a release (or extend) that queues for the row behind
    such acquires still gets it within its ``timeout``, since they all give up first.
    """
    return str(millis(min(LOCK_WAIT_MAX, timeout / 2)))


def acquire_params(
    key: str, token: str, ttl: float, timeout: float, **more: Any
) -> dict[str, Any]:
    """The parameters of ``ACQUIRE`` (plus ``more``, e.g. ``limit`` for ``ACQUIRE_PERMIT``)."""
    return {"key": key, "token": token, "ttl": float(ttl), "lock_wait": lock_wait(timeout), **more}


def note_busy(params: dict[str, Any], exc: BaseException) -> None:
    """Log (at debug level) why an acquire reports its key busy."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    log.debug("acquire of %r waited too long for the row (%s): busy", params["key"], reason)


FULL_PAUSES: Final = (0.01, 0.2)
"""First and longest pause (jittered, doubling) before connecting again to a server
that has no connection slot left (see :func:`server_full`)."""


def server_full(exc: BaseException) -> bool:
    """Whether a failed connect met a server with every connection slot taken
    (``max_connections``): load to wait out, within the step's timeout, while the
    process's own connections come back to its pool or other clients leave."""
    if getattr(exc, "sqlstate", None) == "53300":
        return True
    words = str(exc)
    return "too many clients" in words or "connection slots are reserved" in words


def full_pause(exc: BaseException, attempt: int, deadline: float) -> float | None:
    """After connect attempt ``attempt`` failed with ``exc``: the pause before the next
    one if the server was full and the step's ``deadline`` (``time.monotonic()``) allows
    it, else ``None`` (the caller raises ``exc``)."""
    left = deadline - time.monotonic()
    if not server_full(exc) or left <= 0:
        return None
    first, most = FULL_PAUSES
    return min(left, most, first * 2.0 ** min(attempt, 16)) * (0.5 + random.random() / 2)


__all__ = [
    "CONTENDED",
    "FULL_PAUSES",
    "LOCK_WAIT_MAX",
    "acquire_params",
    "full_pause",
    "lock_wait",
    "note_busy",
    "server_full",
]
