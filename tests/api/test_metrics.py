"""``/metrics`` (Dropwizard JSON) and ``/metrics/prometheus``, and scheduler/metrics.py."""

from __future__ import annotations

import math
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from scheduler.events import DROMOS
from scheduler.metrics import Meter, Timer, metrics_for, quantile
from scheduler.orchestrator import Orchestrator

WEB = {"id": "/web", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 2}
API = {"id": "/api", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 1}
HUGE = {"id": "/huge", "cmd": "sleep 600", "cpus": 64, "mem": 16}  # fits no node
JOB = {"name": "etl", "command": "sleep 600", "schedule": "R/2030-01-01T00:00:00Z/P1D",
       "epsilon": "PT30S", "cpus": 0.1, "mem": 16}


@pytest.fixture
def busy(client: TestClient, orchestrator: Orchestrator) -> Orchestrator:
    """Three apps (one unplaceable), a job with a queued run and a recorded success, and
    two control-loop passes timed the way the loop times them."""
    for body in (WEB, API, HUGE):
        assert client.post("/v2/apps", json=body).status_code == 201
    assert client.post("/scheduler/iso8601", json=JOB).status_code in (200, 204)
    orchestrator.mark_job_success("etl")
    orchestrator.run_job("etl")
    for _ in range(2):
        metrics_for(orchestrator).timed(orchestrator.run_once, orchestrator.clock.now())
    return orchestrator


def gauge(doc: dict[str, Any], name: str) -> Any:
    return doc["gauges"][name]["value"]


def test_dropwizard_document_shape(client: TestClient) -> None:
    doc = client.get("/metrics").json()
    assert set(doc) == {"version", "gauges", "counters", "histograms", "meters", "timers"}
    assert doc["version"] == "4.0.0"
    assert all(set(v) == {"value"} for v in doc["gauges"].values())
    assert all(set(v) == {"count"} for v in doc["counters"].values())
    quantiles = {"p50", "p75", "p95", "p98", "p99", "p999"}
    rates = {"count", "mean_rate", "m1_rate", "m5_rate", "m15_rate"}
    for h in doc["histograms"].values():
        assert set(h) == {"count", "min", "max", "mean", "stddev", *quantiles}
    for m in doc["meters"].values():
        assert set(m) == {*rates, "units"}
    for t in doc["timers"].values():
        assert set(t) == {"min", "max", "mean", "stddev", *quantiles, *rates,
                          "duration_units", "rate_units"}
    # Marathon 1.7+ naming: components, then the metric type (and unit).
    for section, kind in (("gauges", "gauge"), ("counters", "counter"),
                          ("histograms", "histogram"), ("meters", "meter"),
                          ("timers", "timer")):
        for name in doc[section]:
            assert name.startswith("dromos.") and f".{kind}" in name, name


def test_dropwizard_values_follow_the_cluster(client: TestClient, busy: Orchestrator) -> None:
    doc = client.get("/metrics").json()
    assert gauge(doc, "dromos.apps.active.gauge") == 3
    assert gauge(doc, "dromos.apps.instances.wanted.gauge") == 4
    live = sum(gauge(doc, f"dromos.tasks.{s}.gauge") for s in ("staging", "starting", "running"))
    assert live == 3  # /huge cannot be placed
    assert gauge(doc, "dromos.tasks.lost.gauge") == 0
    assert gauge(doc, "dromos.queue.instances.gauge") == 1
    assert gauge(doc, "dromos.queue.apps.gauge") == 1
    assert gauge(doc, "dromos.queue.rejected-apps.gauge") == 1
    assert gauge(doc, "dromos.jobs.active.gauge") == 1
    assert gauge(doc, "dromos.jobs.runs.succeeded.gauge") == 1
    assert gauge(doc, "dromos.jobs.runs.queued.gauge") + \
        gauge(doc, "dromos.jobs.runs.running.gauge") == 1
    assert gauge(doc, "dromos.nodes.gauge") == 3
    assert gauge(doc, "dromos.runtime.available.gauge") == 1
    counters = {k: v["count"] for k, v in doc["counters"].items()}
    assert counters["dromos.events.published.marathon.api_post_event.counter"] == 3
    assert counters["dromos.placement.rejections.counter"] == 1
    assert counters["dromos.events.published.counter"] == sum(
        v for k, v in counters.items() if k.count(".") == 5 and k.startswith(
            "dromos.events.published."))
    assert counters["dromos.loop.passes.failed.counter"] == 0
    timer = doc["timers"]["dromos.loop.pass.timer.seconds"]
    assert timer["count"] == 2
    assert 0 < timer["min"] <= timer["p50"] <= timer["max"]
    assert timer["duration_units"] == "seconds"
    meter = doc["meters"]["dromos.events.published.meter"]
    assert meter["count"] == counters["dromos.events.published.counter"]


def test_dropped_subscribers_and_stream_gauges(client: TestClient,
                                               orchestrator: Orchestrator) -> None:
    bus = orchestrator.bus
    kept = bus.subscribe()
    slow = bus.subscribe(maxsize=1)
    for _ in range(3):
        bus.publish("app_terminated_event", orchestrator.clock.now(), appId="/x")
    assert slow.dropped and not kept.dropped
    doc = client.get("/metrics").json()
    assert doc["counters"]["dromos.events.subscribers.dropped.counter"]["count"] == 1
    assert gauge(doc, "dromos.events.subscribers.gauge") == 1
    assert gauge(doc, "dromos.http.event-streams.active.gauge") == 0
    assert doc["histograms"]["dromos.http.event-streams.lag.histogram"]["count"] == 0
    kept.close()


def test_failed_passes_are_counted_and_timed(client: TestClient,
                                             orchestrator: Orchestrator) -> None:
    def boom() -> None:
        raise RuntimeError("bad pass")

    with pytest.raises(RuntimeError):
        metrics_for(orchestrator).timed(boom)
    doc = client.get("/metrics").json()
    assert doc["counters"]["dromos.loop.passes.failed.counter"]["count"] == 1
    assert doc["timers"]["dromos.loop.pass.timer.seconds"]["count"] == 1


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_exposition_parses_with_the_same_facts(client: TestClient,
                                                          busy: Orchestrator) -> None:
    r = client.get("/metrics/prometheus")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = _samples(r.text)
    assert samples[("dromos_apps", ())] == 3
    assert samples[("dromos_app_instances_wanted", ())] == 4
    live = sum(samples[("dromos_tasks", (("state", s),))]
               for s in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"))
    assert live == 3
    assert samples[("dromos_queue_instances", ())] == 1
    assert samples[("dromos_queue_rejected_apps", ())] == 1
    assert samples[("dromos_jobs", ())] == 1
    assert samples[("dromos_job_run_results", (("result", "success"),))] == 1
    assert samples[("dromos_events_published_total",
                    (("stream", "marathon"), ("type", "api_post_event")))] == 3
    assert samples[("dromos_events_published_total",
                    (("stream", DROMOS), ("type", "placement_rejected")))] == 1
    assert samples[("dromos_placement_rejections_total", ())] == 1
    assert samples[("dromos_loop_pass_duration_seconds_count", ())] == 2
    assert samples[("dromos_loop_pass_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("dromos_loop_pass_duration_seconds_sum", ())] > 0
    assert ("dromos_info", (("version", "0.1.0"),)) in samples
    assert any(name.startswith("process_") for name, _ in samples)  # standard collectors
    # The JSON document reports the same facts.
    doc = client.get("/metrics").json()
    assert gauge(doc, "dromos.apps.active.gauge") == samples[("dromos_apps", ())]


def test_prometheus_openmetrics_on_request(client: TestClient) -> None:
    r = client.get("/metrics/prometheus",
                   headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    names = {f.name for f in openmetrics_families(r.text)}
    assert {"dromos_apps", "dromos_events_published", "dromos_loop_pass_duration_seconds"} \
        <= names


# ------------------------------------------------------------------ scheduler/metrics.py


def test_quantile_interpolates_like_dropwizard() -> None:
    values = [float(v) for v in range(1, 11)]
    assert quantile([], 0.5) == 0.0
    assert quantile(values, 0.5) == 5.5
    assert quantile(values, 0.01) == 1.0
    assert quantile(values, 0.999) == 10.0
    assert quantile(values, 0.75) == pytest.approx(8.25)


def test_timer_window_lifetime_and_buckets() -> None:
    t = Timer(window=3, buckets=(0.1, 1.0))
    for v in (0.05, 0.5, 2.0, 0.07):
        t.observe(v)
    s = t.snapshot()
    assert (s.count, s.min, s.max) == (4, 0.05, 2.0)  # lifetime
    assert s.total == pytest.approx(2.62)
    assert s.mean == pytest.approx((0.5 + 2.0 + 0.07) / 3)  # the window
    assert s.buckets == [(0.1, 2), (1.0, 3), (math.inf, 4)]


def test_meter_rates_decay_lazily() -> None:
    now = [0.0]
    m = Meter(clock=lambda: now[0])
    m.mark(50)
    now[0] = 5.0
    s = m.snapshot()
    assert s.count == 50
    assert s.m1_rate == pytest.approx(10.0)  # first tick: the instant rate
    assert s.mean_rate == pytest.approx(10.0)
    now[0] = 65.0  # twelve ticks without events: one minute
    s = m.snapshot()
    assert s.m1_rate == pytest.approx(10.0 * math.exp(-1.0), rel=1e-6)
    assert s.m15_rate > s.m5_rate > s.m1_rate


def test_metrics_for_is_per_owner() -> None:
    class Owner:
        pass

    a, b = Owner(), Owner()
    assert metrics_for(a) is metrics_for(a)
    assert metrics_for(a) is not metrics_for(b)
