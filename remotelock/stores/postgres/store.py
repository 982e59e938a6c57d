# Generated from remotelock/stores/postgres/aio.py by tools/unasync.py.
# Do not edit: edit the source, then run the tool.
"""PostgresStore: locks in a PostgreSQL lease table, fenced, woken by LISTEN/NOTIFY.

Each primitive is one SQL statement (see :mod:`remotelock.stores.postgres.sql` for
every statement, its parameters and its result). The server's clock decides expiry;
a release notifies waiters in the same statement.

The steps are written once, for asyncio, in :mod:`remotelock.stores.postgres.aio`;
``tools/unasync.py`` writes the sync :mod:`remotelock.stores.postgres.store` from it.
What really differs between the two sides (connections kept per process or per event
loop, a listener thread or task) is hand-written, under the same names, in
:mod:`remotelock.stores.postgres.connections` and
:mod:`remotelock.stores.postgres.connections_aio`.
"""

# The generated module's first line names its source and runs past the line limit
# (in the source the rule is unused, hence RUF100).

from __future__ import annotations

import time
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from ..base import LockInfo
from . import sql as q
from .busy import MAINTENANCE, acquire_params
from .common import CAPABILITIES, is_broken, millis, parse_url, translate
from .connections import Conn, Connected, Run
from .guard import GUARD, GUARD_GRACE
from .permits import PostgresPermits
from .queries import Row, fetch_all, fetch_one, fetch_or_busy, rowcount
from .readers import PostgresReaders
from .result_sql import MAX_RESULT_BYTES
from .waiting import pause

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")


class PostgresStore(PostgresReaders, PostgresPermits, Connected):
    """Locks in a PostgreSQL table: exclusion across processes and machines.

    - URL: ``postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]``
      (``postgres://`` too; any libpq parameter, e.g. ``sslmode``, ``host=/run/postgresql``
      for a Unix socket). remotelock's own query options: ``table`` (default
      ``remotelock_locks``), ``schema`` (default: the first schema on the search path;
      created if missing), ``timeout`` (seconds any one step may take, default 5),
      ``pool_size`` (connections per process, and per event loop for the async store,
      default 4, one of them kept for releases and renewals; a server with no slot
      left is waited out within ``timeout``),
      ``listen`` (``false`` turns wake-ups into polling), ``listen_url``
      (where to LISTEN, see below), ``retention`` (seconds a released or expired row
      stays, default 60, or twice ``timeout`` if longer; at least 1). Keyword arguments
      override the query string, for libpq parameters too.
    - Or pass a ``psycopg.Connection`` (used by one step at a time, never
      replaced), a ``psycopg_pool.ConnectionPool``, or ``conninfo="dbname=app ..."``.
      A sync store built from a URL or conninfo hands out its async twin, with
      connections of its own, from ``as_async()``.
    - Layout: a row per held key, created on first use (idempotently; an advisory
      transaction lock makes many processes starting at once take turns)::

          CREATE TABLE remotelock_locks (
              key         text PRIMARY KEY,
              token       text,               -- NULL once released
              fence       bigint NOT NULL,    -- the key's last fencing token
              expires_at  timestamptz NOT NULL,  -- the lease's end, or the release's time
              released_by text,               -- the token whose release freed it last
              readers          jsonb,         -- shared leases: {token: [fence, end]}
              readers_released jsonb,         -- the tokens that gave one back last
              writer_mark      timestamptz    -- a refused writer holds readers back
          )

      plus a sequence ``<table>_fence_seq`` behind the fencing tokens and an index
      ``<table>_expires`` on ``expires_at`` (the permit table ``<table>_permits`` has
      its own). A release clears ``token`` and keeps the row for ``retention``; then
      the acquires and releases of other keys delete it (16 rows per statement at
      most, oldest first, skipping rows locked elsewhere), and expired rows alike: keys
      no longer used leave no rows. Fencing tokens come from the sequence (never less
      than the row's last + 1), so they keep rising once a row is gone, also a row
      deleted by hand; they rise per key, with gaps. The store's role needs
      ``SELECT, INSERT, UPDATE, DELETE`` on both tables and ``USAGE`` on both
      sequences. A table made by an earlier version gets the new column, sequences
      (started after its largest fence) and indexes on first use (which needs the
      table's owner); processes of an earlier version must not share a table with
      this one: they count fences per row, and would restart a deleted row's at 1.
    - Shared leases (:class:`~remotelock.stores.readers.AsyncSharedStore`) live in the
      key's row beside the exclusive one, so every step stays one statement, with
      fences from the same sequence (see :mod:`remotelock.stores.postgres.reader_sql`).
    - Contention is never an error: an acquire that finds the key held reads the row
      without locking it, and one that finds the key being taken at that very moment
      waits at most half of ``timeout`` (0.5 s at most) for the row, then reports the
      key busy, like any other busy key.
    - Releases are idempotent for the token that released the key: a repeated release
      by that token returns ``True`` (until the same token takes the key again, another
      token releases it, or the row is deleted after ``retention``), so a retry after
      a lost reply (the release ran, the
      connection broke before the answer came) is not reported as a lost lock. A
      token whose lease expired, was taken over or was force-released still gets
      ``False``. Permits keep the same rule for the last few tokens that gave one back.
    - Clock: the server's ``now()``; client clocks never decide expiry.
    - Wake-ups: a release runs ``pg_notify('<table>', key)`` in its own statement
      (one channel per table, the key as payload, a digest for keys over 1000 bytes).
      Each store keeps one listening connection (per process: a background thread; per
      event loop for the async store: a task), started by the first ``wait``; a waiter
      subscribes before it re-reads the lock, so a release can never slip between the
      two, and never sleeps past the holder's remaining lease. ``listen_url`` points
      the listener elsewhere: LISTEN needs a session of its own, so behind a
      transaction-mode pooler (PgBouncer ``pool_mode=transaction``) notifications are
      silently lost; point it at the server or a session-mode pool, or set
      ``listen=false``. Either way a waiter still wakes by its ``wait`` strategy and
      the holder's lease end.
    - Failures: every step is bounded. Connections the store opens get
      ``statement_timeout`` and ``lock_timeout`` of ``timeout`` as startup options
      (a connection or pool passed in gets them with ``SET``), ``connect_timeout`` of
      ``timeout`` (at least 2 s), and a client-side guard drops a connection whose
      server does not answer within ``timeout`` + 2 s. Refused, lost or timed-out
      connections raise :class:`~remotelock.errors.StoreUnavailable`; a connection
      found dead is replaced and the step retried once, so after a server restart the
      same store works again.
    - Closing: the store's ``close()`` closes idle connections and stops listening
      (the store reconnects if used again). The async store does so for the event loop
      it runs on, so call it on each loop that used the store, before that loop ends.

    .. code-block:: python

        store = PostgresStore.from_url("postgresql://app@db/app?table=locks&timeout=3")
    """

    capabilities: frozenset[str] = CAPABILITIES

    def __init__(
        self,
        connection: Any = None,
        *,
        conninfo: str | None = None,
        table: str = "remotelock_locks",
        schema: str | None = None,
        timeout: float = 5.0,
        pool_size: int = 4,
        listen: bool = True,
        listen_url: str | None = None,
        retention: float | None = None,
    ) -> None:
        self._configure(
            connection,
            conninfo,
            table=table,
            schema=schema,
            timeout=timeout,
            pool_size=pool_size,
            listen=listen,
            listen_url=listen_url,
            retention=retention,
        )
        self._connect(connection)
        self._schema_ready = False
        self._configured: weakref.WeakSet[Conn] = weakref.WeakSet()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a store from a URL (see the class docs); connects on first use only."""
        conninfo, own = parse_url(url, dict(options))
        return cls(conninfo=conninfo, **own._asdict())

    # -- running one step ---------------------------------------------------------------

    def _step(self, step: str, key: str, run: Run[T]) -> T:
        """Run one statement on a connection, bounded, translated, retried once if the
        connection turns out dead (a server restart leaves stale idle connections)."""
        source = self._source
        retried = False
        with translate(self, step, key):
            while True:
                conn = source.take(step in MAINTENANCE)
                fired = False
                try:
                    watch = GUARD.watch(conn, self.timeout + GUARD_GRACE)
                    try:
                        self._prepare(conn)
                        result = run(conn)
                        if not conn.autocommit:
                            conn.commit()
                    finally:
                        fired = GUARD.done(watch)
                except psycopg.Error as exc:
                    source.give(conn, ok=False)
                    if fired:
                        raise psycopg.OperationalError(
                            f"no reply from PostgreSQL within {self.timeout + GUARD_GRACE:g} s"
                        ) from exc
                    if not retried and source.reusable and is_broken(exc, conn):
                        retried = True
                        source.flush()
                        continue
                    raise
                except BaseException:
                    source.give(conn, ok=False)
                    raise
                source.give(conn, ok=not fired)
                return result

    def _prepare(self, conn: Conn) -> None:
        """Set the timeouts on a connection given to the store; create the tables once
        (concurrent first steps may both check: creating is idempotent, and serialised
        on the server by an advisory lock)."""
        if self._conninfo is None and conn not in self._configured:
            conn.execute(q.SET_TIMEOUTS, {"timeout": str(millis(self.timeout))})
            if not conn.autocommit:
                conn.commit()
            self._configured.add(conn)
        if not self._schema_ready:
            self._create_tables(conn)
            self._schema_ready = True

    def _create_tables(self, conn: Conn) -> None:
        params = {
            "schema": self.schema,
            "table": self.table,
            "permits": q.permits_table(self.table),
            "results": q.results_table(self.table),
            "relations": self._sql.relations,
        }
        with conn.transaction():
            conn.execute(q.LOCK_DDL, {"lock_id": q.lock_id(self.schema, self.table)})
            if fetch_one(conn, q.TABLE_EXISTS, params) is None:
                for statement in self._sql.create:  # creates, or migrates an older table
                    conn.execute(statement)

    # -- the Store protocol -------------------------------------------------------------

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """Take ``key`` if its row is absent, released or expired, and no reader holds
        it (one statement; refused by readers, it marks the key for this writer).

        ``None`` also when the key was being taken at that moment and the row lock did
        not come within the short lock wait: contention, never an outage.
        """
        params = acquire_params(key, token, ttl, self.timeout, retention=self.retention)
        self._listener.tried(key, q.payload)  # a woken waiter used its wake-up
        row = self._step("acquire", key, lambda c: fetch_or_busy(c, self._sql.acquire, params))
        return None if row is None or row[0] is None else int(row[0])

    def release(self, key: str, token: str) -> bool:
        """Free ``key`` if ``token`` holds an unexpired lease, and notify its waiters;
        ``True`` too if ``token``'s own release freed it before (a retried release)."""
        params = self._notice(key, token=token, retention=self.retention)
        return self._changed("release", key, params)

    def extend(self, key: str, token: str, ttl: float) -> bool:
        """Reset the lease if ``token`` still holds ``key``."""
        return self._changed("extend", key, {"key": key, "token": token, "ttl": float(ttl)})

    def _changed(self, step: str, key: str, params: dict[str, Any]) -> bool:
        """Run the statement named ``step``: whether it changed a row (the lock steps,
        the permit steps and the shared steps that give back or renew a lease)."""
        statement = getattr(self._sql, step)
        return self._step(step, key, lambda c: rowcount(c, statement, params)) > 0

    def _tokens(self, step: str, key: str) -> list[str]:
        """Run the statement named ``step`` for ``key``: the tokens it lists."""
        statement = getattr(self._sql, step)
        rows = self._step(step, key, lambda c: fetch_all(c, statement, {"key": key}))
        return [str(row[0]) for row in rows]

    def extend_many(self, leases: Sequence[tuple[str, str, float]]) -> list[bool]:
        """:meth:`extend` for each ``(key, token, ttl)`` in one statement (one round
        trip and one connection for the renewal loop's batch of up to a hundred)."""
        if not leases:
            return []
        params = {
            "keys": [key for key, _, _ in leases],
            "tokens": [token for _, token, _ in leases],
            "ttls": [float(ttl) for _, _, ttl in leases],
        }
        rows = self._step(
            "extend", leases[0][0], lambda c: fetch_all(c, self._sql.extend_many, params)
        )
        reset = {(str(key), str(token)) for key, token in rows}
        return [(key, token) in reset for key, token, _ in leases]

    def owner(self, key: str) -> str | None:
        """The token holding ``key``, or ``None``."""
        row = self._holder("owner", key)
        return None if row is None else str(row[0])

    def wait(self, key: str, timeout: float) -> None:
        """Sleep until a release of ``key`` is notified (the exclusive lease's, or the
        last reader's), its lease and its readers' leases end, or ``timeout``."""
        self._wait_for("wait", key, self._sql.writer_busy_for, timeout)

    def _holder(self, step: str, key: str) -> Row | None:
        params = {"key": key}
        return self._step(step, key, lambda c: fetch_one(c, self._sql.holder, params))

    def _wait_for(
        self, step: str, key: str, statement: Any, timeout: float, every: bool = False
    ) -> None:
        """Sleep until a release of ``key`` is notified, ``statement`` (the seconds until
        the key frees for this kind of waiter) runs out, or ``timeout``. A waiter that
        subscribed while the listener was still connecting (a store's first wait) sleeps
        in short slices, reading the lock again after each, until LISTEN is active: so
        even that wait never ends before the key frees or a release is notified."""
        deadline, params = time.monotonic() + timeout, {"key": key}
        with self._listener.waiter(q.payload(key), self.listen, every) as woken:
            while True:
                row = self._step(step, key, lambda c: fetch_one(c, statement, params))
                if row is None or row[0] is None or row[0] <= 0:
                    return
                warming = woken.warming
                woken.wait(pause(float(row[0]), woken.listening, deadline))
                if not warming or woken.woken() or time.monotonic() >= deadline:
                    return
                woken.catch_up()

    def _notice(self, key: str, **params: Any) -> dict[str, Any]:
        return {"key": key, "channel": self._sql.channel, "payload": q.payload(key), **params}

    # -- kept results (single_flight) -----------------------------------------------------

    max_result_bytes = MAX_RESULT_BYTES

    def put_result(self, key: str, data: bytes, ttl: float) -> None:
        """Keep ``data`` as ``key``'s value for ``ttl`` seconds (one upsert)."""
        params = {"key": key, "data": bytes(data), "ttl": float(ttl)}
        self._step("put_result", key, lambda c: rowcount(c, self._sql.put_result, params))

    def get_result(self, key: str) -> bytes | None:
        """``key``'s value, or ``None`` if it has none (or it ran out)."""
        params = {"key": key}
        row = self._step("get_result", key, lambda c: fetch_one(c, self._sql.get_result, params))
        return None if row is None else bytes(row[0])

    # -- admin ----------------------------------------------------------------------------

    def force_release(self, key: str) -> bool:
        """Free ``key`` whoever holds it, readers and writer mark too; ``True`` if an
        unexpired exclusive lease was there."""
        params = self._notice(key)
        statement = self._sql.force_release
        row = self._step("force_release", key, lambda c: fetch_one(c, statement, params))
        return row is not None and bool(row[0])

    def iter_locks(self, prefix: str = "") -> Iterator[LockInfo]:
        """The unexpired locks whose key starts with ``prefix`` (one query, a snapshot
        taken as the iteration starts)."""
        params = {"prefix": prefix}
        rows = self._step("iter_locks", prefix, lambda c: fetch_all(c, self._sql.list, params))
        for r in rows:
            yield LockInfo(str(r[0]), str(r[1]), int(r[2]), float(r[3]))

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close idle connections and stop listening (the store reconnects if used again).
        A connection or pool passed in is left open: it belongs to the caller."""
        self._listener.close()
        self._source.close()

    def __repr__(self) -> str:
        where = f"{self.schema}.{self.table}" if self.schema else self.table
        return f"{type(self).__name__}(table={where!r})"


__all__ = ["PostgresStore"]
