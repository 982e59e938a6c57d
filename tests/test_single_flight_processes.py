"""single_flight across real processes, on every store that crosses processes: twelve
concurrent callers share one execution and its result (or its exception), a kept
result serves a later process, and a leader killed mid-run hands the flight to
exactly one of the waiters."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.crossproc import ROOT

pytestmark = pytest.mark.slow

KINDS = [
    "sqlite",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("dynamodb", marks=pytest.mark.dynamodb),
]


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL every process reaches the same store by, with a fresh namespace."""
    kind, fresh = request.param, uuid.uuid4().hex[:10]
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/flights.db"
    server: Any = request.getfixturevalue(f"{kind}_server")
    if kind == "redis":
        return f"{server.url}?prefix=sf-{fresh}"
    if kind == "postgres":
        return f"{server.url}?table=sf_{fresh}"
    return str(server.url("remotelock_test"))


def flyers(url: str, key: str, runs: Path, count: int, **options: object) -> list[Any]:
    """Start ``count`` caller processes (``tests.helpers.flyer``)."""
    argv = ["--url", url, "--key", key, "--runs", str(runs)]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.flyer", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(count)
    ]


def go(procs: list[Any]) -> list[Any]:
    """Once every process is ready (imported, connected), start them all at once."""
    for proc in procs:
        assert json.loads(proc.stdout.readline()) == {"event": "ready"}
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    return procs


def answers(procs: list[Any]) -> list[dict[str, Any]]:
    """Every call's answer (the JSON lines that are not events)."""
    found = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)  # closes stdin too
        lines = [json.loads(line) for line in out.splitlines() if line.strip()]
        found += [line for line in lines if "event" not in line]
    return found


def runs_of(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_twelve_callers_share_one_execution(url: str, tmp_path: Path) -> None:
    runs, key = tmp_path / "runs", f"rates:{uuid.uuid4().hex}"
    procs = go(flyers(url, key, runs, 4, threads=3, together=True, work=1))
    got = answers(procs)
    assert len(got) == 12
    assert len(runs_of(runs)) == 1  # one execution for all twelve
    assert all("result" in answer for answer in got), got
    assert len({json.dumps(answer["result"]) for answer in got}) == 1  # the same result


def test_an_exception_is_shared(url: str, tmp_path: Path) -> None:
    runs, key = tmp_path / "runs", f"rates:{uuid.uuid4().hex}"
    procs = go(flyers(url, key, runs, 3, threads=2, together=True, work=0.5, fail=True))
    got = answers(procs)
    (leader,) = runs_of(runs)
    assert got == [{"error": ["ValueError", f"upstream said no ({leader})"]}] * 6


def test_a_kept_result_serves_a_later_process(url: str, tmp_path: Path) -> None:
    runs, key = tmp_path / "runs", f"rates:{uuid.uuid4().hex}"
    (first,) = answers(flyers(url, key, runs, 1, work=0, result_ttl=60))
    (later,) = answers(flyers(url, key, runs, 1, work=0, result_ttl=60))
    assert later == first
    assert len(runs_of(runs)) == 1
    (again,) = answers(flyers(url, key, runs, 1, work=0))  # result_ttl=0: it runs again
    assert again != first
    assert len(runs_of(runs)) == 2


def test_a_killed_leader_hands_the_flight_to_exactly_one_waiter(url: str, tmp_path: Path) -> None:
    runs, key = tmp_path / "runs", f"rates:{uuid.uuid4().hex}"
    (leader,) = flyers(url, key, runs, 1, work=-1, ttl=1.5)
    assert json.loads(leader.stdout.readline()) == {"event": "calling"}
    assert json.loads(leader.stdout.readline()) == {"event": "running"}
    waiters = flyers(url, key, runs, 3, threads=2, work=0.5, ttl=1.5)
    for waiter in waiters:  # all six are calling: its lease has up to 1.5 s left
        for _ in range(2):
            assert json.loads(waiter.stdout.readline()) == {"event": "calling"}
    os.kill(leader.pid, signal.SIGKILL)
    leader.wait(10)
    leader.stdout.close()
    leader.stdin.close()
    got = answers(waiters)
    ran = runs_of(runs)
    assert ran[0] == str(leader.pid)
    assert len(ran) == 2, ran  # the dead leader's run, and exactly one more
    assert len(got) == 6
    assert all("result" in answer for answer in got), got
    assert {answer["result"]["by"] for answer in got} == {int(ran[1])}
