"""make_remote_lock: the original library's four unit scenarios, and its fixed defects."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from remotelock import LockTimeout, make_remote_lock
from remotelock.compat import RemoteLockCall


class Recorder:
    """get/set/release mocks whose get_lock answers from a script, plus a fake clock."""

    def __init__(self, reads: Iterable[Any]) -> None:
        self.reads = list(reads)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.now = 0.0

    def get_lock(self, **kwargs: Any) -> Any:
        self.calls.append(("get", kwargs))
        index = len(self.of("get")) - 1
        return self.reads[min(index, len(self.reads) - 1)]

    def set_lock(self, **kwargs: Any) -> None:
        self.calls.append(("set", kwargs))

    def release_lock(self, **kwargs: Any) -> None:
        self.calls.append(("release", kwargs))

    def sleep(self, ms: float) -> None:
        self.calls.append(("sleep", {"ms": ms}))
        self.now += ms  # the fake clock moves honestly with every poll

    def of(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for step, kwargs in self.calls if step == name]

    def remote_lock(self, **options: Any) -> RemoteLockCall:
        return make_remote_lock(
            get_lock=self.get_lock,
            set_lock=self.set_lock,
            release_lock=self.release_lock,
            clock=lambda: self.now,
            sleep=self.sleep,
            **options,
        )


def exec_mock(result: Any = "Pass") -> tuple[Callable[..., Any], list[dict[str, Any]]]:
    calls: list[dict[str, Any]] = []

    def exec(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return result

    return exec, calls


# -- the original's four unit scenarios ---------------------------------------------------


def test_a_no_existing_lock() -> None:
    mocks = Recorder([None, 1])  # the stored id comes back as the *number* 1
    exec, exec_calls = exec_mock()
    assert mocks.remote_lock()(request_id="1", exec=exec) == "Pass"
    assert len(mocks.of("get")) == 2
    assert mocks.of("set") == [{"request_id": "1", "timeout": 60000}]
    assert mocks.of("release") == [{"request_id": "1"}]
    assert exec_calls == [{"has_lock": True}]


def test_b_existing_lock_released_later() -> None:
    mocks = Recorder(["-1", "-1", None, 1])
    exec, exec_calls = exec_mock()
    assert mocks.remote_lock()(request_id="1", exec=exec) == "Pass"
    assert len(mocks.of("get")) == 4
    assert mocks.of("set") == [{"request_id": "1", "timeout": 60000}]
    assert len(mocks.of("release")) == 1
    assert mocks.of("sleep") == [{"ms": 1000}, {"ms": 1000}]
    assert exec_calls == [{"has_lock": True}]


def test_c_never_get_the_lock() -> None:
    mocks = Recorder(["-1"])
    exec, exec_calls = exec_mock()
    with pytest.raises(LockTimeout) as caught:
        mocks.remote_lock()(request_id="1", exec=exec)
    assert str(caught.value) == "Timeout Error: Failed to obtain lock after 60000 ms."
    assert isinstance(caught.value, TimeoutError)
    assert len(mocks.of("get")) == 61  # t = 0, 1000, ..., 60000
    assert mocks.of("set") == []
    assert mocks.of("release") == []
    assert exec_calls == []


def test_d_skip_lock_turning_true_at_its_first_check() -> None:
    mocks = Recorder(["-1"])
    exec, exec_calls = exec_mock()
    skips: list[int] = []

    def skip_lock() -> bool:
        skips.append(1)
        return True

    assert mocks.remote_lock()(request_id="1", exec=exec, skip_lock=skip_lock) == "Pass"
    assert [step for step, _ in mocks.calls] == ["get", "sleep"]  # then the skip check
    assert skips == [1]
    assert mocks.of("set") == []
    assert mocks.of("release") == []
    assert exec_calls == [{"has_lock": False}]


def test_d_original_skip_after_second_read() -> None:
    """The original test's own skip: ``getLock.calls > 1``."""
    mocks = Recorder(["-1"])
    exec, exec_calls = exec_mock()
    result = mocks.remote_lock()(
        request_id="1", exec=exec, skip_lock=lambda: len(mocks.of("get")) > 1
    )
    assert result == "Pass"
    assert len(mocks.of("get")) == 2
    assert mocks.of("set") == []
    assert mocks.of("release") == []
    assert exec_calls == [{"has_lock": False}]


# -- the original's defects, fixed ---------------------------------------------------------


async def test_fixed_async_exec_finishes_before_the_release() -> None:
    order: list[str] = []
    state: dict[str, Any] = {"lock": None}

    async def get_lock(request_id: str) -> Any:
        return state["lock"]

    async def set_lock(request_id: str, timeout: int) -> None:
        state["lock"] = request_id

    async def release_lock(request_id: str) -> None:
        order.append("release")
        state["lock"] = None

    async def exec(has_lock: bool) -> str:
        order.append("exec start")
        await asyncio.sleep(0.05)
        order.append("exec end")
        return "done"

    remote_lock = make_remote_lock(get_lock=get_lock, set_lock=set_lock, release_lock=release_lock)
    assert await remote_lock(request_id="p1", exec=exec) == "done"
    assert order == ["exec start", "exec end", "release"]


def test_fixed_lock_set_then_skipped_is_released_not_leaked() -> None:
    mocks = Recorder([None])  # free: we set it; then skip_lock turns true before the re-read
    exec, exec_calls = exec_mock()
    mocks.remote_lock()(request_id="1", exec=exec, skip_lock=lambda: True)
    assert [step for step, _ in mocks.calls] == ["get", "set", "release"]
    assert exec_calls == [{"has_lock": False}]


def test_fixed_zero_total_timeout_tries_once() -> None:
    mocks = Recorder(["-1"])
    exec, exec_calls = exec_mock()
    with pytest.raises(LockTimeout, match="after 0 ms"):
        mocks.remote_lock(total_timeout=0)(request_id="1", exec=exec)
    assert len(mocks.of("get")) == 1
    assert mocks.of("sleep") == []
    assert exec_calls == []


def test_fixed_zero_total_timeout_still_takes_a_free_lock() -> None:
    mocks = Recorder([None, "1"])
    exec, exec_calls = exec_mock()
    mocks.remote_lock()(request_id="1", exec=exec, total_timeout=0)
    assert mocks.of("set") == [{"request_id": "1", "timeout": 60000}]
    assert exec_calls == [{"has_lock": True}]


def test_fixed_zero_polling_timeout_does_not_pause() -> None:
    mocks = Recorder(["-1", "-1", None, "1"])
    exec, _ = exec_mock()
    mocks.remote_lock(polling_timeout=0)(request_id="1", exec=exec)
    assert mocks.of("sleep") == [{"ms": 0}, {"ms": 0}]


@pytest.mark.parametrize("request_id", [None, ""])
def test_fixed_missing_request_id_is_a_value_error(request_id: Any) -> None:
    mocks = Recorder([None])
    exec, exec_calls = exec_mock()
    with pytest.raises(ValueError, match="request_id"):
        mocks.remote_lock()(request_id=request_id, exec=exec)
    assert mocks.calls == []
    assert exec_calls == []


def test_fixed_set_without_effect_does_not_hot_spin() -> None:
    mocks = Recorder([None])  # set_lock never takes: the re-read keeps showing "free"
    exec, _ = exec_mock()
    with pytest.raises(LockTimeout):
        mocks.remote_lock(total_timeout=3000)(request_id="1", exec=exec)
    assert len(mocks.of("set")) <= 4  # one set per poll, not thousands
    assert mocks.of("sleep")


def test_per_call_overrides_and_the_lease_given_to_set_lock() -> None:
    mocks = Recorder([None, "1"])
    exec, _ = exec_mock()
    mocks.remote_lock()(request_id="1", exec=exec, total_timeout=1234)
    assert mocks.of("set") == [{"request_id": "1", "timeout": 1234}]


def test_exec_error_still_releases() -> None:
    mocks = Recorder([None, "1"])

    def exec(has_lock: bool) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        mocks.remote_lock()(request_id="1", exec=exec)
    assert len(mocks.of("release")) == 1


def test_deadline_is_not_overslept() -> None:
    mocks = Recorder(["-1"])
    exec, _ = exec_mock()
    with pytest.raises(LockTimeout):
        mocks.remote_lock(total_timeout=1500)(request_id="1", exec=exec)
    assert mocks.of("sleep") == [{"ms": 1000}, {"ms": 500}]
    assert len(mocks.of("get")) == 3


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"polling_timeout": -1}, ValueError),
        ({"total_timeout": float("nan")}, ValueError),
        ({"total_timeout": "60000"}, TypeError),
    ],
)
def test_bad_timeouts(options: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        make_remote_lock(
            get_lock=lambda request_id: None,
            set_lock=lambda request_id, timeout: None,
            release_lock=lambda request_id: None,
            **options,
        )


async def test_async_store_functions_same_call_counts() -> None:
    reads = iter(["-1", "-1", None, "1"])
    calls: list[str] = []

    async def get_lock(request_id: str) -> Any:
        calls.append("get")
        return next(reads)

    async def set_lock(request_id: str, timeout: int) -> None:
        calls.append("set")

    async def release_lock(request_id: str) -> None:
        calls.append("release")

    async def sleep(ms: float) -> None:
        calls.append("sleep")

    remote_lock = make_remote_lock(
        get_lock=get_lock, set_lock=set_lock, release_lock=release_lock, sleep=sleep
    )
    result = await remote_lock(request_id="1", exec=lambda has_lock: has_lock)
    assert result is True
    assert calls == ["get", "sleep", "get", "sleep", "get", "set", "get", "release"]


def test_in_memory_integration_three_callers() -> None:
    """The original's in-memory integration scenario, with real threads and real time."""
    import threading
    import time

    state: dict[str, Any] = {"lock": None, "shared": None}
    mutex = threading.Lock()

    def set_lock(request_id: str, timeout: int) -> None:
        with mutex:
            if state["lock"] is None:
                state["lock"] = request_id

    remote_lock = make_remote_lock(
        get_lock=lambda request_id: state["lock"],
        set_lock=set_lock,
        release_lock=lambda request_id: state.update(lock=None),
        polling_timeout=10,
    )
    results: dict[str, bool] = {}

    def call(request_id: str) -> None:
        def exec(has_lock: bool) -> None:
            results[request_id] = has_lock
            if has_lock:
                time.sleep(0.05)
                state["shared"] = request_id

        remote_lock(
            request_id=request_id, exec=exec, skip_lock=lambda: state["shared"] is not None
        )

    threads = [threading.Thread(target=call, args=(str(n),)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results.values()) == [False, False, True]
    assert state["lock"] is None  # nobody leaked a lock (the original did)
