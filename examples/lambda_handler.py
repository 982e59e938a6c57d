"""An AWS Lambda handler that refreshes a cache at most once, however many invocations.

Deploy with REMOTELOCK_URL set to a store every invocation can reach, e.g. an
ElastiCache Redis in the function's VPC (``rediss://...``) or a PostgreSQL database.
Without it, remotelock refuses to run inside Lambda: the embedded SQLite default is a
file on one execution environment's disk and cannot exclude the others.

The handler keeps the plain ``(event, context)`` signature; it asks for ``has_lock``
only because it wants to know whether it is the one refreshing.
"""

from __future__ import annotations

import json
import time
from typing import Any

from remotelock import remote_locked

# Module level: created once per execution environment, reused by warm invocations.
CACHE: dict[str, dict[str, Any]] = {}


def cache_is_fresh(event: dict[str, Any], context: Any) -> bool:
    entry = CACHE.get(event["source"])
    return entry is not None and time.time() - entry["at"] < 300


def fetch_from_source(source: str) -> str:
    return f"data from {source}"  # the slow, rate-limited call


@remote_locked("refresh:{event[source]}", ttl=30, skip_if=cache_is_fresh)
def handler(event: dict[str, Any], context: Any, *, has_lock: bool = False) -> dict[str, Any]:
    if has_lock:
        CACHE[event["source"]] = {"at": time.time(), "value": fetch_from_source(event["source"])}
    return {
        "statusCode": 200,
        "body": json.dumps({"value": CACHE[event["source"]]["value"], "refreshed": has_lock}),
    }
