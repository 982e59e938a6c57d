"""Run the counter worker in several processes and check what they recorded."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_counter(
    url: str, key: str, tmp: Path, *, processes: int, count: int, work: float = 0.0
) -> tuple[int, list[dict[str, Any]]]:
    """Start the workers, wait for them; return the final count and every section."""
    counter = tmp / "counter.txt"
    counter.write_text("0")
    procs = []
    for index in range(processes):
        out = tmp / f"sections-{index}.jsonl"
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.helpers.worker",
                    "--url",
                    url,
                    "--key",
                    key,
                    "--count",
                    str(count),
                    "--counter",
                    str(counter),
                    "--out",
                    str(out),
                    "--work",
                    str(work),
                ],
                cwd=ROOT,
            )
        )
    for proc in procs:
        assert proc.wait(timeout=300) == 0
    sections = [
        json.loads(line)
        for index in range(processes)
        for line in (tmp / f"sections-{index}.jsonl").read_text().splitlines()
    ]
    return int(counter.read_text()), sorted(sections, key=lambda s: s["enter"])


def assert_exclusive(sections: list[dict[str, Any]]) -> None:
    """No two sections overlap, and fencing tokens increase in the order they ran."""
    for before, after in itertools.pairwise(sections):
        assert after["enter"] >= before["exit"], f"overlap: {before} and {after}"
        assert after["fence"] > before["fence"], f"fence went back: {before} then {after}"
