"""The SQL behind PostgresStore: each primitive is one statement, timed by the server.

The lease table keeps one row per key ever locked. A release clears the row's token
instead of deleting the row, so the per-key ``fence`` column only ever grows: the
fencing tokens keep increasing across releases and expiries without any other
table or sequence. Every statement reads the time from ``now()`` on the server (the
start of the statement's own transaction, one value for the whole statement), so
client clocks never decide whether a lease has run out.

Two rules shape the acquire and release statements:

- Contention is never an error. ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` locks
  the conflicting row even when its WHERE is false, so busy attempts would queue on
  the row lock behind each other until a timeout turned plain contention into an
  outage. An acquire therefore first reads the row from its snapshot (no lock) and
  skips the upsert while someone else visibly holds the key; only an acquire that may
  win waits for the row lock, and then for ``%(lock_wait)s`` at most (set with
  ``set_config(..., true)`` inside the statement: one statement, one round trip, and
  the setting ends with the statement's transaction). The store reports a lock wait
  that runs out as busy.
- A repeated release by the token that released the key returns a row, so a retry
  after a lost reply (the release committed, the reply never came) is not mistaken
  for a lost lease. The lease row remembers that token (``released_by``); the permit
  row remembers the last few (``released``).

``{table}`` in a template is the table's name, quoted by :mod:`psycopg.sql` (the
permit statements, in :mod:`remotelock.stores.postgres.permit_sql`, use ``{permits}``).
Parameters are named (``%(key)s``); the comment above each constant lists them and
the statement's result.
"""

from __future__ import annotations

import hashlib
from typing import Final, NamedTuple

from psycopg import sql

from .permit_sql import (
    ACQUIRE_PERMIT,
    CREATE_PERMITS_TABLE,
    EXTEND_PERMIT,
    MIGRATE_PERMITS_TABLE,
    PERMIT_HOLDERS,
    PERMIT_STATE,
    RELEASE_PERMIT,
    RELEASED_MARGIN,
)

# No parameters, no result. Run only when the table (or a column) is missing, in a
# transaction that holds LOCK_DDL, so that processes starting at once create it one
# after the other. `released_by` is the token whose release freed the key last (see
# RELEASE); NULL until a token releases it, and again once that token takes it anew.
CREATE_TABLE: Final[str] = """
CREATE TABLE IF NOT EXISTS {table} (
    key         text PRIMARY KEY,
    token       text,
    fence       bigint NOT NULL,
    expires_at  timestamptz NOT NULL,
    released_by text
)"""

# No parameters, no result. Run after CREATE_TABLE: brings a table made before
# `released_by` existed up to date (a no-op for a table CREATE_TABLE just made).
MIGRATE_TABLE: Final[str] = "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS released_by text"

# No parameters, no result. Run before CREATE_TABLE when a schema is configured.
CREATE_SCHEMA: Final[str] = "CREATE SCHEMA IF NOT EXISTS {schema}"

# %(lock_id)s  bigint naming the table (see lock_id below)
# Serialises table creation until the end of the transaction (never held longer).
LOCK_DDL: Final[str] = "SELECT pg_advisory_xact_lock(%(lock_id)s)"

# %(schema)s   the configured schema, or NULL for the first schema on the search path
# %(table)s    the lease table's name
# %(permits)s  the permit table's name
# returns: one row if both tables exist with the newest columns, else none (then the
#          creation path runs: CREATE ... IF NOT EXISTS, then the MIGRATE_* statements).
TABLE_EXISTS: Final[str] = """
SELECT 1 FROM pg_catalog.pg_attribute AS a
  JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
 WHERE n.nspname = coalesce(%(schema)s, current_schema())
   AND (c.relname, a.attname) IN ((%(table)s, 'released_by'), (%(permits)s, 'released'))
   AND NOT a.attisdropped
HAVING count(*) = 2"""

# %(key)s        lock key
# %(token)s      the acquiring token
# %(ttl)s        lease length in seconds (float)
# %(lock_wait)s  how long it may wait for the row lock, in milliseconds (text)
# `busy` reads the row from the statement's snapshot, taking no lock: while it shows
# another token's unexpired lease, the INSERT gets no row to insert, so the statement
# neither locks nor waits (a busy acquire costs no one anything). Otherwise the upsert
# takes the key if its row is absent, released or expired, deciding on the row's
# latest version under the row lock (ON CONFLICT DO UPDATE re-reads it), and bumps the
# fence there: two acquirers can never both win or reuse a fence, whatever their
# snapshots showed. The holding token re-acquiring an unexpired lease keeps its fence
# and gets a fresh lease (idempotent). An acquire clears `released_by` only if it
# names this very token (a token taking the key again is no longer "the one that
# released it"; another token taking the key leaves the record to RELEASE).
# set_config runs before the row to insert exists, so the shorter lock wait applies
# to every lock the upsert may wait for; a wait that runs out raises
# LockNotAvailable, which the store reports as busy.
# returns: one row (fence) if `token` holds the key now, else no row.
ACQUIRE: Final[str] = """
WITH busy AS (
    SELECT FROM {table} AS seen
     WHERE seen.key = %(key)s AND seen.token <> %(token)s AND seen.expires_at > now()
)
INSERT INTO {table} AS held (key, token, fence, expires_at)
SELECT %(key)s::text, %(token)s::text, 1, now() + make_interval(secs => %(ttl)s)
 WHERE NOT EXISTS (SELECT FROM busy)
   AND set_config('lock_timeout', %(lock_wait)s, true) IS NOT NULL
ON CONFLICT (key) DO UPDATE
   SET token = excluded.token,
       fence = CASE WHEN held.token = excluded.token AND held.expires_at > now()
                    THEN held.fence ELSE held.fence + 1 END,
       expires_at = excluded.expires_at,
       released_by = nullif(held.released_by, excluded.token)
 WHERE held.token IS NULL OR held.expires_at <= now() OR held.token = excluded.token
RETURNING held.fence"""

_HOLDS: Final = "(held.token = %(token)s AND held.expires_at > now())"

# %(key)s, %(token)s  lock key, the releasing token
# %(channel)s, %(payload)s  where waiters listen, and what names this key there
# Frees the key if `token` holds an unexpired lease, recording `token` as the one that
# released it, and notifies the waiters in the same statement (NOTIFY is delivered
# when it commits, never before). A repeated release by the token that released the
# key last also returns a row (changing nothing), so a retry after a lost reply is not
# a loss: `released_by` names a token only after its own release freed the key, and
# stops naming it when that token acquires again or another token releases the key.
# A token whose lease expired, was taken over or was force-released never freed the
# key itself, so it still gets no row. One UPDATE decides both cases on the row's
# latest version under its row lock, so a first release that commits while this one
# waits is seen. (A repeat notifies again: a spurious wake-up, never a missed one.)
# returns: one row if released now or before by `token`, else no row.
RELEASE: Final[str] = f"""
WITH done AS (
    UPDATE {{table}} AS held
       SET token = CASE WHEN {_HOLDS} THEN NULL ELSE held.token END,
           expires_at = CASE WHEN {_HOLDS} THEN now() ELSE held.expires_at END,
           released_by = CASE WHEN {_HOLDS} THEN held.token ELSE held.released_by END
     WHERE held.key = %(key)s AND ({_HOLDS} OR held.released_by = %(token)s)
    RETURNING held.key
)
SELECT pg_notify(%(channel)s, %(payload)s) FROM done"""

# %(key)s, %(channel)s, %(payload)s  as for RELEASE
# Frees the key whoever holds it (an operator breaking a stuck lock) and notifies.
# returns: one row if an unexpired lease was there, else no row.
FORCE_RELEASE: Final[str] = """
WITH freed AS (
    UPDATE {table} SET token = NULL, expires_at = now()
     WHERE key = %(key)s AND token IS NOT NULL AND expires_at > now()
    RETURNING key
)
SELECT pg_notify(%(channel)s, %(payload)s) FROM freed"""

# %(key)s, %(token)s, %(ttl)s  as for ACQUIRE
# Resets the lease only if `token` still holds an unexpired one.
# returns: the number of rows updated (1 or 0), as the cursor's rowcount.
EXTEND: Final[str] = """
UPDATE {table} SET expires_at = now() + make_interval(secs => %(ttl)s)
 WHERE key = %(key)s AND token = %(token)s AND expires_at > now()"""

# %(key)s  lock key
# returns: one row (token, seconds left as float8) while a lease is held, else none.
HOLDER: Final[str] = """
SELECT token, EXTRACT(EPOCH FROM expires_at - now())::float8
  FROM {table}
 WHERE key = %(key)s AND token IS NOT NULL AND expires_at > now()"""

# %(prefix)s  key prefix ('' for every key)
# returns: (key, token, fence, seconds left as float8) of each held lock, by key.
LIST: Final[str] = """
SELECT key, token, fence, EXTRACT(EPOCH FROM expires_at - now())::float8
  FROM {table}
 WHERE token IS NOT NULL AND expires_at > now() AND starts_with(key, %(prefix)s)
 ORDER BY key"""


# %(timeout)s  milliseconds, as text
# Sets both timeouts for the session of a connection the store was given (connections
# the store opens itself get them as startup options instead).
SET_TIMEOUTS: Final[str] = (
    "SELECT set_config('statement_timeout', %(timeout)s, false),"
    " set_config('lock_timeout', %(timeout)s, false)"
)

_PAYLOAD_LIMIT: Final = 1000  # bytes; PostgreSQL refuses payloads of 8000 or more


def payload(key: str) -> str:
    """What a NOTIFY carries for ``key``: the key itself, or a digest of a long key.

    Two keys sharing a payload only cost a spurious wake-up (``wait`` may return
    early), never a missed one.
    """
    if len(key.encode()) <= _PAYLOAD_LIMIT:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def channel(schema: str | None, table: str) -> str:
    """The NOTIFY channel of a table: its qualified name, or a digest if that is too long.

    Channel names are identifiers, at most 63 bytes.
    """
    name = f"{schema}.{table}" if schema else table
    if len(name) <= 63:
        return name
    return f"{table[:40]}_{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def lock_id(schema: str | None, table: str) -> int:
    """The advisory lock key that serialises creating this table (a signed bigint)."""
    digest = hashlib.sha256(f"remotelock:{schema or ''}.{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class Statements(NamedTuple):
    """Every statement of one store, composed once for its table."""

    create_schema: sql.Composed | None
    create_table: sql.Composed
    create_permits_table: sql.Composed
    create: tuple[sql.Composed, ...]
    """What the creation path runs, in order: the schema, both tables, the migrations."""
    acquire: sql.Composed
    release: sql.Composed
    force_release: sql.Composed
    extend: sql.Composed
    holder: sql.Composed
    list: sql.Composed
    listen: sql.Composed
    channel: str
    acquire_permit: sql.Composed
    release_permit: sql.Composed
    extend_permit: sql.Composed
    permit_holders: sql.Composed
    permit_state: sql.Composed


def statements(schema: str | None, table: str) -> Statements:
    """Compose the statements for ``schema.table`` (names quoted as identifiers)."""
    name = sql.Identifier(schema, table) if schema else sql.Identifier(table)
    permit_name = permits_table(table)
    permits = sql.Identifier(schema, permit_name) if schema else sql.Identifier(permit_name)

    def compose(template: str) -> sql.Composed:
        return sql.SQL(template).format(table=name, permits=permits)

    topic = channel(schema, table)
    create_schema = (
        sql.SQL(CREATE_SCHEMA).format(schema=sql.Identifier(schema)) if schema else None
    )
    tables = [CREATE_TABLE, CREATE_PERMITS_TABLE, MIGRATE_TABLE, MIGRATE_PERMITS_TABLE]
    return Statements(
        create_schema=create_schema,
        create_table=compose(CREATE_TABLE),
        create_permits_table=compose(CREATE_PERMITS_TABLE),
        create=(*([create_schema] if create_schema else []), *map(compose, tables)),
        acquire=compose(ACQUIRE),
        release=compose(RELEASE),
        force_release=compose(FORCE_RELEASE),
        extend=compose(EXTEND),
        holder=compose(HOLDER),
        list=compose(LIST),
        listen=sql.SQL("LISTEN {}").format(sql.Identifier(topic)),
        channel=topic,
        acquire_permit=compose(ACQUIRE_PERMIT),
        release_permit=compose(RELEASE_PERMIT),
        extend_permit=compose(EXTEND_PERMIT),
        permit_holders=compose(PERMIT_HOLDERS),
        permit_state=compose(PERMIT_STATE),
    )


def permits_table(table: str) -> str:
    """The permit table's name: the lease table's, plus ``_permits`` (within 63 bytes)."""
    name = f"{table}_permits"
    return (
        name
        if len(name) <= 63
        else f"{table[:40]}_{hashlib.sha256(name.encode()).hexdigest()[:14]}"
    )


def permit_payload(key: str) -> str:
    """What a NOTIFY carries for a permit of ``key`` (apart from the lock's of ``key``)."""
    return payload("permit:" + key)


__all__ = [
    "ACQUIRE",
    "ACQUIRE_PERMIT",
    "CREATE_PERMITS_TABLE",
    "CREATE_SCHEMA",
    "CREATE_TABLE",
    "EXTEND",
    "EXTEND_PERMIT",
    "FORCE_RELEASE",
    "HOLDER",
    "LIST",
    "LOCK_DDL",
    "MIGRATE_PERMITS_TABLE",
    "MIGRATE_TABLE",
    "PERMIT_HOLDERS",
    "PERMIT_STATE",
    "RELEASE",
    "RELEASED_MARGIN",
    "RELEASE_PERMIT",
    "SET_TIMEOUTS",
    "TABLE_EXISTS",
    "Statements",
    "channel",
    "lock_id",
    "payload",
    "permit_payload",
    "permits_table",
    "statements",
]
