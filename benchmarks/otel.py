"""Scenario (o): what OpenTelemetry costs an uncontended acquire + release.

Three ways, interleaved round by round so that the machine's noise hits them alike:
telemetry off (as without ``opentelemetry-api``), the API with no provider set (an
application that installs the API but exports nothing: remotelock only checks), and
an SDK tracer and meter provider whose spans go through a batch processor to an
exporter that drops them (the cost of recording, without the network).
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.report import table
from remotelock import RemoteLock, telemetry
from remotelock.stores import store_from_url


class _Dropped:
    """A span exporter that exports nowhere."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _sdk() -> tuple[Any, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(_Dropped()))  # type: ignore[arg-type]
    return tracer_provider, MeterProvider()


def _cycles(lock: RemoteLock, count: int) -> float:
    """Microseconds per acquire + release, over ``count`` cycles."""
    started = time.perf_counter()
    for _ in range(count):
        with lock:
            pass
    return (time.perf_counter() - started) / count * 1e6


def measure(url: str, rounds: int, cycles: int) -> dict[str, float]:
    """The median microseconds per cycle of each way (see the module docs)."""
    lock = RemoteLock(f"bench:otel:{uuid.uuid4().hex}", store=store_from_url(url))
    tracer_provider, meter_provider = _sdk()

    def off() -> None:
        telemetry.ENABLED = False  # type: ignore[misc]

    def api() -> None:
        telemetry.ENABLED = True  # type: ignore[misc]
        telemetry._instruments = None

    def sdk() -> None:
        telemetry.ENABLED = True  # type: ignore[misc]
        telemetry.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)

    ways: dict[str, Callable[[], None]] = {
        "telemetry off (no opentelemetry-api)": off,
        "API, no provider set": api,
        "SDK, spans and metrics recorded": sdk,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    try:
        _cycles(lock, cycles)  # warm the connection and the scripts
        for _ in range(rounds):
            for name, use in ways.items():
                use()
                times[name].append(_cycles(lock, cycles))
    finally:
        telemetry.ENABLED = True  # type: ignore[misc]
        telemetry._instruments = None
        tracer_provider.shutdown()
    return {name: statistics.median(values) for name, values in times.items()}


def report(bench: Any) -> None:
    """Run the scenario for ``bench`` (a ``benchmarks.__main__.Run``) and print its table."""
    if not telemetry.ENABLED:
        print("### (o) OpenTelemetry overhead: skipped (opentelemetry-api not installed)\n")
        return
    rounds, cycles = (5, 100) if bench.quick else (15, 300)
    medians = measure(bench.stores.url("redis"), rounds, cycles)
    base = next(iter(medians.values()))
    print("### (o) OpenTelemetry: uncontended acquire + release on Redis (µs)\n")
    rows = [
        [name, f"{us:.0f}", f"{us - base:+.0f}", f"{us / base:.2f}x"]
        for name, us in medians.items()
    ]
    print(table(["telemetry", "median", "added", "vs off"], rows) + "\n", flush=True)
