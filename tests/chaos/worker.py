"""One chaos worker: takes the lock again and again and writes to the protected resource.

Run as ``python -m tests.chaos.worker --url URL --key KEY --resource PATH --out PATH
--stop-file PATH``. Until the stop file appears (or ``--deadline`` seconds pass), each
round takes the lock, records when the section began (``enter``), makes a few writes
with the lease's fencing token (checking ``lease.lost`` before each one, and stopping
once it is set), records when it ended (``exit``), and leaves the lock. ``on_lost``
records when the lock told the worker that the lease was lost (``lost_at``).

Under faults LockLost, LockTimeout and StoreError (StoreUnavailable included) are what
the lock promises to raise: they are recorded and the worker goes on. Any other
exception is recorded too, and ends the worker with status 1.

Each round is one JSON line in ``--out``, written at once, so a worker that is killed
leaves everything it did behind. Times are ``time.monotonic()``, one clock for every
process of a Linux machine, so the controller can compare workers' sections.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import tenacity

from remotelock import Lease, LockLost, LockTimeout, RemoteLock, StoreError
from remotelock.stores import store_from_url
from tests.chaos.resource import Resource

EXPECTED = (LockLost, LockTimeout, StoreError)  # StoreError covers StoreUnavailable


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the store, through this worker's proxy")
    parser.add_argument("--key", required=True)
    parser.add_argument("--resource", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds at most")
    parser.add_argument("--index", type=int, default=0, help="this worker's number")
    parser.add_argument("--ttl", type=float, default=2.0)
    parser.add_argument("--acquire-timeout", type=float, default=5.0)
    parser.add_argument("--writes", type=int, default=5, help="writes per section")
    parser.add_argument(
        "--long",
        type=float,
        default=0.25,
        help="share of sections held for 0.75-1.5 ttl (so that renewals matter); the "
        "others last 0.2-1 s",
    )
    parser.add_argument(
        "--ignore-lost",
        action="store_true",
        help="misbehave: never look at lease.lost nor record on_lost (checks the checker)",
    )
    return parser.parse_args(argv)


def section(args: argparse.Namespace, store: Any, resource: Resource) -> dict[str, Any]:
    """One round: acquire, write, release; what happened, as one record."""
    record: dict[str, Any] = {
        "worker": args.index,
        "pid": os.getpid(),
        "fence": None,
        "enter": None,
        "exit": None,
        "lost_at": None,
        "lost_reason": None,
        "error": None,
        "accepted": 0,
        "refused": 0,
        "started": time.monotonic(),
    }

    def on_lost(lease: Lease) -> None:
        if not args.ignore_lost and record["lost_at"] is None:
            record["lost_at"] = time.monotonic()
            record["lost_reason"] = lease.lost_reason

    # Shows the controller who holds the lock now, so that it can aim faults at it.
    holding = args.out.with_suffix(".holding")
    long = args.ignore_lost or random.random() < args.long
    hold = random.uniform(0.75, 1.5) * args.ttl if long else random.uniform(0.2, 1.0)
    lock = RemoteLock(
        args.key,
        store=store,
        ttl=args.ttl,
        on_lost=on_lost,
        stop=tenacity.stop_after_delay(args.acquire_timeout),
    )
    try:
        with lock as lease:
            record["enter"] = time.monotonic()
            record["fence"] = lease.fencing_token
            holding.touch()
            for _ in range(args.writes):
                if lease.lost and not args.ignore_lost:
                    break
                key = "accepted" if resource.write(lease.fencing_token) else "refused"
                record[key] += 1
                time.sleep(hold / args.writes)
            record["exit"] = time.monotonic()
    except EXPECTED as exc:
        record["error"] = type(exc).__name__
    except Exception as exc:
        record["error"] = f"unexpected {type(exc).__name__}: {exc}"
    holding.unlink(missing_ok=True)
    record["ended"] = time.monotonic()
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    deadline = time.monotonic() + args.deadline
    store = store_from_url(args.url)
    resource = Resource(args.resource)
    status = 0
    with open(args.out, "a") as out:  # created at once: the controller waits for it
        while not args.stop_file.exists() and time.monotonic() < deadline:
            record = section(args, store, resource)
            out.write(json.dumps(record) + "\n")
            out.flush()
            if str(record["error"]).startswith("unexpected"):
                status = 1
                break
            time.sleep(random.uniform(0.0, 0.1))  # let the others in now and then
    close = getattr(store, "close", None)  # the server-backed stores have one
    if close is not None:
        close()
    return status


if __name__ == "__main__":
    sys.exit(main())
