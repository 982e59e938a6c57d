"""Scenarios (f) and (i): threads of one process waiting on one Redis key.

(f) is a crowd: a thousand waiters, their connections, errors and pass-through time.
(i) is idle waiting: one and a hundred waiters measured over half a minute, long enough
to include every periodic call a library makes while it waits.

The main thread holds the lock while ``waiters`` threads ask for it; once they all
wait, the scenario counts, over a few seconds of waiting, the requests the process
sends (round trips: every command or script call written to a socket, counted in
redis-py's connection class, except the holder's own calls and its renewals) and the
connections it holds; then it releases the lock and times how long the crowd takes to
pass through, one at a time, counting the errors. Each library runs in a process of
its own (``python -m benchmarks.crowd``), with the client the other scenarios give it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks.adapters import name_of
from benchmarks.report import check, table
from benchmarks.scenarios import ROOT

IDLE = 3.0
"""Seconds of waiting measured."""


@dataclass
class Crowd:
    name: str
    waiters: int
    got: int
    errors: int
    first_error: str
    connections: int
    idle_per_waiter: float
    """Requests (round trips) per waiter per second while everyone waited."""
    drain_s: float
    """From the holder's release to the last waiter's release (or its error)."""
    holder_released: bool
    """Whether the holder's own release went through (with a crowd waiting)."""


def _stat(admin: Any, section: str, field: str) -> int:
    return int(admin.info(section)[field])


def _count_requests() -> list[int]:
    """Count what every redis-py connection of this process sends (one a round trip)."""
    sent = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        # The holder's own calls and its lease's renewals are not the cost of waiting.
        name = threading.current_thread().name
        if name != "MainThread" and not name.startswith("remotelock-renew"):
            sent[0] += 1
        send(self, command, check_health)

    redis.connection.AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
    return sent


def outcome(
    got: int,
    errors: list[str],
    connections: int,
    idle_per_waiter: float,
    *,
    released: float,
    holder_released: bool,
) -> dict[str, Any]:
    """What a crowd worker reports (threads here, asyncio tasks in benchmarks.tasks)."""
    return {
        "got": got,
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "connections": connections,
        "idle_per_waiter": idle_per_waiter,
        "drain_s": time.monotonic() - released,
        "holder_released": holder_released,
    }


def crowd(
    kind: str, url: str, waiters: int, *, idle: float = IDLE, settle: float = 2.0
) -> dict[str, Any]:
    """In the crowd's process: the measurements of one library."""
    from benchmarks.adapters import make

    sent = _count_requests()
    adapter = make(kind, url)
    admin = redis.Redis.from_url(url)
    key = f"crowd:{uuid.uuid4().hex[:8]}"
    baseline = _stat(admin, "clients", "connected_clients")
    holder = adapter.acquire(key)
    got, errors, asked = [0], [], threading.Barrier(waiters + 1)
    done = threading.Event()

    def wait_in_line() -> None:
        asked.wait()
        try:
            adapter.release(adapter.acquire(key))
            got[0] += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:120])
        if got[0] + len(errors) >= waiters:
            done.set()

    threads = [threading.Thread(target=wait_in_line, daemon=True) for _ in range(waiters)]
    for thread in threads:
        thread.start()
    asked.wait()
    time.sleep(settle)  # everyone has asked once and waits (and set up what it needs)
    before = sent[0]
    time.sleep(idle)
    idle_sent = sent[0] - before
    connections = _stat(admin, "clients", "connected_clients") - baseline - 1  # ours
    released = time.monotonic()
    try:
        adapter.release(holder)
        holder_released = True
    except Exception as exc:
        holder_released = False  # the waiters now wait for the lease to run out
        errors.append(f"{type(exc).__name__}: {exc}"[:120])
    done.wait(120)
    return outcome(
        got[0], errors, connections, idle_sent / waiters / idle,
        released=released, holder_released=holder_released,
    )  # fmt: skip


def run(
    name: str,
    kind: str,
    url: str,
    waiters: int,
    *,
    idle: float = IDLE,
    settle: float = 2.0,
    module: str = "benchmarks.crowd",
) -> Crowd:
    """One library's crowd, in a process of its own (``module``: threads, or
    :mod:`benchmarks.tasks` for asyncio tasks)."""
    command = [sys.executable, "-m", module, kind, url, str(waiters)]
    command += [str(idle), str(settle)]
    limit = {**os.environ, "REMOTELOCK_BENCH_WAIT_LIMIT": str(max(60.0, settle + idle + 30))}
    done = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True, env=limit)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Crowd(name=name, waiters=waiters, **report)


def _rows(results: list[Crowd]) -> list[list[str]]:
    return [
        [r.name, f"{r.got:,}", f"{r.errors:,}", r.first_error or "-",
         "went through" if r.holder_released else "failed", str(r.connections),
         f"{r.idle_per_waiter:.3f}", f"{r.drain_s:.1f}"]
        for r in results
    ]  # fmt: skip


def report(bench: Any) -> None:
    """Run the scenario for ``bench`` (a ``benchmarks.__main__.Run``) and print its table."""
    waiters = 200 if bench.quick else 1000
    wanted = ("remotelock", "redis-py", "python-redis-lock")
    results = [
        run(name_of(kind), kind, bench.url(kind), waiters)
        for kind in bench.kinds
        if kind in wanted
    ]
    print(f"### (f) {waiters:,} threads of one process waiting on one Redis key\n")
    rows = _rows(results)
    headers = ["library", "got the lock", "errors", "first error", "holder's release",
               "connections", "requests / waiter / s, waiting", "all through (s)"]  # fmt: skip
    print(table(headers, rows) + "\n", flush=True)
    in_tasks = [  # the asyncio half of the scenario
        run(name_of(kind), kind, bench.url(kind), waiters, module="benchmarks.tasks")
        for kind in bench.kinds
        if kind in ("remotelock", "redis-py")
    ]
    print(f"### (f) {waiters:,} asyncio tasks of one event loop waiting on one Redis key\n")
    print(table(headers, _rows(in_tasks)) + "\n", flush=True)
    for what, found in (("threads", results), ("tasks", in_tasks)):
        for ours in [r for r in found if r.name == name_of("remotelock")]:
            bench.targets.append(check(
                ours.errors == 0 and ours.connections <= 10 and ours.idle_per_waiter < 0.1,
                f"(f) {waiters:,} waiting {what}: {ours.errors} errors, {ours.connections} "
                f"connections, {ours.idle_per_waiter:.3f} requests per waiter per second",
            ))  # fmt: skip


IDLE_LONG = 25.0
"""Seconds of waiting measured by (i): longer than remotelock's 15 s place-keeping
period and its waiters' 10-20 s safety-net wake-ups, and over before the peers' 30 s
locks (which nothing renews) run out."""
SETTLE_LONG = 2.0
"""Seconds of waiting before (i) counts: everyone has asked once."""


def report_idle(bench: Any) -> None:
    """Scenario (i): round trips per waiter per second while nothing happens."""
    sizes = (1, 100)
    wanted = ("remotelock", "redis-py", "python-redis-lock")
    kinds = [kind for kind in bench.kinds if kind in wanted]
    rows, ours = [], []
    for kind in kinds:
        cells = []
        for size in sizes:
            url = bench.url(kind)
            result = run(name_of(kind), kind, url, size, idle=IDLE_LONG, settle=SETTLE_LONG)
            cells.append(f"{result.idle_per_waiter:.3f}")
            if kind == "remotelock":
                ours.append((size, result.idle_per_waiter))
        rows.append([name_of(kind), *cells])
    print(f"### (i) Idle waiting on one Redis key ({IDLE_LONG:.0f} s measured after "
          f"{SETTLE_LONG:.0f} s)\n")  # fmt: skip
    headers = ["library", *(f"round trips / waiter / s, {n} waiting" for n in sizes)]
    print(table(headers, rows) + "\n", flush=True)
    if ours:
        worst = max(per for _, per in ours)
        text = f"(i) idle waiting: at most {worst:.3f} round trips per waiter per second"
        bench.targets.append(check(worst < 0.1, text))


if __name__ == "__main__":
    idle, settle = float(sys.argv[4]), float(sys.argv[5])
    print(json.dumps(crowd(sys.argv[1], sys.argv[2], int(sys.argv[3]), idle=idle, settle=settle)))
