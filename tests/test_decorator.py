"""@remote_locked: callable kinds x key forms x injection, skip_if, and bad input."""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tenacity

from remotelock import Lease, LockedSpec, LockTimeout, remote_locked
from remotelock.stores import MemoryStore


class CountingStore(MemoryStore):
    """A MemoryStore that records every acquire (to prove the skip fast path)."""

    def __init__(self) -> None:
        super().__init__()
        self.acquired: list[str] = []
        self.keys_seen: list[str] = []

    def acquire(self, key: str, token: str, ttl: float) -> int | None:
        self.keys_seen.append(key)
        fence = super().acquire(key, token, ttl)
        if fence is not None:
            self.acquired.append(key)
        return fence


# -- the callable-kind matrix -------------------------------------------------------------


def build(kind: str, store: MemoryStore) -> Callable[..., Any]:
    """A decorated callable of ``kind`` taking ``item`` and reporting what it received."""
    if kind == "function":

        @remote_locked("item:{item}", store=store)
        def function(
            item: str, *, has_lock: bool = False, fencing_token: int | None = None
        ) -> Any:
            return (item, has_lock, fencing_token)

        return function

    class Service:
        name = "svc"

        @remote_locked("{self.name}:{item}", store=store)
        def method(self, item: str, *, has_lock: bool = False, fencing_token: Any = None) -> Any:
            return (item, has_lock, fencing_token)

        @remote_locked("{cls.__name__}:{item}", store=store)
        @classmethod
        def klass(cls, item: str, *, has_lock: bool = False, fencing_token: Any = None) -> Any:
            return (item, has_lock, fencing_token)

        @remote_locked("static:{item}", store=store)
        @staticmethod
        def static(item: str, *, has_lock: bool = False, fencing_token: Any = None) -> Any:
            return (item, has_lock, fencing_token)

        @remote_locked("{self.name}:async:{item}", store=store)
        async def amethod(
            self, item: str, *, has_lock: bool = False, fencing_token: Any = None
        ) -> Any:
            await asyncio.sleep(0)
            return (item, has_lock, fencing_token)

    if kind == "async-function":

        @remote_locked("async:{item}", store=store)
        async def afunction(
            item: str, *, has_lock: bool = False, fencing_token: int | None = None
        ) -> Any:
            await asyncio.sleep(0)
            return (item, has_lock, fencing_token)

        return afunction
    obj = Service()
    return {
        "method": obj.method,
        "classmethod": Service.klass,
        "classmethod-via-instance": obj.klass,
        "staticmethod": Service.static,
        "async-method": obj.amethod,
    }[kind]


EXPECTED_KEYS = {
    "function": "item:x",
    "method": "svc:x",
    "classmethod": "Service:x",
    "classmethod-via-instance": "Service:x",
    "staticmethod": "static:x",
    "async-function": "async:x",
    "async-method": "svc:async:x",
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_KEYS))
@pytest.mark.parametrize("by_keyword", [False, True])
def test_kinds_render_keys_and_inject(kind: str, by_keyword: bool) -> None:
    store = CountingStore()
    fn = build(kind, store)
    call = fn(item="x") if by_keyword else fn("x")
    result = asyncio.run(call) if inspect.iscoroutine(call) else call
    item, has_lock, fence = result
    assert item == "x"
    assert has_lock is True
    assert isinstance(fence, int)
    assert store.acquired == [EXPECTED_KEYS[kind]]
    assert store.owner(EXPECTED_KEYS[kind]) is None


def test_introspection_is_kept() -> None:
    store = MemoryStore()

    def documented(a: int, b: str = "x") -> str:
        """Docstring survives."""
        return b * a

    plain_signature = inspect.signature(documented)
    documented = remote_locked("k", store=store)(documented)

    @remote_locked("k", store=store)
    async def coro(a: int) -> int:
        return a

    assert documented.__name__ == "documented"
    assert documented.__doc__ == "Docstring survives."
    assert inspect.signature(documented) == plain_signature
    assert inspect.iscoroutinefunction(coro)
    assert not inspect.iscoroutinefunction(documented)
    assert documented(2) == "xx"


def test_plain_lambda_handler_gets_nothing_injected() -> None:
    store = CountingStore()

    @remote_locked("order:{event[id]}", store=store)
    def handler(event: dict[str, Any], context: object) -> str:
        return f"done {event['id']}"

    assert handler({"id": 7}, None) == "done 7"
    assert store.acquired == ["order:7"]


def test_kwargs_functions_get_every_injection() -> None:
    @remote_locked("k", store=MemoryStore())
    def takes_kwargs(**kwargs: Any) -> dict[str, Any]:
        return kwargs

    received = takes_kwargs(extra=1)
    assert received["extra"] == 1
    assert received["has_lock"] is True
    assert isinstance(received["fencing_token"], int)
    assert isinstance(received["lease"], Lease)


def test_callable_key_gets_the_same_arguments() -> None:
    store = CountingStore()
    seen: list[tuple[Any, ...]] = []

    def key(user: str, amount: int = 1) -> str:
        seen.append((user, amount))
        return f"pay:{user}"

    @remote_locked(key, store=store)
    def pay(user: str, amount: int = 1) -> int:
        return amount

    assert pay("ann", amount=5) == 5
    assert seen == [("ann", 5)]
    assert store.acquired == ["pay:ann"]


def test_template_with_kwargs_parameter_and_escapes() -> None:
    store = CountingStore()

    @remote_locked("{{literal}}:{region}", store=store)
    def job(**options: Any) -> None:
        pass

    job(region="eu")
    assert store.acquired == ["{literal}:eu"]


def test_constant_key() -> None:
    store = CountingStore()

    @remote_locked("migrations", store=store)
    def migrate() -> None:
        pass

    migrate()
    migrate()
    assert store.acquired == ["migrations", "migrations"]


def test_exclusion_between_threads() -> None:
    store = MemoryStore()
    inside: list[int] = []
    overlaps: list[int] = []

    @remote_locked("counter", store=store)
    def critical() -> None:
        inside.append(1)
        if len(inside) > 1:
            overlaps.append(1)
        time.sleep(0.001)
        inside.pop()

    threads = [threading.Thread(target=lambda: [critical() for _ in range(25)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not overlaps


def test_function_errors_propagate_and_release() -> None:
    store = MemoryStore()

    @remote_locked("k", store=store)
    def fails() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        fails()
    assert store.owner("k") is None


def test_timeout_means_the_function_is_not_called() -> None:
    store = MemoryStore()
    calls = []

    @remote_locked(
        "busy", store=store, wait=tenacity.wait_fixed(0.01), stop=tenacity.stop_after_attempt(3)
    )
    def never() -> None:
        calls.append(1)

    store.acquire("busy", "someone-else", 30)
    with pytest.raises(LockTimeout) as caught:
        never()
    assert calls == []
    assert caught.value.attempts == 3


# -- skip_if ------------------------------------------------------------------------------


def test_skip_if_true_first_costs_no_store_round_trip() -> None:
    store = CountingStore()

    @remote_locked("cache", store=store, skip_if=lambda: True)
    def refresh(*, has_lock: bool = False) -> bool:
        return has_lock

    assert refresh() is False
    assert store.keys_seen == []


def test_skip_if_gets_the_call_arguments() -> None:
    seen = []

    def fresh(self: Any, region: str) -> bool:
        seen.append((self.name, region))
        return True

    class Cache:
        name = "c"

        @remote_locked("{self.name}:{region}", store=MemoryStore(), skip_if=fresh)
        def refresh(self, region: str) -> str:
            return region

    assert Cache().refresh("eu") == "eu"
    assert seen == [("c", "eu")]


def test_waiter_skips_when_the_holder_filled_the_cache() -> None:
    store = MemoryStore()
    cache: dict[str, str] = {}
    api_calls = []

    @remote_locked("refresh", store=store, skip_if=lambda: "value" in cache)
    def get_value(*, has_lock: bool = False) -> str:
        if has_lock:
            api_calls.append(1)
            time.sleep(0.3)
            cache["value"] = "42"
        return cache["value"]

    threads = [threading.Thread(target=get_value) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert api_calls == [1]


def test_a_waiter_that_skips_on_a_store_without_a_line_sends_nothing_more() -> None:
    """A busy acquire on a store that keeps no line of waiters leaves nothing behind, so
    a waiter that then skips returns after its skip_if check: no release of a lock it
    never held (on PostgreSQL, a statement per caller of a stampede)."""
    store = MemoryStore()
    released: list[str] = []
    real = store.release

    def release(key: str, token: str) -> bool:
        released.append(token)
        return real(key, token)

    store.release = release  # type: ignore[method-assign]
    cache: dict[str, str] = {}

    @remote_locked("refresh", store=store, skip_if=lambda: "value" in cache)
    def get_value(*, has_lock: bool = False) -> bool:
        if has_lock:
            time.sleep(0.3)
            cache["value"] = "42"
        return has_lock

    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(get_value())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False, False, False, True]
    assert len(released) == 1  # the holder's release alone


def test_skip_if_is_rechecked_right_after_taking_the_lock() -> None:
    store = CountingStore()
    answers = iter([False, True])  # stale before the attempt, fresh once we hold the lock

    @remote_locked("k", store=store, skip_if=lambda: next(answers))
    def refresh(*, has_lock: bool = False) -> bool:
        return has_lock

    assert refresh() is False
    assert store.acquired == ["k"]  # it took the lock...
    assert store.owner("k") is None  # ...and gave it straight back


def test_skip_if_error_gives_the_lock_back() -> None:
    store = MemoryStore()
    answers = iter([False])

    def flaky() -> bool:
        return next(answers)  # StopIteration on the second (post-acquire) check

    @remote_locked("k", store=store, skip_if=flaky)
    def refresh() -> None:
        pass

    with pytest.raises(StopIteration):
        refresh()
    assert store.owner("k") is None


async def test_async_skip_if() -> None:
    store = CountingStore()

    async def fresh(item: str) -> bool:
        await asyncio.sleep(0)
        return item == "cached"

    @remote_locked("{item}", store=store, skip_if=fresh)
    async def get(item: str, *, has_lock: bool = False) -> bool:
        return has_lock

    assert await get("cached") is False
    assert await get("other") is True
    assert store.acquired == ["other"]


# -- configuration attributes ---------------------------------------------------------------


def test_remote_lock_attribute_and_with() -> None:
    store = MemoryStore()
    stop = tenacity.stop_after_attempt(1)

    @remote_locked("k:{x}", store=store, ttl=12)
    def fn(x: int) -> int:
        return x

    spec = fn.remote_lock  # type: ignore[attr-defined]
    assert isinstance(spec, LockedSpec)
    assert spec.key == "k:{x}"
    assert spec.ttl == 12
    assert spec.store is store
    quick = fn.remote_lock_with(stop=stop)  # type: ignore[attr-defined]
    assert quick.remote_lock.stop is stop
    assert quick.remote_lock.ttl == 12
    assert fn.remote_lock.stop is not stop  # type: ignore[attr-defined]
    store.acquire("k:1", "other", 30)
    with pytest.raises(LockTimeout):
        quick(1)
    with pytest.raises(TypeError, match="unknown"):
        fn.remote_lock_with(bogus=1)  # type: ignore[attr-defined]


def test_remote_lock_attribute_on_methods() -> None:
    class Service:
        @remote_locked("k", store=MemoryStore(), ttl=7)
        def work(self) -> None:
            pass

    assert Service.work.remote_lock.ttl == 7  # type: ignore[attr-defined]
    assert Service().work.remote_lock.ttl == 7  # type: ignore[attr-defined]


# -- bad input fails at decoration time -----------------------------------------------------


def _plain(user_id: int) -> None:
    pass


@pytest.mark.parametrize(
    ("kwargs", "error", "names"),
    [
        ({"key": ""}, ValueError, "key"),
        ({"key": 42}, TypeError, "key"),
        ({"key": "user:{usr_id}"}, ValueError, "usr_id"),
        ({"key": "user:{0}"}, ValueError, "positional"),
        ({"key": "user:{user_id"}, ValueError, "malformed"),
        ({"key": "k", "ttl": 0}, ValueError, "ttl"),
        ({"key": "k", "ttl": -1}, ValueError, "ttl"),
        ({"key": "k", "ttl": float("nan")}, ValueError, "ttl"),
        ({"key": "k", "ttl": "30"}, TypeError, "ttl"),
        ({"key": "k", "ttl": True}, TypeError, "ttl"),
        ({"key": "k", "skip_if": True}, TypeError, "skip_if"),
        ({"key": "k", "wait": 0.5}, TypeError, "wait"),
        ({"key": "k", "stop": 60}, TypeError, "stop"),
        ({"key": "k", "on_lost": 1}, TypeError, "on_lost"),
        ({"key": "k", "store": "memory://"}, TypeError, "store"),
    ],
)
def test_bad_arguments_fail_at_decoration(
    kwargs: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        remote_locked(**kwargs)(_plain)


def test_template_error_names_key_and_argument() -> None:
    @remote_locked("order:{event[id]}", store=MemoryStore())
    def handler(event: dict[str, Any], context: object) -> None:
        pass

    with pytest.raises(ValueError, match=r"order:\{event\[id\]\}.*'event'"):
        handler({"no-id": 1}, None)


def test_callable_key_must_return_a_non_empty_str() -> None:
    @remote_locked(lambda n: n, store=MemoryStore())
    def numbered(n: Any) -> None:
        pass

    with pytest.raises(TypeError, match=r"key callable .* returned 5 \(int\)"):
        numbered(5)
    with pytest.raises(ValueError, match="empty key"):
        numbered("")


def test_async_skip_if_on_a_sync_function_is_refused() -> None:
    async def fresh() -> bool:
        return True

    with pytest.raises(TypeError, match="skip_if"):
        remote_locked("k", skip_if=fresh)(_plain)


def test_generators_are_refused() -> None:
    def gen() -> Any:
        yield 1

    async def agen() -> Any:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        remote_locked("k")(gen)
    with pytest.raises(TypeError, match="generator"):
        remote_locked("k")(agen)


def test_positional_only_injection_is_refused() -> None:
    def bad(x: int, has_lock: bool = False, /) -> None:
        pass

    with pytest.raises(TypeError, match="has_lock"):
        remote_locked("k")(bad)


def test_decorating_touches_no_store() -> None:
    # No store configured and none passed: decorating must not resolve one.
    @remote_locked("k")
    def fn() -> None:
        pass

    assert fn.remote_lock.store is None  # type: ignore[attr-defined]


def test_decorator_inside_classmethod_is_pinned() -> None:
    """Documented placement is *outside*; this pins what inside does on this Python."""
    store = CountingStore()

    class Service:
        @classmethod
        @remote_locked(lambda *args: f"args:{len(args)}", store=store)
        def make(cls, item: str) -> str:
            return item

    assert Service.make("x") == "x"
    # Python 3.9-3.12 bind the class before the wrapper sees it; 3.13 stopped chaining
    # classmethod descriptors, so the wrapper sees the call without `cls`.
    expected = "args:2" if sys.version_info < (3, 13) else "args:1"
    assert store.acquired == [expected]


# -- pickling (process pools, task queues) ----------------------------------------------------

_PICKLE_STORE = MemoryStore()


@remote_locked("pickled", store=_PICKLE_STORE)
def module_level(x: int) -> int:
    return x * 2


class Holder:
    @remote_locked("pickled-method", store=_PICKLE_STORE)
    def method(self, x: int) -> int:
        return x + 1


def test_decorated_functions_pickle_by_reference() -> None:
    import pickle

    copy = pickle.loads(pickle.dumps(module_level))
    assert copy is module_level
    assert copy(4) == 8
    bound = pickle.loads(pickle.dumps(Holder().method))
    assert bound(1) == 2

    @remote_locked("k", store=MemoryStore())
    def local() -> None:
        pass

    with pytest.raises(pickle.PicklingError, match="local"):
        pickle.dumps(local)
