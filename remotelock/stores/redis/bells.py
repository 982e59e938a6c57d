"""Wake-ups for the Redis stores' waiters: one subscriber connection, many local waiters.

Blocking on the server (a ``BLPOP`` per waiter) costs a connection per waiter and ends
late: Redis times blocked commands out on its event-loop tick (every 100 ms at the
default ``hz 10``). Instead a store keeps **one** pub/sub connection per process (per
event loop for the asyncio store), subscribed to the bell channel of every key someone
here waits for. A reader (a thread, or a task) hands each message to the local waiters
it concerns, and each waiter sleeps locally (an Event, or a future) with its exact
timeout, so a wait ends on time whatever the server's tick.

This module is what both readers share, without I/O: who waits for what, what each
message means to them, and how a waiter learns that it may have missed one.

Missed messages. A message published before a channel's subscription is active is
lost: a waiter queues (its acquire), the lock is handed to it, and only then does the
subscription start. So every wait carries the moment its request was sent (``asked``):

- if the channel's subscription was active since before then, every later message
  reaches the reader, and one that arrives before the waiter registers is kept for it
  a while (``recent``) or noted per channel (a release, a freed permit);
- otherwise the waiter registers, and once the subscription is active it is woken with
  :data:`ACTIVATED`: it looks at the lock once (one script) and waits on, or returns.

A dropped subscriber connection wakes everyone with :data:`DROPPED` (they re-check) and
the next wait starts a new reader. Messages are hints only: every wait keeps its own
bound (its timeout, the holder's lease), so a lost message costs time, not safety.
"""

from __future__ import annotations

import math
import threading
import uuid
from typing import Any, Final

from ..base import Handover
from .waiters import LISTEN, PERMIT, TURN, WATCH, Channel, Postpone, Released, Wait, Waiter

LINGER: Final = 15.0
"""Seconds a channel stays subscribed after its last local waiter left (hot keys keep
theirs), and then the reader's connection closes when no channel is left."""
BACKOFF: Final = 1.0
"""After a reader failed before its subscription ever worked, waits poll this long."""
_RECENT_FOR: Final = 30.0  # seconds a message for a token not (yet) waiting here is kept
_RECENT_MAX: Final = 4096


class _Marker:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


ACTIVATED: Final = _Marker("ACTIVATED")
"""Wake-up: the channel's subscription (re)started; earlier messages may be lost."""
DROPPED: Final = _Marker("DROPPED")
"""Wake-up: the subscriber connection is gone; re-check (the next wait reconnects)."""
WAITING: Final = _Marker("WAITING")
"""From :meth:`Switchboard.enter`: registered; now sleep until woken or the bound."""
UNAVAILABLE: Final = _Marker("UNAVAILABLE")
"""From :meth:`Switchboard.enter`: no subscriber (cannot, or failed lately): poll."""
BUSY: Final = _Marker("BUSY")
"""From a look at the server: nothing happened yet, keep waiting."""
START: Final = "start"
NUDGE: Final = "nudge"


def nudge_channel(prefix: str) -> str:
    """A reader's private channel: a waiter that needs a new subscription publishes an
    empty message there, so the reader (which alone uses the connection) wakes up."""
    return f"{prefix}:bells:{uuid.uuid4().hex}"


def decode(value: Any) -> str:
    """A reply or message as ``str`` whether the client decodes responses or not."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


class Switchboard:
    """Who waits here for which channel; every method takes the lock (the sync reader
    is a thread; the async one runs on the loop, where the lock is never contended)."""

    def __init__(self, nudge: str) -> None:
        self.lock = threading.Lock()
        self.nudge = nudge
        self.channels: dict[str, Channel] = {}
        self.recent: dict[tuple[str, str], tuple[float, Handover | Postpone | None]] = {}
        self.reader: object | None = None  # the running reader's identity
        self.listening = False  # the reader's nudge subscription is active
        self.listening_since = -math.inf
        self.failed_at = -math.inf  # a reader failed before it ever worked
        self.broken = False  # the client cannot subscribe at all

    # -- the waiters' side --------------------------------------------------------

    def enter(self, waiter: Waiter, asked: float, now: float) -> tuple[object, str | None]:
        """Register ``waiter`` unless something already settles its wait.

        :returns: ``(outcome, need)``: the outcome is a value to return at once (a
            :class:`Handover`, ``None`` to re-check), :data:`ACTIVATED`, :data:`WAITING`
            or :data:`UNAVAILABLE`; ``need`` is :data:`START` (start a reader),
            :data:`NUDGE` (wake the reader) or ``None``.
        """
        with self.lock:
            waiter.rearm()
            channel = self.channels.get(waiter.channel)
            if channel is None and waiter.channel == self.nudge and self.listening:
                channel = self._own(now)
            missed = self._missed(channel, waiter, asked, now)
            if missed is not WAITING:
                return missed, None
            active_at = channel.active_at if channel is not None else None
            if active_at is not None and active_at >= asked:
                return ACTIVATED, None  # subscribed only after the request: look once
            if (
                active_at is None
                and self.reader is None
                and (self.broken or now - self.failed_at < BACKOFF)
            ):
                return UNAVAILABLE, None
            if channel is None:
                channel = self._own(now) if waiter.channel == self.nudge else Channel(now)
                self.channels[waiter.channel] = channel
            channel.add(waiter)
            need = None
            if active_at is None and not channel.nudged:
                if self.reader is None:
                    self.reader, self.listening, need = object(), False, START
                elif self.listening:  # else the reader has yet to look at its work
                    need = NUDGE
                channel.nudged = True
            return WAITING, need

    def _own(self, now: float) -> Channel:
        """The channel of this process's own messages (the reader's nudge channel, where
        scripts tell a waiter of its turn): subscribed with the reader, never apart."""
        channel = self.channels[self.nudge] = Channel(now)
        channel.sent = True  # never SUBSCRIBEd apart (a reader must run: not nudged)
        if self.listening:
            channel.active_at = self.listening_since
        return channel

    def _missed(self, channel: Channel | None, waiter: Waiter, asked: float, now: float) -> object:
        """What reached this process for ``waiter`` before it registered."""
        if waiter.token is not None and waiter.role in (TURN, WATCH):
            kept = self.recent.pop((waiter.channel, waiter.token), None)
            if kept is not None and kept[0] >= asked:
                at, value = kept
                if isinstance(value, Handover) and now - at < value.lease:
                    return value
                return None  # a turn, or a handover too old to trust: acquire again
        if channel is None:
            return WAITING
        if waiter.role == WATCH and channel.released_at >= asked:
            return Released(channel.released_us)
        if waiter.role == LISTEN and channel.changed_at >= asked:
            return None
        if waiter.role == PERMIT and channel.freed_at >= asked:
            channel.freed_at = -math.inf  # one freed permit wakes one waiter
            return None
        return WAITING

    def leave(self, waiter: Waiter, now: float) -> tuple[bool, object]:
        """Unregister ``waiter``; returns whether it was woken, and with what."""
        with self.lock:
            channel = self.channels.get(waiter.channel)
            if channel is not None:
                channel.remove(waiter)
                if channel.empty():
                    channel.idle_since = now
                    if not channel.sent:  # never subscribed: nothing to keep
                        del self.channels[waiter.channel]
            return waiter.woken, waiter.value

    # -- the reader's side --------------------------------------------------------

    def work(self, reader: object, now: float) -> tuple[list[str], list[str], bool]:
        """What ``reader`` should do now: ``(subscribe, unsubscribe, stop)``."""
        with self.lock:
            if self.reader is not reader:
                return [], [], True
            subscribe, unsubscribe = [], []
            for name, channel in list(self.channels.items()):
                if name == self.nudge:  # subscribed with the reader: kept while in use
                    if channel.empty() and now - channel.idle_since >= LINGER:
                        del self.channels[name]
                elif not channel.empty():
                    if not channel.sent:
                        channel.sent = channel.nudged = True
                        subscribe.append(name)
                elif not channel.sent:
                    del self.channels[name]
                elif now - channel.idle_since >= LINGER:
                    unsubscribe.append(name)
                    del self.channels[name]
            if not self.channels:
                self.reader = None
                return [], unsubscribe, True
            return subscribe, unsubscribe, False

    def subscribed(self, name: str, now: float) -> None:
        """A subscription is active: its waiters look once (they may have missed one)."""
        with self.lock:
            if name == self.nudge:
                self.listening, self.listening_since = True, now
            channel = self.channels.get(name)
            if channel is None:
                return
            channel.active_at = now
            for waiter in channel.waiters():
                waiter.wake(ACTIVATED)

    def message(self, name: str, data: str, now: float) -> None:
        """Hand one bell message to the local waiters it concerns."""
        with self.lock:
            channel = self.channels.get(name)
            if channel is None and name == self.nudge and data:
                channel = self._own(now)  # kept for a waiter that has yet to register
            if channel is None or not data:
                return
            kind, body = data[0], data[1:]
            if kind == "p":
                for waiter in channel.permits:
                    if not waiter.woken:
                        waiter.wake(None)
                        return
                channel.freed_at = now
            elif kind == "w":  # not a change of hands: only its waiter hears it
                ms, _, token = body.partition(":")
                if ms.isdigit():
                    self._deliver(channel, name, token, Postpone(now + int(ms) / 1000), now)
            elif kind in "gtr":
                self._changed(channel, name, kind, body, now)

    def _changed(self, channel: Channel, name: str, kind: str, body: str, now: float) -> None:
        """A hand-over (``g``), a turn (``t``) or a release with nobody in line (``r``)."""
        token, at = "", 0
        if kind == "g":
            fence, _, rest = body.partition(":")
            lease, _, token = rest.partition(":")
            if not (fence.isdigit() and lease.isdigit()):
                return
            self._deliver(channel, name, token, Handover(int(fence), int(lease) / 1000), now)
            at = int(fence)
        elif kind == "t":
            self._deliver(channel, name, body, None, now)
        elif body.isdigit():
            at = int(body)
        channel.changed_at = now
        if kind != "t":
            channel.released_at, channel.released_us = now, at
            released = Released(at)
            for waiter in list(channel.queued.values()):
                if waiter.role == WATCH and waiter.token != token:
                    waiter.wake(released)
        for waiter in channel.listeners:
            waiter.wake(None)

    def _deliver(
        self,
        channel: Channel,
        name: str,
        token: str,
        value: Handover | Postpone | None,
        now: float,
    ) -> None:
        waiter = channel.queued.get(token)
        if waiter is not None:
            waiter.wake(value)
            return
        recent = self.recent
        recent.pop((name, token), None)  # re-inserted last: the dict stays in time order
        recent[name, token] = (now, value)
        while recent:
            oldest = next(iter(recent))
            if len(recent) <= _RECENT_MAX and now - recent[oldest][0] < _RECENT_FOR:
                break
            del recent[oldest]

    def dropped(self, reader: object, now: float, worked: bool) -> None:
        """``reader`` ended (its connection failed or closed): everyone re-checks.
        A reader that stopped because nobody waited any more is no longer current."""
        with self.lock:
            if self.reader is not reader:
                return
            self.reader = None
            self.listening = False
            if not worked:
                self.failed_at = now
            for name, channel in list(self.channels.items()):
                channel.active_at = None
                channel.nudged = channel.sent = False
                for waiter in channel.waiters():
                    waiter.wake(DROPPED)
                if channel.empty():
                    del self.channels[name]
            self.recent.clear()


__all__ = [
    "ACTIVATED",
    "BACKOFF",
    "BUSY",
    "DROPPED",
    "LINGER",
    "LISTEN",
    "NUDGE",
    "PERMIT",
    "START",
    "TURN",
    "UNAVAILABLE",
    "WAITING",
    "WATCH",
    "Channel",
    "Released",
    "Switchboard",
    "Wait",
    "Waiter",
    "decode",
    "nudge_channel",
]
