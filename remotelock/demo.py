"""The two scenarios remotelock exists for, run for real across processes.

1. Mutual exclusion: processes increment one shared counter with a read-modify-write,
   first without a lock (updates get lost), then under ``@remote_locked`` (none do).
2. Stampede protection: processes all want a value that only a slow, rate-limited
   "external API" can produce. With ``skip_if``, exactly one calls it; the others wait
   for the release and read the cache it filled. With ``single_flight``, the same
   without a cache: the others get the one call's result through the store.

Run it with ``./dev.sh demo``, ``remotelock demo`` or ``python -m remotelock.demo``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .decorator import remote_locked
from .single_flight import single_flight
from .stores.sqlite.store import SQLiteStore

API_SECONDS = 0.5


# -- worker side (runs in each child process) -------------------------------------------


def _read_int(path: Path) -> int:
    text = path.read_text() if path.exists() else ""
    return int(text) if text else 0


def _increment(counter: Path) -> None:
    value = _read_int(counter)
    time.sleep(0.001)  # the "work" between read and write: where updates get lost
    counter.write_text(str(value + 1))


def count_worker(counter: Path, times: int, locked: bool, run: str, store: SQLiteStore) -> None:
    """Increment ``counter`` ``times`` times, under the lock or not."""

    @remote_locked("demo:{run}:counter", store=store, ttl=10)
    def locked_increment(run: str) -> None:
        _increment(counter)

    for _ in range(times):
        if locked:
            locked_increment(run)
        else:
            _increment(counter)


def stampede_worker(workdir: Path, run: str, store: SQLiteStore) -> dict[str, Any]:
    """Get the value, calling the slow API only if no one else is already doing it."""
    cache = workdir / "cache.json"

    def cache_is_fresh(run: str) -> bool:
        return cache.exists()

    @remote_locked("demo:{run}:refresh", store=store, ttl=10, skip_if=cache_is_fresh)
    def get_value(run: str, *, has_lock: bool = False) -> str:
        if has_lock:
            with open(workdir / "api-calls.log", "a") as log:
                log.write(f"{os.getpid()}\n")
            time.sleep(API_SECONDS)  # the slow, rate-limited external API
            fresh = workdir / f"cache.{os.getpid()}.tmp"
            fresh.write_text(json.dumps({"value": "42", "by": os.getpid()}))
            fresh.replace(cache)  # atomic: readers see nothing or everything
        return str(json.loads(cache.read_text())["value"])

    value = get_value(run)
    return {"value": value, "done_at": time.monotonic()}


def flight_worker(workdir: Path, run: str, store: SQLiteStore) -> dict[str, Any]:
    """Get the value through ``single_flight``: no cache of our own."""

    @single_flight("demo:{run}:flight", store=store, ttl=10)
    def get_value(run: str) -> str:
        with open(workdir / "api-calls.log", "a") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(API_SECONDS)  # the slow, rate-limited external API
        return "42"

    value = get_value(run)
    # CLOCK_MONOTONIC is one clock for every process of the machine, so the driver can
    # compare this with its own "go" time.
    return {"value": value, "done_at": time.monotonic()}


# -- driver side ------------------------------------------------------------------------


def _spawn(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "remotelock.demo", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _start_together(procs: list[subprocess.Popen[str]]) -> float:
    """Wait until every child has imported everything, then release them at once."""
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a demo worker failed to start")
    started = time.monotonic()
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return started


def _finish(procs: list[subprocess.Popen[str]]) -> list[str]:
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"a demo worker failed with exit code {proc.returncode}")
        outputs.append(out.strip())
    return outputs


def run_counter(
    workdir: Path, db: Path, processes: int, times: int, locked: bool
) -> tuple[int, float]:
    """Run one counter round; return the final count and the seconds it took."""
    counter = workdir / ("locked.txt" if locked else "unlocked.txt")
    counter.write_text("0")
    run = uuid.uuid4().hex
    mode = "locked" if locked else "unlocked"
    procs = [
        _spawn(["count", str(counter), str(times), mode, run, str(db)]) for _ in range(processes)
    ]
    started = _start_together(procs)
    finished = max(float(line.splitlines()[-1]) for line in _finish(procs))
    return _read_int(counter), finished - started


def run_stampede(
    workdir: Path, db: Path, processes: int, mode: str = "stampede"
) -> tuple[int, int, float]:
    """Run the stampede (``mode``: ``stampede`` with ``skip_if``, or ``flight``); return
    API calls, how many got the value, and the total seconds."""
    run = uuid.uuid4().hex
    workdir = workdir / mode
    workdir.mkdir()
    procs = [_spawn([mode, str(workdir), run, str(db)]) for _ in range(processes)]
    started = _start_together(procs)
    results = [json.loads(line.splitlines()[-1]) for line in _finish(procs)]
    total = max(result["done_at"] for result in results) - started
    calls_log = workdir / "api-calls.log"
    calls = len(calls_log.read_text().splitlines()) if calls_log.exists() else 0
    got = sum(result["value"] == "42" for result in results)
    return calls, got, total


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def cells(line: list[str]) -> str:
        padded = [line[0].ljust(widths[0])]
        padded += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        return "| " + " | ".join(padded) + " |"

    lines = [cells(line) for line in [headers, *rows]]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return "\n".join("   " + line for line in lines)


def main(processes: int = 8, times: int = 100, stampede: int = 20, db: Path | None = None) -> int:
    """Run both scenarios and print the results; exit status 0 if both held."""
    store_path = db or SQLiteStore().path
    print(f"remotelock demo: embedded SQLite store at {store_path}\n", flush=True)
    with tempfile.TemporaryDirectory(prefix="remotelock-demo-") as tmp:
        workdir = Path(tmp)
        expected = processes * times
        print(
            f"1. Shared counter: {processes} processes x {times} read-modify-write "
            "increments of one file",
            flush=True,
        )
        rows = []
        for locked, label in ((False, "without a lock"), (True, "@remote_locked")):
            final, seconds = run_counter(workdir, store_path, processes, times, locked)
            rows.append(
                [label, str(expected), str(final), str(expected - final), f"{seconds:.2f} s"]
            )
        print(_table(["run", "expected", "final count", "lost updates", "time"], rows))
        counter_ok = rows[1][3] == "0"

        print(
            f"\n2. Stampede: {stampede} processes want a value that a slow external API "
            f"({API_SECONDS} s per call) produces",
            flush=True,
        )
        rows, stampede_ok = [], True
        for mode, label in (("stampede", "skip_if + cache"), ("flight", "single_flight")):
            calls, got, total = run_stampede(workdir, store_path, stampede, mode)
            stampede_ok = stampede_ok and calls == 1 and got == stampede
            rows.append(
                [label, str(stampede), str(calls), f"{got} / {stampede}", f"{total:.2f} s"]
            )
        print(_table(["run", "processes", "API calls", "got the value", "total time"], rows))
    verdict = "both held" if counter_ok and stampede_ok else "FAILED"
    print(
        f"\n{verdict}: no lost update under the lock; one API call for {stampede} callers "
        "each way, the others waited and read the cache, or got the call's result."
    )
    return 0 if counter_ok and stampede_ok else 1


def _worker(argv: list[str]) -> int:
    mode = argv[0]
    store = SQLiteStore(argv[-1])
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    if mode == "count":
        count_worker(Path(argv[1]), int(argv[2]), argv[3] == "locked", argv[4], store)
        print(time.monotonic(), flush=True)
    else:
        worker = flight_worker if mode == "flight" else stampede_worker
        print(json.dumps(worker(Path(argv[1]), argv[2], store)), flush=True)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo's options (shared with ``remotelock demo``, so the two never drift)."""
    parser.add_argument("--processes", type=int, default=8, help="counter processes (8)")
    parser.add_argument("--times", type=int, default=100, help="increments per process (100)")
    parser.add_argument("--stampede", type=int, default=20, help="stampede processes (20)")
    parser.add_argument("--db", type=Path, default=None, help="SQLite file (embedded default)")


def cli(argv: list[str] | None = None) -> int:
    """``python -m remotelock.demo [--processes N] [--times N] [--stampede N]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("count", "stampede", "flight"):
        return _worker(args)
    parser = argparse.ArgumentParser(prog="remotelock demo", description=__doc__.splitlines()[0])
    add_arguments(parser)
    ns = parser.parse_args(args)
    return main(ns.processes, ns.times, ns.stampede, ns.db)


if __name__ == "__main__":
    raise SystemExit(cli())
