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

# One row per key: the limit its holders use, the last fencing token, the holders as
# jsonb {token: [fencing token, lease end as epoch seconds]}, `released`, the tokens
# whose release gave a permit back most recently (a jsonb array, oldest first, the
# last `lim` + RELEASED_MARGIN of them), and `expires_at`, a time no permit of the row
# outlives. One row, so that the admission check and the insert are a single upsert:
# ON CONFLICT DO UPDATE locks the row and evaluates against its latest version, so
# concurrent acquirers can never both take the last permit (separate rows per permit
# could not give that in one statement under READ COMMITTED). Fencing tokens come from
# the permit table's sequence as the lock's come from theirs (see sql.py), and a row
# with no permit left is deleted a retention after `expires_at`, as lock rows are.
# (Templates are formatted twice, by Python then psycopg.sql: "{{{{}}}}" ends as "{}".)

SWEEP_BATCH: Final = 16
"""Rows past their retention that one statement deletes at most (see sql.py)."""

# No parameters, no result. Created with the lease table (see CREATE_TABLE).
CREATE_PERMITS_TABLE: Final[str] = """
CREATE TABLE IF NOT EXISTS {permits} (
    key        text PRIMARY KEY,
    lim        integer NOT NULL,
    fence      bigint NOT NULL,
    holders    jsonb NOT NULL,
    released   jsonb NOT NULL DEFAULT '[]'::jsonb,
    expires_at timestamptz NOT NULL DEFAULT now()
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

_PAST: Final = "now() - make_interval(secs => %(retention)s)"
_ENDS: Final = "now() + make_interval(secs => %(ttl)s)"

# A CTE's body, as sql.py's sweep of lock rows: deletes up to SWEEP_BATCH rows of other
# keys past `expires_at` and the retention, whose holders (checked too: a row written
# by an earlier version has no true `expires_at`) all ended a retention ago.
_SWEEP: Final = f"""
    DELETE FROM {{{{permits}}}} AS gone
     WHERE gone.key IN (
           SELECT old.key FROM {{{{permits}}}} AS old
            WHERE old.expires_at < {_PAST} AND old.key <> %(key)s{{gate}}
            ORDER BY old.expires_at LIMIT {SWEEP_BATCH}
              FOR UPDATE SKIP LOCKED)
       AND gone.expires_at < {_PAST}
       AND NOT EXISTS (
           SELECT FROM jsonb_each(gone.holders) AS h
            WHERE (h.value->>1)::float8 > extract(epoch FROM {_PAST}))"""

# %(key)s, %(token)s, %(ttl)s, %(lock_wait)s, %(retention)s  as for ACQUIRE;
# %(limit)s  the number of permits
# Takes one of `limit` permits if one is free, dropping run-out permits in the same
# step; idempotent for a token holding an unexpired permit (a fresh lease, same fence).
# As in ACQUIRE, `refused` reads the row from the snapshot without a lock and skips
# the upsert (and the sweep, and drawing a token) while the snapshot shows no room for
# `token`; the upsert then decides on the latest version under the row lock, so two
# acquirers can never both take the last permit. Taking a permit takes `token` off
# the `released` record.
# returns: one row (fencing token) if `token` holds a permit now, else no row (all
#          taken, or its holders use another limit: ask PERMIT_STATE which).
_NEW_FENCE: Final = "greatest(p.fence + 1, excluded.fence)"
ACQUIRE_PERMIT: Final[str] = f"""
WITH refused AS (
    SELECT FROM {{permits}} AS p WHERE p.key = %(key)s AND NOT {_ADMITS}
), swept AS ({_SWEEP.format(gate=" AND NOT EXISTS (SELECT FROM refused)")}
)
INSERT INTO {{permits}} AS p (key, lim, fence, holders, released, expires_at)
SELECT %(key)s::text, %(limit)s::integer, d.fence, jsonb_build_object(
           %(token)s::text, jsonb_build_array(d.fence, {_NOW} + %(ttl)s::float8)),
       '[]'::jsonb, {_ENDS}
  FROM (SELECT nextval({{permit_fences}}) AS fence WHERE NOT EXISTS (SELECT FROM refused)) AS d
 WHERE set_config('lock_timeout', %(lock_wait)s, true) IS NOT NULL
ON CONFLICT (key) DO UPDATE
   SET lim = %(limit)s::integer,
       fence = CASE WHEN {_MINE} THEN p.fence ELSE {_NEW_FENCE} END,
       holders = {_LIVE} - %(token)s::text || jsonb_build_object(
           %(token)s::text,
           jsonb_build_array(
               CASE WHEN {_MINE} THEN (p.holders->%(token)s::text->>0)::bigint
                    ELSE {_NEW_FENCE} END,
               {_NOW} + %(ttl)s::float8)),
       released = p.released - %(token)s::text,
       expires_at = greatest(p.expires_at, excluded.expires_at)
 WHERE {_ADMITS}
RETURNING (p.holders->%(token)s::text->>0)::bigint"""

# %(key)s, %(token)s  permit key, the releasing token; %(channel)s, %(payload)s,
# %(retention)s  as for RELEASE
# Gives back `token`'s permit if it has not run out, appends `token` to `released`
# (keeping the last `lim` + RELEASED_MARGIN), and notifies the waiters; the last live
# permit given back sets `expires_at` to now (as a lock's release does), so the row
# goes a retention later. As RELEASE: a repeated release by a token on that record
# returns a row and changes nothing, so a retry after a lost reply is not a loss
# (until the row is swept, a retention after its release at the earliest); a token
# whose permit ran out never gave it back, so it is not on the record and gets no row.
# One UPDATE decides both cases on the row's latest version under the row lock.
# returns: one row if released now or before by `token`, else no row.
RELEASE_PERMIT: Final[str] = f"""
WITH done AS (
    UPDATE {{permits}} AS p
       SET holders = p.holders - %(token)s::text,
           released = CASE WHEN {_MINE}
               THEN jsonb_path_query_array(
                   p.released || to_jsonb(%(token)s::text), '$[last - $keep + 1 to last]',
                   jsonb_build_object('keep', p.lim + {RELEASED_MARGIN}))
               ELSE p.released END,
           expires_at = CASE WHEN {_MINE} AND NOT EXISTS (
                   SELECT FROM jsonb_each(p.holders - %(token)s::text) AS h
                    WHERE (h.value->>1)::float8 > {_NOW})
               THEN now() ELSE p.expires_at END
     WHERE p.key = %(key)s AND ({_MINE} OR p.released ? %(token)s::text)
    RETURNING p.key
), swept AS ({_SWEEP.format(gate="")}
)
SELECT pg_notify(%(channel)s, %(payload)s) FROM done"""

# %(key)s, %(token)s, %(ttl)s  as for ACQUIRE_PERMIT
# returns: the number of rows updated (1 if `token`'s permit was renewed, else 0).
EXTEND_PERMIT: Final[str] = f"""
UPDATE {{permits}} AS p
   SET holders = jsonb_set(
           p.holders, ARRAY[%(token)s::text, '1'], to_jsonb({_NOW} + %(ttl)s::float8)),
       expires_at = greatest(p.expires_at, {_ENDS})
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


# %(prefix)s  key prefix
# returns: (key, limit, token, fencing token, seconds left) for every unexpired permit
#          holder of the keys starting with the prefix, by key and fence
LIST_PERMITS: Final[str] = f"""
SELECT p.key, p.lim, h.key, (h.value->>0)::bigint, (h.value->>1)::float8 - {_NOW}
  FROM {{permits}} AS p, jsonb_each(p.holders) AS h
 WHERE starts_with(p.key, %(prefix)s) AND (h.value->>1)::float8 > {_NOW}
 ORDER BY p.key, 4"""


__all__ = [
    "ACQUIRE_PERMIT",
    "CREATE_PERMITS_TABLE",
    "EXTEND_PERMIT",
    "LIST_PERMITS",
    "MIGRATE_PERMITS_TABLE",
    "PERMIT_HOLDERS",
    "PERMIT_STATE",
    "RELEASED_MARGIN",
    "RELEASE_PERMIT",
    "SWEEP_BATCH",
    "busy_for",
    "refused",
]
