"""A Redis store's doorbell: one subscriber connection, one reader, many local waiters.

Written once, in its asyncio form (``doorbell_aio.py``); the sync doorbell
(``doorbell.py``) is generated from it by ``tools/unasync.py``. What really differs,
a reader thread and Events against a reader task and futures, is in the hand-written
``threads.py`` and ``tasks.py``; the rules (who waits for what, what a message means,
how a waiter learns it may have missed one) are in :mod:`remotelock.stores.redis.bells`.

The reader alone uses the pub/sub connection (redis-py's ``PubSub`` is not safe to
share): it subscribes, unsubscribes and reads. A waiter that needs a new channel
registers it, and if the reader is already blocked reading, publishes an empty
message on the reader's private nudge channel to wake it (one command, only when a
key gets its first local waiter). Waits themselves sleep locally with the exact time
left, so they end on time (to the millisecond) whatever the server does.
"""

# The generated module's first line names its source and runs past the line limit
# (in the source the rule is unused, hence RUF100).

from __future__ import annotations

import asyncio  # async only
import functools
import logging
import time
from typing import Any, Final

from ..base import Dismissed, Handover
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
    decode,
    nudge_channel,
)
from .common import subscriber_of
from .tasks import AsyncCheck, AsyncRefresh, TaskReader, TaskWaiter
from .waiters import Postpone, Released

log = logging.getLogger("remotelock.stores.redis")

TICK: Final = 1.0
"""Longest single read of the reader: how soon it notices idle channels or a close."""
POLL_SLICE: Final = 0.025
"""Without a subscriber, a wait sleeps in slices this long, one cheap script after each
(up to 40 small round trips a second per waiter: the price of having no push)."""
REFRESH_MARGIN: Final = 0.01
"""A refresh due this close to the end of a wait is left to the attempt after it, so
that its round trip cannot push the wait past its deadline."""

Outcome = Handover | Released | Dismissed | None
"""How a wait ended: handed the lock, a release heard of (by a waiter that hears of
every release), out of line (a watcher's look), or ``None``: try again."""


def _outcome(value: object) -> Outcome:
    """``value`` if it ends a wait with news, else ``None`` (a wake-up: try again)."""
    return value if isinstance(value, Handover | Released | Dismissed) else None


class AsyncDoorbell:
    """Wake-ups for one store's waiters through one connection (see :class:`AsyncClients`
    for how many doorbells a store keeps)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._board = Switchboard(nudge_channel(prefix))
        self._board.broken = not callable(getattr(client, "pubsub", None))
        # Fixed per doorbell, read on every acquire: worked out once.
        self._counted = not hasattr(client, "keyslot")  # a Cluster counts per node
        self._marked = "~" + self._board.nudge
        self._reader = TaskReader()
        self._closed = False

    @property
    def channel(self) -> str:
        """This doorbell's own channel (its reader's nudge channel)."""
        return self._board.nudge

    @property
    def address(self) -> str:
        """The channel this doorbell's reader always hears: scripts tell a waiter of its
        turn there, waking this process alone ('' if it cannot subscribe). Marked ``~``
        unless the reader listens now and a subscriber count is to be trusted (not on a
        Cluster): the scripts pass over a waiter whose marked-for-counting channel has
        no subscriber (its process is gone), and a ``~`` one never."""
        board = self._board
        if board.broken:
            return ""
        return board.nudge if board.listening and self._counted else self._marked

    async def wait(
        self, spec: Wait, check: AsyncCheck, refresh: AsyncRefresh | None = None
    ) -> Outcome:
        """Sleep until woken, ``spec.deadline``, or (for a queued waiter) the loss of
        its place; keep that place with ``refresh``. ``check`` looks at the server when
        a wake-up may have been missed, and every slice when there is no subscriber."""
        board = self._board
        waiter = TaskWaiter(spec.channel, spec.role, spec.token)
        asked = spec.asked
        while True:
            outcome, need = board.enter(waiter, asked, time.monotonic())
            try:
                if need == START:
                    self._start(board)
                elif need == NUDGE:
                    await self._nudge()
                if outcome is WAITING:
                    await self._sleep(waiter, spec, refresh)
            finally:
                woken, value = board.leave(waiter, time.monotonic())
            if outcome is WAITING:
                if not woken:
                    return None  # the deadline, or the place in line was lost
                outcome = value
            if isinstance(outcome, Postpone):  # sleep on, but look by then at the latest
                spec.deadline = min(spec.deadline, outcome.until)
                continue
            if outcome is UNAVAILABLE:
                return await self._poll(spec, check, refresh)
            if outcome is not ACTIVATED:
                return _outcome(outcome)
            # A look cannot tell whether a release came and went, but for a watcher.
            if (spec.role == WATCH and not spec.watcher) or time.monotonic() >= spec.deadline:
                return None
            asked = time.monotonic()  # messages from now on reach us: look once
            seen = await check()
            if seen is not BUSY:
                return _outcome(seen)

    async def _sleep(self, waiter: TaskWaiter, spec: Wait, refresh: AsyncRefresh | None) -> None:
        """Until woken, the deadline, or the place in line was lost (not woken then)."""
        while True:
            now = time.monotonic()
            until = min(spec.deadline, spec.refresh_at)
            if until > now:
                await self._reader.sleep(waiter, until - now, self._nudge)
            if waiter.woken:
                return
            now = time.monotonic()
            if now >= spec.deadline:
                return
            if now >= spec.refresh_at and not await _refreshed(spec, refresh, now):
                return

    @staticmethod
    async def _poll(spec: Wait, check: AsyncCheck, refresh: AsyncRefresh | None) -> Outcome:
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
                return _outcome(seen)

    # -- the reader -----------------------------------------------------------------

    def _start(self, board: Switchboard) -> None:
        reader = board.reader
        try:
            self._reader.start(functools.partial(self._read, board, reader))
        except BaseException:
            board.dropped(reader, time.monotonic(), worked=False)
            raise

    async def _read(self, board: Switchboard, reader: object) -> None:
        pubsub = None
        client = subscriber_of(self._client)
        try:
            pubsub = client.pubsub()
            await pubsub.subscribe(board.nudge)
            turn = functools.partial(self._turn, board, reader, pubsub)
            while not self._closed and await self._reader.read(turn, TICK):
                pass
        except Exception as exc:  # the connection failed: waiters re-check, and reconnect
            if not self._closed:
                log.debug("Redis wake-up connection ended: %r; waiters re-check", exc)
        finally:
            # It worked if the reader's own subscription was ever confirmed.
            board.dropped(reader, time.monotonic(), board.listening)
            await self._hang_up(pubsub, client)

    async def _turn(self, board: Switchboard, reader: object, pubsub: Any, timeout: float) -> bool:
        """One turn at the connection: (un)subscribe as the board asks, then read and
        hand on at most one message (within ``timeout``). ``False``: the reader stops.
        The reader runs turns, and so may a waiting thread (see ``threads.py``)."""
        if self._closed:
            return False
        subscribe, unsubscribe, stop = board.work(reader, time.monotonic())
        if stop:
            return False
        if unsubscribe:
            await pubsub.unsubscribe(*unsubscribe)
        if subscribe:
            await pubsub.subscribe(*subscribe)
        message = await pubsub.get_message(timeout=timeout)
        if message is not None:
            kind, name = decode(message["type"]), decode(message["channel"])
            if kind == "subscribe":
                board.subscribed(name, time.monotonic())
            elif kind == "message":
                board.message(name, decode(message["data"]), time.monotonic())
        return True

    async def _nudge(self) -> None:
        """Wake whoever reads the connection (it is blocked reading): one PUBLISH."""
        await self._client.publish(self._board.nudge, "")

    async def _hang_up(self, pubsub: Any, client: Any) -> None:
        try:
            if pubsub is not None:
                await pubsub.aclose()
            if client is not self._client:  # the subscriber's own connection
                await client.aclose()
        except Exception as exc:
            log.debug("closing the Redis wake-up connection: %r", exc)

    async def aclose(self) -> None:
        """Stop the reader and its connection."""
        self._closed = True
        await self._reader.stop()


async def _refreshed(spec: Wait, refresh: AsyncRefresh | None, now: float) -> bool:
    """Keep a queued waiter's place; ``False`` if it was lost (or handed the lock)."""
    if refresh is None or spec.deadline - now < REFRESH_MARGIN:
        spec.refresh_at = float("inf")  # the next attempt after this wait refreshes it
        return True
    kept = await refresh()  # when the server last heard (or is hearing) of this waiter
    if kept is None:
        return False
    spec.refresh_at = kept + spec.refresh_every
    return True


__all__ = ["POLL_SLICE", "REFRESH_MARGIN", "TICK", "AsyncDoorbell"]
