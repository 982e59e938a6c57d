"""How the asyncio doorbell runs its reader and puts its waiters to sleep: tasks.

Hand-written, beside its sync twin :mod:`remotelock.stores.redis.threads`, because
this is where the two worlds really differ: an asyncio waiter awaits a future on its
event loop (resolved by the reader task on the same loop, so no lock is ever
contended), and the reader is a task that closing cancels and awaits. The doorbell
source, :mod:`remotelock.stores.redis.doorbell_aio`, calls these by the same names
as the generated sync doorbell calls its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .bells import Waiter

AsyncCheck = Callable[[], Awaitable[object]]
"""One look at the server: a :class:`Handover`, ``None`` (re-check) or :data:`BUSY`."""
AsyncRefresh = Callable[[], Awaitable["float | None"]]
"""Keeps a queued waiter's place in line: when the server last heard of it (see
:class:`~.common.Keeper`), or ``None`` if it lost its place."""


class TaskWaiter(Waiter):
    """A waiting task: the reader resolves its future."""

    __slots__ = ("future",)

    def __init__(self, channel: str, role: str, token: str | None) -> None:
        super().__init__(channel, role, token)
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def signal(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def rearm(self) -> None:
        super().rearm()
        if self.future.done():
            self.future = self.future.get_loop().create_future()

    async def sleep(self, seconds: float) -> None:
        """Until woken or ``seconds`` pass."""
        await asyncio.wait((self.future,), timeout=seconds)


class TaskReader:
    """Runs a doorbell's reader as a task on the running event loop."""

    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    def start(self, read: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.get_running_loop().create_task(read(), name="remotelock-redis-bells")
        self._task = task
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    @staticmethod
    async def read(turn: Callable[[float], Awaitable[bool]], timeout: float) -> bool:
        """The reader task's next turn at the connection (``False``: stop)."""
        return await turn(timeout)

    @staticmethod
    async def sleep(
        waiter: TaskWaiter, seconds: float, nudge: Callable[[], Awaitable[None]]
    ) -> None:
        """A task sleeps on its future; the reader task on the same loop reads for it
        (no thread switch to save, unlike :meth:`ThreadReader.sleep`)."""
        await waiter.sleep(seconds)

    async def stop(self) -> None:
        """Cancel the reader task and wait until it has closed its connection."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


__all__ = ["AsyncCheck", "AsyncRefresh", "TaskReader", "TaskWaiter"]
