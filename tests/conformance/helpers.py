"""Threads, waits and timing for the conformance tests.

CPython's lock tests drive a lock from a "bunch" of raw ``_thread`` threads and wait by
polling with ``time.sleep``, so that a broken lock cannot also break the harness that
checks it. :class:`Bunch` does the same, with two changes: every wait is bounded (a
lock that never frees fails the test instead of hanging the run), and whatever a
thread raises is recorded and raised again in the test's own thread.
"""

from __future__ import annotations

import _thread
import asyncio
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar

import tenacity

from remotelock import Lease, LockTimeout, RemoteLock
from remotelock.stores.base import Store

T = TypeVar("T")

TTL = 3.0
"""Lease length of most locks here: renewed every third of it, freed soon if abandoned.
Not shorter: a lease of 1 s was once lost on DynamoDB Local under the suite's two
workers (its renewal took longer than the 0.65 s it had), and a lost lease is not
what these tests are about."""

SHORT_TTL = 1.0  # long enough that a loaded machine still renews in time
"""Lease length where a test sleeps past the ttl to show the lease was renewed."""

PATIENCE = 10.0
"""The longest any step waits for something that should happen promptly."""

BOUNDED = tenacity.stop_after_delay(PATIENCE)
"""``stop=`` of locks whose blocking acquires should succeed: a lock that never frees
fails the test with LockTimeout after PATIENCE, not after the default 60 s."""

TIMEOUT = 0.5
"""The ``timeout=`` of acquires that are meant to time out."""

SLACK = 0.5
"""How late a timed-out acquire may return on a loaded two-core machine."""


class Boom(Exception):
    """Raised inside ``with`` blocks (distinct from any error the lock itself raises)."""


def new_lock(key: str, store: Store, **options: Any) -> RemoteLock:
    """A RemoteLock on ``store`` with this suite's defaults (``ttl=TTL``, ``stop=BOUNDED``)."""
    options.setdefault("ttl", TTL)
    options.setdefault("stop", BOUNDED)
    return RemoteLock(key, store=store, **options)


def eventually(predicate: Callable[[], object], timeout: float = PATIENCE) -> bool:
    """Poll ``predicate`` until it is true (``True``) or ``timeout`` passes (``False``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


def wait_until(predicate: Callable[[], object], what: str, timeout: float = PATIENCE) -> None:
    """Poll ``predicate`` until it is true; fail the test if ``timeout`` passes first."""
    if not eventually(predicate, timeout):
        raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")


async def async_eventually(predicate: Callable[[], object], timeout: float = PATIENCE) -> bool:
    """:func:`eventually` for asyncio code (polls with ``asyncio.sleep``)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.005)
    return True


def let_threads_block(count: int) -> None:
    """Give ``count`` threads time to reach a blocking acquire (nothing can tell us they did)."""
    time.sleep(0.1 + 0.02 * count)


async def let_tasks_block(count: int) -> None:
    """:func:`let_threads_block` for tasks."""
    await asyncio.sleep(0.1 + 0.02 * count)


Outcome = Lease | LockTimeout | None


def timed_acquire(lock: RemoteLock, **kwargs: Any) -> tuple[Outcome, float]:
    """``lock.acquire(**kwargs)``: what it gave (a LockTimeout is caught) and how long it took.

    A lease it got is released at once, so a test that fails never leaves it behind.
    """
    started = time.monotonic()
    try:
        outcome: Outcome = lock.acquire(**kwargs)
    except LockTimeout as exc:
        outcome = exc
    elapsed = time.monotonic() - started
    if isinstance(outcome, Lease):
        outcome.release()
    return outcome, elapsed


async def async_timed_acquire(lock: RemoteLock, **kwargs: Any) -> tuple[Outcome, float]:
    """:func:`timed_acquire` with ``await lock.aacquire(**kwargs)``."""
    started = time.monotonic()
    try:
        outcome: Outcome = await lock.aacquire(**kwargs)
    except LockTimeout as exc:
        outcome = exc
    elapsed = time.monotonic() - started
    if isinstance(outcome, Lease):
        await outcome.arelease()
    return outcome, elapsed


class Bunch(Generic[T]):
    """``count`` threads running ``fn`` at the same time.

    ``with Bunch(fn, 5) as bunch:`` starts them and waits until all have started; leaving
    the block waits until all have finished (at most PATIENCE) and raises what a thread
    raised. If the block itself raises, leaving does not wait: the threads end on their
    own when their lock's ``stop`` fires.

    The threads are raw ``_thread`` threads, as in CPython's tests: :mod:`threading`
    knows nothing of them unless the code they run asks it (``threading.current_thread()``
    registers a dummy Thread for a foreign thread), which is what the thread-leak case
    looks for. The harness itself only uses ``_thread.get_ident``.
    """

    def __init__(self, fn: Callable[[], T], count: int = 1) -> None:
        self.fn = fn
        self.count = count
        self.started: list[int] = []
        self.finished: list[int] = []
        self.results: list[T] = []
        self.errors: list[BaseException] = []

    @classmethod
    def run(cls, fn: Callable[[], T]) -> T:
        """Run ``fn`` in one other thread and return its result (or raise its error)."""
        with cls(fn) as bunch:
            pass
        return bunch.results[0]

    def _task(self) -> None:
        ident = _thread.get_ident()
        self.started.append(ident)
        try:
            self.results.append(self.fn())
        except BaseException as exc:  # raised again in the test's thread
            self.errors.append(exc)
        finally:
            self.finished.append(ident)

    def __enter__(self) -> Bunch[T]:
        for _ in range(self.count):
            _thread.start_new_thread(self._task, ())
        wait_until(lambda: len(self.started) >= self.count, f"{self.count} thread(s) to start")
        return self

    def wait_for_finished(self, timeout: float = PATIENCE) -> None:
        """Wait until every thread has finished, or one raised; fail after ``timeout``."""
        done = eventually(lambda: len(self.finished) >= self.count or self.errors, timeout)
        self._raise_errors()
        if not done:
            raise AssertionError(
                f"{self.count - len(self.finished)} of {self.count} thread(s) still running "
                f"after {timeout:g} s"
            )

    def _raise_errors(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise AssertionError(
                f"{len(self.errors)} of {self.count} threads raised: {self.errors!r}"
            ) from self.errors[0]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.wait_for_finished()


async def finish_within(awaitable: Awaitable[T], timeout: float, what: str) -> T:
    """Await ``awaitable`` (as a task); cancel it and fail the test if ``timeout`` passes."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        await asyncio.wait({task})
        raise AssertionError(f"{what} still running after {timeout:g} s")
    return task.result()


def busy_for_others(key: str, store: Store) -> bool:
    """Whether another thread, with a lock object of its own, is refused the key now
    (the holding thread itself would get RuntimeError: locks are not reentrant)."""

    def probe() -> bool:
        lease = new_lock(key, store).acquire(blocking=False)
        if lease is None:
            return True
        lease.release()
        return False

    return Bunch.run(probe)
