"""The async PostgreSQL store's listener: one LISTEN connection per event loop, read by a task.

Hand-written, beside the sync :mod:`remotelock.stores.postgres.listener`, because the
two sides wait in different ways: here each waiting task awaits a future, and a task
on each event loop reads the notifications (an asyncio connection belongs to its
loop); there each waiting thread blocks on an event, and one daemon thread per process
reads them. The names match (less ``Async``): the store's ``wait`` steps, written once
in :mod:`remotelock.stores.postgres.aio`, use ``waiter()`` and ``wait()`` on either
side. The bookkeeping both share is free of I/O, in
:mod:`remotelock.stores.postgres.waiting`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import psycopg

from ..shared.threaded import resolve
from .common import log, server_conninfo
from .loops import PerLoop
from .waiting import BACKOFF_FIRST, LISTEN_IDLE, Subscription, Waiters, next_backoff

if TYPE_CHECKING:
    from .connections_aio import AsyncSource, Conn


class _Loop:
    """One event loop's waiters, listener task and readiness."""

    __slots__ = ("ready", "start", "task", "waiters")

    def __init__(self, start: Callable[[_Loop], Coroutine[Any, Any, None]]) -> None:
        self.start = start
        self.waiters: Waiters[asyncio.Future[None]] = Waiters()
        self.task: asyncio.Task[None] | None = None
        self.ready = False  # LISTEN is active on the listener's connection

    def subscribe(self, topic: str, wake: asyncio.Future[None], every: bool = False) -> bool:
        """Register a waiter; ``True`` if LISTEN is active, so no release can be missed."""
        self.waiters.add(topic, wake, every)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self.start(self))
        return self.ready

    def unsubscribe(self, topic: str, wake: asyncio.Future[None]) -> None:
        self.waiters.discard(topic, wake)

    def is_ready(self) -> bool:
        """Whether LISTEN is active (a subscription made now cannot miss a release)."""
        return self.ready

    def wake(self, topic: str | None = None) -> None:
        """Wake the next waiter of ``topic`` and its ``every`` waiters (all when ``None``)."""
        if topic is None:
            futures = self.waiters.of(None)
        else:
            futures = self.waiters.notified(topic, time.monotonic(), _woken)
        for future in futures:
            resolve(future)

    def pass_on(self) -> float:
        """Wake the next waiters where the woken one did not try; seconds to the next
        such check (at most half a second)."""
        now = time.monotonic()
        for future in self.waiters.overdue(now, _woken):
            resolve(future)
        return self.waiters.next_due(now, 0.5)


def _woken(future: asyncio.Future[None]) -> bool:
    return future.done()


class AsyncWaiter(Subscription["asyncio.Future[None]"]):
    """A waiting task's future, set by its loop's listener task."""

    __slots__ = ()

    def __init__(self, listener: _Loop | None, topic: str, every: bool = False) -> None:
        super().__init__(listener, topic, asyncio.get_running_loop().create_future(), every)

    async def wait(self, seconds: float) -> None:
        await asyncio.wait((self.wake,), timeout=seconds)

    def woken(self) -> bool:
        return self.wake.done()


class AsyncListener:
    """One LISTEN connection per store per event loop, read by a task on that loop.

    Each notification wakes the payload's longest waiter (see
    :class:`~.waiting.Waiters`). When the connection
    drops, every waiter is woken (it re-checks the lock) and the task reconnects while
    anyone waits. It disconnects after ``LISTEN_IDLE`` seconds without waiters; the
    next waiter starts it again.
    """

    def __init__(
        self, source: AsyncSource, listen_url: str | None, timeout: float, listen: Any
    ) -> None:
        self._source = source
        self._listen_url = listen_url
        self._timeout = timeout
        self._listen = listen
        self._loops = PerLoop(lambda: _Loop(self._run))

    def waiter(self, topic: str, enabled: bool, every: bool = False) -> AsyncWaiter:
        """A waiter on ``topic`` (use it as a context manager); a poller if not ``enabled``;
        woken by every notification of ``topic`` if ``every`` (see :class:`Waiters`)."""
        return AsyncWaiter(self._loops.get() if enabled else None, topic, every)

    def ready(self) -> bool:
        """Whether LISTEN is active for the running event loop."""
        return self._loops.get().ready

    def tried(self, key: str, payload: Callable[[str], str]) -> None:
        """A step on this loop tried the lock of ``key``, whose topic is ``payload(key)``
        (see :class:`Waiters`). Every acquire calls it: it returns at once unless a
        wake-up on this loop awaits its try."""
        state = self._loops.peek()
        if state is not None and state.waiters.expecting():
            state.waiters.tried(payload(key))

    async def _conninfo(self) -> str:
        base = self._listen_url
        if base is None:
            base = await self._source.conninfo()
        return server_conninfo(base, self._timeout, listener=True)

    async def _run(self, state: _Loop) -> None:
        backoff = BACKOFF_FIRST
        while True:
            try:
                conninfo = await self._conninfo()
                async with await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True
                ) as conn:
                    await conn.execute(self._listen)
                    state.ready, backoff = True, BACKOFF_FIRST
                    if await _read(conn, state):
                        return
            except Exception as exc:  # never let the task die on a surprise
                log.debug("PostgreSQL listener lost its connection: %s", exc)
            finally:
                state.ready = False
                state.wake()  # a release may have gone unheard: everyone re-checks
            await asyncio.sleep(backoff)
            backoff = next_backoff(backoff)
            if not state.waiters:
                return

    async def close(self) -> None:
        """Stop this loop's listener task."""
        state = self._loops.pop()
        if state is not None and state.task is not None:
            state.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await state.task


async def _read(conn: Conn, state: _Loop) -> bool:
    """Dispatch notifications until no one has waited for ``LISTEN_IDLE`` (``True``)."""
    quiet_since = time.monotonic()
    while True:
        async for note in conn.notifies(timeout=state.pass_on()):
            state.wake(note.payload)
            state.pass_on()
        state.pass_on()
        now = time.monotonic()
        if state.waiters:
            quiet_since = now
        elif now - quiet_since > LISTEN_IDLE:
            return True


__all__ = ["AsyncListener", "AsyncWaiter"]
