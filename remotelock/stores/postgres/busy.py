"""Contention is not an outage: an acquire that runs out of time waiting for a row
lock reports the key busy, for the sync and async PostgreSQL stores alike.

The acquire statements (``ACQUIRE`` and ``ACQUIRE_PERMIT`` in
:mod:`remotelock.stores.postgres.sql`) wait for a row lock only when the key looked
free in their snapshot while another session was changing it, and then only for
:func:`lock_wait`. If that wait (or, on an overloaded server, ``statement_timeout``)
runs out, the key was being taken by someone else: the honest answer is "busy", and
the lock layer waits and tries again. A server that does not answer at all is still
:class:`~remotelock.errors.StoreUnavailable`: that comes from the connection or the
reply guard, never from these two errors, which only an answering server sends.
"""

from __future__ import annotations

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


def fetch_or_busy(conn: psycopg.Connection[Any], statement: Any, params: dict[str, Any]) -> Any:
    """The statement's first row; ``None`` (busy) if it ran out of time waiting."""
    try:
        return conn.execute(statement, params).fetchone()
    except CONTENDED as exc:
        _busy(params, exc)
        if not conn.autocommit:
            conn.rollback()  # the failed statement aborted the caller's transaction
        return None


async def afetch_or_busy(
    conn: psycopg.AsyncConnection[Any], statement: Any, params: dict[str, Any]
) -> Any:
    """See :func:`fetch_or_busy`."""
    try:
        return await (await conn.execute(statement, params)).fetchone()
    except CONTENDED as exc:
        _busy(params, exc)
        if not conn.autocommit:
            await conn.rollback()
        return None


def _busy(params: dict[str, Any], exc: BaseException) -> None:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    log.debug("acquire of %r waited too long for the row (%s): busy", params["key"], reason)


__all__ = [
    "CONTENDED",
    "LOCK_WAIT_MAX",
    "acquire_params",
    "afetch_or_busy",
    "fetch_or_busy",
    "lock_wait",
]
