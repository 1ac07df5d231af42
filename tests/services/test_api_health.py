"""Health read from the cluster (services/api_health.py): the pure step, the monitor over a
runtime that reports readiness, and how the mode is chosen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler.model.health import HealthCheck, HealthResult
from scheduler.model.task import Task, TaskState
from scheduler.services.api_health import (
    NOT_READY,
    ApiHealthMonitor,
    health_mode,
    next_result,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def now(self) -> datetime:
        return self.t


class Readiness:
    """A runtime whose pods' readiness the test sets (what the pod cache would say)."""

    def __init__(self) -> None:
        self.ready_of: dict[str, bool | None] = {}

    def ready(self, task: Task) -> bool | None:
        return self.ready_of.get(task.id)

    def probe_host(self, task: Task) -> str:
        raise AssertionError("health from the API never probes")

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]:
        raise AssertionError("health from the API never probes")


def task(task_id: str = "web.1") -> Task:
    return Task(id=task_id, app_id="/web", host="n1", version="v", state=TaskState.RUNNING,
                staged_at=T0, started_at=T0, ports=(31000,))


CHECK = HealthCheck.model_validate({"protocol": "HTTP", "path": "/"})


def test_next_result_follows_readiness() -> None:
    start = HealthResult(task_id="t")
    assert next_result(start, None, T0) == start, "an unknown pod changes nothing"
    failing = next_result(start, False, T0)
    assert (failing.alive, failing.last_failure, failing.last_failure_cause) == (
        False, T0, NOT_READY)
    assert failing.consecutive_failures == 0, "not ready before ever being ready: starting"
    ok = next_result(failing, True, T0 + timedelta(seconds=1))
    assert (ok.alive, ok.first_success, ok.last_success) == (
        True, T0 + timedelta(seconds=1), T0 + timedelta(seconds=1))
    down = next_result(ok, False, T0 + timedelta(seconds=2))
    assert (down.alive, down.consecutive_failures, down.last_failure) == (
        False, 1, T0 + timedelta(seconds=2))
    assert next_result(down, False, T0 + timedelta(seconds=3)) == down, "counted once"
    back = next_result(down, True, T0 + timedelta(seconds=4))
    assert (back.alive, back.consecutive_failures, back.first_success) == (
        True, 0, T0 + timedelta(seconds=1))


def test_the_monitor_reports_readiness_for_every_check_and_never_kills() -> None:
    runtime, clock = Readiness(), Clock()
    monitor = ApiHealthMonitor(runtime, clock)
    t = task()
    monitor.sync([(t, [CHECK, CHECK])])
    assert [r.alive for r in monitor.results(t.id)] == [False, False]

    runtime.ready_of[t.id] = True
    clock.t = T0 + timedelta(seconds=5)
    monitor.sync([(t, [CHECK, CHECK])])
    assert [r.alive for r in monitor.results(t.id)] == [True, True]
    assert [(i, r.alive) for _, i, r in monitor.drain_changes()] == [(0, True), (1, True)]

    runtime.ready_of[t.id] = False
    monitor.sync([(t, [CHECK, CHECK])])
    assert [r.last_failure_cause for r in monitor.results(t.id)] == [NOT_READY, NOT_READY]
    assert monitor.to_kill() == [], "the kubelet's liveness probe ends the pod, not Dromos"
    assert monitor.source == "kubernetes"

    monitor.sync([])
    assert monitor.results(t.id) == [], "a task no longer targeted is forgotten"


def test_health_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DROMOS_KUBE_HEALTH", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert health_mode() == "api", "outside a cluster pod IPs are not reachable in general"
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert health_mode() == "probe", "inside, Dromos can probe pod IPs itself"
    assert health_mode("api") == "api"
    monkeypatch.setenv("DROMOS_KUBE_HEALTH", "api")
    assert health_mode() == "api"
    assert health_mode("probe") == "probe", "the flag wins over the environment"
    with pytest.raises(ValueError, match="one of auto, api, probe"):
        health_mode("kubelet")
