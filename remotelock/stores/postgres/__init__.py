"""The PostgreSQL store: a fenced lease table woken by LISTEN/NOTIFY.

- ``aio``: :class:`~remotelock.stores.postgres.aio.AsyncPostgresStore`, the source of
  every step; ``store`` (:class:`~remotelock.stores.postgres.store.PostgresStore`) is
  generated from it by ``tools/unasync.py``
- ``permits_aio`` (counted permits, ``limit=N``), ``readers_aio`` (shared leases) and
  ``queries_aio`` (running one statement): sources too, of the generated ``permits``,
  ``readers`` and ``queries``
- ``connections`` / ``connections_aio`` and ``listener`` / ``listener_aio``: what differs
  between the sides, hand-written under the same names (a connection set per process
  or per event loop; a listener thread or task), plus ``loops`` for the async side
- ``sql``, ``permit_sql`` and ``reader_sql``: the statements, one per atomic step
- ``common``, ``waiting`` and ``busy``: options, URLs, errors, waiter bookkeeping and
  contention handling, free of I/O; ``guard``: the reply guard both sides use

Nothing is imported here: a sync program that uses ``PostgresStore`` never loads the
asyncio side.
"""
