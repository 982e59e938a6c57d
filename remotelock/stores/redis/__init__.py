"""The Redis store: standalone, Sentinel or Cluster; fenced, fair, push-woken.

Written once for both worlds: each asyncio module below is the source, and its sync
twin is generated from it by ``tools/unasync.py`` (the generated file says so on its
first line; ``./dev.sh lint`` checks that it is current).

- ``aio``: :class:`~remotelock.stores.redis.aio.AsyncRedisStore` (source) and ``store``:
  :class:`~remotelock.stores.redis.store.RedisStore` (generated)
- ``permits_aio`` (source) and ``permits`` (generated): counted permits (``limit=N``)
- ``readers_aio`` (source) and ``readers`` (generated): shared (reader) leases
- ``doorbell_aio`` (source) and ``doorbell`` (generated): wake-ups through one
  subscriber connection
- hand-written twins, where the two worlds really differ: ``connect`` / ``connect_aio``
  (one client, against one per event loop) and ``threads`` / ``tasks`` (a reader
  thread and Events, against a reader task and futures)
- the same for both, written once: ``bells`` (the wake-up rules, without I/O),
  ``common`` (key layout, replies, errors), ``lua``, ``reader_lua`` and ``permit_lua``
  (the scripts) on ``prelude_lua`` (the names and helpers they share),
  ``clients`` (URLs, options, timeouts and retries)

Nothing is imported here: a sync program that uses ``RedisStore`` never loads the
asyncio side.
"""
