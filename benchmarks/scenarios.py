"""The scenarios: uncontended cycles, contended sections, permits, a stampede, imports.

Each returns plain numbers; ``__main__`` turns them into tables. Multi-process
scenarios start their workers first and release them together once all are ready,
so process start-up never counts.
"""

from __future__ import annotations

import itertools
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from math import nan
from pathlib import Path
from typing import Any

import redis

from benchmarks.adapters import name_of, requests_sent

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stores:
    """Where each store runs, and the Redis that holds the scenarios' own data."""

    urls: dict[str, str]
    data: str

    def url(self, store: str) -> str:
        return self.urls[store]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


# -- (a) uncontended ---------------------------------------------------------------------


@dataclass
class Cycle:
    name: str
    median_us: float
    p99_us: float
    requests: float | None = None
    """Store requests per acquire + release (stores that count them: DynamoDB)."""


def uncontended(adapters: list[Any], rounds: int, cycles: int) -> list[Cycle]:
    """Acquire+release of a free lock, timed one cycle at a time. Short rounds
    interleave the adapters, so a noisy moment of a shared machine hits them alike."""
    samples: dict[str, list[float]] = {adapter.name: [] for adapter in adapters}
    keys = {adapter.name: f"bench:a:{uuid.uuid4().hex}" for adapter in adapters}
    for adapter in adapters:
        for _ in range(300):  # warm up: connections, scripts, caches
            adapter.release(adapter.acquire(keys[adapter.name]))
    sent = {adapter.name: requests_sent(adapter) for adapter in adapters}
    for _ in range(rounds):
        for adapter in adapters:
            key, timings = keys[adapter.name], samples[adapter.name]
            for _ in range(cycles):
                started = time.perf_counter()
                adapter.release(adapter.acquire(key))
                timings.append(time.perf_counter() - started)
    per_cycle: dict[str, float | None] = {}
    for adapter in adapters:
        before, after = sent[adapter.name], requests_sent(adapter)
        if before is None or after is None:
            per_cycle[adapter.name] = None
        else:
            per_cycle[adapter.name] = (after - before) / (rounds * cycles)
    return [
        Cycle(
            name, statistics.median(values) * 1e6, percentile(values, 0.99) * 1e6, per_cycle[name]
        )
        for name, values in samples.items()
    ]


# -- workers ---------------------------------------------------------------------------------


def run_workers(
    commands: list[list[str]], after_go: Callable[[], None] | None = None
) -> tuple[float, list[dict[str, Any]]]:
    """Start every worker, release them together; return the "go" time and their records."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", *command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for command in commands
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError("a benchmark worker failed to start")
        go = time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        if after_go is not None:
            after_go()
        records: list[dict[str, Any]] = []
        for proc in procs:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError(f"a benchmark worker failed ({proc.wait()})")
            records.extend(json.loads(line))
        for proc in procs:  # everyone has reported: now they may exit
            proc.communicate("bye\n", timeout=60)
        return go, records
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _command(
    scenario: str, kind: str, url: str, stores: Stores, key: str, **more: Any
) -> list[str]:
    argv = [scenario, "--adapter", kind, "--url", url, "--data", stores.data, "--key", key]
    for name, value in more.items():
        argv += [f"--{name}", str(value)]
    return argv


# -- (b) contended ---------------------------------------------------------------------------


@dataclass
class Contention:
    name: str
    per_second: float
    lost_updates: int
    handoff_p50_ms: float
    handoff_p99_ms: float
    other_process: float
    worst_wait_ms: float
    ideal_wait_ms: float
    requests: float | None = None
    """Store requests per section (acquire, refused tries, waits, release): DynamoDB."""

    @property
    def fairness(self) -> float:
        """Worst acquire wait over the ideal first-come-first-served wait."""
        return self.worst_wait_ms / self.ideal_wait_ms


def contended(
    stores: Stores, kind: str, url: str, *, processes: int, count: int, work: float
) -> Contention:
    """``processes`` workers x ``count`` sections of ``work`` seconds on one lock."""
    key = f"bench:b:{uuid.uuid4().hex}"
    command = _command("contended", kind, url, stores, key, count=count, work=work)
    go, sections = run_workers([command] * processes)
    sections.sort(key=lambda section: section["acquired"])
    total = len(sections)
    final = int(redis.Redis.from_url(stores.data).get(key + ":counter") or 0)
    pairs = list(itertools.pairwise(sections))
    handoffs = [(b["acquired"] - a["releasing"]) * 1000 for a, b in pairs]
    waits = [(s["acquired"] - s["requested"]) * 1000 for s in sections]
    # First come, first served, every process waits for the other processes' sections.
    interval = (sections[-1]["acquired"] - sections[0]["acquired"]) / (total - 1) * 1000
    return Contention(
        name=name_of(kind),
        per_second=total / (max(s["releasing"] for s in sections) - go),
        lost_updates=total - final,
        handoff_p50_ms=percentile(handoffs, 0.5),
        handoff_p99_ms=percentile(handoffs, 0.99),
        other_process=sum(a["pid"] != b["pid"] for a, b in pairs) / len(pairs),
        worst_wait_ms=max(waits),
        ideal_wait_ms=(processes - 1) * interval,
        requests=per_record(sections),
    )


# -- (e) permits -----------------------------------------------------------------------------


@dataclass
class Permits:
    name: str
    per_second: float
    wait_p99_ms: float
    most_at_once: int


def permits(
    stores: Stores, kind: str, url: str, *, processes: int, limit: int, count: int, work: float
) -> Permits:
    """``processes`` workers share ``limit`` permits, ``count`` sections of ``work`` s each."""
    key = f"bench:e:{uuid.uuid4().hex}"
    command = _command("permits", kind, url, stores, key, count=count, work=work, limit=limit)
    go, sections = run_workers([command] * processes)
    waits = [(s["acquired"] - s["requested"]) * 1000 for s in sections]
    events = sorted(
        [(s["acquired"], 1) for s in sections] + [(s["releasing"], -1) for s in sections]
    )
    inside = peak = 0
    for _, step in events:
        inside += step
        peak = max(peak, inside)
    return Permits(
        name=name_of(kind),
        per_second=len(sections) / (max(s["releasing"] for s in sections) - go),
        wait_p99_ms=percentile(waits, 0.99),
        most_at_once=peak,
    )


# -- (c) stampede ----------------------------------------------------------------------------


@dataclass
class Stampede:
    name: str
    api_calls: int
    got_value: int
    callers: int
    late_ms: float
    """How long after the API call ended the last caller had the value."""
    requests: float | None = None
    """Store requests per caller (DynamoDB)."""


def stampede(stores: Stores, kind: str, url: str, processes: int, api: float) -> Stampede:
    """``processes`` callers want a value that a ``api``-second call produces."""
    key = f"bench:c:{uuid.uuid4().hex}"
    command = _command("stampede", kind, url, stores, key, api=api)
    _go, records = run_workers([command] * processes)
    client = redis.Redis.from_url(stores.data)
    # From the moment the first call's wait ended, as the floor counts from its push: the
    # caller's own bookkeeping before it (a command on a busy machine) is no part of it.
    ended = min((record["api_end"] for record in records if "api_end" in record), default=nan)
    return Stampede(
        name=name_of(kind),
        api_calls=int(client.get(key + ":calls") or 0),
        got_value=sum(record["value"] == "42" for record in records),
        callers=processes,
        late_ms=(max(record["done"] for record in records) - ended) * 1000,
        requests=per_record(records),
    )


def per_record(records: list[dict[str, Any]]) -> float | None:
    """The mean of the records' store request counts, if they carry them."""
    counts = [record["requests"] for record in records if "requests" in record]
    return statistics.fmean(counts) if counts else None


def floor(stores: Stores, processes: int, api: float) -> Stampede:
    """What the machine allows: processes blocked in BLPOP, woken by one script at the
    end of a pretend API call, each doing one GET. No lock library is involved."""
    key = f"bench:floor:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(stores.data)
    client.set(key + ":cache", "42")
    woken: list[float] = []

    def wake_all() -> None:
        while client.llen(key + ":arrived") < processes:
            time.sleep(0.005)
        time.sleep(api)
        arrived: list[Any] = client.lrange(key + ":arrived", 0, -1)  # typed bytes | str
        pids = [pid.decode() for pid in arrived]
        woken.append(time.monotonic())
        script = "for _, p in ipairs(ARGV) do redis.call('RPUSH', KEYS[1] .. p, 1) end"
        client.eval(script, 1, key + ":wake:", *pids)

    command = ["floor", "--data", stores.data, "--key", key]
    _go, records = run_workers([command] * processes, after_go=wake_all)
    return Stampede(
        name="machine floor (no lock: woken at once, one GET each)",
        api_calls=0,
        got_value=sum(record["value"] == "42" for record in records),
        callers=processes,
        late_ms=(max(record["done"] for record in records) - woken[0]) * 1000,
    )


# -- (d) import time ---------------------------------------------------------------------


def import_ms(module: str, runs: int) -> float:
    """Median milliseconds to ``import module`` in a fresh interpreter (a cold start)."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    samples = []
    for _ in range(runs):
        result = subprocess.run(
            [sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT
        )
        samples.append(float(result.stdout) * 1000)
    return statistics.median(samples)


__all__ = [
    "Contention",
    "Cycle",
    "Permits",
    "Stampede",
    "Stores",
    "contended",
    "floor",
    "import_ms",
    "permits",
    "stampede",
    "uncontended",
]
