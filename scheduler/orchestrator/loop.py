"""The orchestrator: its parts stacked (core state and queries → the applier's one task path
→ deployments → app commands → job commands) and, here, the control loop that runs them.

One pass (:meth:`Orchestrator.run_once`) observes every task, re-sends pending kills, runs
health checks, fires due jobs and launches their runs, reconciles every app, and finishes
deployments. Everything that *decides* lives in services/, batch/ and placement/; the
orchestrator only applies.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime

from scheduler.events import DROMOS
from scheduler.metrics import metrics_for
from scheduler.model.health import HealthCheck
from scheduler.model.resources import Resources
from scheduler.model.task import Task, TaskState, new_task_id
from scheduler.orchestrator.core import PassReport, QueueInfo
from scheduler.orchestrator.sharing_pass import SharingPass
from scheduler.placement.pipeline import Placer
from scheduler.placement.results import ClusterSnapshot, PlacedTask, RejectionSummary
from scheduler.runtimes.base import RuntimeUnavailable, launch_spec
from scheduler.services.balancer import routes_from
from scheduler.services.deployment import app_converged, deployment_transitions
from scheduler.services.health import task_health
from scheduler.services.readiness import readiness_as_checks
from scheduler.services.reconciler import reconcile

log = logging.getLogger("dromos.orchestrator")


class Orchestrator(SharingPass):  # sharing (issue 15) sits on top of JobCommands
    """Applies decisions. Thread-safe: one lock guards every state change. The API calls the
    command and query methods; a background thread calls :meth:`run_once`."""

    def run_once(self, now: datetime) -> PassReport:
        """One idempotent pass: observe, health, jobs, reconcile every app, apply.

        Safe to repeat and safe after a crash: a task written as STAGING whose launch may
        not have happened is launched again under the same id (runtimes make that a no-op
        when it did happen).
        """
        with self._lock:
            report = PassReport()
            if not self._adopted:
                self._adopt_runs()
                self._adopted = True
            try:
                self._observe(now, report)
            except RuntimeUnavailable as e:
                self._mark_unavailable(e)
                return report
            self.runtime_available = True
            self.runtime_error = None
            try:
                self._reissue_kills(now)
            except RuntimeUnavailable as e:
                self._mark_unavailable(e)
                return report
            health, unhealthy = self._health_pass(now)
            try:
                placer = self._placer()
            except RuntimeUnavailable as e:
                self._mark_unavailable(e)
                return report
            # Jobs first: a run due now should not wait behind app launches.
            self.jobs.fire_due(now)
            # --- sharing (issue 15): priorities, preemption, quotas; sharing_pass.py ---
            if self._sharing_pass(now, report):
                placer = self._placer()
            placer = self._quota_placer(placer)
            # --- end sharing ---
            self._launch_runs(now, placer, report)
            self._reconcile_all(now, health, unhealthy, report, placer)
            self._progress_deployments(now, health)
            if self.balancer is not None:
                self.balancer.sync(routes_from(self._apps().values(), self.tasks(),
                                               health, self._ready,
                                               host_of=self.runtime.probe_host))
            if self.health is not None:
                self.store.put_meta("health", self.health.export_state())
            return report

    def _health_pass(self, now: datetime) -> tuple[dict[str, bool | None], dict[str, str]]:
        health: dict[str, bool | None] = {}
        unhealthy: dict[str, str] = {}
        if self.health is None:
            return health, unhealthy
        targets: list[tuple[Task, Sequence[HealthCheck]]] = []
        n_health: dict[str, int] = {}
        for t in self.store.list_tasks():
            if t.state is not TaskState.RUNNING or t.kill_requested_at is not None \
                    or t.job is not None:
                continue
            spec = self._spec_at(t.app_id, t.version)
            if spec and (spec.healthChecks or spec.readinessChecks):
                targets.append((t, [*spec.healthChecks, *readiness_as_checks(spec)]))
                n_health[t.id] = len(spec.healthChecks)
        self.health.sync(targets)
        ready: dict[str, bool] = {}
        for t, checks in targets:
            results = self.health.results(t.id)
            k = n_health[t.id]
            if k:
                health[t.id] = task_health(results[:k])
            if len(checks) > k:
                ready[t.id] = task_health(results[k:len(checks)]) is True
        self._ready = ready
        for task_id, idx, result in self.health.drain_changes():
            task = self.store.get_task(task_id)
            if task is None or idx >= n_health.get(task_id, 0):
                continue
            self.bus.publish("health_status_changed_event", now, appId=task.app_id,
                             taskId=task_id, instanceId=task_id, version=task.version,
                             alive=result.alive)
            if not result.alive and result.last_failure_cause:
                spec = self._spec_at(task.app_id, task.version)
                check = spec.healthChecks[idx].to_json() if spec and \
                    idx < len(spec.healthChecks) else {}
                self.bus.publish("failed_health_check_event", now, appId=task.app_id,
                                 taskId=task_id, instanceId=task_id, healthCheck=check)
        for task_id, cause in self.health.to_kill():
            unhealthy[task_id] = cause
        return health, unhealthy

    def _placer(self) -> Placer:
        """A Placer over every node and every live task (app tasks and job runs' attempts
        alike hold resources). One per pass, shared by apps and jobs."""
        placed = []
        jobs = self.jobs.jobs()
        for t in self.store.list_tasks():
            if t.state.terminal:
                continue
            if t.job is not None:
                job = jobs.get(t.job)
                res = job.resources if job else Resources()
            else:
                spec = self._spec_at(t.app_id, t.version)
                res = spec.resources if spec else Resources()
            placed.append(PlacedTask(t.app_id, t.host, res, t.ports))
        placed.extend(self.taken_ports.placed(self.clock.now()))  # ports held by others
        return Placer(ClusterSnapshot(tuple(self.runtime.nodes()), tuple(placed)),
                      self.strategy)

    def _reconcile_all(self, now: datetime, health: dict[str, bool | None],
                       unhealthy: dict[str, str], report: PassReport, placer: Placer) -> None:
        apps = dict(self._apps())
        tasks = self.tasks()
        # Tasks of deleted apps go away.
        for t in tasks:
            if t.app_id not in apps and t.kill_requested_at is None:
                self._kill(t, "app deleted", now)
                report.killed.append(t.id)
        by_app: dict[str, list[Task]] = {}
        for t in tasks:
            by_app.setdefault(t.app_id, []).append(t)
        # A task counts as up for rolling upgrades once healthy AND ready (readiness checks
        # gate the kill of old tasks, as in Marathon).
        up: dict[str, bool | None] = dict(health)
        for task_id, is_ready in self._ready.items():
            if not is_ready:
                up[task_id] = False
            elif task_id not in up:
                up[task_id] = None
        converged = {}
        for app_id, spec in apps.items():
            cfg = self.version_info(app_id).get("lastConfigChangeAt") or spec.version or ""
            converged[app_id] = app_converged(spec, cfg, by_app.get(app_id, []), health,
                                              self._ready)
        for app_id, spec in sorted(apps.items()):
            info = self.version_info(app_id)
            cfg = info.get("lastConfigChangeAt") or spec.version or ""
            # Dependencies start first: an app launches nothing until every app it depends
            # on (directly, by id or group prefix) exists and has converged.
            deps = [a for d in spec.dependencies for a in apps
                    if a == d or a.startswith(d.rstrip("/") + "/")]
            hold = any(not converged.get(a, False) for a in deps) or any(
                not any(a == d or a.startswith(d.rstrip("/") + "/") for a in apps)
                for d in spec.dependencies)
            result = reconcile(spec, cfg, by_app.get(app_id, []), up, unhealthy,
                               self.backoff(app_id), placer, now, hold_launches=hold)
            for k in result.kills:
                task = self.store.get_task(k.task_id)
                if task is None:
                    continue
                if k.reason.startswith("unhealthy"):
                    self.bus.publish("unhealthy_task_kill_event", now, appId=app_id,
                                     taskId=task.id, instanceId=task.id, version=task.version,
                                     reason=k.reason, host=task.host, slaveId=task.host)
                self._kill(task, k.reason, now)
                report.killed.append(task.id)
            for p in result.launches:
                task = Task(id=new_task_id(app_id), app_id=app_id, host=p.host,
                            version=spec.version or "", state=TaskState.STAGING,
                            staged_at=now, ports=p.ports)
                self._launch(launch_spec(spec, task), task, now)
                report.launched.append(task.id)
            self._update_queue(app_id, result.waiting, result.rejection,
                               result.delayed_until, bool(result.launches), now)

    def _update_queue(self, app_id: str, waiting: int, rejection: RejectionSummary | None,
                      delayed_until: datetime | None, placed: bool, now: datetime) -> None:
        prev = self._queue.get(app_id)
        if waiting <= 0:
            self._queue.pop(app_id, None)
            return
        info = QueueInfo(
            count=waiting,
            since=prev.since if prev else now,
            delayed_until=delayed_until,
            rejection=rejection or (prev.rejection if prev else None),
            last_attempt_at=now if rejection else (prev.last_attempt_at if prev else None),
            last_placed_at=now if placed else (prev.last_placed_at if prev else None),
        )
        if rejection is not None and (prev is None or prev.rejection != rejection):
            self.bus.publish("placement_rejected", now, stream=DROMOS, appId=app_id,
                             waiting=waiting, reason=rejection.describe())
        self._queue[app_id] = info

    def _progress_deployments(self, now: datetime, health: dict[str, bool | None]) -> None:
        """Apply :func:`deployment_transitions`: finish converged deployments, fail timed-out
        ones and roll back those that ask for it."""
        if not self._deployments:
            return
        tasks_by_app: dict[str, list[Task]] = {}
        for t in self.tasks():
            tasks_by_app.setdefault(t.app_id, []).append(t)
        apps = self._apps()
        affected = {a for d in self._deployments.values() for a in d.affected_apps}
        configs = {a: self.version_info(a).get("lastConfigChangeAt") or "" for a in affected}
        transitions = deployment_transitions(list(self._deployments.values()), apps, configs,
                                             tasks_by_app, health, self._ready, now)
        for d in self._finish_deployments(transitions, now):
            self._rollback(d)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Run the control loop (and health probes) in background threads."""
        if self.health is not None:
            self.health.start_in_thread()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="dromos-loop", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                metrics_for(self).timed(self.run_once, self.clock.now())
            except Exception:
                # The loop must outlive any one bad pass; the next pass converges.
                log.exception("control loop pass failed")
            self._wake.wait(self._sleep_seconds())
            self._wake.clear()

    def _sleep_seconds(self) -> float:
        """Until the next pass: the loop interval, or less when a job fires sooner. This is
        the jobs' timer: the store is the truth, the wake-up time is derived from it."""
        wake = self.jobs.next_wake()
        if wake is None:
            return self.loop_interval
        return max(0.0, min(self.loop_interval, (wake - self.clock.now()).total_seconds()))

    def wake(self) -> None:
        """Run a pass now (after a change that may need action)."""
        self._wake.set()

    def pause(self) -> None:
        """Stop the loop and the health probes *without writing anything*: a replica that lost
        leadership, whose state now belongs to the new leader. :meth:`start` resumes."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self.health is not None:
            self.health.stop()

    def reload(self) -> None:
        """Forget everything derived from the store (another process has been writing it: a
        standby that becomes the leader); the next pass adopts what the store says runs."""
        with self._lock:
            self.reload_apps()
            self.jobs.reload()
            self._adopted = False

    def stop(self) -> None:
        """Stop the loop; running tasks keep running and are adopted on the next start."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.health is not None:
            self.health.stop()
            self.store.put_meta("health", self.health.export_state())
        self.runtime.close()

