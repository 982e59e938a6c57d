"""State kept per event loop, for the async PostgreSQL store's connections and listener.

asyncio connections, semaphores and tasks belong to the event loop that made them
(``asyncio.run`` twice must not share one), so the async side keeps each per loop,
forgotten with the loop. The sync side has no counterpart: it keeps one set per
process.
"""

from __future__ import annotations

import asyncio
import os
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

S = TypeVar("S")


class PerLoop(Generic[S]):
    """One ``S`` per running event loop, made on first use; none in a forked child."""

    def __init__(self, make: Callable[[], S]) -> None:
        self._make = make
        self._pid = os.getpid()
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, S] = (
            weakref.WeakKeyDictionary()
        )

    def get(self) -> S:
        if self._pid != os.getpid():  # forked: the parent's loops are not ours
            self._pid, self._loops = os.getpid(), weakref.WeakKeyDictionary()
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = self._make()
        return state

    def peek(self) -> S | None:
        """The running loop's ``S`` if it has one (none is made)."""
        if self._pid != os.getpid():
            return None
        return self._loops.get(asyncio.get_running_loop())

    def pop(self) -> S | None:
        """Forget the running loop's ``S`` (``None`` if it had none)."""
        return self._loops.pop(asyncio.get_running_loop(), None)


__all__ = ["PerLoop"]
