"""A lock holder in its own process, for pause/kill tests.

It takes the lock and prints ``{"event": "held", ...}``; then waits for a line on
stdin. After that line it waits (at most 10 s) for its renewal to notice a lost
lease, tries to release, leaves the ``with`` block and reports what happened.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from remotelock import LockLost, RemoteLock
from remotelock.stores import store_from_url


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ttl", type=float, required=True)
    parser.add_argument("--limit", type=int, default=1)
    args = parser.parse_args()
    store = store_from_url(args.url)
    lost_by: list[str] = []
    lock = RemoteLock(
        args.key,
        store=store,
        ttl=args.ttl,
        limit=args.limit,
        on_lost=lambda lease: lost_by.append("on_lost"),
    )
    try:
        with lock as lease:
            say(event="held", fence=lease.fencing_token, token=lease.token)
            sys.stdin.readline()
            deadline = time.monotonic() + 10
            while not (lease.lost and lost_by) and time.monotonic() < deadline:
                time.sleep(0.01)  # on_lost runs in a thread of its own, a moment later
            renewal_saw_it = lease.lost
            released = lease.release()
            say(
                event="released",
                released=released,
                renewal_saw_it=renewal_saw_it,
                reason=lease.lost_reason,
                on_lost=lost_by,
            )
    except LockLost as error:
        say(event="LockLost", fence=error.fencing_token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
