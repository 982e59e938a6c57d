"""single_flight in one process: sharing a result or an exception among threads and
tasks, result_ttl, serializers, the size limit, the Lambda fit, and bad input. The
same across real processes on every store: test_single_flight_processes.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import tenacity

from remotelock import (
    FlightFailed,
    LockTimeout,
    ResultTooLarge,
    remote_locked,
    single_flight,
)
from remotelock.flight import pack_error, rebuilt, unpack
from remotelock.stores import MemoryStore
from remotelock.stores.base import Store
from tests.conftest import DictLock
from tests.helpers.lambda_context import FakeContext


class UpstreamError(Exception):
    """An error type the waiters can import (module level)."""


def together(count: int, call: Callable[[], Any]) -> list[tuple[str, Any]]:
    """``call()`` in ``count`` threads at once: each one's ("ok", value) or ("error", exc)."""
    start = threading.Barrier(count)
    outcomes: list[tuple[str, Any]] = []

    def run() -> None:
        start.wait()
        try:
            outcomes.append(("ok", call()))
        except Exception as exc:
            outcomes.append(("error", exc))

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


@pytest.fixture(params=["memory", "sqlite"])
def local_store(request: pytest.FixtureRequest) -> Store:
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


def test_concurrent_callers_share_one_execution(local_store: Store) -> None:
    runs: list[int] = []

    @single_flight("report:{day}", store=local_store)
    def report(day: int) -> dict[str, Any]:
        runs.append(day)
        time.sleep(0.5)
        return {"day": day, "rows": list(range(3))}

    outcomes = together(12, lambda: report(7))
    assert runs == [7]
    assert outcomes == [("ok", {"day": 7, "rows": [0, 1, 2]})] * 12
    assert report(8) == {"day": 8, "rows": [0, 1, 2]}  # another key: its own flight
    assert runs == [7, 8]


def test_a_later_call_runs_again_without_result_ttl() -> None:
    runs: list[float] = []

    @single_flight("k", store=MemoryStore())
    def now() -> float:
        runs.append(time.monotonic())
        return runs[-1]

    first, second = now(), now()
    assert first != second
    assert len(runs) == 2


def test_result_ttl_keeps_the_value_that_long() -> None:
    runs: list[int] = []

    @single_flight("k", store=MemoryStore(), result_ttl=0.5)
    def count() -> int:
        runs.append(1)
        return len(runs)

    assert count() == 1
    assert count() == 1  # kept: nothing runs
    time.sleep(0.7)
    assert count() == 2


def test_an_exception_is_shared_with_its_type_and_message() -> None:
    runs: list[int] = []

    @single_flight("k", store=MemoryStore(), result_ttl=60)
    def fetch() -> None:
        runs.append(1)
        time.sleep(0.5)
        raise UpstreamError("429 too many requests")

    outcomes = together(6, fetch)
    assert len(runs) == 1
    assert all(kind == "error" for kind, _ in outcomes)
    assert all(type(exc) is UpstreamError for _, exc in outcomes)
    assert {str(exc) for _, exc in outcomes} == {"429 too many requests"}
    with pytest.raises(UpstreamError):  # an exception is never kept for later callers
        fetch()
    assert len(runs) == 2


def test_an_exception_crosses_a_json_serializer_by_type_and_message() -> None:
    data = pack_error(UpstreamError("quota"), json)
    with pytest.raises(UpstreamError, match="quota"):
        unpack(data, json)
    local = type("Local", (Exception,), {})  # not importable where it is read
    assert isinstance(rebuilt("tests.nowhere:Local", "gone"), FlightFailed)
    with pytest.raises(FlightFailed, match=r"Local: gone"):
        unpack(pack_error(local("gone"), json), json)


def test_json_serializer() -> None:
    @single_flight("k", store=MemoryStore(), serializer=json)
    def config() -> dict[str, Any]:
        time.sleep(0.3)
        return {"rate": 1.5, "tags": ["a"]}

    assert together(4, config) == [("ok", {"rate": 1.5, "tags": ["a"]})] * 4

    @single_flight("k2", store=MemoryStore(), serializer=json)
    def unserializable() -> object:
        time.sleep(0.3)
        return object()

    outcomes = together(3, unserializable)
    assert all(kind == "error" and isinstance(exc, TypeError) for kind, exc in outcomes)


def test_a_result_too_large_is_a_clear_error_for_everyone() -> None:
    runs: list[int] = []

    @single_flight("big", store=MemoryStore(), max_size=1000)
    def big() -> bytes:
        runs.append(1)
        time.sleep(0.3)
        return b"x" * 5000

    outcomes = together(3, big)
    assert len(runs) == 1
    assert all(kind == "error" and isinstance(exc, ResultTooLarge) for kind, exc in outcomes)
    assert "max_size" in str(outcomes[0][1])


def test_a_store_limit_below_max_size_wins() -> None:
    store = MemoryStore()
    store.max_result_bytes = 100

    @single_flight("big", store=store)
    def big() -> bytes:
        return b"x" * 500

    with pytest.raises(ResultTooLarge, match="100"):
        big()


def test_async_tasks_share_one_execution() -> None:
    runs: list[int] = []

    @single_flight("k:{n}", store=MemoryStore())
    async def fetch(n: int) -> int:
        runs.append(n)
        await asyncio.sleep(0.3)
        return n * 10

    @single_flight("e", store=MemoryStore())
    async def broken() -> int:
        await asyncio.sleep(0.3)
        raise UpstreamError("down")

    async def main() -> None:
        assert await asyncio.gather(*(fetch(4) for _ in range(10))) == [40] * 10
        outcomes = await asyncio.gather(*(broken() for _ in range(5)), return_exceptions=True)
        assert all(isinstance(outcome, UpstreamError) for outcome in outcomes)

    asyncio.run(main())
    assert runs == [4]


def test_the_running_caller_gets_the_lock_keywords() -> None:
    seen: list[tuple[bool, int]] = []

    @single_flight("k", store=MemoryStore())
    def work(*, has_lock: bool = False, fencing_token: int = 0) -> int:
        seen.append((has_lock, fencing_token))
        return fencing_token

    assert work() > 0
    assert seen == [(True, seen[0][1])]


def test_waiters_give_up_when_stop_fires() -> None:
    store = MemoryStore()
    started = threading.Event()

    @single_flight("slow", store=store, stop=tenacity.stop_after_delay(0.3))
    def slow() -> int:
        started.set()
        time.sleep(1.5)
        return 1

    leader = threading.Thread(target=slow)
    leader.start()
    started.wait(10)
    with pytest.raises(LockTimeout):
        slow()
    leader.join()


def test_a_lambda_waiter_stops_before_its_invocation_ends() -> None:
    store = MemoryStore()
    started = threading.Event()

    @single_flight("lambda", store=store, lambda_margin=0.5)
    def handler(event: dict[str, Any], context: Any) -> str:
        started.set()
        time.sleep(2.0)
        return "done"

    leader = threading.Thread(target=handler, args=({}, FakeContext(60_000)))
    leader.start()
    started.wait(10)
    begun = time.monotonic()
    with pytest.raises(LockTimeout):
        handler({}, FakeContext(800))  # 0.8 s left, 0.5 kept for the handler
    assert time.monotonic() - begun < 1.5
    leader.join()


def test_remote_lock_with_keeps_it_a_flight() -> None:
    runs: list[int] = []

    @single_flight("k", store=MemoryStore())
    def fetch() -> int:
        runs.append(1)
        return len(runs)

    kept = fetch.remote_lock_with(result_ttl=60)  # type: ignore[attr-defined]
    assert kept() == 1
    assert kept() == 1
    assert fetch.remote_lock.ttl == 30  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="skip_if"):
        fetch.remote_lock_with(skip_if=None)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"result_ttl": -1}, ValueError, "result_ttl"),
        ({"result_ttl": 10 * 86400}, ValueError, "result_ttl"),
        ({"serializer": object()}, TypeError, "serializer"),
        ({"max_size": 0}, ValueError, "max_size"),
        ({"max_size": True}, ValueError, "max_size"),
        ({"ttl": 0}, ValueError, "ttl"),
        ({"stop": 5}, TypeError, "stop"),
        ({"lambda_margin": -1}, ValueError, "lambda_margin"),
        ({"store": "redis://localhost"}, TypeError, "store"),
    ],
)
def test_bad_input_fails_at_decoration(
    options: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        single_flight("k", **options)


def test_a_store_that_keeps_no_results_is_refused_at_decoration() -> None:
    from remotelock.stores.callable import CallableStore

    lock = DictLock()
    store = CallableStore(lock.get_lock, lock.set_lock, lock.release_lock)
    with pytest.raises(TypeError, match="keeps results"):
        single_flight("k", store=store)


def test_generators_are_refused() -> None:
    with pytest.raises(TypeError, match="single_flight cannot decorate the generator"):

        @single_flight("k", store=MemoryStore())
        def rows() -> Any:
            yield 1


def test_remote_locked_is_unchanged_by_the_shared_code() -> None:
    with pytest.raises(TypeError, match="remote_locked cannot decorate the generator"):

        @remote_locked("k", store=MemoryStore())
        def rows() -> Any:
            yield 1


class _PutFailsOnce(MemoryStore):
    """A memory store whose first put_result fails as an unreachable store would."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def put_result(self, key: str, data: bytes, ttl: float) -> None:
        if not self.failed:
            self.failed = True
            from remotelock import StoreUnavailable

            raise StoreUnavailable("put_result: connection refused (simulated)")
        super().put_result(key, data, ttl)


def test_an_outcome_that_cannot_be_kept_costs_one_more_run_not_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = _PutFailsOnce()
    runs: list[int] = []

    @single_flight("k", store=store)
    def fetch() -> int:
        runs.append(1)
        time.sleep(0.4)
        return len(runs)

    outcomes = together(4, fetch)
    assert all(kind == "ok" for kind, _ in outcomes)  # nobody sees the store's hiccup...
    assert len(runs) == 2  # ...but the waiters found no outcome: one of them ran it again
    assert sorted(value for _, value in outcomes) == [1, 2, 2, 2]
    assert "could not keep the outcome" in caplog.text
