"""The asyncio Redis store's doorbell: one subscriber connection and a reader task per
event loop (asyncio connections belong to the loop that opened them).

The twin of :mod:`remotelock.stores.redis.doorbell`: the reader task alone uses the
pub/sub connection; waiters are futures awaited with the exact time left; a waiter
that needs a new channel while the reader is blocked reading publishes a nudge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ..base import Handover
from .bells import (
    ACTIVATED,
    BUSY,
    NUDGE,
    START,
    UNAVAILABLE,
    WAITING,
    WATCH,
    Switchboard,
    Wait,
    Waiter,
    decode,
    nudge_channel,
)
from .doorbell import POLL_SLICE, REFRESH_MARGIN, TICK

log = logging.getLogger("remotelock.stores.redis")

AsyncCheck = Callable[[], Awaitable[object]]
"""One look at the server: a :class:`Handover`, ``None`` (re-check) or :data:`BUSY`."""
AsyncRefresh = Callable[[], Awaitable[bool]]


class _TaskWaiter(Waiter):
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


class AsyncDoorbell:
    """Wake-ups for one async store's waiters on one event loop (one connection)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._board = Switchboard(nudge_channel(prefix))
        self._board.broken = not callable(getattr(client, "pubsub", None))
        self._task: asyncio.Task[None] | None = None

    async def wait(
        self, spec: Wait, check: AsyncCheck, refresh: AsyncRefresh | None = None
    ) -> Handover | None:
        """See :meth:`remotelock.stores.redis.doorbell.Doorbell.wait`."""
        board = self._board
        waiter = _TaskWaiter(spec.channel, spec.role, spec.token)
        asked = spec.asked
        while True:
            outcome, need = board.enter(waiter, asked, time.monotonic())
            try:
                if need == START:
                    self._start(board)
                elif need == NUDGE:
                    await self._client.publish(board.nudge, "")
                if outcome is WAITING:
                    await self._sleep(waiter, spec, refresh)
            finally:
                woken, value = board.leave(waiter, time.monotonic())
            if outcome is WAITING:
                if not woken:
                    return None  # the deadline, or the place in line was lost
                outcome = value
            if outcome is UNAVAILABLE:
                return await self._poll(spec, check, refresh)
            if outcome is not ACTIVATED:
                return outcome if isinstance(outcome, Handover) else None
            # A watcher cannot tell from a look whether a release came and went.
            if spec.role == WATCH or time.monotonic() >= spec.deadline:
                return None
            asked = time.monotonic()  # messages from now on reach us: look once
            seen = await check()
            if seen is not BUSY:
                return seen if isinstance(seen, Handover) else None

    @staticmethod
    async def _sleep(waiter: _TaskWaiter, spec: Wait, refresh: AsyncRefresh | None) -> None:
        """Until woken, the deadline, or the place in line was lost (not woken then)."""
        while True:
            now = time.monotonic()
            until = min(spec.deadline, spec.refresh_at)
            if until > now:
                await asyncio.wait((waiter.future,), timeout=until - now)
            if waiter.woken:
                return
            now = time.monotonic()
            if now >= spec.deadline:
                return
            if now >= spec.refresh_at and not await _refreshed(spec, refresh, now):
                return

    @staticmethod
    async def _poll(
        spec: Wait, check: AsyncCheck, refresh: AsyncRefresh | None
    ) -> Handover | None:
        """No subscriber: sleep in short slices, one cheap look after each."""
        while True:
            now = time.monotonic()
            if now >= spec.deadline:
                return None
            await asyncio.sleep(min(spec.deadline, spec.refresh_at, now + POLL_SLICE) - now)
            now = time.monotonic()
            if now >= spec.deadline:
                return None
            if now >= spec.refresh_at and not await _refreshed(spec, refresh, now):
                return None
            seen = await check()
            if seen is not BUSY:
                return seen if isinstance(seen, Handover) else None

    # -- the reader task ------------------------------------------------------------

    def _start(self, board: Switchboard) -> None:
        task = asyncio.get_running_loop().create_task(
            self._read(board, board.reader), name="remotelock-redis-bells"
        )
        self._task = task
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None

    async def _read(self, board: Switchboard, reader: object) -> None:
        pubsub = None
        worked = False
        try:
            pubsub = self._client.pubsub()
            await pubsub.subscribe(board.nudge)
            while True:
                subscribe, unsubscribe, stop = board.work(reader, time.monotonic())
                if stop:
                    return
                if unsubscribe:
                    await pubsub.unsubscribe(*unsubscribe)
                if subscribe:
                    await pubsub.subscribe(*subscribe)
                message = await pubsub.get_message(timeout=TICK)
                if message is None:
                    continue
                kind, name = decode(message["type"]), decode(message["channel"])
                if kind == "subscribe":
                    worked = True
                    board.subscribed(name, time.monotonic())
                elif kind == "message":
                    board.message(name, decode(message["data"]), time.monotonic())
        except Exception as exc:  # the connection failed: waiters re-check, and reconnect
            log.debug("Redis wake-up connection ended: %r; waiters re-check", exc)
        finally:
            board.dropped(reader, time.monotonic(), worked)
            if pubsub is not None:
                try:
                    await pubsub.aclose()
                except Exception as exc:
                    log.debug("closing the Redis wake-up connection: %r", exc)

    async def aclose(self) -> None:
        """Stop the reader task and close its connection."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _refreshed(spec: Wait, refresh: AsyncRefresh | None, now: float) -> bool:
    """Keep a queued waiter's place; ``False`` if it was lost (or handed the lock)."""
    if refresh is None or spec.deadline - now < REFRESH_MARGIN:
        spec.refresh_at = float("inf")  # the next attempt after this wait refreshes it
        return True
    spec.refresh_at = now + spec.refresh_every
    return await refresh()


__all__ = ["AsyncCheck", "AsyncDoorbell", "AsyncRefresh"]
