"""CallableStore: the original ``remote-lock``'s three functions, as a store.

``get_lock(request_id=)`` returns the id stored for the lock (``None`` when free),
``set_lock(request_id=, timeout=)`` stores an id with a lease in **milliseconds**, and
``release_lock(request_id=)`` deletes it. Anything that can do those three things
(a cache, a database row, an HTTP API) becomes a lock store.
"""

from __future__ import annotations

import inspect
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

_fences = itertools.count(1)


class _Functions:
    """The seed's three functions, checked once for both store classes (their base)."""

    _sync: ClassVar[bool] = True  # refuse ``async def`` functions

    def __init__(
        self,
        get_lock: Callable[..., Any],
        set_lock: Callable[..., Any],
        release_lock: Callable[..., Any],
        *,
        capabilities: frozenset[str] | set[str] = frozenset(),
    ) -> None:
        named = (("get_lock", get_lock), ("set_lock", set_lock), ("release_lock", release_lock))
        for name, fn in named:
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {fn!r}")
            if self._sync and inspect.iscoroutinefunction(fn):
                raise TypeError(
                    f"{name} is async; use AsyncCallableStore (or make_remote_lock, "
                    "which accepts either)"
                )
        self.get_lock = get_lock
        self.set_lock = set_lock
        self.release_lock = release_lock
        self.capabilities = frozenset(capabilities)


def _ms(seconds: float) -> int:
    # The seed's setLock takes whole milliseconds; never round a lease down to zero.
    return max(1, round(seconds * 1000))


class CallableStore(_Functions):
    """A store over three user functions, in the seed's shape (sync functions).

    What it **cannot** guarantee, because the functions decide: atomicity (acquire
    reads, sets, then reads again to confirm, as the original did; a ``set_lock`` that
    overwrites unconditionally lets two callers both see their own id), token-checked
    release (it reads, compares, then deletes), expiry (only if ``set_lock`` honours
    ``timeout``) and fencing (tokens come from a counter in this process). Its
    ``capabilities`` are therefore empty unless you declare what your functions give.
    The ``key`` of each step is ignored: like the original, the functions close over
    their one lock. ``wait`` just sleeps (no notifications).

    :param capabilities: what your functions guarantee (names from
        :mod:`remotelock.stores.base`), e.g. ``{"expiry", "cross_process"}``.
    """

    _twin: AsyncCallableStore | None = None

    # The seed's own steps, used one-to-one by make_remote_lock.

    def read(self, request_id: str) -> str | None:
        """``get_lock``: the stored id as a string (so ``1`` matches ``"1"``), or ``None``."""
        return _text(_sync_result("get_lock", self.get_lock(request_id=request_id)))

    def write(self, request_id: str, timeout_ms: int) -> None:
        """``set_lock`` with a lease of ``timeout_ms`` milliseconds."""
        _sync_result("set_lock", self.set_lock(request_id=request_id, timeout=timeout_ms))

    def delete(self, request_id: str) -> None:
        """``release_lock``: unconditional, as in the seed."""
        _sync_result("release_lock", self.release_lock(request_id=request_id))

    # The Store protocol on top of them.

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """Read; if free, set and read back; ours means acquired."""
        current = self.read(token)
        if current is None:
            self.write(token, _ms(ttl))
            current = self.read(token)
        elif current == token:
            self.write(token, _ms(ttl))
        return next(_fences) if current == token else None

    def release(self, key: str, token: str) -> bool:
        """Delete if the stored id is ``token`` (read-compare-delete, not atomic)."""
        if self.read(token) != token:
            return False
        self.delete(token)
        return True

    def extend(self, key: str, token: str, ttl: float) -> bool:
        """Set again (a fresh lease) if the stored id is still ``token``."""
        if self.read(token) != token:
            return False
        self.write(token, _ms(ttl))
        return True

    def owner(self, key: str) -> str | None:
        """The stored id."""
        return self.read("")

    def wait(self, key: str, timeout: float) -> None:
        """Sleep ``timeout`` seconds: the functions give no release notifications."""
        time.sleep(timeout)

    def as_async(self) -> AsyncCallableStore:
        """The same functions served to asyncio code (each call runs in a worker thread)."""
        if self._twin is None:
            self._twin = AsyncCallableStore(
                _in_thread(self.get_lock),
                _in_thread(self.set_lock),
                _in_thread(self.release_lock),
                capabilities=self.capabilities,
            )
        return self._twin

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_name(self.get_lock)}, {_name(self.set_lock)}, ...)"


class AsyncCallableStore(_Functions):
    """:class:`CallableStore` for ``async def`` functions (plain functions also work)."""

    _sync = False

    async def read(self, request_id: str) -> str | None:
        """See :meth:`CallableStore.read`."""
        return _text(await maybe_await(self.get_lock(request_id=request_id)))

    async def write(self, request_id: str, timeout_ms: int) -> None:
        """See :meth:`CallableStore.write`."""
        await maybe_await(self.set_lock(request_id=request_id, timeout=timeout_ms))

    async def delete(self, request_id: str) -> None:
        """See :meth:`CallableStore.delete`."""
        await maybe_await(self.release_lock(request_id=request_id))

    async def acquire(self, key: str, token: str, ttl: float) -> int | None:
        """See :meth:`CallableStore.acquire`."""
        current = await self.read(token)
        if current is None:
            await self.write(token, _ms(ttl))
            current = await self.read(token)
        elif current == token:
            await self.write(token, _ms(ttl))
        return next(_fences) if current == token else None

    async def release(self, key: str, token: str) -> bool:
        """See :meth:`CallableStore.release`."""
        if await self.read(token) != token:
            return False
        await self.delete(token)
        return True

    async def extend(self, key: str, token: str, ttl: float) -> bool:
        """See :meth:`CallableStore.extend`."""
        if await self.read(token) != token:
            return False
        await self.write(token, _ms(ttl))
        return True

    async def owner(self, key: str) -> str | None:
        """See :meth:`CallableStore.owner`."""
        return await self.read("")

    async def wait(self, key: str, timeout: float) -> None:
        """Sleep ``timeout`` seconds."""
        import asyncio

        await asyncio.sleep(timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_name(self.get_lock)}, {_name(self.set_lock)}, ...)"


async def maybe_await(value: Any) -> Any:
    """``value``, awaited first if it is awaitable (the seed accepted sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


def _sync_result(name: str, value: Any) -> Any:
    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if close is not None:
            close()  # don't leave a never-awaited coroutine behind
        raise TypeError(
            f"{name} returned an awaitable; use AsyncCallableStore for async functions"
        )
    return value


def _in_thread(fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def call(**kwargs: Any) -> Any:
        import asyncio

        return await asyncio.to_thread(fn, **kwargs)

    return call


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _name(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


__all__ = ["AsyncCallableStore", "CallableStore", "maybe_await"]
