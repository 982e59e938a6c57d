"""Example 1 of the original library, in remotelock: processes increment one counter.

Every process reads the counter, adds one and writes it back: a read-modify-write that
loses updates when two processes interleave. ``@remote_locked`` makes each increment
run alone, whichever process (or machine, with a Redis or PostgreSQL store) it is in.

    python examples/increment_shared_count.py --processes 4 --times 50

The lock lives in the store named by REMOTELOCK_URL (e.g. redis://localhost:6379/0),
else in the embedded SQLite file, which already excludes processes on one machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
from pathlib import Path

from remotelock import remote_locked


@remote_locked("example:shared-count", ttl=10)
def increment(counter: Path, *, fencing_token: int | None = None) -> int:
    """Add one to the counter file; only one process at a time gets here."""
    value = int(counter.read_text() or 0) + 1
    counter.write_text(str(value))
    return value


def worker(counter: Path, times: int) -> None:
    for _ in range(times):
        increment(counter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--times", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        counter = Path(tmp) / "count.txt"
        counter.write_text("0")
        procs = [
            multiprocessing.Process(target=worker, args=(counter, args.times))
            for _ in range(args.processes)
        ]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join()
        print(f"count = {counter.read_text()} (expected {args.processes * args.times})")


if __name__ == "__main__":
    main()
