"""Contention is not an outage: an acquire that runs out of time waiting for a row
lock reports the key busy, for the sync and async PostgreSQL stores alike; a server
with no connection slot left is waited out, within the step's timeout; and a store's
own connections, all lent to other steps, are waited for as long as steps keep giving
them back, with one of them kept for the steps that hold leases (release, renew).

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

import contextlib
import random
import time
from collections import deque
from typing import Any, Final, Generic, TypeVar

import psycopg

from .common import log, millis

Turn = TypeVar("Turn")

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


MAINTENANCE: Final = frozenset(
    {"release", "extend", "release_permit", "extend_permit", "release_shared", "extend_shared"}
)
"""Steps that keep or end a lease already held. They may take the connection kept back
from the others, so a crowd of waiters trying to acquire can never make a holder's
release or renewal queue behind them (and its lease run out meanwhile)."""


class SlotCount(Generic[Turn]):
    """How many of a store's ``size`` connections are lent, who may take another, and
    who waits for one, in order (each waiter's ``Turn``: an event or a future).

    One connection (when there are two or more) is kept for :data:`MAINTENANCE` steps:
    the others take at most ``size - 1``. A connection given back goes straight to the
    first waiter allowed to take it, maintenance steps first, so a waiter that is
    woken always has its slot. The connection modules wait and wake with their own
    primitives (a thread event, an asyncio future) under their own guard; the rule
    and the queues are kept here, once.
    """

    __slots__ = ("gives", "lent", "queues", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.lent = 0
        self.gives = 0  # how many were given back: a wait ends only when none are
        self.queues: tuple[deque[Turn], deque[Turn]] = (deque(), deque())  # [urgent]

    def may_take(self, urgent: bool) -> bool:
        """Whether a step (``urgent``: a :data:`MAINTENANCE` step) may take one now."""
        return self.lent < (self.size if urgent or self.size == 1 else self.size - 1)

    def take_now(self, urgent: bool) -> bool:
        """Take a slot if one is free for this kind of step (else queue a turn)."""
        if self.may_take(urgent):
            self.lent += 1
            return True
        return False

    def queue(self, urgent: bool, turn: Turn) -> None:
        self.queues[urgent].append(turn)

    def withdraw(self, urgent: bool, turn: Turn) -> None:
        """Leave the queue (the wait timed out or was cancelled before its turn)."""
        with contextlib.suppress(ValueError):
            self.queues[urgent].remove(turn)

    def give(self) -> Turn | None:
        """Give a slot back: the turn it now belongs to (the caller wakes it), if any."""
        self.gives += 1
        self.lent -= 1
        for urgent in (True, False):
            waiting = self.queues[urgent]
            if waiting and self.may_take(urgent):
                self.lent += 1
                return waiting.popleft()
        return None


def none_given_back(size: int, timeout: float) -> psycopg.OperationalError:
    """The error for a step that saw none of the store's ``size`` connections come back
    for ``timeout`` seconds: the steps holding them are stuck, so the server is."""
    return psycopg.OperationalError(
        f"all {size} connections of this store stayed busy for {timeout:g} s with none given back"
    )


__all__ = [
    "CONTENDED",
    "FULL_PAUSES",
    "LOCK_WAIT_MAX",
    "MAINTENANCE",
    "SlotCount",
    "acquire_params",
    "full_pause",
    "lock_wait",
    "none_given_back",
    "note_busy",
    "server_full",
]
