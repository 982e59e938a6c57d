"""An AWS Lambda handler that refreshes a shared cache at most once, however many run.

Many concurrent invocations notice that the cached rates are stale. The source behind
them is slow and rate-limited, so exactly one invocation refreshes the cache; the
others wait for its release (they are woken at once) and read what it stored.

Deploy with two environment variables pointing at a Redis every instance can reach
(an ElastiCache cluster in the function's VPC, typically):

- ``REMOTELOCK_URL``: where the locks live, e.g. ``rediss://my-cache:6379/0``;
- ``CACHE_URL``: the cache itself (here the same Redis, without remotelock options).

Without ``REMOTELOCK_URL`` remotelock refuses to run inside Lambda: the embedded SQLite
default is a file on one execution environment's disk and cannot exclude the others.

The handler keeps the plain ``(event, context)`` signature; it declares ``has_lock``
only because it wants to know whether it is the one refreshing. Because it receives
the Lambda context, the lock stops waiting one second before the invocation's deadline
(``lambda_margin``) and never takes a lease longer than the invocation can live.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import redis

from remotelock import remote_locked

# Created once per execution environment, at cold start, and reused by warm
# invocations. Neither connects before it is first used.
CACHE = redis.Redis.from_url(
    os.environ.get("CACHE_URL", "redis://localhost:6379/0"), socket_timeout=2
)
FRESH_SECONDS = 300


def cache_key(event: dict[str, Any]) -> str:
    return f"rates:{event['source']}"


def cache_is_fresh(event: dict[str, Any], context: Any) -> bool:
    return bool(CACHE.exists(cache_key(event)))


def fetch_from_source(source: str) -> str:
    time.sleep(0.3)  # stands for the slow, rate-limited call
    return f"rates from {source} at {time.time():.0f}"


@remote_locked("refresh:{event[source]}", ttl=30, skip_if=cache_is_fresh)
def handler(event: dict[str, Any], context: Any, *, has_lock: bool = False) -> dict[str, Any]:
    if has_lock:
        CACHE.set(cache_key(event), fetch_from_source(event["source"]), ex=FRESH_SECONDS)
    value = CACHE.get(cache_key(event))
    text = value.decode() if isinstance(value, bytes) else str(value)
    return {"statusCode": 200, "body": json.dumps({"value": text, "refreshed": has_lock})}
