"""The only module that wires store, runtime, health monitor, bus and the control loop.

The API calls the command/query methods here; a background thread calls :meth:`run_once`.
Everything that *decides* lives in services/ and placement/; this module only applies.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scheduler.batch import dag
from scheduler.batch.runner import JobRunner, job_request
from scheduler.batch.schedule import latest_at_or_before
from scheduler.clock import Clock
from scheduler.events import DROMOS, EventBus
from scheduler.metrics import metrics_for
from scheduler.model.app import AppSpec
from scheduler.model.deployment import Deployment
from scheduler.model.health import HealthCheck, HealthResult
from scheduler.model.job import JobRun, JobSpec, RunStatus
from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.model.task import Task, TaskState, new_task_id
from scheduler.model.timefmt import iso, parse_iso
from scheduler.placement.pipeline import Placer
from scheduler.placement.plan import ClusterSnapshot, PlacedTask, RejectionSummary, Strategy
from scheduler.runtimes.base import Runtime, RuntimeUnavailable, launch_spec
from scheduler.services.backoff import Backoff
from scheduler.services.balancer import Balancer, routes_from
from scheduler.services.deployment import app_converged, steps_for_change
from scheduler.services.health import HealthMonitor, task_health
from scheduler.services.readiness import readiness_as_checks
from scheduler.services.reconciler import reconcile
from scheduler.services.service_ports import ServicePortAllocator
from scheduler.store.base import AlreadyExists, StateStore

log = logging.getLogger("dromos.orchestrator")


DRAIN_SECONDS = 10.0
"""The longest a task removed from its service port waits for open connections to finish
before it is killed."""


class NotFound(Exception):
    """An app or task the caller named does not exist."""


class Conflict(Exception):
    """The write clashes with existing state (e.g. an app id that exists).

    ``deployments`` names the deployments that lock the app, when that is the reason."""

    def __init__(self, message: str, deployments: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.deployments = list(deployments)


@dataclass
class QueueInfo:
    """Why an app has fewer tasks than it wants, as of the last pass."""

    count: int
    since: datetime
    delayed_until: datetime | None = None
    rejection: RejectionSummary | None = None
    last_attempt_at: datetime | None = None
    last_placed_at: datetime | None = None


@dataclass
class PassReport:
    """What one :meth:`Orchestrator.run_once` did (for tests and logs)."""

    launched: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


def _meta_key(kind: str, app_id: str) -> str:
    return f"app:{app_id}:{kind}"


class Orchestrator:
    """Applies decisions. Thread-safe: one lock guards every state change."""

    def __init__(
        self,
        store: StateStore,
        runtime: Runtime,
        bus: EventBus,
        clock: Clock,
        *,
        health: HealthMonitor | None = None,
        strategy: Strategy = Strategy.BINPACK,
        loop_interval: float = 0.5,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.bus = bus
        self.clock = clock
        self.health = health
        self.strategy = strategy
        self.loop_interval = loop_interval
        self.runtime_available = True
        self.runtime_error: str | None = None
        self._lock = threading.RLock()
        self._queue: dict[str, QueueInfo] = {}
        self._kills_issued: set[str] = set()
        self._spec_cache: dict[tuple[str, str], AppSpec | None] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.jobs = JobRunner(store, runtime, bus)
        # Service ports, chosen on every create/update; and the built-in balancer listening
        # on them (the server sets it on runtimes whose tasks run on this machine).
        self.service_ports = ServicePortAllocator(store.list_apps)
        self.balancer: Balancer | None = None
        # Active deployments, persisted (meta "deployments") in the same transaction as the
        # app writes that start them, so a restart resumes them.
        self._deployments: dict[str, Deployment] = {
            d["id"]: Deployment.from_json(d) for d in (store.get_meta("deployments") or [])
        }
        self._ready: dict[str, bool] = {}
        self._draining: set[str] = set()
        self._app_cache: dict[str, AppSpec] | None = None
        # Bumped on every change of a definition or its versionInfo: read-side caches (the
        # /v2/apps response) key on it.
        self.apps_generation = 0
        self._vi_cache: dict[str, dict[str, str]] = {}
        self._json_cache: dict[tuple[str, str], dict[str, Any]] = {}
        if health is not None:
            saved = store.get_meta("health")
            if saved:
                health.import_state(saved)

    # ------------------------------------------------------------------ queries

    def nodes(self) -> list[Node]:
        return self.runtime.nodes()

    def _apps(self) -> dict[str, AppSpec]:
        """Current app definitions, cached. Every app write goes through this class, which
        updates the cache in the same locked section; the store stays the source of truth
        and a restart (or :meth:`reload_apps`) reads it again."""
        with self._lock:
            if self._app_cache is None:
                self._app_cache = {a.id: a for a in self.store.list_apps()}
            return self._app_cache

    def reload_apps(self) -> None:
        """Drop cached definitions (after writes that bypassed the orchestrator)."""
        with self._lock:
            self._app_cache = None
            self._vi_cache.clear()
            self.apps_generation += 1

    def apps(self) -> list[AppSpec]:
        return [a for _, a in sorted(self._apps().items())]

    def app(self, app_id: str) -> AppSpec:
        spec = self._apps().get(app_id)
        if spec is None:
            raise NotFound(f"App '{app_id}' does not exist")
        return spec

    def marathon_json(self, spec: AppSpec) -> dict[str, Any]:
        """``spec.to_marathon()``, cached per version (a shallow copy: add keys freely)."""
        key = (spec.id, spec.version or "")
        cached = self._json_cache.get(key)
        if cached is None:
            if len(self._json_cache) > 50_000:
                self._json_cache.clear()
            cached = self._json_cache[key] = spec.to_marathon()
        return dict(cached)

    def tasks(self, app_id: str | None = None) -> list[Task]:
        return [t for t in self.store.list_tasks(app_id) if not t.state.terminal]

    def health_results(self, task: Task, spec: AppSpec) -> list[HealthResult]:
        if self.health is None or not spec.healthChecks:
            return []
        return self.health.results(task.id)[: len(spec.healthChecks)]

    def is_healthy(self, task: Task, spec: AppSpec) -> bool | None:
        """``None`` when the app has no checks or none answered yet."""
        if not spec.healthChecks or task.state is not TaskState.RUNNING:
            return None
        return task_health(self.health_results(task, spec))

    def version_info(self, app_id: str) -> dict[str, str]:
        cached = self._vi_cache.get(app_id)
        if cached is None:
            info = self.store.get_meta(_meta_key("versionInfo", app_id))
            cached = self._vi_cache[app_id] = dict(info) if info else {}
        return dict(cached)

    def _put_version_info(self, app_id: str, info: dict[str, str] | None) -> None:
        self.apps_generation += 1
        self.store.put_meta(_meta_key("versionInfo", app_id), info)
        if info is None:
            self._vi_cache.pop(app_id, None)
        else:
            self._vi_cache[app_id] = dict(info)

    def last_task_failure(self, app_id: str) -> dict[str, Any] | None:
        v = self.store.get_meta(_meta_key("lastTaskFailure", app_id))
        return dict(v) if v else None

    def queue(self) -> dict[str, QueueInfo]:
        with self._lock:
            return dict(self._queue)

    def backoff(self, app_id: str) -> Backoff:
        return Backoff.from_json(self.store.get_meta(_meta_key("backoff", app_id)))

    def app_versions(self, app_id: str) -> list[str]:
        self.app(app_id)
        return self.store.list_app_versions(app_id)

    def app_version(self, app_id: str, version: str) -> AppSpec:
        spec = self.store.get_app_version(app_id, version)
        if spec is None:
            raise NotFound(f"App '{app_id}' has no version '{version}'")
        return spec

    # ------------------------------------------------------------------ commands

    def _next_version(self, app_id: str, now: datetime) -> str:
        """A version timestamp strictly after every stored one of this app."""
        version = iso(now)
        versions = self.store.list_app_versions(app_id)
        if versions and version <= versions[0]:
            version = iso(parse_iso(versions[0]) + timedelta(milliseconds=1))
        return version

    def create_app(self, spec: AppSpec) -> AppSpec:
        """Store a new app; the control loop starts its tasks. Raises :class:`Conflict`."""
        return self._create_app(spec)[0]

    def _create_app(self, spec: AppSpec) -> tuple[AppSpec, Deployment]:
        with self._lock:
            now = self.clock.now()
            spec = self.service_ports.assign(spec, None)
            stored = spec.model_copy(update={"version": self._next_version(spec.id, now)})
            deployment = self._new_deployment(None, stored, False, False, now)
            try:
                with self.store.atomic():
                    self.store.create_app(stored)
                    self._put_version_info(spec.id, {"lastScalingAt": stored.version or "",
                                                     "lastConfigChangeAt": stored.version or ""})
                    self._save_deployments({**self._deployments, deployment.id: deployment})
                self._apps()[stored.id] = stored
            except AlreadyExists:
                self._vi_cache.pop(spec.id, None)  # the write above was rolled back
                raise Conflict(
                    f"An app with id [{spec.id}] already exists."
                ) from None
            self.bus.publish("api_post_event", now, clientIp=None, uri=f"/v2/apps{spec.id}",
                             appDefinition=stored.to_marathon())
            self._deployment_started(deployment, now)
            return stored, deployment

    def update_app(self, spec: AppSpec, force: bool = False,
                   restart: bool = False) -> tuple[AppSpec, str, bool]:
        """Store ``spec`` as the app's new definition (creating it if new).

        Returns (stored spec, deployment id, created). A change of ``instances`` only is a
        scaling (running tasks stay); any other change, or ``restart``, replaces tasks by a
        rolling restart. An app locked by a running deployment raises :class:`Conflict`
        unless ``force``, which supersedes that deployment.
        """
        with self._lock:
            now = self.clock.now()
            old = self._apps().get(spec.id)
            if old is None:
                created, deployment = self._create_app(spec)
                return created, deployment.id, True
            superseded = self._check_lock(spec.id, force)
            spec = self.service_ports.assign(spec, old)
            stored = spec.model_copy(update={"version": self._next_version(spec.id, now)})
            info = self.version_info(spec.id)
            scaling_only = _without(old) == _without(stored)
            info["lastScalingAt"] = stored.version or ""
            if restart or not scaling_only or "lastConfigChangeAt" not in info:
                info["lastConfigChangeAt"] = stored.version or ""
            deployment = self._new_deployment(old, stored, scaling_only, restart, now)
            remaining = {k: v for k, v in self._deployments.items() if k not in superseded}
            with self.store.atomic():
                self.store.put_app(stored)
                self._put_version_info(spec.id, info)
                self._save_deployments({**remaining, deployment.id: deployment})
            self._apps()[stored.id] = stored
            self.bus.publish("api_post_event", now, clientIp=None, uri=f"/v2/apps{spec.id}",
                             appDefinition=stored.to_marathon())
            self._deployment_started(deployment, now)
            return stored, deployment.id, False

    def restart_app(self, app_id: str, force: bool = False) -> tuple[AppSpec, str]:
        """Replace every task by a rolling restart (a new version, same configuration)."""
        with self._lock:
            stored, deployment_id, _ = self.update_app(self.app(app_id), force=force,
                                                       restart=True)
            return stored, deployment_id

    def delete_app(self, app_id: str, force: bool = False) -> str:
        """Delete the app and kill its tasks. Returns a deployment id."""
        with self._lock:
            old = self.app(app_id)
            superseded = self._check_lock(app_id, force)
            now = self.clock.now()
            deployment = self._new_deployment(old, None, False, False, now)
            remaining = {k: v for k, v in self._deployments.items() if k not in superseded}
            with self.store.atomic():
                self.store.delete_app(app_id)
                for kind in ("backoff", "lastTaskFailure"):
                    self.store.put_meta(_meta_key(kind, app_id), None)
                self._put_version_info(app_id, None)
                self._save_deployments({**remaining, deployment.id: deployment})
            self._apps().pop(app_id, None)
            self._deployment_started(deployment, now)
            for t in self.tasks(app_id):
                self._kill(t, "app deleted", now)
            self._queue.pop(app_id, None)
            self.bus.publish("app_terminated_event", now, appId=app_id)
            return deployment.id

    def kill_tasks(self, app_id: str, task_ids: Sequence[str] | None = None,
                   host: str | None = None, scale: bool = False) -> list[Task]:
        """Kill some (or all) of an app's tasks. With ``scale`` the app's instances drop by the
        number killed, so they are not replaced. Unknown task ids raise :class:`NotFound`."""
        with self._lock:
            spec = self.app(app_id)
            tasks = self.tasks(app_id)
            if task_ids is not None:
                by_id = {t.id: t for t in tasks}
                missing = [i for i in task_ids if i not in by_id]
                if missing:
                    raise NotFound(f"Task '{missing[0]}' does not exist")
                tasks = [by_id[i] for i in task_ids]
            if host is not None:
                tasks = [t for t in tasks if t.host == host]
            tasks = [t for t in tasks if t.kill_requested_at is None]
            now = self.clock.now()
            if scale and tasks:
                self.update_app(spec.model_copy(
                    update={"instances": max(0, spec.instances - len(tasks))}), force=True)
            return [self._kill(t, "killed by request", now) for t in tasks]

    def reset_delay(self, app_id: str) -> None:
        with self._lock:
            self.app(app_id)
            self.store.put_meta(_meta_key("backoff", app_id), None)

    # ------------------------------------------------------------------ deployments

    def deployments(self) -> list[Deployment]:
        with self._lock:
            return sorted(self._deployments.values(), key=lambda d: (d.version, d.id))

    def deployments_of(self, app_id: str) -> list[Deployment]:
        return [d for d in self.deployments() if app_id in d.affected_apps]

    def _check_lock(self, app_id: str, force: bool) -> set[str]:
        """The deployments locking ``app_id``; raise :class:`Conflict` unless ``force``."""
        locking = {d.id for d in self._deployments.values() if app_id in d.affected_apps}
        if locking and not force:
            raise Conflict(
                "App is locked by one or more deployments. Override with the option "
                "'?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
                sorted(locking),
            )
        return locking

    def _new_deployment(self, old: AppSpec | None, new: AppSpec | None, scaling_only: bool,
                        restart: bool, now: datetime) -> Deployment:
        spec = new or old
        assert spec is not None
        timeout = spec.upgradeStrategy.timeout_seconds
        return Deployment(
            id=str(uuid.uuid4()), version=(new.version if new else None) or iso(now),
            started_at=now, steps=steps_for_change(old, new, scaling_only, restart),
            original={spec.id: old.version if old else None},
            target={spec.id: new.version if new else None},
            timeout_at=now + timedelta(seconds=timeout),
            auto_rollback=bool(spec.upgradeStrategy.autoRollback),
        )

    def _save_deployments(self, deployments: dict[str, Deployment]) -> None:
        """Persist the active deployments (call inside the transaction that changes apps)."""
        self.store.put_meta("deployments", [d.to_json() for d in deployments.values()])
        self._deployments = dict(deployments)

    def _deployment_started(self, d: Deployment, now: datetime) -> None:
        self.bus.publish("deployment_info", now, plan=self._plan_json(d),
                         currentStep={"actions": d.to_marathon()["currentActions"]})
        self.wake()

    def _plan_json(self, d: Deployment) -> dict[str, Any]:
        m = d.to_marathon()
        return {"id": d.id, "version": d.version, "steps": m["steps"],
                "original": {"apps": [{"id": a, "version": v} for a, v in d.original.items()]},
                "target": {"apps": [{"id": a, "version": v} for a, v in d.target.items()
                                    if v is not None]}}

    def cancel_deployment(self, deployment_id: str, force: bool = False) -> Deployment | None:
        """Cancel a deployment. With ``force`` it just stops (apps stay as they are now);
        otherwise a rollback deployment restores every affected app's previous version (an
        app the deployment created is deleted). Returns the rollback deployment, if any."""
        with self._lock:
            d = self._deployments.get(deployment_id)
            if d is None:
                raise NotFound(f"Deployment '{deployment_id}' does not exist")
            now = self.clock.now()
            with self.store.atomic():
                self._save_deployments({k: v for k, v in self._deployments.items()
                                        if k != deployment_id})
            self.bus.publish("deployment_failed", now, id=d.id, plan=self._plan_json(d),
                             reason="cancelled")
            if force:
                return None
            return self._rollback(d)

    def _rollback(self, d: Deployment) -> Deployment | None:
        last: Deployment | None = None
        for app_id, version in d.original.items():
            current = self._apps().get(app_id)
            if version is None:
                if current is not None:
                    dep_id = self.delete_app(app_id, force=True)
                    last = self._deployments[dep_id]
                continue
            previous = self.store.get_app_version(app_id, version)
            if previous is None:
                continue
            _, dep_id, _ = self.update_app(previous.model_copy(update={"version": None}),
                                           force=True)
            last = self._deployments[dep_id]
        return last

    def _progress_deployments(self, now: datetime, health: dict[str, bool | None]) -> None:
        """Finish converged deployments; fail (and maybe roll back) timed-out ones."""
        if not self._deployments:
            return
        tasks_by_app: dict[str, list[Task]] = {}
        for t in self.store.list_tasks():
            tasks_by_app.setdefault(t.app_id, []).append(t)
        done: list[Deployment] = []
        failed: list[Deployment] = []
        for d in list(self._deployments.values()):
            converged = True
            for app_id in d.affected_apps:
                spec = self._apps().get(app_id)
                if (spec.version if spec else None) != d.target.get(app_id, None) and \
                        app_id in d.target:
                    # The app moved on (e.g. a forced update): this deployment is superseded.
                    continue
                cfg = (self.version_info(app_id).get("lastConfigChangeAt") or
                       (spec.version if spec else "") or "")
                if not app_converged(spec, cfg, tasks_by_app.get(app_id, []), health,
                                     self._ready):
                    converged = False
            if converged:
                done.append(d)
            elif d.timeout_at is not None and now >= d.timeout_at:
                failed.append(d)
        if not done and not failed:
            return
        finished = {d.id for d in done + failed}
        with self.store.atomic():
            self._save_deployments({k: v for k, v in self._deployments.items()
                                    if k not in finished})
        for d in done:
            for i, step in enumerate(d.steps):
                self.bus.publish("deployment_step_success", now, plan=self._plan_json(d),
                                 currentStep={"actions": [{"action": a.value, "app": app}
                                                          for a, app in step]}, step=i + 1)
            self.bus.publish("deployment_success", now, id=d.id, plan=self._plan_json(d))
        for d in failed:
            self.bus.publish("deployment_step_failure", now, plan=self._plan_json(d),
                             currentStep={"actions": d.to_marathon()["currentActions"]})
            self.bus.publish("deployment_failed", now, id=d.id, plan=self._plan_json(d),
                             reason="timed out")
            if d.auto_rollback:
                self._rollback(d)

    # ------------------------------------------------------------------ jobs

    def job(self, name: str) -> JobSpec:
        job = self.store.get_job(name)
        if job is None:
            raise NotFound(f"Job '{name}' does not exist")
        return job

    def list_jobs(self) -> list[JobSpec]:
        return self.store.list_jobs()

    def job_runs(self, name: str | None = None, limit: int | None = None) -> list[JobRun]:
        return self.store.list_runs(job=name, limit=limit)

    def put_job(self, job: JobSpec) -> JobSpec:
        """Create or replace a job. Unknown parents and cycles raise
        :class:`dag.DependencyError`; nothing is stored then.

        Occurrences before a new (or rescheduled) job existed are not missed runs: the job
        starts with its latest occurrence strictly before now as already handled.
        """
        with self._lock:
            now = self.clock.now()
            # The runner's cached jobs (kept in sync by forget), not a re-read and
            # re-validation of every stored job on each write.
            existing = self.jobs.jobs()
            dag.validate_job(job, existing)
            old = existing.get(job.name)
            with self.store.atomic():
                self.store.put_job(job)
                if job.schedule and (old is None or old.schedule != job.schedule
                                     or old.scheduleTimeZone != job.scheduleTimeZone):
                    # schedule_of re-parses on its own when the text or zone changed.
                    schedule = self.jobs.schedule_of(job)
                    assert schedule is not None
                    _, before = latest_at_or_before(schedule, now - timedelta(microseconds=1))
                    self.store.put_meta(f"job:{job.name}:last", iso(before) if before else None)
            self.jobs.forget(job.name)
            self.wake()
            return job

    def delete_job(self, name: str) -> None:
        """Delete a job, kill its runs, and hand its children its parents."""
        with self._lock:
            self.job(name)
            now = self.clock.now()
            self.jobs.kill(name, now)
            updated = dag.remove_job(self.jobs.jobs(), name)
            with self.store.atomic():
                for child in updated.values():
                    self.store.put_job(child)
                self.store.delete_job(name)
                for kind in ("last", "edges", "counters"):
                    self.store.put_meta(f"job:{name}:{kind}", None)
            for changed in [name, *updated]:
                self.jobs.forget(changed)

    def run_job(self, name: str) -> JobRun:
        """A manual run, now (Chronos's ``PUT /scheduler/job/{name}``)."""
        with self._lock:
            run = self.jobs.run_now(self.job(name), self.clock.now())
            self.wake()
            return run

    def mark_job_success(self, name: str) -> list[str]:
        """Record a success without running; dependents fire. Returns triggered children."""
        with self._lock:
            job = self.job(name)
            now = self.clock.now()
            jobs = self.jobs.jobs()
            with self.store.atomic():
                c = self.jobs.counters(name)
                c["successCount"] = int(c.get("successCount", 0)) + 1
                c["lastSuccess"] = iso(now)
                c["errorsSinceLastSuccess"] = 0
                self.store.put_meta(f"job:{job.name}:counters", c)
                ready = self.jobs.parent_finished(name, True, now, jobs)
            self.wake()
            return ready

    def kill_job(self, name: str) -> list[JobRun]:
        with self._lock:
            self.job(name)
            return self.jobs.kill(name, self.clock.now())

    # ------------------------------------------------------------------ the loop

    def _spec_at(self, app_id: str, version: str) -> AppSpec | None:
        key = (app_id, version)
        if key not in self._spec_cache:
            self._spec_cache[key] = self.store.get_app_version(app_id, version)
        return self._spec_cache[key]

    def _kill(self, task: Task, reason: str, now: datetime) -> Task:
        spec = self._spec_at(task.app_id, task.version)
        grace = spec.kill_grace_seconds if spec else 3.0
        killing = task.with_(state=TaskState.KILLING, kill_requested_at=now, message=reason)
        self.store.put_task(killing)
        if self.balancer is not None:
            # Drain: no new connections now; the kill itself waits (in _reissue_kills) until
            # open connections finish or DRAIN_SECONDS pass, so steady clients see no error.
            self.balancer.stop_routing([task.id])
            if self.balancer.active_connections(task.id):
                self._draining.add(task.id)
                self._status_event(killing, now)
                return killing
        try:
            self.runtime.kill(task, grace)
            self._kills_issued.add(task.id)
        except RuntimeUnavailable as e:
            self._mark_unavailable(e)
        self._status_event(killing, now)
        return killing

    def _status_event(self, task: Task, now: datetime) -> None:
        self.bus.publish(
            "status_update_event", now,
            slaveId=task.host, taskId=task.id, taskStatus=task.state.value,
            message=task.message, appId=task.app_id, host=task.host,
            ipAddresses=[{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
            ports=list(task.ports), version=task.version,
        )

    def _mark_unavailable(self, e: Exception) -> None:
        if self.runtime_available:
            log.warning("runtime %s unavailable: %s", self.runtime.name, e)
        self.runtime_available = False
        self.runtime_error = str(e)

    def run_once(self, now: datetime) -> PassReport:
        """One idempotent pass: observe, health, reconcile every app, apply.

        Safe to repeat and safe after a crash: a task written as STAGING whose launch may
        not have happened is launched again under the same id (runtimes make that a no-op
        when it did happen).
        """
        with self._lock:
            report = PassReport()
            try:
                self._observe(now, report)
            except RuntimeUnavailable as e:
                self._mark_unavailable(e)
                return report
            self.runtime_available = True
            self.runtime_error = None
            self._reissue_kills(now)
            health, unhealthy = self._health_pass(now)
            placer = self._placer()
            try:
                # Jobs first: a run due now should not wait behind app launches.
                self.jobs.run_once(now, placer)
            except RuntimeUnavailable as e:
                self._mark_unavailable(e)
                return report
            self._reconcile_all(now, health, unhealthy, report, placer)
            self._progress_deployments(now, health)
            if self.balancer is not None:
                self.balancer.sync(routes_from(self._apps().values(), self.store.list_tasks(),
                                               health, self._ready,
                                               host_of=self.runtime.probe_host))
            if self.health is not None:
                self.store.put_meta("health", self.health.export_state())
            return report

    def _observe(self, now: datetime, report: PassReport) -> None:
        tasks = [t for t in self.store.list_tasks() if not t.state.terminal]
        unlaunched = [t for t in tasks if not t.handle]
        for t in unlaunched:
            # Written as STAGING before a launch that may not have completed (crash).
            spec = self._spec_at(t.app_id, t.version)
            if spec is None or t.kill_requested_at is not None:
                self.store.delete_task(t.id)
                continue
            self._launch(spec, t, now)
        tasks = [t for t in self.store.list_tasks() if not t.state.terminal and t.handle]
        for t, obs in zip(tasks, self.runtime.observe(tasks), strict=True):
            if obs.state == t.state or (
                t.state is TaskState.KILLING and not obs.state.terminal
            ):
                continue
            updated = t.with_(
                state=obs.state,
                exit_code=obs.exit_code,
                message=obs.message or t.message,
                started_at=t.started_at or obs.started_at or
                (now if obs.state is TaskState.RUNNING else None),
                finished_at=now if obs.state.terminal else None,
            )
            self._status_event(updated, now)
            if obs.state.terminal:
                self._task_ended(updated, now)
                report.finished.append(t.id)
            else:
                self.store.put_task(updated)

    def _task_ended(self, task: Task, now: datetime) -> None:
        """Record why a task ended (backoff, lastTaskFailure) and expunge it."""
        with self.store.atomic():
            if task.state in (TaskState.FAILED, TaskState.FINISHED, TaskState.LOST) and (
                task.kill_requested_at is None
            ):
                info = self.version_info(task.app_id)
                cfg = info.get("lastConfigChangeAt")
                bo = self.backoff(task.app_id).after_failure(now, cfg)
                self.store.put_meta(_meta_key("backoff", task.app_id), bo.to_json())
            if task.state in (TaskState.FAILED, TaskState.LOST) and (
                task.app_id in self._apps()
            ):
                self.store.put_meta(_meta_key("lastTaskFailure", task.app_id), {
                    "appId": task.app_id, "host": task.host, "message": task.message,
                    "state": task.state.value, "taskId": task.id, "timestamp": iso(now),
                    "version": task.version, "slaveId": task.host,
                })
            self.store.delete_task(task.id)
        self._kills_issued.discard(task.id)

    def _reissue_kills(self, now: datetime) -> None:
        # After a restart the runtime has forgotten the kills we asked for: ask again with
        # what is left of the grace period.
        for t in self.store.list_tasks():
            if t.kill_requested_at is None or t.state.terminal or t.id in self._kills_issued:
                continue
            waited = (now - t.kill_requested_at).total_seconds()
            if (self.balancer is not None and waited < DRAIN_SECONDS
                    and self.balancer.active_connections(t.id)):
                continue  # still draining
            spec = self._spec_at(t.app_id, t.version)
            grace = spec.kill_grace_seconds if spec else 3.0
            # A kill deferred for draining gets its whole grace period from now.
            left = grace if t.id in self._draining else max(0.0, grace - waited)
            self._draining.discard(t.id)
            self.runtime.kill(t, left)
            self._kills_issued.add(t.id)

    def _health_pass(self, now: datetime) -> tuple[dict[str, bool | None], dict[str, str]]:
        health: dict[str, bool | None] = {}
        unhealthy: dict[str, str] = {}
        if self.health is None:
            return health, unhealthy
        targets: list[tuple[Task, Sequence[HealthCheck]]] = []
        n_health: dict[str, int] = {}
        for t in self.store.list_tasks():
            if t.state is not TaskState.RUNNING or t.kill_requested_at is not None:
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
        """A Placer over every node and everything that holds resources: app tasks and
        running job runs. One per pass, shared by apps and jobs."""
        placed = []
        for t in self.store.list_tasks():
            if t.state.terminal:
                continue
            spec = self._spec_at(t.app_id, t.version)
            res = spec.resources if spec else Resources()
            placed.append(PlacedTask(t.app_id, t.host, res, t.ports))
        jobs = self.jobs.jobs()
        for r in self.store.list_runs(statuses=frozenset({RunStatus.RUNNING})):
            job = jobs.get(r.job)
            if job is not None and r.host:
                placed.append(PlacedTask(job_request(job).app_id, r.host, job.resources))
        return Placer(ClusterSnapshot(tuple(self.runtime.nodes()), tuple(placed)),
                      self.strategy)

    def _reconcile_all(self, now: datetime, health: dict[str, bool | None],
                       unhealthy: dict[str, str], report: PassReport, placer: Placer) -> None:
        apps = dict(self._apps())
        tasks = [t for t in self.store.list_tasks() if not t.state.terminal]
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
                self._launch(spec, task, now)
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

    def _launch(self, spec: AppSpec, task: Task, now: datetime) -> None:
        # Persist intent before acting: a crash after this line re-launches the same id.
        self.store.put_task(task)
        self._status_event(task, now)
        try:
            handle = self.runtime.launch(launch_spec(spec, task))
        except RuntimeUnavailable as e:
            self._mark_unavailable(e)
            return
        except (ValueError, OSError) as e:
            failed = task.with_(state=TaskState.FAILED, message=f"launch failed: {e}")
            self._status_event(failed, now)
            self._task_ended(failed, now)
            return
        started = task.with_(state=TaskState.STARTING, handle=dict(handle))
        self.store.put_task(started)
        self._status_event(started, now)

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


def _without(spec: AppSpec) -> dict[str, Any]:
    """The parts of a definition that make a *configuration*: everything but scale, version
    and dependencies (which only order starts and stops; changing them restarts nothing)."""
    return spec.model_dump(mode="json", exclude={"instances", "version", "dependencies"})
