"""The PostgreSQL stores' kept results (what ``single_flight`` shares): their table and
statements, composed by :mod:`remotelock.stores.postgres.sql` like the others.

``{results}`` holds one row per kept value, with its expiry on the server's clock. A
read past it answers nothing; every put deletes up to ``SWEEP_BATCH`` rows that ran out
(locking only rows no one else has locked), so values nobody reads again leave no rows.
"""

from __future__ import annotations

from typing import Final

from .permit_sql import SWEEP_BATCH

MAX_RESULT_BYTES: Final = 64 * 1024 * 1024
"""Longest kept result (``bytea`` takes a gigabyte, but each put is one write of it)."""

# No parameters, no result. Part of the creation path (see schema.TABLE_EXISTS).
CREATE_RESULTS_TABLE: Final[str] = """
CREATE TABLE IF NOT EXISTS {results} (
    key        text PRIMARY KEY,
    data       bytea NOT NULL,
    expires_at timestamptz NOT NULL
)"""

# %(key)s   result key
# %(data)s  the value (bytes)
# %(ttl)s   seconds it is kept (float)
PUT_RESULT: Final[str] = f"""
WITH swept AS (
    DELETE FROM {{results}} AS gone
     WHERE gone.key IN (
           SELECT old.key FROM {{results}} AS old
            WHERE old.expires_at < now() AND old.key <> %(key)s
            ORDER BY old.expires_at LIMIT {SWEEP_BATCH}
              FOR UPDATE SKIP LOCKED)
       AND gone.expires_at < now())
INSERT INTO {{results}} AS r (key, data, expires_at)
VALUES (%(key)s, %(data)s, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (key) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at"""

# %(key)s   result key
# returns: (data) while the value is kept; else no row
GET_RESULT: Final[str] = "SELECT data FROM {results} WHERE key = %(key)s AND expires_at > now()"


__all__ = ["CREATE_RESULTS_TABLE", "GET_RESULT", "MAX_RESULT_BYTES", "PUT_RESULT"]
