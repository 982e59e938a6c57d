"""Who waits for what on a Redis store's doorbell: roles, waits, waiters, channels.

The plain records the switchboard (:mod:`remotelock.stores.redis.bells`) keeps, apart
from its rules: a waiting call (:class:`Waiter`, made concrete by the thread and the
task doorbells), what it waits for (:class:`Wait`), and the local waiters of one
subscribed channel (:class:`Channel`). Free of I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ..base import Handover

TURN: Final = "turn"
"""A queued waiter (``wait_turn``): woken when the lock is handed to it or its turn comes."""
WATCH: Final = "watch"
"""A queued waiter that also hears every release (``wait_turn(every_release=True)``)."""
LISTEN: Final = "listen"
"""A caller of the plain ``wait`` (not queued): woken by any change of hands."""
PERMIT: Final = "permit"
"""A caller of ``wait_permit``: one local waiter wakes per freed permit."""


@dataclass(frozen=True)
class Postpone:
    """A wake-up for the first in line under bounded barging: it is not handed the lock
    before a release after the barging window, so it sleeps on, and looks at the lock
    by ``until`` (monotonic) at the latest, in case nobody takes it back."""

    until: float


@dataclass(frozen=True)
class Released:
    """A wake-up for a waiter that hears of every release: one came, made at ``at``
    (the server's clock in microseconds, or a fencing token, which is at least that;
    0 if the message did not say). A watcher that queued before it is out of line."""

    at: int


@dataclass
class Wait:
    """One wait, as a doorbell runs it."""

    channel: str
    role: str
    token: str | None
    asked: float
    """Monotonic time the request this wait follows was sent (an acquire, a listen)."""
    deadline: float
    refresh_at: float = math.inf
    """When a queued waiter next tells the server it is still there."""
    refresh_every: float = math.inf
    watcher: bool = False
    """The token is a watcher: the next release takes it out of line, so a look can
    tell whether one came while a wake-up may have been missed."""


class Waiter:
    """One waiting call; the reader wakes it with a value, and a handover always wins."""

    __slots__ = ("channel", "role", "token", "value", "woken")

    def __init__(self, channel: str, role: str, token: str | None) -> None:
        self.channel = channel
        self.role = role
        self.token = token
        self.value: object = None
        self.woken = False

    def wake(self, value: object) -> None:
        if isinstance(self.value, Handover):
            return
        self.value = value
        if not self.woken:
            self.woken = True
            self.signal()

    def signal(self) -> None:
        """Let the waiting call run (set its Event, resolve its future)."""
        raise NotImplementedError

    def rearm(self) -> None:
        """Ready for another registration (under the switchboard's lock)."""
        self.value = None
        self.woken = False


class Channel:
    """The local waiters of one key's bell channel, and what the reader knows of it."""

    __slots__ = (
        "active_at", "changed_at", "freed_at", "idle_since", "listeners", "nudged",
        "permits", "queued", "released_at", "released_us", "sent",
    )  # fmt: skip

    def __init__(self, now: float) -> None:
        self.queued: dict[str, Waiter] = {}  # TURN and WATCH waiters by token
        self.listeners: list[Waiter] = []
        self.permits: list[Waiter] = []  # in arrival order: the first is woken first
        self.active_at: float | None = None  # when the subscription was confirmed
        self.nudged = False  # the reader was asked to subscribe
        self.sent = False  # the reader sent SUBSCRIBE
        self.released_at = self.changed_at = self.freed_at = -math.inf
        self.released_us = 0  # when the last release heard of was made (see Released)
        self.idle_since = now

    def waiters(self) -> Iterator[Waiter]:
        yield from list(self.queued.values())
        yield from list(self.listeners)
        yield from list(self.permits)

    def add(self, waiter: Waiter) -> None:
        if waiter.role == LISTEN:
            self.listeners.append(waiter)
        elif waiter.role == PERMIT:
            self.permits.append(waiter)
        else:
            assert waiter.token is not None
            self.queued[waiter.token] = waiter

    def remove(self, waiter: Waiter) -> None:
        if waiter.token is not None and self.queued.get(waiter.token) is waiter:
            del self.queued[waiter.token]
        for group in (self.listeners, self.permits):
            if waiter in group:
                group.remove(waiter)

    def empty(self) -> bool:
        return not (self.queued or self.listeners or self.permits)


__all__ = [
    "LISTEN",
    "PERMIT",
    "TURN",
    "WATCH",
    "Channel",
    "Postpone",
    "Released",
    "Wait",
    "Waiter",
]
