"""Which thread or task of this process holds which lock: so nobody waits for itself.

A thread that holds a key and asks for it again (a decorated function calling itself,
a second ``RemoteLock`` object for the same key inside a ``with`` block) would wait
for its own release until ``stop`` gives up: a minute of silence by default. The lock
layer asks here first and refuses at once with a clear error instead, or, for a
reentrant lock, enters the lease the owner already holds once more.

The owner is the asyncio task for async code and the thread for sync code, recorded
when the lease is issued and dropped when it is released (from whichever thread).
Tasks started inside a ``with`` block are other owners: they wait for the block to
end like any other waiter.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ._checks import key_preview
from .errors import LockLost

log = logging.getLogger("remotelock.lock")

_mutex = threading.Lock()
_held: dict[tuple[int, str], list[tuple[object, Any]]] = {}


class _Thread:
    """Stands for one thread while it lives (a new thread reusing its id is another).

    Not ``threading.current_thread()``: in a thread not started by :mod:`threading` it
    registers a dummy ``Thread`` that is never removed, and not the thread id, which a
    new thread reuses while the dead thread's lease may still be held.
    """

    __slots__ = ()


_threads = threading.local()


def current_owner(asynchronous: bool) -> object:
    """The running task (async code) or the current thread (sync code)."""
    if asynchronous:
        import asyncio

        task = asyncio.current_task()
        if task is not None:
            return task
    try:
        return _threads.owner
    except AttributeError:
        owner = _threads.owner = _Thread()
        return owner


def refuse_if_held(store: object, key: str, owner: object, shared: bool = False) -> None:
    """Raise if ``owner`` already holds ``key`` on ``store`` (asking for it ``shared``
    or not): one look in the registry, whichever the message.

    :raises RuntimeError: naming the key.
    """
    lease = held_by(store, key, owner)
    if lease is not None:
        _refuse(key, owner, lease, shared)


def _refuse(key: str, owner: object, lease: Any, shared: bool) -> None:
    """Raise for ``owner``, which holds ``lease`` of ``key``, asking for it again."""
    who = "thread" if isinstance(owner, _Thread) else "task"
    if lease._keeper.settings.shared and not shared:  # a writer waits for every reader
        raise RuntimeError(
            f"lock {key_preview(key)} is held shared by this {who}: a shared lease cannot "
            "be turned into an exclusive one (it would wait for itself); release it "
            "first, or take the key exclusively from the start"
        )
    raise RuntimeError(
        f"lock {key_preview(key)} is already held by this {who}: "
        "remotelock locks are not reentrant, and waiting for yourself could only "
        "time out; release it first, or take it in another thread or task"
    )


def held_by(store: object, key: str, owner: object) -> Any:
    """The lease ``owner`` holds of ``key`` on ``store``, or ``None``."""
    with _mutex:
        for holder, lease in _held.get((id(store), key), ()):
            if holder is owner:
                return lease
    return None


def reenter(store: object, key: str, owner: object, shared: bool = False) -> Any:
    """The lease ``owner`` holds of ``key`` on ``store``, entered once more (a
    reentrant lock); ``None`` if it holds none (or it was released just now).

    An exclusive lease is entered again by a shared request too (its holder may read);
    a shared lease is never entered by an exclusive request.

    :raises RuntimeError: it was taken through a lock that is not reentrant, or it is
        shared and the request exclusive.
    :raises LockLost: it was lost: the new entry would run without the lock.
    """
    held = held_by(store, key, owner)
    if held is None:
        return None
    if not held._keeper.settings.reentrant or (held._keeper.settings.shared and not shared):
        _refuse(key, owner, held, shared)
    if held.settle_deadline():
        held.run_on_lost()
    if held.lost:
        raise LockLost(key, held.fencing_token, held.lost_reason)
    if not held.reenter():
        return None
    log.debug("entered lock %r again (depth %d)", key, held.depth)
    return held


def add(store: object, key: str, owner: object, lease: Any) -> None:
    """Record that ``owner`` holds ``lease`` of ``key`` on ``store``."""
    with _mutex:
        _held.setdefault((id(store), key), []).append((owner, lease))


def remove(store: object, key: str, lease: Any) -> None:
    """Forget ``lease`` (released, from any thread)."""
    with _mutex:
        entries = _held.get((id(store), key))
        if entries is None:
            return
        entries[:] = [entry for entry in entries if entry[1] is not lease]
        if not entries:
            del _held[(id(store), key)]


__all__ = [
    "add",
    "current_owner",
    "held_by",
    "reenter",
    "refuse_if_held",
    "remove",
]
