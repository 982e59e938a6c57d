"""The SQL behind shared (reader) leases of the PostgreSQL stores, and what the
exclusive statements check of them.

Conventions as in :mod:`remotelock.stores.postgres.sql`, which composes these with the
lock statements: ``{table}`` is the lease table's quoted name, ``{fences}`` its fence
sequence, parameters are named, and the comment above each constant lists them and
the statement's result. The rules of the lock statements hold here too (contention is
never an error; a repeated release by the token that gave its lease back returns a
row; old rows are swept by the statements of other keys).

A key's readers live in its lease row, beside the exclusive lease, so that every step
(shared or exclusive) decides on one row under its row lock: that is what makes one
statement enough under READ COMMITTED, where a statement's subqueries on other rows or
tables would read its snapshot, not what committed while it waited. Three columns:

- ``readers``: jsonb ``{token: [fencing token, lease end as epoch seconds]}`` (as the
  permit table's ``holders``), NULL once the last reader left; leases that ran out
  stay until the next step on the key drops them (or the sweep drops the row);
- ``readers_released``: jsonb array of the tokens whose ``release_shared`` gave a lease
  back most recently (the permit table's ``released``), for retries after a lost reply;
- ``writer_mark``: until when a writer refused by the readers holds new readers back
  (their last lease end + :data:`~remotelock.stores.readers.WRITER_GRACE`), NULL
  when no writer waits.

Invariants every statement keeps: a row whose ``token`` is set has neither readers nor
a mark (a reader enters only once the exclusive lease ended, and clears ``token``; a
mark is set only while readers hold the key; a winning writer clears both). While
``readers`` is set, ``expires_at`` is the end of the last live reader lease (or, once
they all ran out, of the last one), kept exact by every shared step: so "readers hold
the key" is ``readers IS NOT NULL AND expires_at > now()``, and the exclusive steps
test it, and the writer's mark, on plain columns, without a subquery (a key that never
had readers pays for nothing but those column tests). When the last reader leaves,
``readers`` goes and ``expires_at`` becomes the release's time, or the live mark's
end. The sweep takes a row a retention after ``expires_at``, and never while its mark
is live: a key whose last reader left, or whose readers ran out, or whose mark lapsed,
loses its row a retention later, like a released key. Fencing tokens come from the
lease table's sequence, above the row's last, for both kinds: one rising sequence per
key.
"""

from __future__ import annotations

from typing import Final

from ..readers import WRITER_GRACE
from .permit_sql import RELEASED_MARGIN, SWEEP_BATCH

_NOW: Final = "extract(epoch FROM now())"
_ENDS: Final = "now() + make_interval(secs => %(ttl)s)"
_PAST: Final = "now() - make_interval(secs => %(retention)s)"
_GRACE: Final = f"make_interval(secs => {WRITER_GRACE})"


def readers_hold(row: str) -> str:
    """SQL: whether an unexpired reader lease holds ``row``'s key (see the invariants)."""
    return f"({row}.readers IS NOT NULL AND {row}.expires_at > now())"


def writer_marked(row: str) -> str:
    """SQL: whether readers hold ``row``'s key and the writer mark already covers them
    (a refused writer has nothing to add: it need not lock the row)."""
    return f"({readers_hold(row)} AND {row}.writer_mark >= {row}.expires_at + {_GRACE})"


def new_mark(row: str) -> str:
    """SQL: the mark of a writer refused by ``row``'s readers: the later of the live
    mark and their end + grace."""
    return f"greatest({row}.writer_mark, {row}.expires_at + {_GRACE})"


def sweep(gate: str) -> str:
    """A CTE's body: deletes up to ``SWEEP_BATCH`` rows of other keys whose
    ``expires_at`` (the lease's end, the release's time, the last reader's end) is
    older than the retention and whose mark is not live, locking only rows no one else
    has locked (see :mod:`~remotelock.stores.postgres.sql` for why it never waits).
    ``gate`` is an extra condition (a refused acquire's skip). The outer WHERE repeats
    the tests: they are re-checked on the row's latest version."""
    return f"""
    DELETE FROM {{table}} AS gone
     WHERE gone.key IN (
           SELECT old.key FROM {{table}} AS old
            WHERE old.expires_at < {_PAST} AND old.key <> %(key)s
              AND NOT coalesce(old.writer_mark > now(), false){gate}
            ORDER BY old.expires_at LIMIT {SWEEP_BATCH}
              FOR UPDATE SKIP LOCKED)
       AND gone.expires_at < {_PAST} AND NOT coalesce(gone.writer_mark > now(), false)"""


def _mine(row: str) -> str:
    """SQL, never NULL: whether ``%(token)s`` holds an unexpired reader lease of ``row``."""
    return f"coalesce(({row}.readers->%(token)s::text->>1)::float8 > {_NOW}, false)"


def _admits(row: str) -> str:
    """SQL, never NULL: whether ``row`` lets ``%(token)s`` in as a reader: it holds a
    lease already (a retry), or no exclusive lease holds the key and no mark is live."""
    return (
        f"({_mine(row)} OR NOT coalesce({row}.token IS NOT NULL AND {row}.expires_at > now()"
        f" OR {row}.writer_mark > now(), false))"
    )


def _others(row: str, what: str) -> str:
    """SQL: ``what`` (an aggregate of ``r.key``/``r.value``) over ``row``'s unexpired
    reader leases but ``%(token)s``'s, NULL if there are none."""
    return (
        f"(SELECT {what} FROM jsonb_each({row}.readers - %(token)s::text) AS r"
        f" WHERE (r.value->>1)::float8 > {_NOW})"
    )


_OTHERS_END: Final = f"to_timestamp({_others('held', 'max((r.value->>1)::float8)')})"
_LIVE_MARK: Final = "CASE WHEN held.writer_mark > now() THEN held.writer_mark END"
_NEW_FENCE: Final = "greatest(held.fence + 1, excluded.fence)"

# %(key)s, %(token)s, %(ttl)s, %(lock_wait)s, %(retention)s  as for ACQUIRE
# Takes a shared lease of the key, dropping run-out reader leases in the same step;
# idempotent for a token holding an unexpired one (a fresh lease, same fence). As in
# ACQUIRE, `refused` reads the row from the snapshot without a lock and skips the
# upsert (the sweep, and drawing a fence) while the snapshot shows the key held
# exclusively or marked by a waiting writer; the upsert decides on the row's latest
# version under the row lock, so a reader and a writer can never both win. Entering
# clears `token` (an exclusive lease that ran out) and a lapsed mark, sets
# `expires_at` to the last live reader's end, and takes `token` off
# `readers_released`.
# returns: one row (fencing token) if `token` holds a shared lease now, else no row.
ACQUIRE_SHARED: Final[str] = f"""
WITH refused AS (
    SELECT FROM {{table}} AS seen WHERE seen.key = %(key)s AND NOT {_admits("seen")}
), swept AS ({sweep(" AND NOT EXISTS (SELECT FROM refused)")}
)
INSERT INTO {{table}} AS held (key, token, fence, expires_at, readers)
SELECT %(key)s::text, NULL::text, d.fence, {_ENDS}, jsonb_build_object(
           %(token)s::text, jsonb_build_array(d.fence, {_NOW} + %(ttl)s::float8))
  FROM (SELECT nextval({{fences}}) AS fence WHERE NOT EXISTS (SELECT FROM refused)) AS d
 WHERE set_config('lock_timeout', %(lock_wait)s, true) IS NOT NULL
ON CONFLICT (key) DO UPDATE
   SET token = NULL,
       fence = CASE WHEN {_mine("held")} THEN held.fence ELSE {_NEW_FENCE} END,
       readers = coalesce({_others("held", "jsonb_object_agg(r.key, r.value)")},
                          jsonb_build_object())
           || jsonb_build_object(%(token)s::text, jsonb_build_array(
               CASE WHEN {_mine("held")} THEN (held.readers->%(token)s::text->>0)::bigint
                    ELSE {_NEW_FENCE} END,
               {_NOW} + %(ttl)s::float8)),
       readers_released = nullif(held.readers_released - %(token)s::text, '[]'::jsonb),
       expires_at = greatest(excluded.expires_at, {_OTHERS_END}),
       writer_mark = {_LIVE_MARK}
 WHERE {_admits("held")}
RETURNING (held.readers->%(token)s::text->>0)::bigint"""

# %(key)s, %(token)s, %(channel)s, %(payload)s, %(retention)s  as for RELEASE
# Gives back `token`'s reader lease if it has not run out, appends `token` to
# `readers_released` (keeping the last ones: as many as the key had readers, plus
# RELEASED_MARGIN), and, when no live reader is left, drops `readers`, sets
# `expires_at` to now (or the live mark's end: the row goes a retention later) and
# notifies the key's waiters (the writers; readers waiting for a writer wake too,
# re-check and wait on). As RELEASE: a repeated release by a token on that record
# returns a row (a retry after a lost reply); a token whose lease ran out never gave it
# back, and gets no row.
# returns: one row if released now or before by `token`, else no row.
RELEASE_SHARED: Final[str] = f"""
WITH done AS (
    UPDATE {{table}} AS held
       SET readers = CASE WHEN {_mine("held")}
               THEN {_others("held", "jsonb_object_agg(r.key, r.value)")}
               ELSE held.readers END,
           readers_released = CASE WHEN {_mine("held")}
               THEN jsonb_path_query_array(
                   coalesce(held.readers_released, '[]'::jsonb) || to_jsonb(%(token)s::text),
                   '$[last - $keep + 1 to last]', jsonb_build_object('keep',
                   (SELECT count(*) FROM jsonb_object_keys(held.readers)) + {RELEASED_MARGIN}))
               ELSE held.readers_released END,
           expires_at = CASE WHEN {_mine("held")}
               THEN coalesce({_OTHERS_END}, greatest(now(), {_LIVE_MARK}))
               ELSE held.expires_at END,
           writer_mark = {_LIVE_MARK}
     WHERE held.key = %(key)s
       AND ({_mine("held")} OR coalesce(held.readers_released ? %(token)s::text, false))
    RETURNING held.readers IS NULL AS last
), swept AS ({sweep("")}
)
SELECT CASE WHEN done.last THEN pg_notify(%(channel)s, %(payload)s) END FROM done"""

# %(key)s, %(token)s, %(ttl)s  as for ACQUIRE_SHARED
# Resets `token`'s reader lease if it has not run out (`expires_at` follows the last).
# returns: the number of rows updated (1 or 0), as the cursor's rowcount.
EXTEND_SHARED: Final[str] = f"""
UPDATE {{table}} AS held
   SET readers = jsonb_set(
           held.readers, ARRAY[%(token)s::text, '1'], to_jsonb({_NOW} + %(ttl)s::float8)),
       expires_at = greatest({_ENDS}, {_OTHERS_END})
 WHERE held.key = %(key)s AND {_mine("held")}"""

# %(key)s  lock key
# returns: the tokens holding an unexpired reader lease, oldest fence first.
SHARED_HOLDERS: Final[str] = f"""
SELECT r.key FROM {{table}} AS held, jsonb_each(held.readers) AS r
 WHERE held.key = %(key)s AND (r.value->>1)::float8 > {_NOW}
 ORDER BY (r.value->>0)::bigint"""

# %(key)s  lock key
# For the exclusive `wait`: readers count as holders.
# returns: one row (seconds until the exclusive lease or the readers' leases end, as
#          float8; NULL if neither is there), or no row if the key has no row.
WRITER_BUSY_FOR: Final[str] = """
SELECT CASE WHEN token IS NOT NULL OR readers IS NOT NULL
            THEN EXTRACT(EPOCH FROM expires_at - now())::float8 END
  FROM {table}
 WHERE key = %(key)s"""

# %(key)s  lock key
# For `wait_shared`: a reader waits for the exclusive lease and a writer's mark.
# returns: one row (seconds until both end, as float8; NULL if neither is there), or
#          no row if the key has no row.
READER_BUSY_FOR: Final[str] = """
SELECT EXTRACT(EPOCH FROM greatest(
           CASE WHEN token IS NOT NULL THEN expires_at END, writer_mark) - now())::float8
  FROM {table}
 WHERE key = %(key)s"""


__all__ = [
    "ACQUIRE_SHARED",
    "EXTEND_SHARED",
    "READER_BUSY_FOR",
    "RELEASE_SHARED",
    "SHARED_HOLDERS",
    "WRITER_BUSY_FOR",
    "new_mark",
    "readers_hold",
    "sweep",
    "writer_marked",
]
