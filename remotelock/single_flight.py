"""``@single_flight``: concurrent callers of one key share one execution and its outcome.

The stampede in one line. The first caller takes the key's lock and runs the function;
callers that arrive while it runs wait for the lock, as ``skip_if`` callers do, and
then return *its* result (or raise its exception) without running anything. The
outcome travels through the store, so this holds across processes and machines. How
a flight is found and an outcome packed is in :mod:`remotelock.flight`; the key, the
injected keywords and the AWS Lambda fit are ``@remote_locked``'s
(:mod:`remotelock.decorator`).
"""

from __future__ import annotations

import functools
import logging
import pickle
from collections.abc import Callable
from typing import Any, TypeVar, cast

from . import awslambda, engine
from ._time import Seconds, to_seconds
from .decorator import LockedCall, LockedFunction, checked_spec, decorate_with
from .errors import StoreError
from .flight import (
    DEFAULT_MAX_SIZE,
    GRACE,
    KEPT,
    LAST,
    LAST_KEPT,
    Flight,
    Serializer,
    pack_error,
    pack_value,
    record,
    unpack,
)
from .keys import KeySpec
from .lease import Lease
from .lock import LockSettings
from .policy import StopStrategy, WaitStrategy
from .stores.base import FENCING, AsyncResultStore, AsyncStore, ResultStore, Store

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("remotelock.flight")

MAX_RESULT_TTL = 7 * 86400.0
"""Longest ``result_ttl``: a week, as the longest lease."""


def single_flight(
    key: KeySpec,
    *,
    store: Store | AsyncStore | None = None,
    ttl: Seconds = 30.0,
    result_ttl: Seconds = 0.0,
    wait: WaitStrategy | None = None,
    stop: StopStrategy | None = None,
    serializer: Serializer | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
    lambda_margin: float | None = awslambda.DEFAULT_MARGIN,
) -> Callable[[F], F]:
    """Run the decorated function once for all the callers of ``key`` that overlap.

    .. code-block:: python

        @single_flight("rates:{currency}", result_ttl=60)
        def rates(currency):
            return rate_limited_api.get(currency)  # once a minute, whoever asks

    :param key: as ``@remote_locked``'s: a string, a ``str.format`` template over the
        call's arguments, or a callable returning the key.
    :param store: where the lock and the outcomes live (every store but
        :func:`~remotelock.make_remote_lock`'s, which cannot keep values).
    :param ttl: lease length of the running call, renewed while it runs; a caller that
        dies mid-run hands the flight to exactly one waiter within ``ttl``.
    :param result_ttl: seconds the result stays for later callers, who then get it
        without running anything (0: a call that starts after the flight ended runs
        again). Exceptions are shared with the waiting callers only, never kept.
    :param wait: tenacity wait strategy of the waiting callers (a release wakes them).
    :param stop: when waiting callers give up with :class:`LockTimeout` (default 60 s):
        make it longer than the function runs.
    :param serializer: ``dumps``/``loads`` of the result (default :mod:`pickle`; e.g.
        :mod:`json`). Pickle runs whatever the store holds: use it only with a store
        that only your own code can write to.
    :param max_size: largest serialized result kept, in bytes (default 1 MiB, and never
        more than the store keeps: 380,000 on DynamoDB, 64 MiB elsewhere); a larger one
        raises :class:`ResultTooLarge` in every caller of the flight.
    :param lambda_margin: as ``@remote_locked``'s.
    """
    settings = LockSettings.build(store=store, ttl=ttl, wait=wait, stop=stop)
    kept = to_seconds(result_ttl, "result_ttl", zero=True)
    if kept > MAX_RESULT_TTL:
        raise ValueError(f"result_ttl must be at most {MAX_RESULT_TTL:g} s, got {result_ttl!r}")
    codec = cast(Serializer, pickle) if serializer is None else serializer
    if not (callable(getattr(codec, "dumps", None)) and callable(getattr(codec, "loads", None))):
        raise TypeError(
            f"serializer must have dumps() and loads() (pickle, json, ...), got {serializer!r}"
        )
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 1:
        raise ValueError(f"max_size must be a whole number of bytes >= 1, got {max_size!r}")
    if store is not None:
        results_of(store)
    spec = checked_spec(key, settings, None, lambda_margin)
    options = {
        "key": key, "store": store, "ttl": ttl, "result_ttl": result_ttl, "wait": wait,
        "stop": stop, "serializer": serializer, "max_size": max_size,
        "lambda_margin": lambda_margin,
    }  # fmt: skip

    calls = functools.partial(FlightCall, result_ttl=kept, codec=codec, limit=max_size)

    def decorate(fn: F) -> F:
        function = decorate_with(fn, spec, calls, FlightFunction, "single_flight")
        function._self_given = options
        return cast(F, function)

    return decorate


def results_of(store: object) -> ResultStore | AsyncResultStore:
    """``store`` as a store of results (with fencing tokens: they number the flights),
    or a ``TypeError`` naming it."""
    if not isinstance(store, (ResultStore, AsyncResultStore)) or FENCING not in getattr(
        store, "capabilities", ()
    ):
        raise TypeError(
            f"single_flight needs a store that keeps results (memory, SQLite, Redis, "
            f"PostgreSQL, DynamoDB), got {store!r}"
        )
    return store


class FlightCall(LockedCall):
    """The per-call work of a ``single_flight`` function (its wrapt wrapper)."""

    def __init__(self, *args: Any, result_ttl: float, codec: Serializer, limit: int) -> None:
        super().__init__(*args)
        self.result_ttl = result_ttl
        self.codec = codec
        self.limit = limit

    def run(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        """Sync: lead the flight, or wait for it and return its outcome."""
        lock, _ = self._prepare(instance, args, kwargs)
        stores = lock._sync_engine()  # the lock's store, resolved (or its twin, below)
        results = results_of(stores.store)
        flight = Flight(lock.key, results.get_result, self.result_ttl > 0)
        lease = lock.hold(lambda: engine.run(flight.check()))
        if lease is None:
            return unpack(cast(bytes, flight.found), self.codec)
        try:
            value = wrapped(*args, **self.plan.inject(kwargs, (True, lease.fencing_token, lease)))
        except Exception as exc:
            self._keep(results, lease, pack_error(exc, self.codec), value_too=False)
            lock.finish(lease, raised=True)
            raise
        except BaseException:
            lock.finish(lease, raised=True)  # an interruption: the next caller runs it
            raise
        data, error = self._pack(value, lease, results)
        self._keep(results, lease, data, value_too=error is None)
        lock.finish(lease, raised=error is not None)
        if error is not None:
            raise error
        return value

    async def run_async(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        """Async: the same, awaiting the lock, the store and ``wrapped``."""
        lock, _ = self._prepare(instance, args, kwargs)
        stores = lock._async_engine()
        results = results_of(stores.store)
        flight = Flight(lock.key, results.get_result, self.result_ttl > 0)
        from .async_engine import run  # asyncio only for async callers

        lease = await lock.ahold(lambda: run(flight.check()))
        if lease is None:
            return unpack(cast(bytes, flight.found), self.codec)
        try:
            value = await wrapped(
                *args, **self.plan.inject(kwargs, (True, lease.fencing_token, lease))
            )
        except Exception as exc:
            await self._akeep(results, lease, pack_error(exc, self.codec), value_too=False)
            await lock.afinish(lease, raised=True)
            raise
        except BaseException:
            await lock.afinish(lease, raised=True)
            raise
        data, error = self._pack(value, lease, results)
        await self._akeep(results, lease, data, value_too=error is None)
        await lock.afinish(lease, raised=error is not None)
        if error is not None:
            raise error
        return value

    def _pack(self, value: Any, lease: Lease, results: Any) -> tuple[bytes, Exception | None]:
        """The outcome of a call that returned ``value``; a value that cannot be kept
        (too large for ``max_size`` or the store, not serializable) becomes that error,
        for every caller alike."""
        limit = min(self.limit, int(results.max_result_bytes))
        try:
            return pack_value(value, self.codec, limit, lease.key), None
        except Exception as exc:
            return pack_error(exc, self.codec), exc

    def _keep(self, results: Any, lease: Lease, data: bytes, value_too: bool) -> None:
        for name, value, seconds in self._where(lease, data, value_too):
            try:
                results.put_result(name, value, seconds)
            except StoreError as exc:
                self._warn(lease, exc)
                return

    async def _akeep(self, results: Any, lease: Lease, data: bytes, value_too: bool) -> None:
        for name, value, seconds in self._where(lease, data, value_too):
            try:
                await results.put_result(name, value, seconds)
            except StoreError as exc:
                self._warn(lease, exc)
                return

    def _where(self, lease: Lease, data: bytes, value_too: bool) -> list[tuple[str, bytes, float]]:
        """Where an outcome goes: the key's last flight (for its waiters), and its kept
        result (``result_ttl``, values only)."""
        seconds = max(lease.ttl, LAST_KEPT) + GRACE
        where = [(LAST + lease.key, record(lease.fencing_token, data), seconds)]
        if value_too and self.result_ttl > 0:
            where.append((KEPT + lease.key, data, self.result_ttl))
        return where

    @staticmethod
    def _warn(lease: Lease, exc: BaseException) -> None:
        log.warning(
            "single_flight %r: could not keep the outcome for the waiting callers (one of "
            "them runs the function again): %s",
            lease.key,
            exc,
        )


class FlightFunction(LockedFunction):
    """A ``single_flight`` function: ``remote_lock`` is its lock's configuration."""

    _self_given: dict[str, Any]

    def remote_lock_with(self, **overrides: Any) -> Any:
        """A copy of the original function, ``single_flight`` with some arguments changed."""
        unknown = set(overrides) - set(self._self_given)
        if unknown:
            raise TypeError(f"remote_lock_with() got unknown arguments: {sorted(unknown)}")
        options = {**self._self_given, **overrides}
        key = options.pop("key")
        return single_flight(key, **options)(self.__wrapped__)


__all__ = ["MAX_RESULT_TTL", "FlightCall", "FlightFunction", "results_of", "single_flight"]
