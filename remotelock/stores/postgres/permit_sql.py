"""The SQL behind counted permits (``limit=N``) of the PostgreSQL stores.

Conventions as in :mod:`remotelock.stores.postgres.sql`, which composes these with
the lock statements: ``{permits}`` is the permit table's quoted name, parameters are
named, and the comment above each constant lists them and the statement's result.
The rules of the lock statements hold here too (contention is never an error; a
repeated release by the token that gave its permit back returns a row).
:func:`refused` and :func:`busy_for` read ``PERMIT_STATE``'s answer, for the sync and
async stores alike.
"""

from __future__ import annotations

from typing import Any, Final

from ...errors import LimitConflict

# One row per key: the limit its holders use, a fence counter, the holders as jsonb
# {token: [fencing token, lease end as epoch seconds]}, and `released`, the tokens
# whose release gave a permit back most recently (a jsonb array, oldest first, the
# last `lim` + RELEASED_MARGIN of them). One row, so that the admission check and the
# insert are a single upsert: ON CONFLICT DO UPDATE locks the row and evaluates
# against its latest version, so concurrent acquirers can never both take the last
# permit (separate rows per permit could not give that in one statement under READ
# COMMITTED). The row outlives its holders, so fences only grow.
# (Templates are formatted twice, by Python then psycopg.sql: "{{{{}}}}" ends as "{}".)

# No parameters, no result. Created with the lease table (see CREATE_TABLE).
CREATE_PERMITS_TABLE: Final[str] = """
CREATE TABLE IF NOT EXISTS {permits} (
    key      text PRIMARY KEY,
    lim      integer NOT NULL,
    fence    bigint NOT NULL,
    holders  jsonb NOT NULL,
    released jsonb NOT NULL DEFAULT '[]'::jsonb
)"""

# No parameters, no result. As MIGRATE_TABLE, for the permit table.
MIGRATE_PERMITS_TABLE: Final[str] = (
    "ALTER TABLE {permits} ADD COLUMN IF NOT EXISTS released jsonb NOT NULL DEFAULT '[]'::jsonb"
)

_NOW: Final = "extract(epoch FROM now())"
_LIVE: Final = f"(SELECT coalesce(jsonb_object_agg(h.key, h.value), '{{{{}}}}'::jsonb) FROM jsonb_each(p.holders) AS h WHERE (h.value->>1)::float8 > {_NOW})"  # noqa: E501
_LIVE_COUNT: Final = (
    f"(SELECT count(*) FROM jsonb_each(p.holders) AS h WHERE (h.value->>1)::float8 > {_NOW})"
)
_MINE: Final = f"coalesce((p.holders->%(token)s::text->>1)::float8 > {_NOW}, false)"
# Whether row `p` admits `token`: it holds a permit already, or one is free and the
# live holders (if any) use the same limit. Never NULL, so NOT (...) is its opposite.
_ADMITS: Final = (
    f"({_MINE} OR ({_LIVE_COUNT} < %(limit)s::integer"
    f" AND ({_LIVE_COUNT} = 0 OR p.lim = %(limit)s::integer)))"
)

RELEASED_MARGIN: Final = 32
"""Released tokens a permit row remembers beyond its limit: in the moment a retry of a
release takes, each other holder can give its permit back about once, plus this."""

# %(key)s, %(token)s, %(ttl)s, %(lock_wait)s  as for ACQUIRE; %(limit)s  the number of permits
# Takes one of `limit` permits if one is free, dropping run-out permits in the same
# step; idempotent for a token holding an unexpired permit (a fresh lease, same fence).
# As in ACQUIRE, `refused` reads the row from the snapshot without a lock and skips
# the upsert while the snapshot shows no room for `token`; the upsert then decides on
# the latest version under the row lock, so two acquirers can never both take the
# last permit. Taking a permit takes `token` off the `released` record.
# returns: one row (fencing token) if `token` holds a permit now, else no row (all
#          taken, or its holders use another limit: ask PERMIT_STATE which).
ACQUIRE_PERMIT: Final[str] = f"""
WITH refused AS (
    SELECT FROM {{permits}} AS p WHERE p.key = %(key)s AND NOT {_ADMITS}
)
INSERT INTO {{permits}} AS p (key, lim, fence, holders, released)
SELECT %(key)s::text, %(limit)s::integer, 1,
       jsonb_build_object(%(token)s::text, jsonb_build_array(1, {_NOW} + %(ttl)s::float8)),
       '[]'::jsonb
 WHERE NOT EXISTS (SELECT FROM refused)
   AND set_config('lock_timeout', %(lock_wait)s, true) IS NOT NULL
ON CONFLICT (key) DO UPDATE
   SET lim = %(limit)s::integer,
       fence = CASE WHEN {_MINE} THEN p.fence ELSE p.fence + 1 END,
       holders = {_LIVE} - %(token)s::text || jsonb_build_object(
           %(token)s::text,
           jsonb_build_array(
               CASE WHEN {_MINE} THEN (p.holders->%(token)s::text->>0)::bigint
                    ELSE p.fence + 1 END,
               {_NOW} + %(ttl)s::float8)),
       released = p.released - %(token)s::text
 WHERE {_ADMITS}
RETURNING (p.holders->%(token)s::text->>0)::bigint"""

# %(key)s, %(token)s  permit key, the releasing token; %(channel)s, %(payload)s  as for RELEASE
# Gives back `token`'s permit if it has not run out, appends `token` to `released`
# (keeping the last `lim` + RELEASED_MARGIN), and notifies the waiters. As RELEASE: a
# repeated release by a token on that record returns a row and changes nothing, so a
# retry after a lost reply is not a loss; a token whose permit ran out never gave it
# back, so it is not on the record and gets no row. One UPDATE decides both cases on
# the row's latest version under the row lock.
# returns: one row if released now or before by `token`, else no row.
RELEASE_PERMIT: Final[str] = f"""
WITH done AS (
    UPDATE {{permits}} AS p
       SET holders = p.holders - %(token)s::text,
           released = CASE WHEN {_MINE}
               THEN jsonb_path_query_array(
                   p.released || to_jsonb(%(token)s::text), '$[last - $keep + 1 to last]',
                   jsonb_build_object('keep', p.lim + {RELEASED_MARGIN}))
               ELSE p.released END
     WHERE p.key = %(key)s AND ({_MINE} OR p.released ? %(token)s::text)
    RETURNING p.key
)
SELECT pg_notify(%(channel)s, %(payload)s) FROM done"""

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


def refused(state: tuple[Any, ...] | None, key: str, limit: int) -> float | None:
    """After a refused acquire, from ``PERMIT_STATE``'s row: seconds until a permit
    runs out, or :class:`~remotelock.errors.LimitConflict` if the live holders use
    another limit."""
    if state is None:
        return None
    live, held_limit, first_ends_in = state
    if live and held_limit != limit:
        raise LimitConflict(key, int(held_limit), limit)
    return None if first_ends_in is None else float(first_ends_in)


def busy_for(state: tuple[Any, ...] | None) -> float | None:
    """From ``PERMIT_STATE``'s row: seconds until a permit of a full set runs out, or
    ``None`` if one is free."""
    if state is None:
        return None
    live, limit, first_ends_in = state
    if not live or live < limit or first_ends_in is None:
        return None
    return float(first_ends_in)


__all__ = [
    "ACQUIRE_PERMIT",
    "CREATE_PERMITS_TABLE",
    "EXTEND_PERMIT",
    "MIGRATE_PERMITS_TABLE",
    "PERMIT_HOLDERS",
    "PERMIT_STATE",
    "RELEASED_MARGIN",
    "RELEASE_PERMIT",
    "busy_for",
    "refused",
]
