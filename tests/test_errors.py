"""The exception hierarchy: one base, builtin parents, readable, picklable."""

from __future__ import annotations

import pickle

import pytest

from remotelock import (
    LockLost,
    LockTimeout,
    RemoteLockError,
    StoreConfigError,
    StoreError,
    StoreUnavailable,
)


@pytest.mark.parametrize(
    ("error", "parents"),
    [
        (LockTimeout("k", 3, 1.5), (RemoteLockError, TimeoutError)),
        (LockLost("k", 7, "renewal failed"), (RemoteLockError,)),
        (StoreError("bad"), (RemoteLockError,)),
        (StoreUnavailable("down"), (StoreError, RemoteLockError, ConnectionError)),
        (StoreConfigError("no"), (RemoteLockError, ValueError)),
    ],
)
def test_parents_and_pickling(error: Exception, parents: tuple[type, ...]) -> None:
    for parent in parents:
        assert isinstance(error, parent)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


def test_lock_timeout_reads_well() -> None:
    error = LockTimeout("report:7", 12, 3.25)
    assert (error.key, error.attempts, error.waited) == ("report:7", 12, 3.25)
    assert str(error) == (
        "could not acquire lock 'report:7': still held by another owner after "
        "12 attempts in 3.250 s"
    )
    assert "1 attempt in" in str(LockTimeout("k", 1, 0))
    assert str(LockTimeout("k", 1, 0, "custom")) == "custom"


def test_lock_lost_reads_well() -> None:
    error = LockLost("job", 41, "a renewal found the lock gone")
    assert error.fencing_token == 41
    assert "job" in str(error)
    assert "41" in str(error)
    assert "may not have run exclusively" in str(error)
