"""An AWS Lambda handler that refreshes a shared cache at most once, on DynamoDB alone.

Many concurrent invocations notice that the cached rates are stale. The source behind
them is slow and rate-limited, so exactly one invocation refreshes the cache; the
others wait for its release and read what it stored. Both the locks and the cache
live in DynamoDB, which a Lambda reaches without a VPC and pays for per request
(``template.yaml`` beside this file defines the two tables, the function and its
permissions; ``policy.json`` is the lock table's IAM policy on its own).

Environment (set by the template):

- ``REMOTELOCK_URL``: where the locks live, ``dynamodb://TABLE?create=false`` (the
  template makes the table, so the function needs no permission to create one; the
  region is the function's own);
- ``CACHE_TABLE``: the cache (partition key ``source``, TTL on ``expires``).

DynamoDB cannot push a release to the waiters: with the default ``wait`` they try
again every 25 ms or so (one conditional write each); a longer ``wait=`` (say
``tenacity.wait_fixed(1)``) makes them poll with cheaper reads in between. They stop
waiting one second before the invocation's deadline, since the handler receives the
Lambda context (``lambda_margin``).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import boto3

from remotelock import remote_locked

# Created once per execution environment, at cold start, and reused by warm
# invocations (boto3 ships with Lambda's Python runtime: nothing to package).
DYNAMODB: Any = boto3.client("dynamodb", endpoint_url=os.environ.get("DYNAMODB_ENDPOINT"))
CACHE_TABLE = os.environ.get("CACHE_TABLE", "rates-cache")
FRESH_SECONDS = 300


def cached(source: str) -> str | None:
    """The cached rates of ``source``, unless stale (TTL deletes items only eventually)."""
    found = DYNAMODB.get_item(
        TableName=CACHE_TABLE, Key={"source": {"S": source}}, ConsistentRead=True
    ).get("Item")
    if found is None or int(found["expires"]["N"]) < time.time():
        return None
    return str(found["value"]["S"])


def cache_is_fresh(event: dict[str, Any], context: Any) -> bool:
    return cached(event["source"]) is not None


def fetch_from_source(source: str) -> str:
    time.sleep(0.3)  # stands for the slow, rate-limited call
    return f"rates from {source} at {time.time():.0f}"


@remote_locked("refresh:{event[source]}", ttl=30, skip_if=cache_is_fresh)
def handler(event: dict[str, Any], context: Any, *, has_lock: bool = False) -> dict[str, Any]:
    source = event["source"]
    if has_lock:
        item = {
            "source": {"S": source},
            "value": {"S": fetch_from_source(source)},
            "expires": {"N": str(int(time.time()) + FRESH_SECONDS)},
        }
        DYNAMODB.put_item(TableName=CACHE_TABLE, Item=item)
    body = {"value": cached(source), "refreshed": has_lock}
    return {"statusCode": 200, "body": json.dumps(body)}
