"""SQLiteStore's connections: a small pool per store and process, reset after fork."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable

# In-process waiters wait on a slot: ("lock", key) or ("permit", key).
Slot = tuple[str, str]
# Given a connection: the monotonic time a slot frees on its own, or None if free now.
BusyUntil = Callable[[sqlite3.Connection], "float | None"]

MAX_IDLE = 8
"""Idle connections kept per store and process."""


class Local:
    """One store's state in this process: idle connections and in-process waiters."""

    def __init__(self) -> None:
        self.idle: list[sqlite3.Connection] = []
        self.wakers: dict[Slot, list[Callable[[], None]]] = {}
        self.mutex = threading.Lock()

    def close(self) -> None:
        with self.mutex:
            idle, self.idle = self.idle, []
        for conn in idle:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def forget_after_fork(self) -> None:
        # A connection must never be used on both sides of a fork, and a mutex some
        # parent thread held would stay locked forever: the child starts afresh.
        _ORPHANED.extend(self.idle)
        self.idle = []
        self.wakers = {}
        self.mutex = threading.Lock()


# Connections inherited across fork: kept referenced, never used or closed in the child.
_ORPHANED: list[sqlite3.Connection] = []
_LOCALS: weakref.WeakSet[Local] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for local in list(_LOCALS):
        local.forget_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def register(local: Local) -> None:
    """Reset ``local`` in a forked child (see :meth:`Local.forget_after_fork`)."""
    _LOCALS.add(local)


__all__ = ["MAX_IDLE", "BusyUntil", "Local", "Slot", "register"]
