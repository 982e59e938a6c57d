"""Example 2 of the original library, in remotelock: one caller refreshes, the rest wait.

Many workers notice at once that a cached value is stale. The external API behind it is
slow and rate-limited, so exactly one of them should call it. With ``skip_if``:

- a fresh cache is read without any lock round trip;
- the first caller takes the lock and gets ``has_lock=True``: it calls the API and
  fills the cache;
- everyone else waits, is woken by the release, sees the fresh cache (``skip_if`` is
  checked after every wake-up) and runs with ``has_lock=False``.

    python examples/external_api_cache.py --workers 10
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from remotelock import remote_locked

CACHE_SECONDS = 60


def cache_is_fresh(cache: Path) -> bool:
    """True when the cached value is younger than CACHE_SECONDS."""
    try:
        written_at = float(json.loads(cache.read_text())["at"])
    except (FileNotFoundError, ValueError, KeyError):
        return False
    return time.time() - written_at < CACHE_SECONDS


def call_external_api() -> str:
    time.sleep(0.5)  # slow, and rate-limited: don't call it twenty times at once
    return f"rates computed by process {os.getpid()}"


@remote_locked("example:refresh-rates", ttl=30, skip_if=cache_is_fresh)
def get_rates(cache: Path, *, has_lock: bool = False) -> str:
    if has_lock:
        fresh = cache.with_suffix(f".{os.getpid()}")
        fresh.write_text(json.dumps({"at": time.time(), "value": call_external_api()}))
        fresh.replace(cache)  # atomic: readers see the old or the new value, never half
    return str(json.loads(cache.read_text())["value"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "rates.json"
        with ProcessPoolExecutor(args.workers) as pool:
            answers = list(pool.map(get_rates, [cache] * args.workers))
        print(f"{len(answers)} workers, {len(set(answers))} API call(s): {answers[0]}")


if __name__ == "__main__":
    main()
