"""The sync Redis store's doorbell: one subscriber connection and a reader thread.

Waiting threads never touch the subscriber connection (redis-py's ``PubSub`` is not
safe to share between threads): the reader thread alone subscribes, unsubscribes and
reads. A waiter that needs a new channel registers it, and if the reader is already
blocked reading, publishes an empty message on the reader's private nudge channel to
wake it (one command, only when a key gets its first local waiter).

Waits themselves are ``threading.Event.wait`` with the exact time left, so they end
on time (to the millisecond) whatever the server does. See
:mod:`remotelock.stores.redis.bells` for the messages and the missed-message rules.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ..base import Handover
from .bells import (
    ACTIVATED,
    BUSY,
    LISTEN,
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

log = logging.getLogger("remotelock.stores.redis")

TICK: Final = 1.0
"""Longest single read of the reader: how soon it notices idle channels or a close."""
POLL_SLICE: Final = 0.025
"""Without a subscriber, a wait sleeps in slices this long, one cheap script after each
(up to 40 small round trips a second per waiter: the price of having no push)."""

REFRESH_MARGIN: Final = 0.01
"""A refresh due this close to the end of a wait is left to the attempt after it, so
that its round trip cannot push the wait past its deadline."""

Check = Callable[[], object]
"""One look at the server: a :class:`Handover`, ``None`` (re-check) or :data:`BUSY`."""


class _ThreadWaiter(Waiter):
    __slots__ = ("event",)

    def __init__(self, channel: str, role: str, token: str | None) -> None:
        super().__init__(channel, role, token)
        self.event = threading.Event()

    def signal(self) -> None:
        self.event.set()

    def rearm(self) -> None:
        super().rearm()
        self.event.clear()


class Doorbell:
    """Wake-ups for one sync store's waiters in this process (one connection)."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._pid = os.getpid()
        self._board = self._new_board()
        self._closed = False

    def _new_board(self) -> Switchboard:
        board = Switchboard(nudge_channel(self._prefix))
        board.broken = not callable(getattr(self._client, "pubsub", None))
        return board

    def _here(self) -> Switchboard:
        """The switchboard of this process (a forked child has no reader thread)."""
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self._board = self._new_board()
        return self._board

    def wait(
        self, spec: Wait, check: Check, refresh: Callable[[], bool] | None = None
    ) -> Handover | None:
        """Sleep until woken, ``spec.deadline``, or (for a queued waiter) the loss of
        its place; keep that place with ``refresh``. ``check`` looks at the server when
        a wake-up may have been missed, and every slice when there is no subscriber."""
        board = self._here()
        waiter = _ThreadWaiter(spec.channel, spec.role, spec.token)
        asked = spec.asked
        while True:
            outcome, need = board.enter(waiter, asked, time.monotonic())
            try:
                if need == START:
                    self._start(board)
                elif need == NUDGE:
                    self._client.publish(board.nudge, "")
                if outcome is WAITING:
                    self._sleep(waiter, spec, refresh)
            finally:
                woken, value = board.leave(waiter, time.monotonic())
            if outcome is WAITING:
                if not woken:
                    return None  # the deadline, or the place in line was lost
                outcome = value
            if outcome is UNAVAILABLE:
                return self._poll(spec, check, refresh)
            if outcome is not ACTIVATED:
                return outcome if isinstance(outcome, Handover) else None
            # A watcher cannot tell from a look whether a release came and went.
            if spec.role == WATCH or time.monotonic() >= spec.deadline:
                return None
            asked = time.monotonic()  # messages from now on reach us: look once
            seen = check()
            if seen is not BUSY:
                return seen if isinstance(seen, Handover) else None

    @staticmethod
    def _sleep(waiter: _ThreadWaiter, spec: Wait, refresh: Callable[[], bool] | None) -> None:
        """Until woken, the deadline, or the place in line was lost (not woken then)."""
        while True:
            now = time.monotonic()
            until = min(spec.deadline, spec.refresh_at)
            if until > now:
                waiter.event.wait(until - now)
            if waiter.woken:
                return
            now = time.monotonic()
            if now >= spec.deadline:
                return
            if now >= spec.refresh_at and not _refreshed(spec, refresh, now):
                return

    @staticmethod
    def _poll(spec: Wait, check: Check, refresh: Callable[[], bool] | None) -> Handover | None:
        """No subscriber: sleep in short slices, one cheap look after each."""
        while True:
            now = time.monotonic()
            if now >= spec.deadline:
                return None
            time.sleep(min(spec.deadline, spec.refresh_at, now + POLL_SLICE) - now)
            now = time.monotonic()
            if now >= spec.deadline:
                return None
            if now >= spec.refresh_at and not _refreshed(spec, refresh, now):
                return None
            seen = check()
            if seen is not BUSY:
                return seen if isinstance(seen, Handover) else None

    # -- the reader thread ----------------------------------------------------------

    def _start(self, board: Switchboard) -> None:
        reader = board.reader
        thread = threading.Thread(
            target=self._read, args=(board, reader), name="remotelock-redis-bells", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            board.dropped(reader, time.monotonic(), worked=False)
            raise

    def _read(self, board: Switchboard, reader: object) -> None:
        pubsub = None
        worked = False
        try:
            pubsub = self._client.pubsub()
            pubsub.subscribe(board.nudge)
            while not self._closed:
                subscribe, unsubscribe, stop = board.work(reader, time.monotonic())
                if stop:
                    return
                if unsubscribe:
                    pubsub.unsubscribe(*unsubscribe)
                if subscribe:
                    pubsub.subscribe(*subscribe)
                message = pubsub.get_message(timeout=TICK)
                if message is None:
                    continue
                kind, name = decode(message["type"]), decode(message["channel"])
                if kind == "subscribe":
                    worked = True
                    board.subscribed(name, time.monotonic())
                elif kind == "message":
                    board.message(name, decode(message["data"]), time.monotonic())
        except Exception as exc:  # the connection failed: waiters re-check, and reconnect
            if not self._closed:
                log.debug("Redis wake-up connection ended: %r; waiters re-check", exc)
        finally:
            board.dropped(reader, time.monotonic(), worked)
            if pubsub is not None:
                try:
                    pubsub.close()
                except Exception as exc:
                    log.debug("closing the Redis wake-up connection: %r", exc)

    def close(self) -> None:
        """Stop the reader (within one read, :data:`TICK`) and its connection."""
        self._closed = True


class Look:
    """Reads a PEEK reply (``[holder, fence, lease ms]``) for one wait.

    The lock held by the waiting token: it was handed over (a :class:`Handover`); free:
    re-check (``None``). For callers that want any change of hands, a holder other than
    the one first seen means a release happened (``None``); otherwise :data:`BUSY`.
    """

    __slots__ = ("first", "role", "token")

    def __init__(self, token: str | None, role: str, holder: str | None = None) -> None:
        self.token = token
        self.role = role
        self.first = holder

    def __call__(self, reply: Any) -> object:
        holder = decode(reply[0])
        if not holder:
            return None
        if holder == self.token:
            return Handover(int(reply[1]), max(int(reply[2]), 1) / 1000)
        if self.role in (WATCH, LISTEN):
            if self.first is None:
                self.first = holder
            elif holder != self.first:
                return None
        return BUSY


def _refreshed(spec: Wait, refresh: Callable[[], bool] | None, now: float) -> bool:
    """Keep a queued waiter's place; ``False`` if it was lost (or handed the lock)."""
    if refresh is None or spec.deadline - now < REFRESH_MARGIN:
        spec.refresh_at = float("inf")  # the next attempt after this wait refreshes it
        return True
    spec.refresh_at = now + spec.refresh_every
    return refresh()


__all__ = ["POLL_SLICE", "REFRESH_MARGIN", "TICK", "Check", "Doorbell", "Look"]
