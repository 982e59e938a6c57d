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

The algorithm is one generator that yields the steps it needs (read, set, skip check,
release, sleep); a sync driver and an async driver run it, so both follow exactly the
same path.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Generator
from typing import Any, Final

from .errors import LockTimeout
from .stores.callable import AsyncCallableStore, CallableStore, maybe_await

DEFAULT_POLLING_MS: Final = 1000
DEFAULT_TOTAL_MS: Final = 60000

# The steps the algorithm asks its driver to perform.
_GET: Final = "get"
_SET: Final = "set"
_SKIP: Final = "skip"
_RELEASE: Final = "release"
_SLEEP: Final = "sleep"

Step = tuple[str, Any]


def _poll_for_lock(
    request_id: str,
    has_skip: bool,
    polling_ms: float,
    total_ms: float,
    clock: Callable[[], float],
) -> Generator[Step, Any, bool]:
    """The original's ``pollForLock``, step for step; returns whether we hold the lock.

    ``clock`` returns milliseconds. Each pass: check ``skip_lock`` (from the 2nd pass
    on), read the lock, set it if free and go straight round to re-read it, stop if
    the stored id is ours, else give up at the deadline or pause and poll again.
    """
    start = clock()
    count = 0
    just_set = False
    while True:
        count += 1
        if has_skip and count > 1 and (yield (_SKIP, None)):
            if just_set:
                yield (_RELEASE, None)
            return False
        current = yield (_GET, None)
        if current is None and not just_set:
            yield (_SET, None)
            just_set = True
            continue
        if current is not None and current == request_id:
            return True
        just_set = False
        elapsed = clock() - start
        if elapsed >= total_ms:
            raise LockTimeout(
                request_id,
                count,
                elapsed / 1000,
                f"Timeout Error: Failed to obtain lock after {_ms_text(total_ms)} ms.",
            )
        yield (_SLEEP, min(polling_ms, total_ms - elapsed))


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
        steps = _poll_for_lock(str(request_id), skip_lock is not None, polling, total, self._clock)
        # The lease handed to set_lock is the total wait, as in the original; a lease
        # of 0 ms would expire at once, so "try once" still gets the default lease.
        lease_ms = total if total > 0 else DEFAULT_TOTAL_MS
        if self._is_async(exec, skip_lock):
            return self._run_async(steps, str(request_id), lease_ms, exec, skip_lock)
        return self._run_sync(steps, str(request_id), lease_ms, exec, skip_lock)

    def _is_async(self, exec: Callable[..., Any], skip_lock: Callable[..., Any] | None) -> bool:
        return isinstance(self.store, AsyncCallableStore) or any(
            inspect.iscoroutinefunction(fn) for fn in (exec, skip_lock, self._sleep) if fn
        )

    def _run_sync(
        self,
        steps: Generator[Step, Any, bool],
        request_id: str,
        lease_ms: float,
        exec: Callable[..., Any],
        skip_lock: Callable[[], Any] | None,
    ) -> Any:
        store = self.store
        assert isinstance(store, CallableStore)
        sleep = self._sleep or (lambda ms: time.sleep(ms / 1000))
        reply: Any = None
        try:
            while True:
                step, arg = steps.send(reply)
                reply = None
                if step == _GET:
                    reply = store.read(request_id)
                elif step == _SET:
                    store.write(request_id, int(lease_ms))
                elif step == _SKIP:
                    reply = _not_awaitable("skip_lock", skip_lock() if skip_lock else False)
                elif step == _RELEASE:
                    store.delete(request_id)
                else:
                    sleep(arg)
        except StopIteration as done:
            has_lock = bool(done.value)
        try:
            return _not_awaitable("exec", exec(has_lock=has_lock))
        finally:
            if has_lock:
                store.delete(request_id)

    async def _run_async(
        self,
        steps: Generator[Step, Any, bool],
        request_id: str,
        lease_ms: float,
        exec: Callable[..., Any],
        skip_lock: Callable[[], Any] | None,
    ) -> Any:
        import asyncio

        store = self.store
        if isinstance(store, CallableStore):
            store = AsyncCallableStore(store.get_lock, store.set_lock, store.release_lock)
        reply: Any = None
        try:
            while True:
                step, arg = steps.send(reply)
                reply = None
                if step == _GET:
                    reply = await store.read(request_id)
                elif step == _SET:
                    await store.write(request_id, int(lease_ms))
                elif step == _SKIP:
                    reply = await maybe_await(skip_lock() if skip_lock else False)
                elif step == _RELEASE:
                    await store.delete(request_id)
                elif self._sleep is not None:
                    await maybe_await(self._sleep(arg))
                else:
                    await asyncio.sleep(arg / 1000)
        except StopIteration as done:
            has_lock = bool(done.value)
        try:
            return await maybe_await(exec(has_lock=has_lock))
        finally:
            if has_lock:
                await store.delete(request_id)


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


def _not_awaitable(name: str, value: Any) -> Any:
    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if close is not None:
            close()
        raise TypeError(f"{name} returned an awaitable; declare it `async def`")
    return value


__all__ = ["DEFAULT_POLLING_MS", "DEFAULT_TOTAL_MS", "RemoteLockCall", "make_remote_lock"]
