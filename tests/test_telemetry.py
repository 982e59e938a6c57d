"""OpenTelemetry: the spans and metrics of acquisitions and holdings, read back through
the SDK's in-memory exporters; and nothing at all without the API."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from remotelock import LockTimeout, RemoteLock, remote_locked, telemetry
from remotelock.stores import MemoryStore, SQLiteStore


class Recorded:
    """The spans and metric points remotelock produced in one test."""

    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.reader = InMemoryMetricReader()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def span(self, name: str) -> list[dict[str, Any]]:
        found = [s for s in self.spans.get_finished_spans() if s.name == name]
        return [dict(s.attributes or {}) for s in found]

    def points(self, metric: str) -> list[tuple[dict[str, Any], Any]]:
        """Each data point of ``metric``: its attributes, and its count (histograms) or
        value (counters)."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name != metric:
                        continue
                    for point in item.data.data_points:
                        amount = getattr(point, "value", getattr(point, "count", None))
                        found.append((dict(point.attributes or {}), amount))
        return found


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    got = Recorded()
    telemetry.instrument(tracer_provider=got.tracer_provider, meter_provider=got.meter_provider)
    yield got
    telemetry._instruments = None  # back to the global (no-op) providers
    telemetry._key_in_metrics = False


def test_an_acquisition_and_its_holding(recorded: Recorded) -> None:
    with RemoteLock("report", store=MemoryStore()) as lease:
        pass
    (acquire,) = recorded.span("remotelock.acquire")
    assert acquire["remotelock.key"] == "report"
    assert acquire["remotelock.store"] == "memory"
    assert acquire["remotelock.outcome"] == "acquired"
    assert acquire["remotelock.attempts"] == 1
    assert acquire["remotelock.fencing_token"] == lease.fencing_token
    assert acquire["remotelock.waited"] >= 0
    (hold,) = recorded.span("remotelock.hold")
    assert hold["remotelock.outcome"] == "released"
    assert hold["remotelock.fencing_token"] == lease.fencing_token
    assert recorded.points("remotelock.wait.duration") == [
        ({"remotelock.store": "memory", "remotelock.outcome": "acquired"}, 1)
    ]  # no key on metrics unless asked for
    assert recorded.points("remotelock.hold.duration") == [
        ({"remotelock.store": "memory", "remotelock.outcome": "released"}, 1)
    ]


def test_a_timeout_a_busy_try_and_a_skip(recorded: Recorded) -> None:
    store = MemoryStore()
    holder = RemoteLock("k", store=store).acquire()
    with pytest.raises(LockTimeout):
        threading_result(lambda: RemoteLock("k", store=store).acquire(timeout=0.2))
    assert threading_result(lambda: RemoteLock("k", store=store).acquire(blocking=False)) is None
    holder.release()

    @remote_locked("cached", store=store, skip_if=lambda: True)
    def cached() -> int:
        return 1

    cached()
    outcomes = [span["remotelock.outcome"] for span in recorded.span("remotelock.acquire")]
    assert sorted(outcomes) == ["acquired", "busy", "skipped", "timeout"]
    timed_out = next(
        s for s in recorded.span("remotelock.acquire") if s["remotelock.outcome"] == "timeout"
    )
    assert timed_out["remotelock.attempts"] >= 1
    assert [value for _, value in recorded.points("remotelock.timeouts")] == [1]
    assert [value for _, value in recorded.points("remotelock.skips")] == [1]


def threading_result(call: Any) -> Any:
    """``call()`` in another thread (this one may hold the key): its result, or raise."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(("ok", call()))
        except BaseException as exc:
            out.append(("error", exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    kind, value = out[0]
    if kind == "error":
        raise value
    return value


def test_a_lost_lease(recorded: Recorded) -> None:
    lock = RemoteLock("k", store=MemoryStore(), raise_on_lost=False)
    with lock as lease:
        lease.mark_lost("taken over (simulated)")
    (hold,) = recorded.span("remotelock.hold")
    assert hold["remotelock.outcome"] == "lost"
    assert [value for _, value in recorded.points("remotelock.lost")] == [1]


def test_keys_on_metrics_only_when_asked(recorded: Recorded) -> None:
    telemetry.instrument(
        tracer_provider=recorded.tracer_provider,
        meter_provider=recorded.meter_provider,
        key_in_metrics=True,
    )
    with RemoteLock("order:42", store=MemoryStore()):
        pass
    [(labels, _)] = recorded.points("remotelock.wait.duration")
    assert labels["remotelock.key"] == "order:42"
    with pytest.raises(TypeError, match="key_in_metrics"):
        telemetry.instrument(key_in_metrics="yes")  # type: ignore[arg-type]


def test_reentry_opens_no_second_holding(recorded: Recorded) -> None:
    lock = RemoteLock("k", store=MemoryStore(), reentrant=True)
    with lock, lock:
        pass
    assert len(recorded.span("remotelock.acquire")) == 2
    (hold,) = recorded.span("remotelock.hold")  # one holding, ended at the outer exit
    assert hold["remotelock.outcome"] == "released"


def test_async_code(recorded: Recorded, tmp_path: Any) -> None:
    async def main() -> None:
        async with RemoteLock("k", store=SQLiteStore(tmp_path / "l.db")):
            pass

    asyncio.run(main())
    (acquire,) = recorded.span("remotelock.acquire")
    assert acquire["remotelock.store"] == "sqlite"
    assert [s["remotelock.outcome"] for s in recorded.span("remotelock.hold")] == ["released"]


def test_the_store_kind_never_a_url() -> None:
    assert telemetry.store_kind(MemoryStore()) == "memory"
    assert telemetry.store_kind(MemoryStore().as_async()) == "memory"

    class ThreadedRedisStore:
        pass

    assert telemetry.store_kind(ThreadedRedisStore()) == "redis"


def test_without_the_api_nothing_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(telemetry, "ENABLED", False)
    monkeypatch.setattr(telemetry, "acquiring", lambda *a: calls.append("acquiring"))
    with RemoteLock("k", store=MemoryStore()) as lease:
        assert lease.telemetry is None
    assert calls == []
    with pytest.raises(ImportError, match=r"remotelock\[otel\]"):
        telemetry.instrument()


def test_with_the_api_and_no_sdk_nothing_is_called() -> None:
    with RemoteLock("k", store=MemoryStore()) as lease:
        assert lease.telemetry is None  # no provider set: no span, not even a no-op one
    assert telemetry._instruments is None


def test_a_provider_set_later_is_picked_up(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry import trace

    got = Recorded()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: got.tracer_provider)
    monkeypatch.setattr(telemetry, "_next_check", 0.0)  # as if a second had passed
    try:
        with RemoteLock("k", store=MemoryStore()):
            pass
        assert [s["remotelock.outcome"] for s in got.span("remotelock.acquire")] == ["acquired"]
    finally:
        telemetry._instruments = None
