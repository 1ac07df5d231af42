"""``GET /metrics`` (Marathon's Dropwizard-style JSON) and ``GET /metrics/prometheus``.

Both report the same facts, collected from the orchestrator when scraped (nothing is
instrumented on the hot path but the control-loop pass timer, :mod:`scheduler.metrics`).

JSON names follow Marathon 1.7+'s convention with ``dromos`` as the prefix: dot-separated
components, then the metric type and unit (``dromos.apps.active.gauge``,
``dromos.loop.pass.timer.seconds``), so dashboards built for Marathon's ``/metrics`` with a
configurable prefix read Dromos unchanged. The document is
``{version, gauges, counters, histograms, meters, timers}`` as Dropwizard's JSON module
writes it: gauges ``{value}``, counters ``{count}``, histograms ``{count, min, max, mean,
stddev, p50…p999}``, meters ``{count, mean_rate, m1_rate, m5_rate, m15_rate, units}``,
timers both plus ``duration_units`` and ``rate_units``.

Prometheus names are idiomatic ``dromos_*`` ones (labels instead of name components,
``_total``/``_seconds`` suffixes), plus the client library's ``process_*`` and ``python_*``.
The exposition format follows the scraper's ``Accept`` (OpenMetrics when asked).

Caveats, stated where a reader of the numbers needs them:
* ``dromos.events.published.meter`` rates are sampled at scrape time: events published
  between two scrapes count toward the moment of the second (the lifetime mean is exact).
* ``dromos.http.event-streams.lag.histogram`` is a snapshot across the connected event-stream
  clients (events waiting in each one's queue), not a distribution over time.
* Job run results are the Chronos counters (``successCount``/``errorCount``) of the jobs that
  exist now, so they are gauges: deleting a job removes its runs from the sum.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from api.presentation import reads
from api.sse import hub_of
from scheduler import __version__
from scheduler.events import DROMOS
from scheduler.metrics import QUANTILES, Meter, MeterSnapshot, TimerSnapshot, metrics_for, quantile
from scheduler.model.job import RunStatus
from scheduler.model.task import TaskState
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.base import RuntimeUnavailable

router = APIRouter(tags=["metrics"])

_STARTED = time.monotonic()  # import time: Dromos's start, as far as a scraper can tell
DROPWIZARD_VERSION = "4.0.0"


@dataclass
class Facts:
    """Everything both formats report, gathered once per scrape."""

    uptime: float
    apps: int
    instances_wanted: int
    tasks: dict[TaskState, int]
    tasks_healthy: int
    tasks_unhealthy: int
    deployments: int
    queue_instances: int
    queue_apps: int
    queue_rejected_apps: int
    queue_delayed_apps: int
    jobs: int
    runs: dict[RunStatus, int]  # current: queued, running
    run_results: dict[str, int]  # success, error (Chronos counters of existing jobs)
    nodes: int
    runtime_available: bool
    event_streams: int
    stream_lags: list[int]
    subscribers: int
    subscribers_dropped: int
    published: dict[tuple[str, str], int]
    events_meter: MeterSnapshot
    loop_pass: TimerSnapshot
    loop_failed: int
    placement_rejections: int = field(init=False)

    def __post_init__(self) -> None:
        self.placement_rejections = self.published.get((DROMOS, "placement_rejected"), 0)


class _ScrapeState:
    """Per-application state between scrapes: the sampled events meter and the registry."""

    def __init__(self, o: Orchestrator, app_state: Any) -> None:
        self.lock = threading.Lock()
        self.events_meter = Meter()
        self.last_published = 0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_DromosCollector(o, app_state))
        # The standard process/platform/GC collectors, on our registry rather than the
        # global one: several applications (tests) may live in one process.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)


_state_lock = threading.Lock()


def _scrape_state(o: Orchestrator, app_state: Any) -> _ScrapeState:
    with _state_lock:
        st: _ScrapeState | None = getattr(app_state, "metrics_scrape", None)
        if st is None:
            st = _ScrapeState(o, app_state)
            app_state.metrics_scrape = st
        return st


def collect(o: Orchestrator, app_state: Any) -> Facts:
    """Read the facts from the orchestrator now. Costs one pass over apps, tasks and jobs;
    takes the orchestrator lock only briefly (queue, deployments), never across a pass."""
    apps = {a.id: a for a in o.apps()}
    tasks = [t for t in reads(o).all_tasks() if t.job is None]  # app tasks only
    by_state = dict.fromkeys(TaskState, 0)
    healthy = unhealthy = 0
    for t in tasks:
        by_state[t.state] += 1
        spec = apps.get(t.app_id)
        h = o.is_healthy(t, spec) if spec is not None else None
        healthy += h is True
        unhealthy += h is False
    queue = o.queue()
    jobs = o.list_jobs()
    results = {"success": 0, "error": 0}
    for job in jobs:
        counters = reads(o).job_counters(job.name)
        results["success"] += int(counters.get("successCount", 0) or 0)
        results["error"] += int(counters.get("errorCount", 0) or 0)
    active_runs = reads(o).runs(frozenset({RunStatus.QUEUED, RunStatus.RUNNING}))
    runs = {RunStatus.QUEUED: 0, RunStatus.RUNNING: 0}
    for r in active_runs:
        runs[r.status] = runs.get(r.status, 0) + 1
    try:
        nodes = len(o.nodes())
    except RuntimeUnavailable:
        nodes = 0
    hub = hub_of(app_state, o)
    stats = o.bus.stats()
    st = _scrape_state(o, app_state)
    total = sum(stats.published.values())
    with st.lock:
        st.events_meter.mark(max(0, total - st.last_published))
        st.last_published = total
    loop = metrics_for(o)
    return Facts(
        uptime=time.monotonic() - _STARTED,
        apps=len(apps),
        instances_wanted=sum(a.instances for a in apps.values()),
        tasks=by_state, tasks_healthy=healthy, tasks_unhealthy=unhealthy,
        deployments=len(o.deployments()),
        queue_instances=sum(q.count for q in queue.values()),
        queue_apps=len(queue),
        queue_rejected_apps=sum(q.rejection is not None for q in queue.values()),
        queue_delayed_apps=sum(q.delayed_until is not None for q in queue.values()),
        jobs=len(jobs), runs=runs, run_results=results,
        nodes=nodes, runtime_available=o.runtime_available,
        event_streams=len(hub.connections), stream_lags=hub.lags(),
        subscribers=stats.subscribers, subscribers_dropped=stats.dropped_subscribers,
        published=stats.published, events_meter=st.events_meter.snapshot(),
        loop_pass=loop.pass_timer.snapshot(), loop_failed=loop.failed_passes,
    )


# ------------------------------------------------------------------ Dropwizard JSON


def _state_name(state: TaskState) -> str:
    return state.value.removeprefix("TASK_").lower()


def _meter_json(m: MeterSnapshot) -> dict[str, Any]:
    return {"count": m.count, "mean_rate": m.mean_rate, "m1_rate": m.m1_rate,
            "m5_rate": m.m5_rate, "m15_rate": m.m15_rate}


def _histogram_json(values: list[int]) -> dict[str, Any]:
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    mean = sum(ordered) / n if n else 0.0
    var = sum((v - mean) ** 2 for v in ordered) / (n - 1) if n > 1 else 0.0
    return {"count": n, "min": ordered[0] if n else 0, "max": ordered[-1] if n else 0,
            "mean": mean, "stddev": var ** 0.5,
            **{name: quantile(ordered, q) for name, q in QUANTILES}}


def to_dropwizard(f: Facts) -> dict[str, Any]:
    """The facts as Dropwizard's JSON document (see the module docstring for names)."""
    g: dict[str, float] = {
        "dromos.uptime.gauge.seconds": round(f.uptime, 3),
        "dromos.apps.active.gauge": f.apps,
        "dromos.apps.instances.wanted.gauge": f.instances_wanted,
        **{f"dromos.tasks.{_state_name(s)}.gauge": n for s, n in f.tasks.items()},
        "dromos.tasks.healthy.gauge": f.tasks_healthy,
        "dromos.tasks.unhealthy.gauge": f.tasks_unhealthy,
        "dromos.deployments.active.gauge": f.deployments,
        "dromos.queue.instances.gauge": f.queue_instances,
        "dromos.queue.apps.gauge": f.queue_apps,
        "dromos.queue.rejected-apps.gauge": f.queue_rejected_apps,
        "dromos.queue.delayed-apps.gauge": f.queue_delayed_apps,
        "dromos.jobs.active.gauge": f.jobs,
        **{f"dromos.jobs.runs.{s.value}.gauge": n for s, n in f.runs.items()},
        "dromos.jobs.runs.succeeded.gauge": f.run_results["success"],
        "dromos.jobs.runs.failed.gauge": f.run_results["error"],
        "dromos.nodes.gauge": f.nodes,
        "dromos.runtime.available.gauge": int(f.runtime_available),
        "dromos.http.event-streams.active.gauge": f.event_streams,
        "dromos.events.subscribers.gauge": f.subscribers,
    }
    c: dict[str, int] = {
        "dromos.events.published.counter": sum(f.published.values()),
        **{f"dromos.events.published.{stream}.{etype}.counter": n
           for (stream, etype), n in sorted(f.published.items())},
        "dromos.events.subscribers.dropped.counter": f.subscribers_dropped,
        "dromos.placement.rejections.counter": f.placement_rejections,
        "dromos.loop.passes.failed.counter": f.loop_failed,
    }
    t = f.loop_pass
    return {
        "version": DROPWIZARD_VERSION,
        "gauges": {k: {"value": v} for k, v in g.items()},
        "counters": {k: {"count": v} for k, v in c.items()},
        "histograms": {"dromos.http.event-streams.lag.histogram": _histogram_json(f.stream_lags)},
        "meters": {"dromos.events.published.meter": {**_meter_json(f.events_meter),
                                                     "units": "events/second"}},
        "timers": {"dromos.loop.pass.timer.seconds": {
            "count": t.count, "min": t.min, "max": t.max, "mean": t.mean, "stddev": t.stddev,
            **t.quantiles, **_meter_json(t.rates),
            "duration_units": "seconds", "rate_units": "calls/second",
        }},
    }


@router.get("/metrics")
def metrics_json(request: Request) -> JSONResponse:
    """Marathon-style metrics (Dropwizard JSON)."""
    o: Orchestrator = request.app.state.orchestrator
    return JSONResponse(to_dropwizard(collect(o, request.app.state)))


# ------------------------------------------------------------------ Prometheus


class _DromosCollector(Collector):
    """Builds the ``dromos_*`` families from a fresh :func:`collect` on every scrape."""

    def __init__(self, o: Orchestrator, app_state: Any) -> None:
        self._o = o
        self._app_state = app_state

    def collect(self) -> Iterator[Metric]:
        return iter(to_prometheus(collect(self._o, self._app_state)))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def to_prometheus(f: Facts) -> list[Metric]:
    """The facts as Prometheus metric families (see the module docstring)."""
    info = GaugeMetricFamily("dromos_info", "Dromos build information", labels=["version"])
    info.add_metric([__version__], 1)
    tasks = GaugeMetricFamily("dromos_tasks", "App tasks by state", labels=["state"])
    for state, n in f.tasks.items():
        tasks.add_metric([state.value], n)
    runs = GaugeMetricFamily("dromos_job_runs", "Job runs not yet finished, by status",
                             labels=["status"])
    for status, n in f.runs.items():
        runs.add_metric([status.value], n)
    results = GaugeMetricFamily(
        "dromos_job_run_results",
        "Finished runs of the existing jobs by result (Chronos successCount/errorCount)",
        labels=["result"])
    for result, n in f.run_results.items():
        results.add_metric([result], n)
    published = CounterMetricFamily("dromos_events_published", "Events published on the bus",
                                    labels=["stream", "type"])
    for (stream, etype), n in sorted(f.published.items()):
        published.add_metric([stream, etype], n)
    t = f.loop_pass
    loop = HistogramMetricFamily(
        "dromos_loop_pass_duration_seconds", "Duration of control-loop passes",
        buckets=[("+Inf" if b == float("inf") else repr(b), n) for b, n in t.buckets],
        sum_value=t.total)
    return [
        info,
        _gauge("dromos_uptime_seconds", "Seconds since Dromos started", f.uptime),
        _gauge("dromos_apps", "Apps defined", f.apps),
        _gauge("dromos_app_instances_wanted", "Sum of the apps' instances", f.instances_wanted),
        tasks,
        _gauge("dromos_tasks_healthy", "Running tasks whose health checks pass",
               f.tasks_healthy),
        _gauge("dromos_tasks_unhealthy", "Running tasks whose health checks fail",
               f.tasks_unhealthy),
        _gauge("dromos_deployments", "Deployments in progress", f.deployments),
        _gauge("dromos_queue_instances", "Instances waiting to be placed", f.queue_instances),
        _gauge("dromos_queue_apps", "Apps with instances waiting", f.queue_apps),
        _gauge("dromos_queue_rejected_apps", "Waiting apps whose last placement was rejected",
               f.queue_rejected_apps),
        _gauge("dromos_queue_delayed_apps", "Waiting apps held back by launch backoff",
               f.queue_delayed_apps),
        _gauge("dromos_jobs", "Jobs defined", f.jobs),
        runs,
        results,
        _gauge("dromos_nodes", "Nodes the runtime offers", f.nodes),
        _gauge("dromos_runtime_available", "1 when the runtime answered the last pass",
               int(f.runtime_available)),
        _gauge("dromos_event_streams", "Connected event-stream clients", f.event_streams),
        _gauge("dromos_event_stream_lag_max",
               "Most events waiting in one event-stream client's queue",
               max(f.stream_lags, default=0)),
        _gauge("dromos_event_subscribers", "Event bus subscriptions", f.subscribers),
        published,
        CounterMetricFamily("dromos_event_subscribers_dropped",
                            "Event subscriptions dropped for falling behind",
                            value=f.subscribers_dropped),
        CounterMetricFamily("dromos_placement_rejections",
                            "Times an app's placement was rejected (placement_rejected events)",
                            value=f.placement_rejections),
        loop,
        CounterMetricFamily("dromos_loop_passes_failed", "Control-loop passes that raised",
                            value=f.loop_failed),
    ]


@router.get("/metrics/prometheus")
def metrics_prometheus(request: Request) -> Response:
    """Prometheus exposition (text format, or OpenMetrics when the scraper accepts it)."""
    o: Orchestrator = request.app.state.orchestrator
    registry = _scrape_state(o, request.app.state).registry
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(registry), headers={"Content-Type": content_type})
