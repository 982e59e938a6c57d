"""Cross-process scenarios: the counter worker in many processes, and a lock holder in
another process that is paused or killed while it holds the lock."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from remotelock import Lease, RemoteLock

ROOT = Path(__file__).resolve().parents[2]


def run_counter(
    url: str,
    key: str,
    tmp: Path,
    *,
    processes: int,
    count: int,
    work: float = 0.0,
    limit: int = 1,
    mix: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """Start the workers, wait for them; return the final count and every section."""
    counter = tmp / "counter.txt"
    counter.write_text("0")
    procs = []
    for index in range(processes):
        out = tmp / f"sections-{index}.jsonl"
        options = {
            "--url": url,
            "--key": key,
            "--count": count,
            "--counter": counter,
            "--out": out,
            "--work": work,
            "--limit": limit,
            "--mix": mix,
        }
        argv = [str(part) for pair in options.items() for part in pair]
        procs.append(
            subprocess.Popen([sys.executable, "-m", "tests.helpers.worker", *argv], cwd=ROOT)
        )
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    sections = [
        json.loads(line)
        for index in range(processes)
        for line in (tmp / f"sections-{index}.jsonl").read_text().splitlines()
    ]
    return int(counter.read_text()), sorted(sections, key=lambda s: s["enter"])


def spawn_holder(url: str, key: str, ttl: float, limit: int = 1) -> subprocess.Popen[str]:
    """Start ``tests.helpers.holder`` (it prints JSON lines; see its docstring)."""
    argv = ["--url", url, "--key", key, "--ttl", str(ttl), "--limit", str(limit)]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.holder", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def read_json(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The next JSON line a helper process printed."""
    assert proc.stdout is not None
    return json.loads(proc.stdout.readline())  # type: ignore[no-any-return]


def pause_holder_past_its_ttl(url: str, store: Any, limit: int = 1) -> Lease:
    """Another process holds ``key`` "k" (1 s lease) and is paused (SIGSTOP: a long GC
    pause, a frozen VM) until ``store`` gives the lock to us; then it resumes.

    Checks what every store must show: our fencing token is higher; the paused holder's
    renewal reports the loss, its late release returns False, and it raises LockLost.
    Returns our lease (the caller checks that the store still says it is ours).
    """
    with spawn_holder(url, "k", ttl=1.0, limit=limit) as holder:
        held = read_json(holder)
        os.kill(holder.pid, signal.SIGSTOP)
        try:
            successor = RemoteLock("k", store=store, ttl=30, limit=limit).acquire(timeout=20)
        finally:
            os.kill(holder.pid, signal.SIGCONT)
        assert successor.fencing_token > held["fence"]
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
        report = read_json(holder)
        assert report["renewal_saw_it"] is True
        assert report["on_lost"] == ["on_lost"]
        assert report["released"] is False  # its late release did nothing
        assert read_json(holder) == {"event": "LockLost", "fence": held["fence"]}
        assert holder.wait(30) == 0
    return successor


def kill_holder_and_take_over(url: str, store: Any, ttl: float, limit: int = 1) -> float:
    """Another process holds "k" with a ``ttl`` lease and is killed (SIGKILL); returns
    how long after the kill we held it (the caller compares that with ``ttl``)."""
    with spawn_holder(url, "k", ttl=ttl, limit=limit) as holder:
        read_json(holder)
        holder.kill()
        killed = time.monotonic()
        holder.wait(10)
        lease = RemoteLock("k", store=store, ttl=30, limit=limit).acquire(timeout=30)
        took = time.monotonic() - killed
    lease.release()
    return took


def most_at_once(sections: list[dict[str, Any]]) -> int:
    """The largest number of sections that overlapped in time."""
    events = sorted(
        [(section["enter"], 1) for section in sections]
        + [(section["exit"], -1) for section in sections]
    )  # at equal times exits (-1) sort first: touching is not overlapping
    inside = peak = 0
    for _, step in events:
        inside += step
        peak = max(peak, inside)
    return peak


def assert_readers_writers(sections: list[dict[str, Any]]) -> None:
    """No exclusive section overlaps any other section, and fencing tokens increase in
    the order the sections began (readers that overlap each other included)."""
    for index, section in enumerate(sections):
        if section["kind"] != "exclusive":
            continue
        for other in sections[:index] + sections[index + 1 :]:
            apart = other["exit"] <= section["enter"] or other["enter"] >= section["exit"]
            assert apart, f"overlap: {section} and {other}"
    for before, after in itertools.pairwise(sections):
        if before["kind"] == "exclusive" or after["kind"] == "exclusive":
            assert after["fence"] > before["fence"], f"fence went back: {before} then {after}"


def assert_exclusive(sections: list[dict[str, Any]]) -> None:
    """No two sections overlap, and fencing tokens increase in the order they ran."""
    for before, after in itertools.pairwise(sections):
        assert after["enter"] >= before["exit"], f"overlap: {before} and {after}"
        assert after["fence"] > before["fence"], f"fence went back: {before} then {after}"
