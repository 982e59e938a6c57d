"""The PostgreSQL stores' layout: tables, fence sequences, expiry indexes, migrations.

Statements as in :mod:`remotelock.stores.postgres.sql` (which composes them): ``{table}``
and ``{permits}`` are the quoted table names, ``{fences}`` and ``{permit_fences}`` their
sequences, ``{expiry}`` and ``{permit_expiry}`` their expiry indexes; the ``*_name``
placeholders are the same sequences as string literals (for ``to_regclass``).

Each table has a sequence of its own, behind its fencing tokens: a released key's row
is deleted once its retention passes, so no per-key counter survives to count on, and
a sequence never goes back (not across restarts either, and it depends on no clock).
The index on ``expires_at`` lets the statements find rows past their retention in a
few index steps, however large the table is.
"""

from __future__ import annotations

import hashlib
from typing import Final

# No parameters, no result. Run only when part of the layout is missing, in a
# transaction that holds LOCK_DDL, so that processes starting at once create it one
# after the other. `released_by` is the token whose release freed the key last (see
# RELEASE); NULL until a token releases it, and again once that token takes it anew.
# `readers`, `readers_released` and `writer_mark` are the key's shared leases, the
# tokens that gave one back last, and a waiting writer's mark (see reader_sql.py):
# NULL for a key that never had a reader.
CREATE_TABLE: Final[str] = """
CREATE TABLE IF NOT EXISTS {table} (
    key              text PRIMARY KEY,
    token            text,
    fence            bigint NOT NULL,
    expires_at       timestamptz NOT NULL,
    released_by      text,
    readers          jsonb,
    readers_released jsonb,
    writer_mark      timestamptz
)"""

# No parameters, no result. Run after CREATE_TABLE: brings a table made before
# `released_by` or the shared leases' columns existed up to date (a no-op for a table
# CREATE_TABLE just made; nullable columns without a default: no table rewrite).
MIGRATE_TABLE: Final[str] = """
ALTER TABLE {table} ADD COLUMN IF NOT EXISTS released_by text,
                    ADD COLUMN IF NOT EXISTS readers jsonb,
                    ADD COLUMN IF NOT EXISTS readers_released jsonb,
                    ADD COLUMN IF NOT EXISTS writer_mark timestamptz"""

# No parameters, no result. The permit table's `expires_at`: no permit of the row ends
# later (acquires and extends only push it on), so a row past it and its retention
# holds nothing. A table made before it existed gets the migration's time, and the
# sweep checks the holders themselves too (see SWEEP_PERMITS).
MIGRATE_PERMITS_EXPIRY: Final[str] = (
    "ALTER TABLE {permits} ADD COLUMN IF NOT EXISTS expires_at timestamptz NOT NULL DEFAULT now()"
)

# No parameters, no result. Creates a table's fence sequence if it is missing, and
# starts it after the largest fence the table already holds (a table made by an
# earlier version, which counted per row): nobody can use a sequence before the
# transaction creating it commits, so reading the table and setting the sequence
# cannot race with a nextval. The sequence belongs to the `fence` column: dropping the
# table drops it too.
CREATE_FENCES: Final[str] = """
DO $$
BEGIN
  IF to_regclass({name}) IS NULL THEN
    CREATE SEQUENCE {sequence} AS bigint OWNED BY {owner}.fence;
    PERFORM setval({name}, max(fence)) FROM {owner} HAVING max(fence) IS NOT NULL;
  END IF;
END
$$"""

# No parameters, no result. The index the sweeps walk (rows past their retention, oldest
# first). Built inside the creation transaction: on a large table made by an earlier
# version this blocks its writes while it builds (create it CONCURRENTLY beforehand to
# avoid that; this then finds it).
CREATE_EXPIRY_INDEX: Final[str] = "CREATE INDEX IF NOT EXISTS {index} ON {owner} (expires_at)"

# No parameters, no result. Run before CREATE_TABLE when a schema is configured.
CREATE_SCHEMA: Final[str] = "CREATE SCHEMA IF NOT EXISTS {schema}"

# %(lock_id)s  bigint naming the table (see lock_id below)
# Serialises table creation until the end of the transaction (never held longer).
LOCK_DDL: Final[str] = "SELECT pg_advisory_xact_lock(%(lock_id)s)"

# %(schema)s   the configured schema, or NULL for the first schema on the search path
# %(table)s, %(permits)s, %(results)s  the tables' names
# %(relations)s  the names of the sequences and indexes (a text array)
# returns: one row if the tables exist with the newest columns, and every sequence and
#          index exists; else none (then the creation path runs: CREATE ... IF NOT
#          EXISTS, the MIGRATE_* statements, the sequences and the indexes).
TABLE_EXISTS: Final[str] = """
SELECT 1 FROM pg_catalog.pg_namespace AS n
 WHERE n.nspname = coalesce(%(schema)s, current_schema())
   AND (SELECT count(*) FROM pg_catalog.pg_attribute AS a
          JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
         WHERE c.relnamespace = n.oid AND NOT a.attisdropped
           AND (c.relname, a.attname) IN ((%(table)s, 'released_by'),
               (%(table)s, 'readers'), (%(table)s, 'readers_released'),
               (%(table)s, 'writer_mark'), (%(permits)s, 'released'),
               (%(permits)s, 'expires_at'), (%(results)s, 'data'))) = 7
   AND (SELECT count(*) FROM pg_catalog.pg_class AS c
         WHERE c.relnamespace = n.oid AND c.relname = ANY (%(relations)s)) = 5"""


def derived(name: str, suffix: str) -> str:
    """``<name>_<suffix>``, the name of a table's companion, within 63 bytes (a long
    name is cut and made unique with a digest)."""
    full = f"{name}_{suffix}"
    if len(full) <= 63:
        return full
    return f"{name[:40]}_{hashlib.sha256(full.encode()).hexdigest()[:14]}"


def permits_table(table: str) -> str:
    """The permit table's name: the lease table's, plus ``_permits`` (within 63 bytes)."""
    return derived(table, "permits")


def results_table(table: str) -> str:
    """The kept results' table name: the lease table's, plus ``_results``."""
    return derived(table, "results")


def fences_of(table: str) -> str:
    """The name of ``table``'s fence sequence."""
    return derived(table, "fence_seq")


def expiry_of(table: str) -> str:
    """The name of ``table``'s index on ``expires_at``."""
    return derived(table, "expires")


def relations(table: str) -> list[str]:
    """The sequences and indexes of a store's tables (``%(relations)s``)."""
    permits, results = permits_table(table), results_table(table)
    return [
        fences_of(table), fences_of(permits), expiry_of(table), expiry_of(permits),
        expiry_of(results),
    ]  # fmt: skip


def lock_id(schema: str | None, table: str) -> int:
    """The advisory lock key that serialises creating this table (a signed bigint)."""
    digest = hashlib.sha256(f"remotelock:{schema or ''}.{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


__all__ = [
    "CREATE_EXPIRY_INDEX",
    "CREATE_FENCES",
    "CREATE_SCHEMA",
    "CREATE_TABLE",
    "LOCK_DDL",
    "MIGRATE_PERMITS_EXPIRY",
    "MIGRATE_TABLE",
    "TABLE_EXISTS",
    "derived",
    "expiry_of",
    "fences_of",
    "lock_id",
    "permits_table",
    "relations",
    "results_table",
]
