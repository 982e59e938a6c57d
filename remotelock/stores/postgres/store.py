"""PostgresStore: locks in a PostgreSQL lease table, fenced, woken by LISTEN/NOTIFY.

Each primitive is one SQL statement (see :mod:`remotelock.stores.postgres.sql` for
every statement, its parameters and its result). The server's clock decides expiry;
a release notifies waiters in the same statement. The async twin lives in
:mod:`remotelock.stores.postgres_async` and is importable from here too.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from ..base import (
    AsyncStore,
    LockInfo,
)
from ..shared.threaded import threaded
from . import sql as q
from .busy import acquire_params, fetch_or_busy
from .common import (
    CAPABILITIES,
    GUARD,
    GUARD_GRACE,
    POLL_WITHOUT_LISTENER,
    Configured,
    checked_conninfo,
    is_broken,
    millis,
    not_a_connection,
    parse_url,
    server_conninfo,
    translate,
)
from .connections import GivenConnection, GivenPool, Listener, OwnConnections, Source
from .permits import PostgresPermits

if TYPE_CHECKING:
    from typing_extensions import Self

T = TypeVar("T")


class PostgresStore(PostgresPermits, Configured):
    """Locks in a PostgreSQL table: exclusion across processes and machines.

    - URL: ``postgresql://[user[:password]@][host][:port][/dbname][?param=value&...]``
      (``postgres://`` too; any libpq parameter, e.g. ``sslmode``, ``host=/run/postgresql``
      for a Unix socket). remotelock's own query options: ``table`` (default
      ``remotelock_locks``), ``schema`` (default: the first schema on the search path;
      created if missing), ``timeout`` (seconds any one step may take, default 5),
      ``pool_size`` (connections per process, default 10), ``listen`` (``false`` turns
      wake-ups into polling), ``listen_url`` (where to LISTEN, see below). Keyword
      arguments override the query string, for libpq parameters too.
    - Or pass a ``psycopg.Connection`` (used by one thread at a time, never replaced),
      a ``psycopg_pool.ConnectionPool``, or ``conninfo="dbname=app ..."``.
    - Layout: one row per key ever locked, created on first use (idempotently; an
      advisory transaction lock makes many processes starting at once take turns)::

          CREATE TABLE remotelock_locks (
              key         text PRIMARY KEY,
              token       text,               -- NULL once released
              fence       bigint NOT NULL,    -- the last fencing token handed out
              expires_at  timestamptz NOT NULL,
              released_by text                -- the token whose release freed it last
          )

      A release clears ``token`` and keeps the row, so ``fence`` keeps growing across
      releases and expiries. Deleting rows by hand restarts those keys' fences at 1.
      A table made by an earlier version gets the new column on first use
      (``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``, which needs the table's owner).
    - Contention is never an error: an acquire that finds the key held reads the row
      without locking it, and one that finds the key being taken at that very moment
      waits at most half of ``timeout`` (0.5 s at most) for the row, then reports the
      key busy, like any other busy key.
    - Releases are idempotent for the token that released the key: a repeated release
      by that token returns ``True`` (until the same token takes the key again or
      another token releases it), so a retry after a lost reply (the release ran, the
      connection broke before the answer came) is not reported as a lost lock. A
      token whose lease expired, was taken over or was force-released still gets
      ``False``. Permits keep the same rule for the last few tokens that gave one back.
    - Clock: the server's ``now()``; client clocks never decide expiry.
    - Wake-ups: a release runs ``pg_notify('<table>', key)`` in its own statement
      (one channel per table, the key as payload, a digest for keys over 1000 bytes).
      Each store keeps one listening connection per process (a background thread),
      started by the first ``wait``; a waiter subscribes before it re-reads the lock,
      so a release can never slip between the two, and never sleeps past the holder's
      remaining lease. ``listen_url`` points the listener elsewhere: LISTEN needs a
      session of its own, so behind a transaction-mode pooler (PgBouncer
      ``pool_mode=transaction``) notifications are silently lost; point it at the
      server or a session-mode pool, or set ``listen=false``. Either way a waiter
      still wakes by its ``wait`` strategy and the holder's lease end.
    - Failures: every step is bounded. Connections the store opens get
      ``statement_timeout`` and ``lock_timeout`` of ``timeout`` as startup options
      (a connection or pool passed in gets them with ``SET``), ``connect_timeout`` of
      ``timeout`` (at least 2 s), and a client-side guard drops a connection whose
      server does not answer within ``timeout`` + 2 s. Refused, lost or timed-out
      connections raise :class:`~remotelock.errors.StoreUnavailable`; a connection
      found dead is replaced and the step retried once, so after a server restart the
      same store works again.

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
        pool_size: int = 10,
        listen: bool = True,
        listen_url: str | None = None,
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
        )
        self._source: Source
        self._conninfo: str | None = None
        if conninfo is not None:
            self._conninfo = conninfo
            own = server_conninfo(checked_conninfo(conninfo), self.timeout)
            self._source = OwnConnections(conninfo, own, self.pool_size, self.timeout)
        elif isinstance(connection, psycopg.Connection):
            self._source = GivenConnection(connection, self.timeout)
        elif hasattr(connection, "getconn") and hasattr(connection, "putconn"):
            self._source = GivenPool(connection, self.timeout)
        else:
            raise not_a_connection(
                connection, "a psycopg.Connection or a psycopg_pool.ConnectionPool"
            )
        # A function of the source, not of the store: the listener must not keep the
        # store alive (its finalizer closes both).
        self._listener = Listener(
            functools.partial(_listener_conninfo, listen_url, self._source, self.timeout),
            self._sql.listen,
        )
        self._schema_ready = False
        self._schema_mutex = threading.Lock()
        self._configured: weakref.WeakSet[psycopg.Connection[Any]] = weakref.WeakSet()
        self._twin: AsyncStore | None = None
        weakref.finalize(self, _close, self._source, self._listener)

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """Build a store from a URL (see the class docs); connects on first use only."""
        conninfo, own = parse_url(url, dict(options))
        return cls(conninfo=conninfo, **own._asdict())

    # -- running one step ---------------------------------------------------------------

    def _step(self, step: str, key: str, run: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run one statement on a connection, bounded, translated, retried once if the
        connection turns out dead (a server restart leaves stale idle connections)."""
        source = self._source
        retried = False
        with translate(self, step, key):
            while True:
                conn = source.take()
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

    def _prepare(self, conn: psycopg.Connection[Any]) -> None:
        """Set the timeouts on a connection given to the store; create the table once."""
        if self._conninfo is None and conn not in self._configured:
            conn.execute(q.SET_TIMEOUTS, {"timeout": str(millis(self.timeout))})
            if not conn.autocommit:
                conn.commit()
            self._configured.add(conn)
        if not self._schema_ready:
            with self._schema_mutex:
                if not self._schema_ready:
                    self._create_table(conn)
                    self._schema_ready = True

    def _create_table(self, conn: psycopg.Connection[Any]) -> None:
        params = {
            "schema": self.schema,
            "table": self.table,
            "permits": q.permits_table(self.table),
        }
        with conn.transaction():
            conn.execute(q.LOCK_DDL, {"lock_id": q.lock_id(self.schema, self.table)})
            if conn.execute(q.TABLE_EXISTS, params).fetchone() is None:
                for statement in self._sql.create:  # creates, or migrates an older table
                    conn.execute(statement)

    # -- the Store protocol -------------------------------------------------------------

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """Take ``key`` if its row is absent, released or expired (one statement).

        ``None`` also when the key was being taken at that moment and the row lock did
        not come within the short lock wait: contention, never an outage.
        """
        params = acquire_params(key, token, ttl, self.timeout)
        row = self._step("acquire", key, lambda c: fetch_or_busy(c, self._sql.acquire, params))
        return None if row is None else int(row[0])

    def release(self, key: str, token: str) -> bool:
        """Free ``key`` if ``token`` holds an unexpired lease, and notify its waiters;
        ``True`` too if ``token``'s own release freed it before (a retried release)."""
        params = self._notice(key, token=token)
        return self._step("release", key, lambda c: _rows(c, self._sql.release, params)) > 0

    def extend(self, key: str, token: str, ttl: float) -> bool:
        """Reset the lease if ``token`` still holds ``key``."""
        params = {"key": key, "token": token, "ttl": float(ttl)}
        return self._step("extend", key, lambda c: _rows(c, self._sql.extend, params)) > 0

    def owner(self, key: str) -> str | None:
        """The token holding ``key``, or ``None``."""
        row = self._holder("owner", key)
        return None if row is None else str(row[0])

    def wait(self, key: str, timeout: float) -> None:
        """Sleep until a release of ``key`` is notified, its lease ends, or ``timeout``."""
        deadline = time.monotonic() + timeout
        topic = q.payload(key)
        event = threading.Event()
        listening = self.listen and self._listener.subscribe(topic, event)
        try:
            row = self._holder("wait", key)
            if row is None:
                return
            left = float(row[1]) + 0.001
            pause = left if listening else min(left, POLL_WITHOUT_LISTENER)
            event.wait(max(0.0, min(deadline - time.monotonic(), pause)))
        finally:
            if self.listen:
                self._listener.unsubscribe(topic, event)

    def _holder(self, step: str, key: str) -> tuple[Any, ...] | None:
        params = {"key": key}
        return self._step(step, key, lambda c: c.execute(self._sql.holder, params).fetchone())

    def _notice(self, key: str, **params: Any) -> dict[str, Any]:
        return {"key": key, "channel": self._sql.channel, "payload": q.payload(key), **params}

    # -- admin ----------------------------------------------------------------------------

    def force_release(self, key: str) -> bool:
        """Free ``key`` whoever holds it; ``True`` if an unexpired lease was there."""
        params = self._notice(key)
        return (
            self._step("force_release", key, lambda c: _rows(c, self._sql.force_release, params))
            > 0
        )

    def iter_locks(self, prefix: str = "") -> Iterator[LockInfo]:
        """The unexpired locks whose key starts with ``prefix`` (one query, a snapshot)."""
        params = {"prefix": prefix}
        rows = self._step(
            "iter_locks", prefix, lambda c: c.execute(self._sql.list, params).fetchall()
        )
        return iter([LockInfo(str(r[0]), str(r[1]), int(r[2]), float(r[3])) for r in rows])

    # -- lifecycle --------------------------------------------------------------------------

    def as_async(self) -> AsyncStore:
        """The async twin: native asyncio connections for a store built from a URL or
        conninfo (same table, same options); else this store's steps in worker threads."""
        if self._twin is None:
            if self._conninfo is not None:
                from .aio import AsyncPostgresStore  # asyncio only for async callers

                self._twin = AsyncPostgresStore(
                    conninfo=self._conninfo,
                    table=self.table,
                    schema=self.schema,
                    timeout=self.timeout,
                    pool_size=self.pool_size,
                    listen=self.listen,
                    listen_url=self.listen_url,
                )
            else:
                self._twin = threaded(self)
        return self._twin

    def close(self) -> None:
        """Close idle connections and stop listening (the store reconnects if used again).
        A connection or pool passed in is left open: it belongs to the caller."""
        _close(self._source, self._listener)

    def __repr__(self) -> str:
        where = f"{self.schema}.{self.table}" if self.schema else self.table
        return f"{type(self).__name__}(table={where!r})"


def _listener_conninfo(listen_url: str | None, source: Source, timeout: float) -> str:
    """Where the listener connects: ``listen_url``, else where the store's steps go."""
    base = listen_url if listen_url is not None else source.conninfo()
    return server_conninfo(base, timeout, listener=True)


def _rows(conn: psycopg.Connection[Any], statement: Any, params: dict[str, Any]) -> int:
    return conn.execute(statement, params).rowcount


def _close(source: Source, listener: Listener) -> None:
    listener.close()
    source.close()


__all__ = ["PostgresStore"]
