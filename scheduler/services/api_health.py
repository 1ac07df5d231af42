"""Task health read from the cluster instead of probed by Dromos (kubernetes runtime).

When Dromos runs outside the cluster it cannot, in general, reach pod IPs, so its own probes
(:class:`~scheduler.services.health.HealthMonitor`) would fail for reasons that have nothing
to do with the task. The kubernetes runtime already turns an app's Marathon health checks into
the kubelet's probes (its first health check is the liveness and, without a readiness check,
the readiness probe), so the cluster knows the answer: a pod is Ready while its readiness
probe passes, and the kubelet ends a pod whose liveness probe fails (Dromos then sees the task
FAILED and starts a replacement, as Marathon would after a kill for health).

:class:`ApiHealthMonitor` is a drop-in for the orchestrator's health monitor that does exactly
that: every check of a task reports the pod's readiness as the runtime's pod cache holds it
(no probe, no API call), and it never asks for a kill. ``source`` says where health comes from
(``GET /v2/apps?embed=apps.healthSource``, ``/dromos/info``).

Which monitor ``dromos serve --runtime kubernetes`` uses: ``--kube-health`` (or
``$DROMOS_KUBE_HEALTH``): ``api``, ``probe``, or ``auto`` (the default) -- ``probe`` inside a
cluster (``$KUBERNETES_SERVICE_HOST`` set: pod IPs are reachable), ``api`` outside.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

from scheduler.clock import Clock
from scheduler.model.health import HealthCheck, HealthResult
from scheduler.model.task import Task
from scheduler.services.health import HealthMonitor, ProbeRuntime

HEALTH_MODES = ("auto", "api", "probe")
NOT_READY = "kubernetes: the pod is not Ready (its readiness probe fails, or it is starting)"


class ReadinessRuntime(ProbeRuntime, Protocol):
    def ready(self, task: Task) -> bool | None:
        """Whether the task's pod is Ready; ``None`` when the runtime does not know the pod."""
        ...


def health_mode(requested: str | None = None) -> str:
    """``api`` or ``probe`` for the kubernetes runtime, from ``requested`` (else
    ``$DROMOS_KUBE_HEALTH``, else ``auto``); raises ``ValueError`` for anything else."""
    mode = (requested or os.environ.get("DROMOS_KUBE_HEALTH") or "auto").strip().lower()
    if mode not in HEALTH_MODES:
        raise ValueError(f"kube health must be one of {', '.join(HEALTH_MODES)}, not {mode!r}")
    if mode == "auto":
        return "probe" if os.environ.get("KUBERNETES_SERVICE_HOST") else "api"
    return mode


def next_result(prev: HealthResult, ready: bool | None, now: Any) -> HealthResult:
    """The result after one look at the pod's readiness (pure; ``now`` is the look's time).
    ``None`` (pod unknown to the cache) changes nothing."""
    if ready is None:
        return prev
    if ready:
        return replace(prev, alive=True, consecutive_failures=0,
                       first_success=prev.first_success or now, last_success=now)
    if prev.alive or prev.last_failure is None:
        # Count a failure once per change to not-ready: the kubelet, not Dromos, counts probes.
        return replace(prev, alive=False,
                       consecutive_failures=prev.consecutive_failures + (1 if prev.alive else 0),
                       last_failure=now, last_failure_cause=NOT_READY)
    return prev


class ApiHealthMonitor(HealthMonitor):
    """Health from the pods' Ready condition (module docstring). Thread-safe like its base."""

    source = "kubernetes"

    def __init__(self, runtime: ReadinessRuntime, clock: Clock) -> None:
        super().__init__(runtime, clock)
        self._ready_of = runtime.ready
        self._api_lock = threading.Lock()
        self._api_results: dict[str, list[HealthResult]] = {}
        self._api_changes: deque[tuple[str, int, HealthResult]] = deque(maxlen=10_000)

    def sync(self, targets: Sequence[tuple[Task, Sequence[HealthCheck]]]) -> None:
        now = self._clock.now()
        looked = [(task, len(checks), self._ready_of(task)) for task, checks in targets]
        with self._api_lock:
            table: dict[str, list[HealthResult]] = {}
            for task, n, ready in looked:
                old = self._api_results.get(task.id, [])
                row = []
                for i in range(n):
                    prev = old[i] if i < len(old) else HealthResult(task_id=task.id)
                    new = next_result(prev, ready, now)
                    if new.alive != prev.alive:
                        self._api_changes.append((task.id, i, new))
                    row.append(new)
                table[task.id] = row
            self._api_results = table

    def results(self, task_id: str) -> list[HealthResult]:
        with self._api_lock:
            return list(self._api_results.get(task_id, []))

    def to_kill(self) -> list[tuple[str, str]]:
        """Never: the kubelet ends a pod whose liveness probe fails."""
        return []

    def drain_changes(self) -> list[tuple[str, int, HealthResult]]:
        with self._api_lock:
            out = list(self._api_changes)
            self._api_changes.clear()
            return out

    def export_state(self) -> dict[str, Any]:
        """Nothing to keep: the cluster holds the truth and is read again after a restart."""
        return {}

    def import_state(self, data: Mapping[str, Any]) -> None:
        return None

    def start_in_thread(self) -> None:
        """No probing loop to run."""
        return None

    def stop(self, timeout: float = 10.0) -> None:
        return None
