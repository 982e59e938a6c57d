"""How a DynamoDB waiter polls, free of I/O: the sync store and its async twin both
follow :func:`steps`, sleeping their own way.

DynamoDB cannot tell a waiter that a key was released, so a waiter reads the item
(one strongly consistent ``GetItem``, 1 read request unit) now and then:

- after ``poll`` seconds at first, each pause then twice the last, up to
  ``poll_max``; each pause is drawn from the upper half of its interval, so waiters
  that started together drift apart instead of polling in step;
- never past the holder's lease end plus the skew margin: by then the key may be
  taken without a release, so the wait ends and the lock layer tries;
- never past its own timeout, and no poll starts within :data:`POLL_MARGIN` of the
  end (its answer would come too late to matter).

With the defaults (0.05 s up to 1 s) a wait costs about 4 reads in its first second
and 1.3 per second after that.
"""

from __future__ import annotations

import random
import time
from collections.abc import Generator
from typing import Final, NamedTuple

from .common import Busy

POLL_MARGIN: Final = 0.02
"""A poll must start this long before the wait ends, or the wait just sleeps to its end."""


class Step(NamedTuple):
    """Sleep ``pause`` seconds; then read the item again (``poll``) or return."""

    pause: float
    poll: bool


Steps = Generator[Step, Busy, None]


def steps(busy: Busy, deadline: float, first: float, most: float) -> Steps:
    """The pauses of one wait of a key found ``busy``, ending at ``deadline`` (both
    ``time.monotonic()`` values). After a step with ``poll`` the caller reads the item
    and sends the new :class:`Busy` (it returns instead if the key looks free); after
    a step without, it returns."""
    interval = first
    while True:
        now = time.monotonic()
        end = min(deadline, busy.free_at)
        pause = interval * (0.5 + random.random() / 2)
        interval = min(most, interval * 2)
        if now + pause + POLL_MARGIN >= end:
            yield Step(max(0.0, end - now), poll=False)
            return
        busy = yield Step(pause, poll=True)


__all__ = ["POLL_MARGIN", "Step", "Steps", "steps"]
