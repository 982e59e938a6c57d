"""The SQL behind PostgresStore: each primitive is one statement, timed by the server.

The lease table keeps a row per held key, and for a while (``%(retention)s``, a minute
by default) the row of a key released or expired: the release clears the row's token
and sets ``expires_at`` to its own time. Once a row's ``expires_at`` is older than the
retention (and no writer's mark is live on it), the next acquire or release of
another key deletes it (a few rows per statement, oldest first, skipping rows another
session has locked): keys that are no longer used leave nothing behind. The row also
holds the key's shared leases (see :mod:`remotelock.stores.postgres.reader_sql`).
Every statement reads the time from ``now()`` on the server (the start of the
statement's own transaction, one value for the whole statement), so client clocks
never decide whether a lease has run out.

Fencing tokens come from the table's sequence (see
:mod:`remotelock.stores.postgres.schema`): a new token is ``nextval``, and never less
than the row's last token + 1. Under the row lock an acquire sees the key's latest
token, so tokens rise while the row lives. A key whose row is gone gets ``nextval``,
drawn before the insert looks for the row; every token the key had was drawn before
its row was written, and the row was deleted only a retention after that. So an
insert gets a smaller token only if one statement lasts longer than the retention
(between drawing its token and inserting, an acquire only waits for the row, at most
its short lock wait): the retention must exceed any stall of one statement.

Three rules shape the acquire and release statements:

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
  for a lost lease. The lease row remembers that token (``released_by``) for the
  retention; the permit row remembers the last few (``released``).
- The sweep that deletes old rows never waits and never blocks a waiter: it locks only
  rows no one else has locked (``SKIP LOCKED``), never the statement's own key, runs
  after the statement's own step (an unreferenced data-modifying CTE runs last), and
  not at all in a busy acquire. ``SWEEP_BATCH`` rows per statement at most: each
  acquire or release may leave one row behind and deletes up to this many, so old
  rows never pile up.

``{table}`` in a template is the table's name, quoted by :mod:`psycopg.sql` (the
permit statements, in :mod:`remotelock.stores.postgres.permit_sql`, use ``{permits}``).
Parameters are named (``%(key)s``); the comment above each constant lists them and
the statement's result.
"""

from __future__ import annotations

from typing import Final, NamedTuple

from psycopg import sql

from .permit_sql import (
    ACQUIRE_PERMIT,
    CREATE_PERMITS_TABLE,
    EXTEND_PERMIT,
    LIST_PERMITS,
    MIGRATE_PERMITS_TABLE,
    PERMIT_HOLDERS,
    PERMIT_STATE,
    RELEASE_PERMIT,
    RELEASED_MARGIN,
    SWEEP_BATCH,
)
from .reader_sql import (
    ACQUIRE_SHARED,
    EXTEND_SHARED,
    READER_BUSY_FOR,
    RELEASE_SHARED,
    SHARED_HOLDERS,
    WRITER_BUSY_FOR,
    new_mark,
    readers_hold,
    sweep,
    writer_marked,
)
from .result_sql import CREATE_RESULTS_TABLE, GET_RESULT, PUT_RESULT
from .schema import (
    CREATE_EXPIRY_INDEX,
    CREATE_FENCES,
    CREATE_SCHEMA,
    CREATE_TABLE,
    LOCK_DDL,
    MIGRATE_PERMITS_EXPIRY,
    MIGRATE_TABLE,
    TABLE_EXISTS,
    expiry_of,
    fences_of,
    lock_id,
    permits_table,
    relations,
    results_table,
)
from .waiting import channel, payload, permit_payload

# %(key)s        lock key
# %(token)s      the acquiring token
# %(ttl)s        lease length in seconds (float)
# %(lock_wait)s  how long it may wait for the row lock, in milliseconds (text)
# %(retention)s  seconds a released or expired row is kept (float)
# `busy` reads the row from the statement's snapshot, taking no lock: while it shows
# another token's unexpired lease (or readers whose writer mark already covers them),
# the INSERT gets no row to insert, so the statement neither locks nor waits nor
# sweeps (a busy acquire costs no one anything). Otherwise the upsert takes the key if
# its row is absent, released or expired and has no live reader, deciding on the row's
# latest version under the row lock (ON CONFLICT DO UPDATE re-reads it), with a fence
# above the row's: two acquirers can never both win or reuse a fence, whatever their
# snapshots showed. The holding token re-acquiring an unexpired lease keeps its fence
# and gets a fresh lease (idempotent). A win clears the readers' leftovers and the
# writer mark (see reader_sql.py); refused by live readers, the upsert only raises
# the mark to their end + grace, and returns a NULL fence.
# An acquire clears `released_by` only if it names this very token (a token taking
# the key again is no longer "the one that released it"; another token taking the key
# leaves the record to RELEASE). set_config runs before the row to insert exists, so
# the shorter lock wait applies to every lock the upsert may wait for; a wait that
# runs out raises LockNotAvailable, which the store reports as busy. A key that never
# had readers pays a few column tests, and no subquery.
# returns: one row (fence) if `token` holds the key now; one row (NULL) if readers
#          refused it; else no row.
_READ: Final = readers_hold("held")
ACQUIRE: Final[str] = f"""
WITH busy AS (
    SELECT FROM {{table}} AS seen
     WHERE seen.key = %(key)s
       AND (seen.token <> %(token)s AND seen.expires_at > now() OR {writer_marked("seen")})
), swept AS ({sweep(" AND NOT EXISTS (SELECT FROM busy)")}
)
INSERT INTO {{table}} AS held (key, token, fence, expires_at)
SELECT %(key)s::text, %(token)s::text, nextval({{fences}}),
       now() + make_interval(secs => %(ttl)s)
 WHERE NOT EXISTS (SELECT FROM busy)
   AND set_config('lock_timeout', %(lock_wait)s, true) IS NOT NULL
ON CONFLICT (key) DO UPDATE
   SET token = CASE WHEN {_READ} THEN held.token ELSE excluded.token END,
       fence = CASE WHEN {_READ} OR held.token = excluded.token AND held.expires_at > now()
                    THEN held.fence ELSE greatest(held.fence + 1, excluded.fence) END,
       expires_at = CASE WHEN {_READ} THEN held.expires_at ELSE excluded.expires_at END,
       released_by = CASE WHEN {_READ} THEN held.released_by
                          ELSE nullif(held.released_by, excluded.token) END,
       readers = CASE WHEN {_READ} THEN held.readers END,
       writer_mark = CASE WHEN {_READ} THEN {new_mark("held")} END
 WHERE held.token IS NULL OR held.expires_at <= now() OR held.token = excluded.token
RETURNING CASE WHEN held.readers IS NULL THEN held.fence END"""

_HOLDS: Final = "(held.token = %(token)s AND held.expires_at > now())"

# %(key)s, %(token)s  lock key, the releasing token
# %(channel)s, %(payload)s  where waiters listen, and what names this key there
# %(retention)s  as for ACQUIRE
# Frees the key if `token` holds an unexpired lease, recording `token` as the one that
# released it, and notifies the waiters in the same statement (NOTIFY is delivered
# when it commits, never before). A repeated release by the token that released the
# key last also returns a row (changing nothing), so a retry after a lost reply is not
# a loss: `released_by` names a token only after its own release freed the key, and
# stops naming it when that token acquires again, another token releases the key, or
# the row is swept a retention after the release (a retry that late gets no row).
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
), swept AS ({sweep("")}
)
SELECT pg_notify(%(channel)s, %(payload)s) FROM done"""

# %(key)s, %(channel)s, %(payload)s  as for RELEASE
# Frees the key whoever holds it (an operator breaking a stuck lock), readers and
# writer mark included, and notifies. The row stays for the retention, like a released
# one (the holders' tokens never released it: a release by one gets no row). `was`
# locks the row and reads its latest version before the UPDATE overwrites it.
# returns: one row (whether an unexpired exclusive lease was there) if anything was
#          held or marked, else no row.
FORCE_RELEASE: Final[str] = """
WITH was AS (
    SELECT key, token IS NOT NULL AND expires_at > now() AS held FROM {table}
     WHERE key = %(key)s AND expires_at > now() FOR UPDATE
), freed AS (
    UPDATE {table} AS row SET token = NULL, expires_at = now(), readers = NULL,
                              writer_mark = NULL
      FROM was WHERE row.key = was.key
    RETURNING was.held
)
SELECT freed.held, pg_notify(%(channel)s, %(payload)s) FROM freed"""

# %(key)s, %(token)s, %(ttl)s  as for ACQUIRE
# Resets the lease only if `token` still holds an unexpired one.
# returns: the number of rows updated (1 or 0), as the cursor's rowcount.
EXTEND: Final[str] = """
UPDATE {table} SET expires_at = now() + make_interval(secs => %(ttl)s)
 WHERE key = %(key)s AND token = %(token)s AND expires_at > now()"""

# %(keys)s, %(tokens)s, %(ttls)s  arrays of the same length: EXTEND for each lease
# returns: (key, token) of each lease reset; the leases not named are no longer held.
# The renewal loop's batches: a hundred leases in one statement and one round trip.
EXTEND_MANY: Final[str] = """
UPDATE {table} AS held SET expires_at = now() + make_interval(secs => asked.ttl)
  FROM unnest(%(keys)s::text[], %(tokens)s::text[], %(ttls)s::float8[])
       AS asked(key, token, ttl)
 WHERE held.key = asked.key AND held.token = asked.token AND held.expires_at > now()
RETURNING held.key, held.token"""

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


class Statements(NamedTuple):
    """Every statement of one store, composed once for its table."""

    create_schema: sql.Composed | None
    create_table: sql.Composed
    create_permits_table: sql.Composed
    create: tuple[sql.Composed, ...]
    """What the creation path runs, in order: the schema, both tables, the migrations,
    the fence sequences and the expiry indexes."""
    relations: list[str]
    """The names of the sequences and indexes (``TABLE_EXISTS``'s ``%(relations)s``)."""
    acquire: sql.Composed
    release: sql.Composed
    force_release: sql.Composed
    extend: sql.Composed
    extend_many: sql.Composed
    holder: sql.Composed
    list: sql.Composed
    listen: sql.Composed
    channel: str
    acquire_permit: sql.Composed
    release_permit: sql.Composed
    extend_permit: sql.Composed
    permit_holders: sql.Composed
    permit_state: sql.Composed
    list_permits: sql.Composed
    put_result: sql.Composed
    get_result: sql.Composed
    writer_busy_for: sql.Composed
    acquire_shared: sql.Composed
    release_shared: sql.Composed
    extend_shared: sql.Composed
    shared_holders: sql.Composed
    reader_busy_for: sql.Composed


def statements(schema: str | None, table: str) -> Statements:
    """Compose the statements for ``schema.table`` (names quoted as identifiers)."""

    def ident(relation: str) -> sql.Identifier:
        return sql.Identifier(schema, relation) if schema else sql.Identifier(relation)

    def regclass(relation: str) -> sql.Literal:  # names are plain: quoting needs no escapes
        return sql.Literal(f'"{schema}"."{relation}"' if schema else f'"{relation}"')

    name, permit_name = ident(table), permits_table(table)
    permits, results = ident(permit_name), ident(results_table(table))
    fences, permit_fences = regclass(fences_of(table)), regclass(fences_of(permit_name))

    def compose(template: str) -> sql.Composed:
        return sql.SQL(template).format(
            table=name, permits=permits, results=results, fences=fences,
            permit_fences=permit_fences,
        )  # fmt: skip

    topic = channel(schema, table)
    create_schema = (
        sql.SQL(CREATE_SCHEMA).format(schema=sql.Identifier(schema)) if schema else None
    )
    tables = [
        CREATE_TABLE, CREATE_PERMITS_TABLE, CREATE_RESULTS_TABLE, MIGRATE_TABLE,
        MIGRATE_PERMITS_TABLE,
    ]  # fmt: skip
    layout = [
        sql.SQL(template).format(
            name=regclass(fences_of(owner)), sequence=ident(fences_of(owner)),
            index=sql.Identifier(expiry_of(owner)), owner=ident(owner),
        )
        for owner in (table, permit_name)
        for template in (CREATE_FENCES, CREATE_EXPIRY_INDEX)
    ] + [
        sql.SQL(CREATE_EXPIRY_INDEX).format(
            index=sql.Identifier(expiry_of(results_table(table))), owner=results
        )
    ]  # fmt: skip
    return Statements(
        create_schema=create_schema,
        create_table=compose(CREATE_TABLE),
        create_permits_table=compose(CREATE_PERMITS_TABLE),
        create=(
            *([create_schema] if create_schema else []),
            *map(compose, [*tables, MIGRATE_PERMITS_EXPIRY]),
            *layout,
        ),
        relations=relations(table),
        acquire=compose(ACQUIRE),
        release=compose(RELEASE),
        force_release=compose(FORCE_RELEASE),
        extend=compose(EXTEND),
        extend_many=compose(EXTEND_MANY),
        holder=compose(HOLDER),
        list=compose(LIST),
        listen=sql.SQL("LISTEN {}").format(sql.Identifier(topic)),
        channel=topic,
        acquire_permit=compose(ACQUIRE_PERMIT),
        release_permit=compose(RELEASE_PERMIT),
        extend_permit=compose(EXTEND_PERMIT),
        permit_holders=compose(PERMIT_HOLDERS),
        permit_state=compose(PERMIT_STATE),
        list_permits=compose(LIST_PERMITS),
        put_result=compose(PUT_RESULT),
        get_result=compose(GET_RESULT),
        writer_busy_for=compose(WRITER_BUSY_FOR),
        acquire_shared=compose(ACQUIRE_SHARED),
        release_shared=compose(RELEASE_SHARED),
        extend_shared=compose(EXTEND_SHARED),
        shared_holders=compose(SHARED_HOLDERS),
        reader_busy_for=compose(READER_BUSY_FOR),
    )


__all__ = [
    "ACQUIRE",
    "ACQUIRE_PERMIT",
    "CREATE_PERMITS_TABLE",
    "CREATE_SCHEMA",
    "CREATE_TABLE",
    "EXTEND",
    "EXTEND_MANY",
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
    "SWEEP_BATCH",
    "TABLE_EXISTS",
    "Statements",
    "channel",
    "lock_id",
    "payload",
    "permit_payload",
    "permits_table",
    "results_table",
    "statements",
]
