"""Barging kept in the process: a lock its holder releases and comes straight back for.

A store's ``barging`` window (on Redis, ``barging=`` seconds) lets the process that got
a lock take it back, for that long, before it must hand it to the first in line. At
the store, taking it back costs what any section costs: a release, then an acquire,
two requests per section. So the sync lock layer keeps it in the process instead: a
release within the window, by a process that came straight back for the same key after
its previous release, leaves the lock held at the store for :data:`KEEP` seconds. An
acquire of that key by any thread of the process in that time takes it over with no
request at all; otherwise the lock is released then, by one background thread per
process (at the latest when the window closes, and at exit).

Why that is safe:

- Mutual exclusion: the store sees one holder, this process, all along; inside the
  process one thread at a time takes a kept lock over (under a mutex).
- Fencing: a take-over gets the last fencing token + 1, and never gets ahead of the
  microseconds passed since the store issued the token the process's hold started
  with (a take-over that would is not made: the acquire asks the store). The store's
  next token is at least its clock in microseconds, which has moved on at least as
  far by then, so tokens still strictly increase per key without telling the store.
  What could break it is what breaks the store's tokens: its clock stepping back.
- The lease: a kept lock is taken over only while its renewals go without trouble
  and a second at least is surely left by the local clock; renewal goes on from there.
- The others' wait: the window counts from when the process got the lock from the
  store, not from each take-over, so the first in line waits no longer than without
  this; and a hold stops short of its window rather than start a section that its
  sections so far say would run past it.

What it costs: for :data:`KEEP` after such a release, the key still looks held to
other processes (``locked()`` in this process releases it first), and a process that
dies in that moment leaves the lock held until its lease ends, as one that dies
holding it does. Nothing is kept inside AWS Lambda, whose environments freeze as soon
as a handler returns, nor by asyncio locks, whose event loop may close first.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from . import cleanup
from .timers import Worker

if TYPE_CHECKING:
    from .lease import Lease

log = logging.getLogger("remotelock.lock")

KEEP: float = 0.002
"""How long a released lock waits for its process to come back for it (seconds)."""

_MAX_RECENT: Final = 1024
"""Past this many remembered releases, the ones older than :data:`KEEP` are dropped."""


def enabled() -> bool:
    """Whether this process may keep locks at all (not inside AWS Lambda)."""
    return "AWS_LAMBDA_FUNCTION_NAME" not in os.environ


class Streak(NamedTuple):
    """A process's hold of a lock, from the store's grant over its take-overs."""

    until: float  # monotonic: the window closes (then releases go to the store)
    fence: int  # the fencing token the store issued
    since: float  # monotonic: when that token's reply arrived
    back: bool  # the process came straight back for the key after its last release

    @classmethod
    def begin(cls, fence: int, window: float, back: bool) -> Streak:
        """The streak of a lock the store granted just now, with ``fence``."""
        now = time.monotonic()
        return cls(now + window, fence, now, back)


class Kept(NamedTuple):
    """A released lock still held at the store for this process."""

    store: Any
    lease: Lease  # the last lease released under it: its token, fence and deadline
    streak: Streak
    due: float  # monotonic: released at the store then, unless taken over

    def usable(self, now: float) -> bool:
        """Whether it may still be taken over at all (see the module docs): within the
        window, its renewals without trouble, and a second (half a shorter lease) surely
        left for the take-over's first renewal, which comes at once when less than two
        thirds of the lease is left (as after a hand-over, whose lease is short)."""
        lease = self.lease
        left = lease.deadline - now
        return now < self.streak.until and not lease._trouble and left > min(lease.ttl / 2, 1.0)

    def worth_keeping(self, now: float) -> bool:
        """Whether the hold's sections so far say the next one ends within the window: a
        streak stops short of its window rather than running a section past it."""
        held = self.lease.fencing_token - self.streak.fence + 1  # its sections so far
        return now + (now - self.streak.since) / held < self.streak.until

    def paced(self, now: float) -> bool:
        """Whether its next fencing token stays behind the clock (see the module docs)."""
        ahead = self.lease.fencing_token + 1 - self.streak.fence
        return ahead <= (now - self.streak.since) * 1_000_000


class Keeper(Worker[Kept]):
    """The process's kept locks, and the thread that releases them when due (a
    :class:`~remotelock.timers.Worker`, as the renewal's and the watchdog's)."""

    name = "remotelock-keep"

    def __init__(self) -> None:
        super().__init__()
        # All under the worker's condition (reentrant: schedule() takes it again).
        self._kept: dict[tuple[int, str], Kept] = {}
        self._released: dict[tuple[int, str], float] = {}  # when each key was last let go
        # Kept locks being released at the store now, and when each would expire anyway.
        self._leaving: dict[tuple[int, str], tuple[threading.Event, float]] = {}

    def keep(self, store: Any, lease: Lease, streak: Streak) -> bool:
        """Keep ``lease``'s lock for the process instead of releasing it, if it may be.

        ``False``: release it at the store now. Either way the release is remembered,
        so that an acquire right after it shows the process comes straight back.
        """
        now = time.monotonic()
        ident = (id(store), lease.key)
        kept = Kept(store, lease, streak, min(now + KEEP, streak.until))
        with self._cond:
            if len(self._released) >= _MAX_RECENT:
                self._released = {k: t for k, t in self._released.items() if now - t <= KEEP}
            self._released[ident] = now
            if ident in self._kept or not (
                streak.back and kept.usable(now) and kept.worth_keeping(now)
            ):
                return False
            self._kept[ident] = kept
            self.schedule(kept, kept.due)
        return True

    def take(self, store: Any, key: str) -> tuple[Kept | None, bool]:
        """The lock this process keeps for ``key``, now the caller's (or ``None``), and
        whether the caller came straight back for it after its process let it go.

        A kept lock that may no longer be taken over is released at the store first,
        and one whose release is on its way is waited for: either way the caller then
        finds it free at the store, not held by its own process.
        """
        ident = (id(store), key)
        now = time.monotonic()
        with self._cond:
            kept = self._kept.pop(ident, None)
            released = self._released.pop(ident, None)
            if kept is not None and kept.usable(now) and kept.paced(now):
                return kept, True
            if kept is not None:
                self._leaving[ident] = (threading.Event(), kept.lease.deadline)
            leaving = self._leaving.get(ident)
        if kept is not None:
            self._let_go(ident, kept)
        elif leaving is not None:  # the thread is releasing it at the store right now
            event, deadline = leaving
            event.wait(max(0.0, deadline - now))  # by then it has expired anyway
        return None, kept is not None or (released is not None and now - released <= KEEP)

    def release(self, store: Any, key: str) -> None:
        """Release the lock kept for ``key`` at the store now, if there is one."""
        ident = (id(store), key)
        with self._cond:
            kept = self._pop(ident)
        if kept is not None:
            self._let_go(ident, kept)

    def release_all(self) -> None:
        """Release every kept lock now (at exit)."""
        with self._cond:
            leaving = [(ident, self._pop(ident)) for ident in list(self._kept)]
        for ident, kept in leaving:
            if kept is not None:
                self._let_go(ident, kept)

    def _finished(self, item: Kept) -> bool:
        """Taken over, or released already: no longer this key's kept lock."""
        return self._kept.get((id(item.store), item.lease.key)) is not item

    def _handle(self, items: list[Kept]) -> None:
        for kept in items:
            ident = (id(kept.store), kept.lease.key)
            with self._cond:
                if self._finished(kept):
                    continue  # taken over since it came due
                self._pop(ident)
            self._let_go(ident, kept)

    def _failed(self, exc: BaseException, current: list[Kept]) -> None:
        """The thread dies: what it kept is released here and now, not left held."""
        log.critical("%s failed; releasing the locks it kept", self.name, exc_info=exc)
        with self._cond:
            self._running = False
        self.release_all()

    def _pop(self, ident: tuple[int, str]) -> Kept | None:
        """Take a kept lock out to release it (holding the condition): until that is
        done, an acquire of its key waits for it (:meth:`take`)."""
        kept = self._kept.pop(ident, None)
        if kept is not None:
            self._leaving[ident] = (threading.Event(), kept.lease.deadline)
        return kept

    def _let_go(self, ident: tuple[int, str], kept: Kept) -> None:
        try:
            self._release(kept)
        finally:
            with self._cond:
                event, _ = self._leaving.pop(ident)
            event.set()

    @staticmethod
    def _release(kept: Kept) -> None:
        lease = kept.lease
        step = functools.partial(kept.store.release, lease.key, lease.token, True)  # hand over
        try:
            held = step()
        except Exception as exc:  # retried in the background, as a failed release is
            log.debug("could not release kept lock %r now: %s", lease.key, exc)
            cleanup.give_back(step, lease.key, max(0.0, lease.deadline - time.monotonic()))
            return
        # Its release returned True by the lease's own clock. Only a loss behind its back
        # at the store (a deletion, a forced release, lost data) can show up here.
        if not held and lease.mark_lost("its kept lock was no longer held at the store"):
            lease.notify_lost()


KEEPER = Keeper()


@atexit.register
def _release_at_exit() -> None:
    KEEPER.release_all()  # the process's current keeper (a forked child has its own)


def _forget_all() -> None:
    global KEEPER
    KEEPER = Keeper()  # the parent's kept locks are the parent's


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_all)


__all__ = ["KEEP", "KEEPER", "Keeper", "Kept", "Streak", "enabled"]
