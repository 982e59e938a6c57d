"""How a step of the PostgreSQL stores runs its one statement and reads the answer.

Written once, for asyncio; ``tools/unasync.py`` writes the sync
:mod:`remotelock.stores.postgres.queries` from it. Each function takes the connection
the step was given, so it runs inside the step's bounds (timeouts, reply guard, error
translation) in :mod:`remotelock.stores.postgres.aio`.
"""

# The generated module's first line names its source and runs past the line limit
# (in the source the rule is unused, hence RUF100).

from __future__ import annotations

from typing import Any

from .busy import CONTENDED, note_busy
from .connections_aio import Conn

Row = tuple[Any, ...]


async def fetch_one(conn: Conn, statement: Any, params: dict[str, Any]) -> Row | None:
    """The statement's first row, or ``None``."""
    cursor = await conn.execute(statement, params)
    return await cursor.fetchone()


async def fetch_all(conn: Conn, statement: Any, params: dict[str, Any]) -> list[Row]:
    """Every row of the statement's result."""
    cursor = await conn.execute(statement, params)
    return await cursor.fetchall()


async def rowcount(conn: Conn, statement: Any, params: dict[str, Any]) -> int:
    """How many rows the statement changed or returned."""
    cursor = await conn.execute(statement, params)
    return cursor.rowcount


async def fetch_or_busy(conn: Conn, statement: Any, params: dict[str, Any]) -> Row | None:
    """An acquire's first row; ``None`` (busy) if it ran out of time waiting for a row
    lock (see :mod:`remotelock.stores.postgres.busy`)."""
    try:
        return await fetch_one(conn, statement, params)
    except CONTENDED as exc:
        note_busy(params, exc)
        if not conn.autocommit:
            await conn.rollback()  # the failed statement aborted the caller's transaction
        return None


__all__ = ["Row", "fetch_all", "fetch_one", "fetch_or_busy", "rowcount"]
