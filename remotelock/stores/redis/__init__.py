"""The Redis store: standalone, Sentinel or Cluster; fenced, fair, push-woken.

- ``store``: :class:`~remotelock.stores.redis.store.RedisStore`
- ``aio``: :class:`~remotelock.stores.redis.aio.AsyncRedisStore`, its asyncio twin
- ``lua`` and ``permit_lua``: the scripts, one per atomic step
- ``permits``: counted permits (``limit=N``)
- ``clients``: clients from URLs, option checks, timeouts and retries
- ``bells``, ``doorbell``, ``doorbell_aio``: wake-ups through one subscriber connection
- ``common``: key layout and replies shared by all of the above

Nothing is imported here: a sync program that uses ``RedisStore`` never loads the
asyncio side.
"""
