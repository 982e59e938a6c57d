"""``@remote_locked``: the wrapt layer that puts a function under a remote lock.

Everything that does not need the call's arguments happens at decoration time:
validating the arguments, compiling the key, reading the signature once (which
keywords to inject), and choosing the sync or async wrapper. A call then only renders
its key, hands over to :class:`~remotelock.RemoteLock` (``skip_if`` included) and calls
the function with the injected keywords.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, SupportsIndex, TypeVar, cast

import wrapt

from . import awslambda
from ._time import Seconds, to_seconds
from .keys import CallPlan, KeyMaker, KeySpec, unwrap_descriptor
from .lease import OnLost
from .lock import LockSettings, RemoteLock
from .policy import StopStrategy, WaitStrategy
from .stores.base import AsyncStore, Store

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class LockedSpec:
    """The configuration of a decorated function, as ``fn.remote_lock`` exposes it."""

    key: KeySpec
    settings: LockSettings
    skip_if: Callable[..., Any] | None
    lambda_margin: float | None = awslambda.DEFAULT_MARGIN
    """Seconds kept for the handler when a call carries an AWS Lambda context
    (``None``: Lambda contexts are ignored)."""

    @property
    def store(self) -> Store | AsyncStore | None:
        """The store passed to the decorator (``None``: resolved on each call)."""
        return self.settings.store

    @property
    def ttl(self) -> float:
        """Lease length in seconds."""
        return self.settings.ttl

    @property
    def wait(self) -> WaitStrategy | None:
        """The tenacity wait strategy (``None``: the store's default)."""
        return self.settings.wait

    @property
    def stop(self) -> StopStrategy:
        """The tenacity stop strategy."""
        return self.settings.stop


def remote_locked(
    key: KeySpec,
    *,
    store: Store | AsyncStore | None = None,
    ttl: Seconds = 30.0,
    wait: WaitStrategy | None = None,
    stop: StopStrategy | None = None,
    skip_if: Callable[..., Any] | None = None,
    on_lost: OnLost | None = None,
    raise_on_lost: bool = True,
    limit: int = 1,
    reentrant: bool = False,
    shared: bool = False,
    lambda_margin: float | None = awslambda.DEFAULT_MARGIN,
) -> Callable[[F], F]:
    """Run the decorated function only while holding the lock named by ``key``.

    .. code-block:: python

        @remote_locked("refresh:{source}", ttl=30, skip_if=cache_is_fresh)
        def refresh(source, *, has_lock=False):
            ...

    :param key: a fixed string, a ``str.format`` template over the call's arguments
        (``"order:{event[id]}"``, ``"{self.name}"``), or a callable taking the same
        arguments as the function and returning the key.
    :param store: see :class:`RemoteLock` (default: configured / ``REMOTELOCK_URL`` /
        the embedded SQLite file).
    :param ttl: lease length in seconds, renewed while the function runs.
    :param wait: tenacity wait strategy: upper bound between attempts.
    :param stop: tenacity stop strategy: when to give up with :class:`LockTimeout`.
    :param skip_if: callable (sync, or async for ``async def`` functions) taking the
        same arguments. Checked before the first attempt (no store round trip on a
        hit), after every failed attempt and wake-up, and once more right after the
        lock is taken. True: the function runs **without** the lock, ``has_lock=False``.
    :param on_lost: called with the :class:`Lease` if it is found lost while held.
    :param raise_on_lost: raise :class:`LockLost` after a lost lease (default) or log.
    :param limit: at most this many calls hold the key at once (counted permits;
        default 1, a plain lock). Every caller of one key must use the same limit.
    :param reentrant: a call made while the same thread or task holds the key (the
        function calling itself, or another reentrant function of the same key) enters
        the held lease again instead of raising :class:`RuntimeError`; the lease is
        released when the outermost call returns.
    :param shared: hold a shared (reader) lease: calls with ``shared=True`` run
        together, and exclude (and are excluded by) the calls holding the same key
        exclusively (the default). A waiting exclusive call stops new shared ones from
        entering. Not with ``limit``.
    :param lambda_margin: when a call carries an AWS Lambda context (an argument with
        ``get_remaining_time_in_millis``), stop waiting this many seconds before the
        invocation ends, and keep the lease within the invocation's remaining time.
        ``None`` ignores Lambda contexts.

    The function receives ``has_lock``, ``fencing_token`` and ``lease`` keywords only if
    its signature declares them (or takes ``**kwargs``). Put ``@remote_locked`` *outside*
    ``@classmethod`` / ``@staticmethod``.
    """
    settings = LockSettings.build(
        store=store, ttl=ttl, wait=wait, stop=stop, on_lost=on_lost,
        raise_on_lost=raise_on_lost, limit=limit, reentrant=reentrant, shared=shared,
    )  # fmt: skip
    spec = checked_spec(key, settings, skip_if, lambda_margin)

    def decorate(fn: F) -> F:
        return cast(F, decorate_with(fn, spec, LockedCall, LockedFunction))

    return decorate


def checked_spec(
    key: KeySpec,
    settings: LockSettings,
    skip_if: Callable[..., Any] | None,
    lambda_margin: float | None,
) -> LockedSpec:
    """The spec of a decorated function, once ``key``, ``skip_if`` and
    ``lambda_margin`` are checked (``settings`` are already)."""
    if skip_if is not None and not callable(skip_if):
        raise TypeError(f"skip_if must be callable or None, got {skip_if!r}")
    if not isinstance(key, str) and not callable(key):
        raise TypeError(
            f"key must be a string, a str.format template or a callable, got {key!r} "
            f"({type(key).__name__})"
        )
    if lambda_margin is not None:
        lambda_margin = to_seconds(lambda_margin, "lambda_margin", zero=True)
        if lambda_margin > awslambda.MAX_MARGIN:
            raise ValueError(
                f"lambda_margin must be at most {awslambda.MAX_MARGIN:g} s (an invocation's "
                f"longest life), got {lambda_margin!r}"
            )
    return LockedSpec(key=key, settings=settings, skip_if=skip_if, lambda_margin=lambda_margin)


def decorate_with(
    fn: Any,
    spec: LockedSpec,
    calls: Callable[..., LockedCall],
    wrapper: type[Any],
    name: str = "remote_locked",
) -> Any:
    """``fn`` wrapped by ``wrapper`` (a :class:`LockedFunction`), each call run by what
    ``calls`` makes (a :class:`LockedCall`); what ``remote_locked`` and
    ``single_flight`` (``name``, for the errors) share."""
    inner, _kind = unwrap_descriptor(fn)
    if not callable(inner):
        raise TypeError(f"{name} can only decorate callables, got {fn!r}")
    if inspect.isgeneratorfunction(inner) or inspect.isasyncgenfunction(inner):
        raise TypeError(
            f"{name} cannot decorate the generator {inner.__qualname__}: the lock "
            "would be released before the generator runs; lock inside it instead"
        )
    plan = CallPlan.of(fn)
    keys = KeyMaker(spec.key, plan)
    is_async = inspect.iscoroutinefunction(inner)
    skip_if = spec.skip_if
    if skip_if is not None and not is_async and inspect.iscoroutinefunction(skip_if):
        raise TypeError(
            f"skip_if {skip_if.__qualname__} is async but {plan.name} is not: "
            "a sync function needs a sync skip_if"
        )
    if (
        spec.settings.on_lost is not None
        and not is_async
        and inspect.iscoroutinefunction(spec.settings.on_lost)
    ):
        raise TypeError(f"on_lost must be a plain function for the sync function {plan.name}")
    call = calls(plan, keys, spec.settings, skip_if, spec.lambda_margin)
    return wrapper(fn, call.run_async if is_async else call.run, spec)


class LockedCall:
    """The per-call work of one decorated function (its wrapt wrapper)."""

    def __init__(
        self,
        plan: CallPlan,
        keys: KeyMaker,
        settings: LockSettings,
        skip_if: Callable[..., Any] | None,
        lambda_margin: float | None,
    ) -> None:
        self.plan = plan
        self.keys = keys
        self.settings = settings
        self.skip_if = skip_if
        self.lambda_margin = lambda_margin

    def _prepare(
        self, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[RemoteLock, Callable[[], Any] | None]:
        full_args = self.plan.full_args(instance, args)
        settings = self.settings
        if self.lambda_margin is not None:
            context = awslambda.find_context(args, kwargs)
            if context is not None:
                settings = awslambda.fit(settings, context, self.lambda_margin)
        lock = RemoteLock._from_settings(self.keys.render(full_args, kwargs), settings)
        skip_if = self.skip_if
        skip = None if skip_if is None else (lambda: skip_if(*full_args, **kwargs))
        return lock, skip

    def run(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        """Sync: hold the lock (or skip) around ``wrapped``."""
        lock, skip = self._prepare(instance, args, kwargs)
        lease = lock.hold(skip)
        if lease is None:
            return wrapped(*args, **self.plan.inject(kwargs, (False, None, None)))
        try:
            result = wrapped(*args, **self.plan.inject(kwargs, (True, lease.fencing_token, lease)))
        except BaseException:
            lock.finish(lease, raised=True)
            raise
        lock.finish(lease, raised=False)
        return result

    async def run_async(self, wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        """Async: the same, awaiting the lock, ``skip_if`` and ``wrapped``."""
        lock, skip = self._prepare(instance, args, kwargs)
        lease = await lock.ahold(skip)
        if lease is None:
            return await wrapped(*args, **self.plan.inject(kwargs, (False, None, None)))
        try:
            result = await wrapped(
                *args, **self.plan.inject(kwargs, (True, lease.fencing_token, lease))
            )
        except BaseException:
            await lock.afinish(lease, raised=True)
            raise
        await lock.afinish(lease, raised=False)
        return result


def _by_name(module: str, qualname: str) -> Any:
    """Find a decorated function again by where it is defined (how functions unpickle)."""
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


class _BoundLockedFunction(wrapt.BoundFunctionWrapper[Any, Any]):
    @property
    def remote_lock(self) -> LockedSpec:
        return self._self_parent.remote_lock  # type: ignore[no-any-return]

    def remote_lock_with(self, **overrides: Any) -> Any:
        return self._self_parent.remote_lock_with(**overrides)

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return (getattr, (self._self_instance, self.__name__))


class LockedFunction(wrapt.FunctionWrapper[Any, Any]):
    """The decorated function: the original, plus ``remote_lock`` / ``remote_lock_with``."""

    __bound_function_wrapper__ = _BoundLockedFunction

    def __init__(self, wrapped: Any, wrapper: Any, spec: LockedSpec) -> None:
        super().__init__(wrapped, wrapper)
        self._self_remote_lock = spec

    @property
    def remote_lock(self) -> LockedSpec:
        """This function's lock configuration (key, store, ttl, wait, stop, skip_if)."""
        return self._self_remote_lock

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        # Pickle by reference, like a plain function, so decorated functions can be
        # sent to process pools and task queues.
        qualname = self.__qualname__
        if "<locals>" in qualname:
            raise pickle.PicklingError(f"cannot pickle the local function {qualname}")
        return (_by_name, (self.__module__, qualname))

    def remote_lock_with(self, **overrides: Any) -> Any:
        """A copy of the original function decorated with some arguments changed.

        .. code-block:: python

            fast = build_report.remote_lock_with(stop=tenacity.stop_after_attempt(1))
        """
        spec: LockedSpec = self._self_remote_lock
        current: dict[str, Any] = {
            "key": spec.key,
            "skip_if": spec.skip_if,
            "lambda_margin": spec.lambda_margin,
        }
        current.update({f.name: getattr(spec.settings, f.name) for f in fields(LockSettings)})
        unknown = set(overrides) - set(current)
        if unknown:
            raise TypeError(f"remote_lock_with() got unknown arguments: {sorted(unknown)}")
        current.update(overrides)
        key = current.pop("key")
        return remote_locked(key, **current)(self.__wrapped__)


__all__ = [
    "LockedCall",
    "LockedFunction",
    "LockedSpec",
    "checked_spec",
    "decorate_with",
    "remote_locked",
]
