"""A benchmark worker process: contended sections, permits, or one stampede caller.

The driver starts many of these, waits until each has connected and printed
``ready``, then writes ``go`` to all at once. Each prints its records as one JSON line
and waits for the driver's ``bye`` before exiting (a process tearing down its
interpreter takes CPU from those still measuring). Times are ``time.monotonic()``: one
clock for every process on the machine, so the driver can line them up. The lock
lives on ``--url``; the scenario's own data (counter, cache) on the Redis ``--data``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import redis

from benchmarks.adapters import make, request_counter, requests_sent


def sections(args: argparse.Namespace, limit: int) -> list[dict[str, Any]]:
    """``count`` sections under the lock (or one of ``limit`` permits), ``work`` s each.

    With one holder at a time each section also does a non-atomic read-modify-write
    of a shared counter, which loses updates unless the lock holds.
    """
    adapter = make(args.adapter, args.url, limit)
    data = redis.Redis.from_url(args.data, socket_timeout=5)
    data.ping()  # connected before "go", as a service's data client is
    adapter.release(adapter.acquire(args.key + ":warm"))  # connect and load before "go"
    ready()
    records = []
    for _ in range(args.count):
        sent = requests_sent(adapter)
        requested = time.monotonic()
        handle = adapter.acquire(args.key)
        acquired = time.monotonic()
        if limit == 1:
            value = int(data.get(args.key + ":counter") or 0)
        time.sleep(args.work)
        if limit == 1:
            data.set(args.key + ":counter", value + 1)
        releasing = time.monotonic()
        adapter.release(handle)
        record: dict[str, Any] = {"pid": os.getpid(), "requested": requested,
                                  "acquired": acquired, "releasing": releasing}  # fmt: skip
        if sent is not None:  # store requests of this section: acquire, waits, release
            record["requests"] = (requests_sent(adapter) or 0) - sent
        records.append(record)
    return records


def stampede(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Get a value only a slow API produces; exactly one caller should call it. The
    cache's client is connected before "go", as in the floor's workers: a service's
    cache client is, and opening it (milliseconds of CPU in redis-py 8) is no part of
    what a lock costs."""
    r = redis.Redis.from_url(args.data, socket_timeout=5)
    r.ping()
    cache, calls = f"{args.key}:cache", f"{args.key}:calls"
    ended: list[float] = []

    def call_api() -> None:
        r.incr(calls)
        time.sleep(args.api)
        ended.append(time.monotonic())  # the call's end: what "late" is counted from
        r.set(cache, "42")

    counter: Callable[[], int] | None = None
    value: Any  # redis-py types its replies bytes | str
    if args.adapter.startswith("remotelock"):
        from remotelock import remote_locked
        from remotelock.stores import store_from_url

        store = store_from_url(args.url)

        @remote_locked(args.key + ":lock", store=store, ttl=30, skip_if=lambda: r.exists(cache))
        def get_value(*, has_lock: bool = False) -> bytes | None:
            if has_lock:
                call_api()
            return r.get(cache)  # type: ignore[return-value]

        store.acquire(args.key + ":warm", f"warm-{os.getpid()}", 1)  # connect before "go"
        store.release(args.key + ":warm", f"warm-{os.getpid()}")
        counter = request_counter(store)
        ready()
        value = get_value()
    else:  # the usual pattern with a plain lock: check, lock, check again
        adapter = make(args.adapter, args.url)
        adapter.release(adapter.acquire(args.key + ":warm"))
        ready()
        value = r.get(cache)
        if value is None:
            handle = adapter.acquire(args.key + ":lock")
            try:
                if not r.exists(cache):
                    call_api()
                value = r.get(cache)
            finally:
                adapter.release(handle)
    done = time.monotonic()
    record: dict[str, Any] = {"pid": os.getpid(), "done": done, "value": (value or b"").decode()}
    if ended:
        record["api_end"] = ended[0]
    if counter is not None:  # requests this caller's store sent (DynamoDB)
        record["requests"] = counter()
    return [record]


def floor(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The machine's own floor for a stampede: block until woken, then one GET."""
    r = redis.Redis.from_url(args.data, socket_timeout=5)
    r.ping()
    ready()
    r.rpush(args.key + ":arrived", os.getpid())
    r.blpop([f"{args.key}:wake:{os.getpid()}"], timeout=60)
    value: Any = r.get(args.key + ":cache")
    return [{"pid": os.getpid(), "done": time.monotonic(), "value": (value or b"").decode()}]


def ready() -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["contended", "permits", "stampede", "floor"])
    parser.add_argument("--adapter", default="remotelock")
    parser.add_argument("--url", help="where the lock lives")
    parser.add_argument("--data", required=True, help="Redis URL for the scenario's data")
    parser.add_argument("--key", required=True)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--work", type=float, default=0.001)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--api", type=float, default=0.2)
    args = parser.parse_args()
    if args.scenario == "contended":
        records = sections(args, 1)
    elif args.scenario == "permits":
        records = sections(args, args.limit)
    else:
        records = (stampede if args.scenario == "stampede" else floor)(args)
    print(json.dumps(records), flush=True)
    sys.stdin.readline()  # "bye": everyone has reported
    return 0


if __name__ == "__main__":
    sys.exit(main())
