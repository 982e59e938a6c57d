"""The SQL behind PostgresStore: each primitive is one statement, timed by the server.

The lease table keeps one row per key ever locked. A release clears the row's token
instead of deleting the row, so the per-key ``fence`` column only ever grows: the
fencing tokens keep increasing across releases and expiries without any other
table or sequence. Every statement reads the time from ``now()`` on the server (the
start of the statement's own transaction, one value for the whole statement), so
client clocks never decide whether a lease has run out.

``{table}`` in a template is the table's name, quoted by :mod:`psycopg.sql`.
Parameters are named (``%(key)s``); the comment above each constant lists them and
the statement's result.
"""

from __future__ import annotations

import hashlib
from typing import Final, NamedTuple

from psycopg import sql

# No parameters, no result. Run only when the table is missing, in a transaction that
# holds LOCK_DDL, so that processes starting at once create it one after the other.
CREATE_TABLE: Final[str] = """
CREATE TABLE IF NOT EXISTS {table} (
    key        text PRIMARY KEY,
    token      text,
    fence      bigint NOT NULL,
    expires_at timestamptz NOT NULL
)"""

# No parameters, no result. Run before CREATE_TABLE when a schema is configured.
CREATE_SCHEMA: Final[str] = "CREATE SCHEMA IF NOT EXISTS {schema}"

# %(lock_id)s  bigint naming the table (see lock_id below)
# Serialises table creation until the end of the transaction (never held longer).
LOCK_DDL: Final[str] = "SELECT pg_advisory_xact_lock(%(lock_id)s)"

# No parameters, no result. The counted permits of every key (see PERMITS below),
# created with the lease table.
CREATE_PERMITS_TABLE: Final[str] = """
CREATE TABLE IF NOT EXISTS {permits} (
    key     text PRIMARY KEY,
    lim     integer NOT NULL,
    fence   bigint NOT NULL,
    holders jsonb NOT NULL
)"""

# %(schema)s   the configured schema, or NULL for the first schema on the search path
# %(table)s    the lease table's name
# %(permits)s  the permit table's name
# returns: one row if both tables exist, else none.
TABLE_EXISTS: Final[str] = """
SELECT 1 FROM pg_catalog.pg_tables
 WHERE schemaname = coalesce(%(schema)s, current_schema())
   AND tablename IN (%(table)s, %(permits)s)
HAVING count(*) = 2"""

# %(key)s    lock key
# %(token)s  the acquiring token
# %(ttl)s    lease length in seconds (float)
# Takes the key if its row is absent, released or expired, bumping the fence under the
# row lock, so two acquirers can never both win or reuse a fence. The holding token
# re-acquiring an unexpired lease keeps its fence and gets a fresh lease (idempotent).
# returns: one row (fence) if `token` holds the key now, else no row.
ACQUIRE: Final[str] = """
INSERT INTO {table} AS held (key, token, fence, expires_at)
VALUES (%(key)s, %(token)s, 1, now() + make_interval(secs => %(ttl)s))
ON CONFLICT (key) DO UPDATE
   SET token = excluded.token,
       fence = CASE WHEN held.token = excluded.token AND held.expires_at > now()
                    THEN held.fence ELSE held.fence + 1 END,
       expires_at = excluded.expires_at
 WHERE held.token IS NULL OR held.expires_at <= now() OR held.token = excluded.token
RETURNING fence"""

# %(key)s, %(token)s  lock key, the releasing token
# %(channel)s, %(payload)s  where waiters listen, and what names this key there
# Frees the key only if `token` holds an unexpired lease, and notifies the waiters in
# the same statement (NOTIFY is delivered when it commits, never before).
# returns: one row if released, no row if `token` did not hold the key.
RELEASE: Final[str] = """
WITH freed AS (
    UPDATE {table} SET token = NULL, expires_at = now()
     WHERE key = %(key)s AND token = %(token)s AND expires_at > now()
    RETURNING key
)
SELECT pg_notify(%(channel)s, %(payload)s) FROM freed"""

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

# -- counted permits ----------------------------------------------------------------------
#
# (Templates are formatted twice, by Python then psycopg.sql: "{{{{}}}}" ends as "{}".)
# One row per key: the limit its holders use, a fence counter, and the holders as
# jsonb {token: [fencing token, lease end as epoch seconds]}. One row, so that the
# admission check and the insert are a single upsert: ON CONFLICT DO UPDATE locks the
# row and evaluates against its latest version, so concurrent acquirers can never
# both take the last permit (separate rows per permit could not give that in one
# statement under READ COMMITTED). The row outlives its holders, so fences only grow.

_NOW: Final = "extract(epoch FROM now())"
_LIVE: Final = f"(SELECT coalesce(jsonb_object_agg(h.key, h.value), '{{{{}}}}'::jsonb) FROM jsonb_each(p.holders) AS h WHERE (h.value->>1)::float8 > {_NOW})"  # noqa: E501
_LIVE_COUNT: Final = (
    f"(SELECT count(*) FROM jsonb_each(p.holders) AS h WHERE (h.value->>1)::float8 > {_NOW})"
)
_MINE: Final = f"coalesce((p.holders->%(token)s::text->>1)::float8 > {_NOW}, false)"

# %(key)s, %(token)s, %(ttl)s  as for ACQUIRE; %(limit)s  the number of permits
# Takes one of `limit` permits if one is free, dropping run-out permits in the same
# step; idempotent for a token holding an unexpired permit (a fresh lease, same fence).
# returns: one row (fencing token) if `token` holds a permit now, else no row (all
#          taken, or its holders use another limit: ask PERMIT_STATE which).
ACQUIRE_PERMIT: Final[str] = f"""
INSERT INTO {{permits}} AS p (key, lim, fence, holders)
VALUES (%(key)s, %(limit)s::integer, 1,
        jsonb_build_object(%(token)s::text, jsonb_build_array(1, {_NOW} + %(ttl)s::float8)))
ON CONFLICT (key) DO UPDATE
   SET lim = %(limit)s::integer,
       fence = CASE WHEN {_MINE} THEN p.fence ELSE p.fence + 1 END,
       holders = {_LIVE} - %(token)s::text || jsonb_build_object(
           %(token)s::text,
           jsonb_build_array(
               CASE WHEN {_MINE} THEN (p.holders->%(token)s::text->>0)::bigint
                    ELSE p.fence + 1 END,
               {_NOW} + %(ttl)s::float8))
 WHERE {_MINE}
    OR ({_LIVE_COUNT} < %(limit)s::integer AND ({_LIVE_COUNT} = 0 OR p.lim = %(limit)s::integer))
RETURNING (holders->%(token)s::text->>0)::bigint"""

# %(key)s, %(token)s  permit key, the releasing token; %(channel)s, %(payload)s  as for RELEASE
# Gives back `token`'s permit if it has not run out, and notifies the waiters.
# returns: one row if released, no row if `token` held no unexpired permit.
RELEASE_PERMIT: Final[str] = f"""
WITH freed AS (
    UPDATE {{permits}} AS p SET holders = p.holders - %(token)s::text
     WHERE p.key = %(key)s AND {_MINE}
    RETURNING p.key
)
SELECT pg_notify(%(channel)s, %(payload)s) FROM freed"""

# %(key)s, %(token)s, %(ttl)s  as for ACQUIRE_PERMIT
# returns: the number of rows updated (1 if `token`'s permit was renewed, else 0).
EXTEND_PERMIT: Final[str] = f"""
UPDATE {{permits}} AS p
   SET holders = jsonb_set(
           p.holders, ARRAY[%(token)s::text, '1'], to_jsonb({_NOW} + %(ttl)s::float8))
 WHERE p.key = %(key)s AND {_MINE}"""

# %(key)s  permit key
# returns: the tokens holding an unexpired permit, oldest fence first.
PERMIT_HOLDERS: Final[str] = f"""
SELECT h.key FROM {{permits}} AS p, jsonb_each(p.holders) AS h
 WHERE p.key = %(key)s AND (h.value->>1)::float8 > {_NOW}
 ORDER BY (h.value->>0)::bigint"""

# %(key)s  permit key
# returns: one row (live holders, their limit, seconds until the first runs out as
#          float8), or no row if the key has never had a permit.
PERMIT_STATE: Final[str] = f"""
SELECT {_LIVE_COUNT}, p.lim,
       (SELECT min((h.value->>1)::float8) FROM jsonb_each(p.holders) AS h
         WHERE (h.value->>1)::float8 > {_NOW}) - {_NOW}
  FROM {{permits}} AS p
 WHERE p.key = %(key)s"""


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
    return Statements(
        create_schema=(
            sql.SQL(CREATE_SCHEMA).format(schema=sql.Identifier(schema)) if schema else None
        ),
        create_table=compose(CREATE_TABLE),
        create_permits_table=compose(CREATE_PERMITS_TABLE),
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
    "PERMIT_HOLDERS",
    "PERMIT_STATE",
    "RELEASE",
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
