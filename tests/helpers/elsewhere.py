"""Holding a lock in another thread, so the test's own thread can wait for it.

A thread that holds a key and asks for it again is refused at once (remotelock locks
are not reentrant), so a test that plays both the holder and a waiter takes the lock
in a short-lived thread of its own and releases it from wherever it likes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from remotelock import Lease, RemoteLock

T = TypeVar("T")


def in_thread(fn: Callable[[], T]) -> T:
    """``fn()`` run in a fresh thread; its result, or its exception re-raised here."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(fn())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(60)
    if errors:
        raise errors[0]
    return results[0]


@contextmanager
def held_elsewhere(lock: RemoteLock, **acquire: Any) -> Iterator[Lease]:
    """Take ``lock`` in another thread for the duration of the block."""
    lease = in_thread(lambda: lock.acquire(**acquire))
    assert lease is not None
    try:
        yield lease
    finally:
        lease.release()


__all__ = ["held_elsewhere", "in_thread"]
