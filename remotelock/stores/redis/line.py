"""What a Redis store knows of its own waiters, without I/O: its tokens in line.

A store remembers, for each token it queued, what the busy acquire told it
(:class:`Queued`), keeps all their places with one call a period (:class:`Keeper`),
reads a look at the lock for one of them (:class:`Look`), and keeps a while the places
of watchers a release took out of line (:class:`Places`). Written once for the sync and
the asyncio store.
"""

from __future__ import annotations

import math
import time
from typing import Any, Final

from ..base import DISMISSED, Handover
from .bells import BUSY, LISTEN, WATCH, decode

PLACES_KEPT: Final = 4096
"""How many answered watchers' places a store remembers (the oldest go first)."""


class Queued:
    """What a store knows of one of its tokens in line, from its last busy acquire."""

    __slots__ = ("asked", "holder_ends", "key", "lost", "seen", "since")

    def __init__(self, key: str, asked: float, reply: int, since: int = 0) -> None:
        self.key = key
        # A watcher's place in line (the server's clock in microseconds when it queued):
        # a release made after it took the watcher out of line (0: not a watcher).
        self.since = since
        self.asked = asked  # when that acquire was sent: later wake-ups are for this wait
        self.seen = asked  # when the server last heard from the waiter (its grace runs)
        self.lost = False  # a refresh found it no longer in line (dropped, or handed the lock)
        # When the holder's lease ends: a waiter never sleeps past it, so an expired
        # lock is noticed on time (0: free, but another waiter is first in line).
        self.holder_ends = time.monotonic() - reply / 1000 if reply < 0 else math.inf

    def bound(self, timeout: float) -> float:
        """The deadline of a wait of ``timeout`` seconds starting now."""
        return min(time.monotonic() + timeout, self.holder_ends + 0.001)


class Keeper:
    """When a store keeps its waiters' places in line: all of them in one call.

    Each queued waiter must tell the server it is alive every ``waiter_grace / 3``. One
    call per waiter would cost every waiter a round trip a period; instead the first
    waiter whose turn comes refreshes every token the store has in line, and the others
    whose turn comes within half a period count themselves kept by that call and align
    their next turn with it. A process then sends about one call per period, however
    many threads or tasks wait. Free of I/O.
    """

    __slots__ = ("every", "started")

    def __init__(self, every: float) -> None:
        self.every = every
        self.started = -math.inf  # when the last call for all waiters was sent

    def claim(self, now: float) -> bool:
        """Whether the caller sends the call now (else one is on its way or just done)."""
        if now - self.started < self.every / 2:
            return False
        self.started = now
        return True


class Look:
    """Reads a PEEK reply (``[holder, fence, lease ms, shared leases when free, still a
    watcher]``) for one wait.

    The lock held by the waiting token: it was handed over (a :class:`Handover`); free
    (no holder, no reader): re-check (``None``). A watcher no longer one is out of line
    (:data:`DISMISSED`: a release took it out, or it lost its place). For other callers
    that want any change of hands, a holder other than the one first seen means a
    release happened (``None``; readers count as the holder ``""``); otherwise
    :data:`BUSY`.
    """

    __slots__ = ("first", "role", "token", "watcher")

    def __init__(
        self, token: str | None, role: str, holder: str | None = None, watcher: bool = False
    ) -> None:
        self.token = token
        self.role = role
        self.first = holder
        self.watcher = watcher

    def __call__(self, reply: Any) -> object:
        holder = decode(reply[0])
        if not holder and not int(reply[3]):
            return None
        if holder == self.token:
            return Handover(int(reply[1]), max(int(reply[2]), 1) / 1000)
        if self.watcher:
            return BUSY if int(reply[4]) else DISMISSED
        if self.role in (WATCH, LISTEN):
            if self.first is None:
                self.first = holder
            elif holder != self.first:
                return None
        return BUSY


class Places:
    """The places in line of watchers a release took out of line (the server's clock in
    microseconds when each queued), so that one that still needs the lock queues again
    there rather than at the back. A watcher that no longer needs it never comes back:
    only the last :data:`PLACES_KEPT` are kept."""

    __slots__ = ("_places",)

    def __init__(self) -> None:
        self._places: dict[str, int] = {}

    def keep(self, token: str, since: int) -> None:
        places = self._places
        places.pop(token, None)
        places[token] = since
        while len(places) > PLACES_KEPT:
            del places[next(iter(places))]

    def take(self, token: str) -> int:
        """``token``'s kept place (forgotten now), or 0."""
        return self._places.pop(token, 0)


__all__ = ["PLACES_KEPT", "Keeper", "Look", "Places", "Queued"]
