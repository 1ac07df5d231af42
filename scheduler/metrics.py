"""Cheap in-process measurements the control loop updates, read by ``/metrics`` at scrape time.

Most of what ``/metrics`` reports is derived lazily from the orchestrator's state when it is
read (apps, tasks, queue, bus counters). Only what cannot be reconstructed afterwards is
measured here: how long control-loop passes take and how many failed.

The orchestrator never imports the API; the API finds an orchestrator's measurements with
:func:`metrics_for`, which keeps them beside (not inside) the orchestrator object. The loop
records a pass with one call in ``Orchestrator._loop``::

    metrics_for(self).timed(self.run_once, self.clock.now())

Everything here is thread-safe and O(1) per update (a lock, a few arithmetic operations), so
it is safe to call from the control loop.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

#: Quantiles reported for timers and histograms, as Dropwizard names them.
QUANTILES: tuple[tuple[str, float], ...] = (
    ("p50", 0.50), ("p75", 0.75), ("p95", 0.95), ("p98", 0.98), ("p99", 0.99), ("p999", 0.999),
)
#: Prometheus histogram bucket bounds (seconds) for control-loop pass durations.
PASS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
_TICK_SECONDS = 5.0  # Dropwizard's EWMA tick


@dataclass(frozen=True)
class MeterSnapshot:
    count: int
    mean_rate: float
    m1_rate: float
    m5_rate: float
    m15_rate: float


class Meter:
    """Events per second: lifetime mean and 1/5/15-minute exponentially weighted averages.

    Like Dropwizard's meter it ticks every 5 seconds, but lazily: elapsed ticks are applied
    on the next :meth:`mark` or :meth:`snapshot`, so nothing runs in the background.
    Events marked between two ticks count toward the first tick that follows them.
    """

    _ALPHAS = tuple(1.0 - math.exp(-_TICK_SECONDS / 60.0 / m) for m in (1, 5, 15))

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._last_tick = self._start
        self._count = 0
        self._uncounted = 0
        self._rates = [0.0, 0.0, 0.0]
        self._initialized = False

    def _tick(self, now: float) -> None:
        ticks = int((now - self._last_tick) // _TICK_SECONDS)
        if ticks <= 0:
            return
        self._last_tick += ticks * _TICK_SECONDS
        instant = self._uncounted / _TICK_SECONDS
        self._uncounted = 0
        for i, alpha in enumerate(self._ALPHAS):
            if self._initialized:
                self._rates[i] += alpha * (instant - self._rates[i])
            else:
                self._rates[i] = instant
            # The remaining ticks saw no events: closed-form decay instead of a loop.
            self._rates[i] *= (1.0 - alpha) ** (ticks - 1)
        self._initialized = True

    def mark(self, n: int = 1) -> None:
        with self._lock:
            self._tick(self._clock())
            self._count += n
            self._uncounted += n

    def snapshot(self) -> MeterSnapshot:
        with self._lock:
            now = self._clock()
            self._tick(now)
            elapsed = now - self._start
            mean = self._count / elapsed if elapsed > 0 else 0.0
            m1, m5, m15 = self._rates
            return MeterSnapshot(self._count, mean, m1, m5, m15)


@dataclass(frozen=True)
class TimerSnapshot:
    """A timer's state: lifetime count/sum/min/max, quantiles over the recent window,
    cumulative Prometheus buckets (``(upper bound, count)``, ending with +Inf) and rates."""

    count: int
    total: float
    min: float
    max: float
    mean: float
    stddev: float
    quantiles: dict[str, float]
    buckets: list[tuple[float, int]]
    rates: MeterSnapshot


class Timer:
    """Durations in seconds.

    Quantiles, mean and stddev are over a sliding window of the last ``window`` samples
    (Dropwizard's SlidingWindowReservoir); count, sum, min, max and the bucket counts cover
    the whole lifetime, as Prometheus needs monotonic buckets.
    """

    def __init__(self, window: int = 1028, buckets: tuple[float, ...] = PASS_BUCKETS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._window: deque[float] = deque(maxlen=window)
        self._bounds = buckets
        self._bucket_counts = [0] * (len(buckets) + 1)  # the last is +Inf
        self._count = 0
        self._total = 0.0
        self._min = math.inf
        self._max = 0.0
        self.meter = Meter(clock)

    def observe(self, seconds: float) -> None:
        with self._lock:
            self._window.append(seconds)
            self._count += 1
            self._total += seconds
            self._min = min(self._min, seconds)
            self._max = max(self._max, seconds)
            for i, bound in enumerate(self._bounds):
                if seconds <= bound:
                    self._bucket_counts[i] += 1
                    break
            else:
                self._bucket_counts[-1] += 1
        self.meter.mark()

    def snapshot(self) -> TimerSnapshot:
        with self._lock:
            values = sorted(self._window)
            count, total = self._count, self._total
            lo, hi = (self._min, self._max) if count else (0.0, 0.0)
            per_bucket = list(self._bucket_counts)
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, n in zip((*self._bounds, math.inf), per_bucket, strict=True):
            running += n
            cumulative.append((bound, running))
        mean = sum(values) / len(values) if values else 0.0
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
        return TimerSnapshot(
            count=count, total=total, min=lo, max=hi, mean=mean, stddev=math.sqrt(var),
            quantiles={name: quantile(values, q) for name, q in QUANTILES},
            buckets=cumulative, rates=self.meter.snapshot(),
        )


def quantile(sorted_values: list[float], q: float) -> float:
    """Dropwizard's snapshot quantile: the value at position ``q * (n + 1)``, interpolated
    between neighbours; 0 for no values."""
    if not sorted_values:
        return 0.0
    pos = q * (len(sorted_values) + 1)
    if pos < 1:
        return sorted_values[0]
    if pos >= len(sorted_values):
        return sorted_values[-1]
    lower = sorted_values[int(pos) - 1]
    upper = sorted_values[int(pos)]
    return lower + (pos - math.floor(pos)) * (upper - lower)


class SchedulerMetrics:
    """What the control loop measures about itself."""

    def __init__(self) -> None:
        self.pass_timer = Timer()
        self._lock = threading.Lock()
        self._failed_passes = 0

    @property
    def failed_passes(self) -> int:
        with self._lock:
            return self._failed_passes

    def timed(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Call ``fn`` and record its duration as one pass; a pass that raises is counted as
        failed (and timed too) and the exception propagates unchanged."""
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except BaseException:
            with self._lock:
                self._failed_passes += 1
            raise
        finally:
            self.pass_timer.observe(time.perf_counter() - start)


_registry: weakref.WeakKeyDictionary[object, SchedulerMetrics] = weakref.WeakKeyDictionary()
_registry_lock = threading.Lock()


def metrics_for(owner: object) -> SchedulerMetrics:
    """The measurements kept for ``owner`` (an orchestrator), created on first use. They live
    as long as the owner does."""
    with _registry_lock:
        m = _registry.get(owner)
        if m is None:
            m = _registry[owner] = SchedulerMetrics()
        return m
