"""Scenario (h): many locks held at once by one process, kept alive by the renewal.

A process holds ``count`` locks (threads' leases, or one event loop's) with a short
``ttl``, so the renewal runs at the rate a hundred thousand locks with a 30 s ttl
would need; the scenario measures, over a window of several renewal rounds, the
share of one core the whole process spends, how many leases were lost, and how many
server connections the process holds. Each run is a process of its own, started with
``python -m benchmarks.held``, so its CPU time is the holder's alone.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from benchmarks.report import check, table
from benchmarks.scenarios import ROOT

EQUIVALENT_TTL = 30.0
"""The ttl whose renewal rate the scenario reproduces with fewer locks."""


@dataclass
class Held:
    name: str
    count: int
    ttl: float
    cpu_share: float
    """Process CPU time over wall time during the window (1.0: one core busy)."""
    lost: int
    connections: int | None
    """Server connections the holder had open at the end of the window (None: a file)."""

    @property
    def equivalent(self) -> int:
        """Locks with a 30 s ttl that need renewals at the same rate."""
        return round(self.count * EQUIVALENT_TTL / self.ttl)


def _named(url: str, name: str) -> str:
    joiner = "&" if "?" in url else "?"
    if url.startswith("redis"):
        return f"{url}{joiner}client_name={name}"
    if url.startswith("postgres"):
        return f"{url}{joiner}application_name={name}"
    return url


def _connections(url: str, name: str) -> int | None:
    if url.startswith("redis"):
        import redis

        with redis.Redis.from_url(url.split("?", maxsplit=1)[0]) as admin:
            return sum(1 for client in admin.client_list() if client.get("name") == name)
    if url.startswith("postgres"):
        import psycopg

        with psycopg.connect(url.split("?", maxsplit=1)[0], autocommit=True) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
        return int(row[0]) if row else 0
    return None


def hold(url: str, count: int, ttl: float, window: float, asynchronous: bool) -> dict[str, Any]:
    """In the holder process: take ``count`` locks, watch them for ``window`` seconds."""
    from remotelock import RemoteLock
    from remotelock.stores import store_from_url

    name = f"held-{uuid.uuid4().hex[:8]}"
    store: Any = store_from_url(_named(url, name))
    locks = [RemoteLock(f"held:{name}:{n}", store=store, ttl=ttl) for n in range(count)]
    if asynchronous:
        report = asyncio.run(_hold_async(locks, window, store, url, name))
    else:
        leases = [lock.acquire() for lock in locks]
        started, cpu = time.monotonic(), time.process_time()
        time.sleep(window)
        share = (time.process_time() - cpu) / (time.monotonic() - started)
        report = {
            "cpu_share": share,
            "lost": sum(1 for lease in leases if lease.lost),
            "connections": _connections(url, name),
        }
        for lease in leases:
            if not lease.lost:
                lease.release()
    store.close()
    return report


async def _hold_async(
    locks: list[Any], window: float, store: Any, url: str, name: str
) -> dict[str, Any]:
    leases = [await lock.aacquire() for lock in locks]
    started, cpu = time.monotonic(), time.process_time()
    await asyncio.sleep(window)
    share = (time.process_time() - cpu) / (time.monotonic() - started)
    report = {
        "cpu_share": share,
        "lost": sum(1 for lease in leases if lease.lost),
        "connections": await asyncio.to_thread(_connections, url, name),
    }
    for lease in leases:
        if not lease.lost:
            await lease.arelease()
    closing = getattr(store.as_async(), "aclose", None)
    if closing is not None:
        await closing()
    return report


def held(
    name: str, url: str, count: int, ttl: float, window: float, *, asynchronous: bool = False
) -> Held:
    """One holder process's measurements."""
    command = [sys.executable, "-m", "benchmarks.held", url, str(count), str(ttl), str(window)]
    if asynchronous:
        command.append("async")
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Held(name, count, ttl, report["cpu_share"], report["lost"], report["connections"])


def report(bench: Any) -> None:
    """Run the scenario for ``bench`` (a ``benchmarks.__main__.Run``) and print its table."""
    count, ttl, window = (2_000, 6.0, 6.0) if bench.quick else (20_000, 6.0, 12.0)
    cases = [("remotelock (Redis)", "redis", count, False),
             ("remotelock (Redis, one event loop)", "redis", count // 2, True),
             ("remotelock (PostgreSQL)", "postgres", count, False),
             ("remotelock (SQLite)", "sqlite", count, False)]  # fmt: skip
    results = [
        held(name, bench.stores.url(store), size, ttl, window, asynchronous=in_loop)
        for name, store, size, in_loop in cases
        if store in bench.stores.urls
    ]
    print(f"### (h) Locks held by one process, ttl {ttl:g} s, watched for {window:g} s\n")
    rows = [
        [r.name, f"{r.count:,}", f"{r.equivalent:,}", f"{r.cpu_share:.0%}", f"{r.lost:,}",
         "-" if r.connections is None else str(r.connections)]
        for r in results
    ]  # fmt: skip
    headers = ["store", "locks held", "as many with ttl 30 s", "CPU (one core = 100%)",
               "leases lost", "server connections"]  # fmt: skip
    print(table(headers, rows) + "\n", flush=True)
    redis_row = next((r for r in results if r.name == "remotelock (Redis)"), None)
    if redis_row is not None:
        bench.targets.append(check(
            redis_row.lost == 0 and redis_row.cpu_share < 0.25,
            f"(h) {redis_row.equivalent:,} locks' worth of renewals on Redis: "
            f"{redis_row.lost} lost, {redis_row.cpu_share:.0%} of a core",
        ))  # fmt: skip


if __name__ == "__main__":
    url, count, ttl, window = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(hold(url, count, ttl, window, asynchronous=sys.argv[5:6] == ["async"])))
