"""OpenTelemetry traces and metrics of every acquisition and holding (extra ``otel``).

A lock is invisible until it hurts: "why did this Lambda wait 12 s?", "how often do we
time out?". With ``opentelemetry-api`` installed, every acquisition is a span
``remotelock.acquire`` and every holding a span ``remotelock.hold`` (from the lease to
its release), with the attributes ``remotelock.key``, ``remotelock.store`` (the store's
kind, never a URL), ``remotelock.outcome`` (``acquired``, ``skipped``, ``busy``,
``timeout``, ``error``; a holding: ``released`` or ``lost``), ``remotelock.attempts``,
``remotelock.waited`` (seconds) and ``remotelock.fencing_token``. Metrics: the
histograms ``remotelock.wait.duration`` and ``remotelock.hold.duration`` (seconds) and
the counters ``remotelock.timeouts``, ``remotelock.lost`` and ``remotelock.skips``,
with ``remotelock.store`` and ``remotelock.outcome``; ``remotelock.key`` only after
``instrument(key_in_metrics=True)`` (one series per key can explode a metrics bill).

Nothing to set up: the API's global providers are used, so whatever configures the
application's SDK configures remotelock's telemetry too. Until a provider is set,
nothing is recorded, and the API is only asked (at most once a second) whether one has
been; without the API, not even that. The API is imported at the first acquisition,
not with remotelock (a Lambda cold start pays for it only when it locks).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from ._version import __version__

NAME: Final = "remotelock"
ENABLED: Final = importlib.util.find_spec("opentelemetry") is not None
"""Whether ``opentelemetry-api`` is installed (else the engines skip every hook)."""


class _Instruments:
    """The tracer and the metric instruments (made once, or again by instrument())."""

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace

        self.tracer = trace.get_tracer(NAME, __version__, tracer_provider)
        meter = metrics.get_meter(NAME, __version__, meter_provider=meter_provider)
        self.wait = meter.create_histogram(
            "remotelock.wait.duration", unit="s", description="Time to acquire, or give up"
        )
        self.hold = meter.create_histogram(
            "remotelock.hold.duration", unit="s", description="Time a lease was held"
        )
        self.timeouts = meter.create_counter(
            "remotelock.timeouts", description="Acquisitions that gave up (LockTimeout)"
        )
        self.lost = meter.create_counter("remotelock.lost", description="Leases lost while held")
        self.skips = meter.create_counter(
            "remotelock.skips", description="Calls that skip_if let run without the lock"
        )


_instruments: _Instruments | None = None
_key_in_metrics = False
_next_check = 0.0  # when to ask the API again whether a provider has been set

RECHECK: Final = 1.0
"""Seconds between two looks for a provider set after remotelock's first lock."""


def instrument(
    *, tracer_provider: Any = None, meter_provider: Any = None, key_in_metrics: bool = False
) -> None:
    """Use these providers instead of the global ones, and say whether metrics carry
    ``remotelock.key`` (default: no; spans always do).

    :raises ImportError: ``opentelemetry-api`` is not installed (``pip install
        remotelock[otel]``).
    """
    global _instruments, _key_in_metrics
    if not ENABLED:
        raise ImportError("remotelock's telemetry needs opentelemetry-api: remotelock[otel]")
    if not isinstance(key_in_metrics, bool):
        raise TypeError(f"key_in_metrics must be True or False, got {key_in_metrics!r}")
    _instruments = _Instruments(tracer_provider, meter_provider)
    _key_in_metrics = key_in_metrics


def active() -> bool:
    """Whether acquisitions are recorded now (the API is there and a provider is set)."""
    return ENABLED and _get() is not None


def _get() -> _Instruments | None:
    """The instruments, once the application has configured an SDK (or called
    :func:`instrument`); ``None`` until then, so that the API's no-op objects are not
    even called: a lock costs the same with the API alone as without it."""
    global _instruments, _next_check
    if _instruments is None and ENABLED:
        now = time.monotonic()
        if now < _next_check:
            return None
        _next_check = now + RECHECK  # asking the API costs microseconds: once a second
        if _configured():
            _instruments = _Instruments()
    return _instruments


def _configured() -> bool:
    """Whether a tracer or meter provider has been set globally (not the API's proxies)."""
    from opentelemetry import metrics, trace

    traced = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    metered = type(metrics.get_meter_provider()).__name__ not in _PROXY_METERS
    return traced or metered


_PROXY_METERS: Final = frozenset({"_ProxyMeterProvider", "NoOpMeterProvider"})


def store_kind(store: object) -> str:
    """``redis``, ``postgres``, ``sqlite``...: the store's kind, from its class name."""
    name = type(store).__name__.lower()
    name = name.removeprefix("async").removeprefix("threaded").removesuffix("store")
    return name or "custom"


class Acquisition:
    """What one acquisition reports (filled in by the engine as it ends)."""

    __slots__ = ("attempts", "key", "kind", "lease", "outcome", "started")

    def __init__(self, key: str, kind: str) -> None:
        self.key = key
        self.kind = kind
        self.started = time.monotonic()
        self.outcome = "error"
        self.lease: Any = None
        self.attempts = 0


@contextmanager
def acquiring(key: str, store: object) -> Iterator[Acquisition]:
    """Time and trace one acquisition; the engine sets ``outcome`` and ``lease``."""
    note = Acquisition(key, store_kind(store))
    tools = _get()
    if tools is None:
        yield note
        return
    with tools.tracer.start_as_current_span(
        "remotelock.acquire",
        attributes={"remotelock.key": key, "remotelock.store": note.kind},
    ) as span:
        try:
            yield note
        except BaseException as exc:
            note.outcome = _failure(exc)
            note.attempts = getattr(exc, "attempts", 0)
            raise
        finally:
            _ended(tools, span, note)


def outcome(lease: object, blocking: bool) -> str:
    """An acquisition's outcome from what it returned: a lease, or ``None`` when
    ``skip_if`` said no lock is needed (blocking) or the key was busy (not blocking)."""
    if lease is not None:
        return "acquired"
    return "skipped" if blocking else "busy"


def _failure(exc: BaseException) -> str:
    from .errors import LockTimeout

    return "timeout" if isinstance(exc, LockTimeout) else "error"


def _ended(tools: _Instruments, span: Any, note: Acquisition) -> None:
    lease, kind, key = note.lease, note.kind, note.key
    waited = time.monotonic() - note.started
    span.set_attribute("remotelock.outcome", note.outcome)
    span.set_attribute("remotelock.waited", waited)
    attempts = note.attempts or (0 if lease is None else lease.attempts)
    if attempts:
        span.set_attribute("remotelock.attempts", attempts)
    if lease is not None:
        span.set_attribute("remotelock.fencing_token", lease.fencing_token)
    labels = _labels(kind, key, note.outcome)
    tools.wait.record(waited, labels)
    if note.outcome == "timeout":
        tools.timeouts.add(1, labels)
    elif note.outcome == "skipped":
        tools.skips.add(1, labels)
    if lease is not None and note.outcome == "acquired" and lease.telemetry is None:
        hold = tools.tracer.start_span(
            "remotelock.hold",
            attributes={
                "remotelock.key": key,
                "remotelock.store": kind,
                "remotelock.fencing_token": lease.fencing_token,
            },
        )
        lease.telemetry = (hold, time.monotonic(), kind)


def released(lease: Any) -> None:
    """End the holding span of ``lease`` (once it is really released)."""
    if lease.telemetry is None or not lease.released:
        return
    tools = _get()
    hold, since, kind = lease.telemetry
    lease.telemetry = None
    if tools is None:
        return
    outcome = "lost" if lease.lost else "released"
    hold.set_attribute("remotelock.outcome", outcome)
    hold.end()
    labels = _labels(kind, lease.key, outcome)
    tools.hold.record(time.monotonic() - since, labels)
    if outcome == "lost":
        tools.lost.add(1, labels)


def _labels(kind: str, key: str, outcome: str) -> dict[str, str]:
    labels = {"remotelock.store": kind, "remotelock.outcome": outcome}
    if _key_in_metrics:
        labels["remotelock.key"] = key
    return labels


__all__ = [
    "ENABLED",
    "NAME",
    "Acquisition",
    "acquiring",
    "active",
    "instrument",
    "outcome",
    "released",
    "store_kind",
]
