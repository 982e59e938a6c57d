"""The SQLite store: locks shared by the processes of one machine, no server at all.

- ``store``: :class:`~remotelock.stores.sqlite.store.SQLiteStore` (the embedded default)
- ``aio``: its asyncio face (steps in worker threads)
- ``permits``: counted permits (``limit=N``)
- ``readers``: shared (reader) locks beside the exclusive ones
- ``connections``: the per-process connection pool and in-process wake-ups

Nothing is imported here, so that loading one module loads only what it needs.
"""
