"""``make_remote_lock``: the original JavaScript ``remote-lock`` API, one-to-one.

Same names (snake_case), same milliseconds, same defaults (poll every 1000 ms, give up
after 60000 ms), same step order and call counts, same error text. The original's
defects are fixed on purpose:

1. ``exec`` is awaited before the lock is released (the original released it at
   ``exec``'s first ``await``, so async work ran unprotected).
2. A lock we have just set is released, never leaked, when ``skip_lock`` turns true
   before our confirming re-read (the original left it held for a whole lease).
3. ``0`` means what it says: ``total_timeout=0`` tries once, ``polling_timeout=0`` polls
   without pausing (the original's ``||`` turned 0 into the default).
4. A missing ``request_id`` is a :class:`ValueError` (the original only logged, then spun).
5. Time is monotonic; the wait never sleeps past the deadline.
6. Giving up raises :class:`~remotelock.LockTimeout` (a ``TimeoutError``) with the
   original message ``Timeout Error: Failed to obtain lock after N ms.``
7. A ``set_lock`` that did not take effect (our re-read still shows the lock free) is
   retried after a poll pause instead of in a hot loop.

The algorithm is one generator that yields the calls it needs (read, set, skip check,
release, sleep, ``exec``); the lock's own engines run it, sync or async, so both
follow exactly the same path.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from . import engine
from .core import Call, Machine
from .errors import LockTimeout
from .stores.callable import AsyncCallableStore, CallableStore

DEFAULT_POLLING_MS: Final = 1000
DEFAULT_TOTAL_MS: Final = 60000


class _Plan(NamedTuple):
    """One ``remote_lock(...)`` call's settings."""

    store: CallableStore | AsyncCallableStore
    request_id: str
    lease_ms: float
    skip_lock: Callable[[], Any] | None
    polling_ms: float
    total_ms: float
    clock: Callable[[], float]  # milliseconds
    sleep: Callable[[float], Any]  # milliseconds
    sync: bool  # every function is plain: an awaitable result is a mistake


def _poll_for_lock(plan: _Plan) -> Machine[bool]:
    """The original's ``pollForLock``, step for step; returns whether we hold the lock.

    Each pass: check ``skip_lock`` (from the 2nd pass on), read the lock, set it if
    free and go straight round to re-read it, stop if the stored id is ours, else give
    up at the deadline or pause and poll again. Every step is a :class:`Call` that the
    lock's own engines make (sync) or await (async).
    """
    store, request_id = plan.store, plan.request_id
    start = plan.clock()
    count = 0
    just_set = False
    while True:
        count += 1
        if plan.skip_lock is not None and count > 1 and (yield from _skips(plan)):
            if just_set:
                yield Call(store.delete, (request_id,))
            return False
        current = yield Call(store.read, (request_id,))
        if current is None and not just_set:
            yield Call(store.write, (request_id, int(plan.lease_ms)))
            just_set = True
            continue
        if current is not None and current == request_id:
            return True
        just_set = False
        elapsed = plan.clock() - start
        if elapsed >= plan.total_ms:
            raise LockTimeout(
                request_id,
                count,
                elapsed / 1000,
                f"Timeout Error: Failed to obtain lock after {_ms_text(plan.total_ms)} ms.",
            )
        yield Call(plan.sleep, (min(plan.polling_ms, plan.total_ms - elapsed),))


def _skips(plan: _Plan) -> Machine[bool]:
    answer = yield Call(plan.skip_lock or bool)
    return bool(_checked(plan.sync, "skip_lock", answer))


def _remote_lock(plan: _Plan, exec: Callable[..., Any]) -> Machine[Any]:
    """Poll for the lock, run ``exec(has_lock=...)``, release what we took."""
    has_lock = yield from _poll_for_lock(plan)
    try:
        result = yield Call(functools.partial(exec, has_lock=has_lock))
        return _checked(plan.sync, "exec", result)
    finally:
        if has_lock:
            yield Call(plan.store.delete, (plan.request_id,))


def _ms_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


class RemoteLockCall:
    """The function ``make_remote_lock`` returns: call it once per protected operation."""

    def __init__(
        self,
        store: CallableStore | AsyncCallableStore,
        polling_timeout: float,
        total_timeout: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Any] | None,
    ) -> None:
        self.store = store
        self.polling_timeout = polling_timeout
        self.total_timeout = total_timeout
        self._clock = clock
        self._sleep = sleep

    def __call__(
        self,
        *,
        request_id: str | None = None,
        exec: Callable[..., Any],
        skip_lock: Callable[[], Any] | None = None,
        polling_timeout: float | None = None,
        total_timeout: float | None = None,
    ) -> Any:
        """Run ``exec(has_lock=...)`` under the lock and return its result.

        Returns the result directly when every function involved is synchronous, or a
        coroutine to ``await`` when any of them is ``async def``.

        :raises ValueError: ``request_id`` missing or empty; a negative timeout.
        :raises LockTimeout: the lock stayed held for ``total_timeout`` ms.
        """
        if request_id is None or request_id == "":
            raise ValueError("request_id is required: a unique id for this caller")
        if not callable(exec):
            raise TypeError(f"exec must be callable, got {exec!r}")
        if skip_lock is not None and not callable(skip_lock):
            raise TypeError(f"skip_lock must be callable or None, got {skip_lock!r}")
        polling = _ms("polling_timeout", polling_timeout, self.polling_timeout)
        total = _ms("total_timeout", total_timeout, self.total_timeout)
        # The lease handed to set_lock is the total wait, as in the original; a lease
        # of 0 ms would expire at once, so "try once" still gets the default lease.
        lease_ms = total if total > 0 else DEFAULT_TOTAL_MS
        sync = not self._is_async(exec, skip_lock)
        sleep = self._sleep or (_sync_sleep if sync else _async_sleep)
        plan = _Plan(self.store, str(request_id), lease_ms, skip_lock, polling, total,
                     self._clock, sleep, sync)  # fmt: skip
        if sync:
            return engine.run(_remote_lock(plan, exec))
        from . import async_engine  # asyncio only for async callers

        return async_engine.run(_remote_lock(plan, exec))

    def _is_async(self, exec: Callable[..., Any], skip_lock: Callable[..., Any] | None) -> bool:
        return isinstance(self.store, AsyncCallableStore) or any(
            inspect.iscoroutinefunction(fn) for fn in (exec, skip_lock, self._sleep) if fn
        )


def _sync_sleep(ms: float) -> None:
    time.sleep(ms / 1000)


async def _async_sleep(ms: float) -> None:
    import asyncio

    await asyncio.sleep(ms / 1000)


def make_remote_lock(
    *,
    get_lock: Callable[..., Any],
    set_lock: Callable[..., Any],
    release_lock: Callable[..., Any],
    polling_timeout: float = DEFAULT_POLLING_MS,
    total_timeout: float = DEFAULT_TOTAL_MS,
    clock: Callable[[], float] | None = None,
    sleep: Callable[[float], Any] | None = None,
) -> RemoteLockCall:
    """Build a ``remote_lock`` function from the three store callables, as the original.

    .. code-block:: python

        remote_lock = make_remote_lock(
            get_lock=lambda request_id: r.get("lock"),
            set_lock=lambda request_id, timeout: r.set("lock", request_id, px=timeout, nx=True),
            release_lock=lambda request_id: r.delete("lock"),
        )
        remote_lock(request_id="worker-1", exec=lambda has_lock: increment())

    The callables may be plain or ``async def``. They are called with keywords:
    ``get_lock(request_id=)``, ``set_lock(request_id=, timeout=<ms>)``,
    ``release_lock(request_id=)``. ``get_lock`` returns the stored id, or ``None`` when
    free; ids are compared as strings, so ``1`` matches ``"1"`` as in the original.

    :param polling_timeout: pause between polls of a busy lock, in ms (0: no pause).
    :param total_timeout: how long to wait for the lock, in ms (0: one attempt); also
        the lease given to ``set_lock``, as in the original.
    :param clock: milliseconds clock for tests (default: monotonic).
    :param sleep: ``sleep(ms)`` for tests (sync or async).
    """
    polling = _ms("polling_timeout", polling_timeout, None)
    total = _ms("total_timeout", total_timeout, None)
    store: CallableStore | AsyncCallableStore
    if any(inspect.iscoroutinefunction(fn) for fn in (get_lock, set_lock, release_lock)):
        store = AsyncCallableStore(get_lock, set_lock, release_lock)
    else:
        store = CallableStore(get_lock, set_lock, release_lock)
    ms_clock = clock or (lambda: time.monotonic() * 1000)
    return RemoteLockCall(store, polling, total, ms_clock, sleep)


def _ms(name: str, value: float | None, default: float | None) -> float:
    if value is None:
        if default is None:
            raise TypeError(f"{name} must be a number of milliseconds, got None")
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of milliseconds, got {value!r}")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number of milliseconds >= 0, got {value!r}")
    return float(value)


def _checked(sync: bool, name: str, value: Any) -> Any:
    """``value``; in a sync call, an awaitable is refused (closed, not left unawaited)."""
    if sync and inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if close is not None:
            close()
        raise TypeError(f"{name} returned an awaitable; declare it `async def`")
    return value


__all__ = ["DEFAULT_POLLING_MS", "DEFAULT_TOTAL_MS", "RemoteLockCall", "make_remote_lock"]
