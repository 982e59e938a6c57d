"""The DynamoDB store: fenced leases in one conditional write per step, for AWS Lambda.

- ``store``: :class:`~remotelock.stores.dynamodb.store.DynamoDBStore`, sync over boto3
  (its docstring says why there is no aioboto3 side)
- ``aio``: its asyncio twin (steps in worker threads, waiting on the event loop)
- ``permits``: counted permits (``limit=N``) in one item per key
- ``readers``: shared (reader) leases, in the lock item beside the exclusive holder
- ``expressions``, ``reader_expressions`` and ``permit_expressions``: the requests,
  one per atomic step
- ``calls``: sending a request (throttling retries, error translation); ``client``:
  URLs, options and boto3 clients; ``table``: creating the table on first use
- ``common`` and ``waiting``: the item layout, the client clock and the polling
  schedule, free of I/O

Nothing is imported here: a sync program that uses ``DynamoDBStore`` never loads the
asyncio side.
"""
