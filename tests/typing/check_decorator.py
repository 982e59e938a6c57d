"""Checked by mypy (not run): the decorator keeps exact signatures for every kind."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from typing_extensions import assert_type

from remotelock import Lease, RemoteLock, remote_locked


@remote_locked("user:{user_id}")
def fetch(user_id: int, *, has_lock: bool = False) -> str:
    return str(user_id)


@remote_locked("user:{user_id}")
async def afetch(user_id: int) -> bytes:
    return b""


class Service:
    @remote_locked("{self}")
    def method(self, item: str) -> int:
        return len(item)

    @remote_locked("{cls}")
    @classmethod
    def build(cls, size: int) -> Service:
        return cls()


def check() -> None:
    assert_type(fetch(1), str)
    coroutine = assert_type(afetch(1), Coroutine[Any, Any, bytes])
    coroutine.close()
    assert_type(Service().method("x"), int)
    assert_type(Service.build(3), Service)
    lock = RemoteLock("k")
    assert_type(lock.acquire(), Lease)
    assert_type(lock.acquire(blocking=False), Lease | None)
    with lock as lease:
        assert_type(lease.fencing_token, int)
