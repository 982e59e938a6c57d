"""What the sync and async waiters of the PostgreSQL stores share, free of I/O.

A waiter subscribes to its key's NOTIFY payload before it reads the lock, so a release
can never slip between the two; it then sleeps until it is woken, the holder's lease
ends, or its own deadline passes. The listeners that wake waiters (a thread in
:mod:`remotelock.stores.postgres.connections`, a task per event loop in
:mod:`remotelock.stores.postgres.connections_aio`) differ in kind, so each side
hand-writes its own; the bookkeeping and the arithmetic they have in common live here,
and the names a notification carries (the table's channel, a key's payload).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from typing_extensions import Self

POLL_WITHOUT_LISTENER: Final = 0.05
"""Longest single sleep of a waiter while no LISTEN is active (starting, reconnecting,
or ``listen=False``): a release is then noticed by polling at this pace."""

LISTEN_IDLE: Final = 30.0
"""Seconds without waiters before a listener disconnects (the next waiter restarts it)."""

BACKOFF_FIRST: Final = 0.05
BACKOFF_MAX: Final = 2.0
"""A listener that lost its connection reconnects after these pauses, doubling."""

# -- what a notification names ----------------------------------------------------------

_PAYLOAD_LIMIT: Final = 1000  # bytes; PostgreSQL refuses payloads of 8000 or more


def payload(key: str) -> str:
    """What a NOTIFY carries for ``key``: the key itself, or a digest of a long key.

    Two keys sharing a payload only cost a spurious wake-up (``wait`` may return
    early), never a missed one.
    """
    if len(key.encode()) <= _PAYLOAD_LIMIT:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def channel(schema: str | None, table: str) -> str:
    """The NOTIFY channel of a table: its qualified name, or a digest if that is too long.

    Channel names are identifiers, at most 63 bytes.
    """
    name = f"{schema}.{table}" if schema else table
    if len(name) <= 63:
        return name
    return f"{table[:40]}_{hashlib.sha256(name.encode()).hexdigest()[:16]}"


def permit_payload(key: str) -> str:
    """What a NOTIFY carries for a permit of ``key`` (apart from the lock's of ``key``)."""
    return payload("permit:" + key)


W = TypeVar("W")
W_contra = TypeVar("W_contra", contravariant=True)


def pause(busy_for: float, listening: bool, deadline: float) -> float:
    """How long a waiter sleeps once it knows the key is busy for ``busy_for`` seconds.

    Just past the end of the lease (the holder may never release), at most
    :data:`POLL_WITHOUT_LISTENER` when no notification can come, never past
    ``deadline`` (a ``time.monotonic()`` value).
    """
    wanted = busy_for + 0.001
    if not listening:
        wanted = min(wanted, POLL_WITHOUT_LISTENER)
    return max(0.0, min(deadline - time.monotonic(), wanted))


def next_backoff(backoff: float) -> float:
    """The pause before a listener's next reconnection attempt."""
    return min(backoff * 2, BACKOFF_MAX)


PASS_ON: Final = 0.05
"""Seconds a woken waiter has to try the lock before the next waiter of its key is woken."""


class Waiters(Generic[W]):
    """The wake-ups (events or futures) of the waiting callers, by NOTIFY payload.

    A release frees the lock for one taker, so a notification wakes one waiter of its
    payload in this process (the one waiting longest), not all of them: a thousand
    waiters would otherwise each run a statement per release, and draining them would
    cost a million. The woken waiter tries the lock (the store reports that with
    :meth:`tried`); if no one in the process tries it within :data:`PASS_ON` seconds
    (the woken caller gave up, or its ``skip_if`` said it needs no lock), the next
    waiter is woken. Other processes wake one of theirs each, so a release costs a
    statement or two per waiting process.

    Waiters added with ``every=True`` (readers waiting for a writer to leave) are all
    woken by each notification of their payload, beside that one: readers do not
    exclude each other, so the writer's release lets every one of them in. They never
    take the one wake-up (a reader's try does not call :meth:`tried`).

    Not locked: the sync listener guards it with its mutex; an event loop's waiters
    are only touched from that loop.
    """

    __slots__ = ("_by_topic", "_due", "_every")

    def __init__(self) -> None:
        self._by_topic: dict[str, dict[W, None]] = {}  # in order of arrival
        self._every: dict[str, dict[W, None]] = {}  # woken all at once
        self._due: dict[str, float] = {}  # topic -> when its woken waiter must have tried

    def add(self, topic: str, wake: W, every: bool = False) -> None:
        (self._every if every else self._by_topic).setdefault(topic, {})[wake] = None

    def discard(self, topic: str, wake: W) -> None:
        for table in (self._by_topic, self._every):
            wakes = table.get(topic)
            if wakes is not None:
                wakes.pop(wake, None)
                if not wakes:
                    del table[topic]
        if topic not in self._by_topic:
            self._due.pop(topic, None)

    def of(self, topic: str | None) -> list[W]:
        """The wake-ups of ``topic``, or of every waiter when ``None`` (a copy)."""
        tables = (self._by_topic, self._every)
        if topic is not None:
            return [wake for table in tables for wake in table.get(topic, ())]
        return [wake for table in tables for wakes in table.values() for wake in wakes]

    def notified(self, topic: str, now: float, woken: Callable[[W], bool]) -> list[W]:
        """The wake-ups to set for a notification of ``topic``: its longest waiter not
        already woken (none if all are), and every ``every`` waiter."""
        every = [wake for wake in self._every.get(topic, ()) if not woken(wake)]
        return self._next(topic, now, woken) + every

    def _next(self, topic: str, now: float, woken: Callable[[W], bool]) -> list[W]:
        for wake in self._by_topic.get(topic, ()):
            if not woken(wake):
                self._due[topic] = now + PASS_ON
                return [wake]
        self._due.pop(topic, None)
        return []

    def expecting(self) -> bool:
        """Whether a woken waiter's try is awaited (else :meth:`tried` has nothing to do)."""
        return bool(self._due)

    def tried(self, topic: str) -> None:
        """Someone in this process tried the lock of ``topic``: the wake-up was used."""
        self._due.pop(topic, None)

    def overdue(self, now: float, woken: Callable[[W], bool]) -> list[W]:
        """The wake-ups to pass on: the next waiter of each topic whose woken waiter
        did not try in time."""
        late = [topic for topic, due in self._due.items() if due <= now]
        return [wake for topic in late for wake in self._next(topic, now, woken)]

    def next_due(self, now: float, most: float) -> float:
        """Seconds until the next pass-on falls due, at most ``most``."""
        if not self._due:
            return most
        return max(0.001, min(most, min(self._due.values()) - now))

    def __bool__(self) -> bool:
        return bool(self._by_topic) or bool(self._every)


class Listening(Protocol[W_contra]):
    """What a :class:`Subscription` needs of its listener."""

    def subscribe(self, topic: str, wake: W_contra, every: bool = False) -> bool: ...

    def unsubscribe(self, topic: str, wake: W_contra) -> None: ...

    def is_ready(self) -> bool: ...


class Subscription(Generic[W]):
    """One waiter's wake-up, registered with its listener for the ``with`` block.

    ``listening`` is ``True`` when LISTEN was active as the waiter subscribed, so a
    release cannot go unnoticed and the waiter may sleep until the lease ends. A
    subscription without a listener (``listen=False``) never listens: the waiter
    polls. ``every``: woken by every notification of ``topic`` (see :class:`Waiters`).
    Each side adds ``wait(seconds)``, sleeping on its kind of wake-up.
    """

    __slots__ = ("every", "listener", "listening", "topic", "wake")

    def __init__(
        self, listener: Listening[W] | None, topic: str, wake: W, every: bool = False
    ) -> None:
        self.listener = listener
        self.topic = topic
        self.wake = wake
        self.every = every
        self.listening = False

    def __enter__(self) -> Self:
        if self.listener is not None:
            self.listening = self.listener.subscribe(self.topic, self.wake, self.every)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.listener is not None:
            self.listener.unsubscribe(self.topic, self.wake)

    @property
    def warming(self) -> bool:
        """Subscribed while its listener was still connecting: a release may go unheard
        until LISTEN is active, so the waiter sleeps in short slices and reads again."""
        return self.listener is not None and not self.listening

    def catch_up(self) -> None:
        """After a slice: listening from now on if LISTEN has become active."""
        self.listening = self.listener is not None and self.listener.is_ready()


__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "LISTEN_IDLE",
    "PASS_ON",
    "POLL_WITHOUT_LISTENER",
    "Listening",
    "Subscription",
    "Waiters",
    "channel",
    "next_backoff",
    "pause",
    "payload",
    "permit_payload",
]
