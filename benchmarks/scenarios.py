"""The three scenarios: uncontended cycles, contended sections, and a stampede.

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
from pathlib import Path
from typing import Any

import redis

from benchmarks.adapters import make

ROOT = Path(__file__).resolve().parents[1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


# -- (a) uncontended -------------------------------------------------------------------


@dataclass
class Cycle:
    name: str
    median_us: float
    p99_us: float


def uncontended(url: str, kinds: list[str], rounds: int, cycles: int) -> list[Cycle]:
    """Acquire+release of a free lock, timed one cycle at a time, adapters interleaved."""
    adapters = [make(kind, url) for kind in kinds]
    samples: dict[str, list[float]] = {adapter.name: [] for adapter in adapters}
    for _ in range(rounds):
        for adapter in adapters:
            key = f"bench:a:{uuid.uuid4().hex}"
            for _ in range(200):  # warm up: connections, scripts, caches
                adapter.release(adapter.acquire(key))
            timings = samples[adapter.name]
            for _ in range(cycles):
                started = time.perf_counter()
                adapter.release(adapter.acquire(key))
                timings.append(time.perf_counter() - started)
    return [
        Cycle(name, statistics.median(values) * 1e6, percentile(values, 0.99) * 1e6)
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
            out, _ = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"a benchmark worker failed ({proc.returncode})")
            records.extend(json.loads(out.strip().splitlines()[-1]))
        return go, records
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


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

    @property
    def fairness(self) -> float:
        """Worst acquire wait over the ideal first-come-first-served wait."""
        return self.worst_wait_ms / self.ideal_wait_ms


def contended(url: str, kind: str, processes: int, count: int, work: float) -> Contention:
    """``processes`` workers x ``count`` sections of ``work`` seconds on one lock."""
    key = f"bench:b:{uuid.uuid4().hex}"
    command = ["contended", "--adapter", kind, "--url", url, "--key", key,
               "--count", str(count), "--work", str(work)]  # fmt: skip
    go, sections = run_workers([command] * processes)
    sections.sort(key=lambda section: section["acquired"])
    total = len(sections)
    final = int(redis.Redis.from_url(url).get(key + ":counter") or 0)
    pairs = list(itertools.pairwise(sections))
    handoffs = [(b["acquired"] - a["releasing"]) * 1000 for a, b in pairs]
    waits = [(s["acquired"] - s["requested"]) * 1000 for s in sections]
    # First come, first served, every process waits for the other processes' sections.
    interval = (sections[-1]["acquired"] - sections[0]["acquired"]) / (total - 1) * 1000
    return Contention(
        name=make(kind, url).name,
        per_second=total / (max(s["releasing"] for s in sections) - go),
        lost_updates=total - final,
        handoff_p50_ms=percentile(handoffs, 0.5),
        handoff_p99_ms=percentile(handoffs, 0.99),
        other_process=sum(a["pid"] != b["pid"] for a, b in pairs) / len(pairs),
        worst_wait_ms=max(waits),
        ideal_wait_ms=(processes - 1) * interval,
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


def stampede(url: str, kind: str, processes: int, api: float) -> Stampede:
    """``processes`` callers want a value that a ``api``-second call produces."""
    key = f"bench:c:{uuid.uuid4().hex}"
    command = ["stampede", "--adapter", kind, "--url", url, "--key", key, "--api", str(api)]
    _go, records = run_workers([command] * processes)
    client = redis.Redis.from_url(url)
    started = float(client.get(key + ":api-start") or "nan")
    return Stampede(
        name=make(kind, url).name,
        api_calls=int(client.get(key + ":calls") or 0),
        got_value=sum(record["value"] == "42" for record in records),
        callers=processes,
        late_ms=(max(record["done"] for record in records) - (started + api)) * 1000,
    )


def floor(url: str, processes: int, api: float) -> Stampede:
    """What the machine allows: processes blocked in BLPOP, woken by one script at the
    end of a pretend API call, each doing one GET. No lock library is involved."""
    key = f"bench:floor:{uuid.uuid4().hex}"
    client = redis.Redis.from_url(url)
    client.set(key + ":cache", "42")
    woken: list[float] = []

    def wake_all() -> None:
        while client.llen(key + ":arrived") < processes:
            time.sleep(0.005)
        time.sleep(api)
        pids = [pid.decode() for pid in client.lrange(key + ":arrived", 0, -1)]
        woken.append(time.monotonic())
        script = "for _, p in ipairs(ARGV) do redis.call('RPUSH', KEYS[1] .. p, 1) end"
        client.eval(script, 1, key + ":wake:", *pids)

    command = ["floor", "--url", url, "--key", key, "--adapter", "none"]
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
    "Stampede",
    "contended",
    "floor",
    "import_ms",
    "stampede",
    "uncontended",
]
