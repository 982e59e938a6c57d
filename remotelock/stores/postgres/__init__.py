"""The PostgreSQL store: a fenced lease table woken by LISTEN/NOTIFY.

- ``store``: :class:`~remotelock.stores.postgres.store.PostgresStore`
- ``aio``: :class:`~remotelock.stores.postgres.aio.AsyncPostgresStore`, its asyncio twin
- ``sql`` and ``permit_sql``: the statements, one per atomic step
- ``permits``: counted permits (``limit=N``)
- ``connections``: the sync connections and the listener thread
- ``common`` and ``busy``: options, URLs, errors, the reply guard, contention handling

Nothing is imported here: a sync program that uses ``PostgresStore`` never loads the
asyncio side.
"""
