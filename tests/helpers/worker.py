"""A worker process for cross-process tests: N critical sections on one shared counter.

Each critical section is a deliberately non-atomic read-modify-write of a counter file,
run through ``@remote_locked``; with ``--mix N`` only every Nth is, and the others
read the file under a shared lease of the same key. The worker records when it
entered and left each one (``time.monotonic_ns``: the same clock for every process on
one machine) and the fencing token it held, and writes them as JSON lines when done.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from remotelock import remote_locked
from remotelock.stores import store_from_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--counter", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=float, default=0.0, help="seconds inside each section")
    parser.add_argument("--limit", type=int, default=1, help="holders allowed at once")
    parser.add_argument(
        "--mix", type=int, default=0, help="every Nth section exclusive, others shared"
    )
    args = parser.parse_args(argv)
    store = store_from_url(args.url)
    records: list[dict[str, int | str]] = []

    def reading(*, fencing_token: int | None = None) -> None:
        entered = time.monotonic_ns()
        args.counter.read_text()
        time.sleep(args.work)
        records.append(
            {"pid": os.getpid(), "fence": fencing_token or 0, "enter": entered,
             "exit": time.monotonic_ns(), "kind": "shared"}
        )  # fmt: skip

    if args.mix:
        reading = remote_locked(args.key, store=store, ttl=30, shared=True)(reading)

    @remote_locked(args.key, store=store, ttl=30, limit=args.limit)
    def critical(*, fencing_token: int | None = None) -> None:
        entered = time.monotonic_ns()
        if args.limit == 1:  # one at a time: a read-modify-write that must not lose updates
            text = args.counter.read_text()
            value = int(text) if text else 0
        if args.work:
            time.sleep(args.work)
        if args.limit == 1:
            args.counter.write_text(str(value + 1))
        records.append(
            {
                "pid": os.getpid(),
                "fence": fencing_token or 0,
                "enter": entered,
                "exit": time.monotonic_ns(),
                "kind": "exclusive",
            }
        )

    for index in range(args.count):
        if args.mix and index % args.mix:
            reading()
        else:
            critical()
    args.out.write_text("".join(json.dumps(record) + "\n" for record in records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
