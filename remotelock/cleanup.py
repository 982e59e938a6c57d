"""Giving back, in the background, what a failed step may have taken.

A request whose reply is lost may still have run on the server: an acquire that
raised :class:`~remotelock.StoreUnavailable` may have taken the lock, a waiter whose
wait failed may still stand in the queue (and be handed the lock), and a release that
failed may not have freed it. Left alone, each would keep the lock from everyone for
a whole lease. So the token is given back here, retried with backoff while the store
is unreachable, until it succeeds or the lease it could have taken has run out anyway
(bounded: nothing is retried forever).

The caller does not wait for it: it gets its error at once. Sync give-backs run on one
daemon thread per process (started when needed, gone when idle); async ones run as
tasks on the caller's event loop, kept until they finish.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("remotelock.lock")

FIRST_RETRY = 0.05
MAX_RETRY = 1.0
IDLE_SECONDS = 5.0


class _Job:
    __slots__ = ("delay", "due", "key", "step", "until")

    def __init__(self, step: Callable[[], object], key: str, until: float) -> None:
        self.step = step
        self.key = key
        self.until = until
        self.due = 0.0
        self.delay = FIRST_RETRY


class Cleaner:
    """One thread retrying give-backs for the whole process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._running = False

    def submit(self, step: Callable[[], object], key: str, until: float) -> None:
        """Run ``step()`` until it returns without raising, or until ``until`` passes."""
        with self._cond:
            self._jobs.append(_Job(step, key, until))
            self._cond.notify()
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._main, name="remotelock-cleanup", daemon=True).start()

    def _main(self) -> None:
        idle_since = time.monotonic()
        while True:
            with self._cond:
                now = time.monotonic()
                if not self._jobs:
                    if now - idle_since >= IDLE_SECONDS:
                        self._running = False
                        return
                    self._cond.wait(IDLE_SECONDS)
                    continue
                job = min(self._jobs, key=lambda queued: queued.due)
                if job.due > now:
                    self._cond.wait(job.due - now)
                    continue
                self._jobs.remove(job)
            idle_since = time.monotonic()
            self._run(job)

    def _run(self, job: _Job) -> None:
        try:
            job.step()
        except Exception as exc:
            now = time.monotonic()
            if now + job.delay >= job.until:
                log.debug("gave up giving back lock %r: %s", job.key, exc)
                return
            job.due = now + job.delay
            job.delay = min(job.delay * 2, MAX_RETRY)
            with self._cond:
                self._jobs.append(job)
            return
        log.debug("gave back lock %r after a failed step", job.key)


CLEANER = Cleaner()


def give_back(step: Callable[[], object], key: str, within: float) -> None:
    """Retry ``step`` in the background for at most ``within`` seconds."""
    CLEANER.submit(step, key, time.monotonic() + within)


async def agive_back(step: Callable[[], Awaitable[object]], key: str, within: float) -> None:
    """The async twin of :func:`give_back` (run it as a task of its own)."""
    import asyncio

    until = time.monotonic() + within
    delay = FIRST_RETRY
    while True:
        try:
            await step()
        except Exception as exc:
            if time.monotonic() + delay >= until:
                log.debug("gave up giving back lock %r: %s", key, exc)
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY)
            continue
        log.debug("gave back lock %r after a failed step", key)
        return


# Tasks that must outlive whoever started them (the loop keeps only weak references).
background: set[Any] = set()


def in_background(coro: Awaitable[object]) -> Any:
    """Run ``coro`` as a task that nobody needs to keep a reference to."""
    import asyncio

    task = asyncio.ensure_future(coro)
    background.add(task)
    task.add_done_callback(background.discard)
    return task


def _forget_all() -> None:
    global CLEANER
    CLEANER = Cleaner()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)


__all__ = ["agive_back", "background", "give_back", "in_background"]
