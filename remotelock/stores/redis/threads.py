"""How the sync doorbell runs its reader and puts its waiters to sleep: threads.

Hand-written, beside its asyncio twin :mod:`remotelock.stores.redis.tasks`, because
this is where the two worlds really differ. The generated
:mod:`remotelock.stores.redis.doorbell` calls these by the same names as the asyncio
doorbell calls its own.

A sync waiter is a thread blocked on a ``threading.Event``, and the reader a daemon
thread that nobody can cancel. Waking a thread through another costs a thread switch,
and on a busy machine that switch is a trip through the run queue (and another for
the GIL): a 50-process stampede on 2 cores spent more time in it than in its own
commands. So a waiting thread reads the connection itself when it can
(leader/followers): while one waiter *leads*, the reader thread leaves the connection
alone, and the leader runs the reader's turns (the doorbell's ``_turn``: subscribe,
read one message, hand it on) until its own wake-up comes, which it then needs no
switch to see. Others waiting meanwhile are *followers*, woken by the leader as they
were by the reader; a leader that is done hands the connection to a follower, or back
to the reader thread. One thread uses the connection at a time, always.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from typing import Final

from .bells import Waiter

Check = Callable[[], object]
"""One look at the server: a :class:`Handover`, ``None`` (re-check) or :data:`BUSY`."""
Refresh = Callable[[], "float | None"]
"""Keeps a queued waiter's place in line: when the server last heard of it (see
:class:`~.common.Keeper`), or ``None`` if it lost its place."""
Turn = Callable[[float], bool]
"""One turn at the connection within the given seconds; ``False``: the reader stops."""

GRACE: Final = 0.05
"""After a leader is done, the reader thread leaves the connection alone this long: a
thread that waits again soon leads again at once (no handshake with the reader)."""


class ThreadWaiter(Waiter):
    """A waiting thread: the reader (or the leader) sets its Event."""

    __slots__ = ("event",)

    def __init__(self, channel: str, role: str, token: str | None) -> None:
        super().__init__(channel, role, token)
        self.event = threading.Event()

    def signal(self) -> None:
        self.event.set()

    def rearm(self) -> None:
        super().rearm()
        self.event.clear()

    def sleep(self, seconds: float) -> None:
        """Until woken or ``seconds`` pass."""
        self.event.wait(seconds)


class ThreadReader:
    """Runs a doorbell's reader in a daemon thread (one per process at a time), and
    lends its connection to a waiting thread while one waits (see the module)."""

    __slots__ = (
        "_cond", "_failure", "_followers", "_leader", "_reading", "_resigned", "_stopped",
        "_tick", "_turn",
    )  # fmt: skip

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._turn: Turn | None = None  # the running reader's turn; None: not lent
        self._tick = 1.0
        self._reading = False  # the reader thread is in a turn
        self._leader: ThreadWaiter | None = None
        # Waiting threads that would lead, in arrival order (a dict: each leaves in O(1)).
        self._followers: dict[ThreadWaiter, None] = {}
        self._resigned = -math.inf
        self._failure: Exception | None = None  # a leader's turn failed: the reader ends
        self._stopped = False

    def start(self, read: Callable[[], None]) -> None:
        with self._cond:
            self._turn, self._failure, self._resigned = None, None, -math.inf
        threading.Thread(target=read, name="remotelock-redis-bells", daemon=True).start()

    def stop(self) -> None:
        """Nothing to wait for: the reader thread sees its doorbell closed within one
        read, or once the leader, if one reads, has seen it too (the connection is
        closed only when no thread uses it)."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    # -- the reader thread ----------------------------------------------------------

    def read(self, turn: Turn, timeout: float) -> bool:
        """The reader thread's next step: a turn at the connection, or a while (at
        most ``timeout``) of leaving it to a leader. ``False``: the reader stops."""
        with self._cond:
            if self._turn is None:
                self._turn, self._tick = turn, timeout
            while True:
                if self._failure is not None:
                    failure, self._failure, self._turn = self._failure, None, None
                    raise failure
                if self._leader is None and self._followers and not self._stopped:
                    self._promote()
                if self._leader is None:
                    if self._stopped or self._turn is None:  # a leader's turn said stop
                        self._turn = None
                        return False
                    left = self._resigned + GRACE - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                else:
                    self._cond.wait(timeout)  # told when the leader fails or stops
                if self._stopped and self._leader is None:
                    return True  # the doorbell's loop sees it closed
            self._reading = True
        going_on = False
        try:
            going_on = turn(timeout)
            return going_on
        finally:
            with self._cond:
                self._reading = False
                if not going_on:
                    self._turn = None

    def _promote(self) -> None:
        """Lend the connection to the first follower (under the condition's lock)."""
        leader = self._leader = next(iter(self._followers))
        del self._followers[leader]
        leader.event.set()  # not woken: it finds itself the leader, and reads

    # -- a waiting thread -----------------------------------------------------------

    def sleep(self, waiter: ThreadWaiter, seconds: float, nudge: Callable[[], None]) -> None:
        """Until ``waiter`` is woken or ``seconds`` pass: leading if nobody else uses
        the connection, else following (and asking a busy reader thread, with
        ``nudge``, to hand the connection over)."""
        deadline = time.monotonic() + seconds
        with self._cond:
            if self._stopped:
                lead = asked = False
            elif self._turn is not None and self._leader is None and not self._reading:
                self._leader, lead, asked = waiter, True, False
            else:
                self._followers[waiter] = None
                lead, asked = False, self._reading and self._leader is None
        if not lead:
            if asked:
                # The reader thread's turn ends with it: then it promotes us. If the
                # nudge fails, the reader thread still reads for us, as it may.
                with contextlib.suppress(Exception):
                    nudge()
            waiter.sleep(seconds)
            with self._cond:
                self._followers.pop(waiter, None)
                lead = self._leader is waiter
            if not lead:
                return
            waiter.event.clear()  # set to promote us; a wake-up sets woken first
        self._lead(waiter, deadline)

    def _lead(self, waiter: ThreadWaiter, deadline: float) -> None:
        """Run the reader's turns until ``waiter`` is woken or ``deadline`` passes."""
        going_on, failure = True, None
        turn, tick = self._turn, self._tick
        try:
            while turn is not None and not waiter.woken:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                going_on = turn(min(left, tick))
                if not going_on:
                    break
        except Exception as exc:  # the reader thread raises it, and ends the connection
            failure = exc
        finally:
            with self._cond:
                self._leader, self._resigned = None, time.monotonic()
                if failure is not None or not going_on or turn is None:
                    self._failure, self._turn = failure, None
                    self._cond.notify_all()
                elif self._followers:
                    self._promote()


__all__ = ["GRACE", "Check", "Refresh", "ThreadReader", "ThreadWaiter", "Turn"]
