"""A benchmark worker process: contended critical sections, or one stampede caller.

The driver starts many of these, waits until each has connected and printed
``ready``, then writes ``go`` to all at once. Times are ``time.monotonic()``: one
clock for every process on the machine, so the driver can line them up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import redis

from benchmarks.adapters import make


def contended(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``count`` critical sections: a non-atomic read-modify-write plus ``work`` seconds."""
    adapter = make(args.adapter, args.url)
    counter = redis.Redis.from_url(args.url, socket_timeout=5)
    handle = adapter.acquire(args.key + ":warm")  # connect and load scripts before "go"
    adapter.release(handle)
    ready()
    sections = []
    for _ in range(args.count):
        requested = time.monotonic()
        handle = adapter.acquire(args.key)
        acquired = time.monotonic()
        value = int(counter.get(args.key + ":counter") or 0)
        time.sleep(args.work)
        counter.set(args.key + ":counter", value + 1)
        releasing = time.monotonic()
        adapter.release(handle)
        sections.append(
            {"pid": os.getpid(), "requested": requested, "acquired": acquired,
             "releasing": releasing}
        )  # fmt: skip
    return sections


def stampede(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Get a value only a slow API produces; exactly one caller should call it."""
    r = redis.Redis.from_url(args.url, socket_timeout=5)
    cache, calls, started = f"{args.key}:cache", f"{args.key}:calls", f"{args.key}:api-start"

    def call_api() -> None:
        r.set(started, repr(time.monotonic()))
        r.incr(calls)
        time.sleep(args.api)
        r.set(cache, "42")

    if args.adapter == "remotelock":
        from remotelock import remote_locked
        from remotelock.stores import store_from_url

        store = store_from_url(args.url)

        @remote_locked(args.key + ":lock", store=store, ttl=30, skip_if=lambda: r.exists(cache))
        def get_value(*, has_lock: bool = False) -> bytes | None:
            if has_lock:
                call_api()
            return r.get(cache)  # type: ignore[return-value]

        store.acquire(args.key + ":warm", "warm", 1)  # connect before "go"
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
    return [{"pid": os.getpid(), "done": time.monotonic(), "value": (value or b"").decode()}]


def floor(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The machine's own floor for a stampede: block until woken, then one GET."""
    r = redis.Redis.from_url(args.url, socket_timeout=5)
    r.ping()
    ready()
    r.rpush(args.key + ":arrived", os.getpid())
    r.blpop([f"{args.key}:wake:{os.getpid()}"], timeout=60)
    value = r.get(args.key + ":cache")
    return [{"pid": os.getpid(), "done": time.monotonic(), "value": (value or b"").decode()}]


def ready() -> None:
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit(1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["contended", "stampede", "floor"])
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--work", type=float, default=0.001)
    parser.add_argument("--api", type=float, default=0.2)
    args = parser.parse_args()
    run = {"contended": contended, "stampede": stampede, "floor": floor}[args.scenario]
    print(json.dumps(run(args)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
