"""One acquire's bookkeeping: its token, its attempts, and what a wait handed it.

The acquire machine (:mod:`remotelock.core`) is shared by every thread and task of a
lock, so whatever belongs to one call lives here, in an :class:`Attempts`: the token it
queues and holds under, whether a busy answer put it in the store's line, and the lock
a release may have handed it while it slept.
"""

from __future__ import annotations

import logging
import os
import random
import time

from .outcomes import BUSY, Busy, Taken
from .stores.base import Handover

log = logging.getLogger("remotelock.lock")

# Tokens only need to be unique: 128 bits from a private generator seeded by the OS
# (not the `random` module's, which programs seed for reproducibility), reseeded in
# every forked child so that parent and child never draw the same tokens.
_tokens = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _tokens.seed(os.urandom(32)))


def new_token() -> str:
    """A fresh lock token (32 hex digits)."""
    return f"{_tokens.getrandbits(128):032x}"


class Attempts:
    """One acquire's state (engines are shared by concurrent threads and tasks)."""

    __slots__ = ("busy_at", "count", "handed", "holds", "queued", "started", "token", "watching")

    def __init__(self, watching: bool = False) -> None:
        self.token = new_token()
        self.started = time.monotonic()
        self.count = 0
        self.queued = False  # a busy attempt put us in a store's line
        # A skip_if caller queues as a watcher until a release takes it out of line.
        self.watching = watching
        self.holds = False  # the store may count the lock as ours (handed, or a late reply)
        self.busy_at = self.started  # when the last attempt that found it busy started
        self.handed: Handover | None = None  # the lock was handed to us while we waited

    def busy(self, started: float, queued: bool) -> Busy:
        self.queued = queued  # a store without a line keeps nothing of a busy attempt
        self.busy_at = started
        return BUSY

    def take_handed(self) -> Taken | None:
        """The lock handed over during the last wait, if any (consumed once).

        Its lease was granted after our last busy attempt started, so counting from
        then errs early, the safe side. If that leaves it less than half its time, the
        next attempt re-takes it instead (the same token: at once, with a fresh lease).
        """
        handed, self.handed = self.handed, None
        if handed is None:
            return None
        self.holds = True
        self.queued = False  # the hand-over took us out of line
        taken = Taken(handed.fencing_token, self.busy_at, handed.lease)
        if taken.deadline() - time.monotonic() < handed.lease / 2:
            return None
        return taken

    def late(self, taken: Taken) -> bool:
        """Whether ``taken`` came too late to leave its lease any time (then: busy)."""
        if taken.deadline() > time.monotonic():
            return False
        self.holds = True
        log.debug("the reply granting lock took longer than its lease; trying again")
        return True


def first_renewal(taken: Taken, ttl: float) -> float:
    """Seconds until the first renewal: a third into the lease the store granted."""
    return max(0.0, taken.started + min(ttl, taken.granted) / 3 - time.monotonic())


__all__ = ["Attempts", "first_renewal", "new_token"]
