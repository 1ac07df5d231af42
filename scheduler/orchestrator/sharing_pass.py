"""Issue 15 in the control loop: priorities, preemption and quotas for what the pass could not
place, through the pure :func:`scheduler.sharing.plan.decide`.

Where it sits (``loop.py``, the placement step): after the due jobs fired and before the
ordinary placement of job runs and app tasks. Its input is what the *previous* pass could not
place (app queue entries with a rejection, queued runs told "waiting: ...") and every live
task; it carries out the plan through the one applier:

- ``Preempt``: the victim is marked (store meta ``sharing:preempted:<task id>``, read back by
  the job book so a preempted run is re-queued without spending a retry) and killed with the
  victim's own grace; a ``task_preempted`` event on the Dromos stream names preemptor, victim
  and reason. A preempted app instance is simply missing afterwards, so the reconciler
  re-queues it; no backoff applies (the kill was ours).
- ``Launch``: the task is written STAGING and launched like any other, with the plan's extra
  environment (gang variables, ``CUDA_VISIBLE_DEVICES``).
- ``Wait``: kept per request for ``/dromos/sharing`` and the status page; a queued run's
  message says it too.

A request a preemption was issued for is *nominated*: while its victims are in their grace
period nothing else takes the room (they still hold it), and on the pass after they exit this
step runs before the ordinary placement, so the preemptor is placed first.

Why not all placement: the ordinary path keeps Marathon's and Chronos's own order for
everything that fits; sharing decides only under contention (see the README's limits).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from scheduler.events import DROMOS
from scheduler.model.app import AppSpec
from scheduler.model.job import JobRun, JobSpec, RunStatus
from scheduler.model.priority import (
    GANG_LABEL,
    app_priority,
    gang_size_for,
    job_priority,
    team_of_app,
)
from scheduler.model.quota import TeamQuota, parse_quota
from scheduler.model.resources import Resources
from scheduler.model.task import Task, TaskState, new_task_id
from scheduler.model.timefmt import iso
from scheduler.orchestrator.backfill import BackfillCommands
from scheduler.orchestrator.core import PassReport
from scheduler.orchestrator.jobs import job_request
from scheduler.orchestrator.quota_placer import QuotaPlacer
from scheduler.placement.pipeline import Placer
from scheduler.placement.results import ClusterSnapshot, PlacementRequest
from scheduler.runtimes.base import LaunchSpec, launch_spec
from scheduler.sharing.plan import decide
from scheduler.sharing.quota import usage_by_team
from scheduler.sharing.types import Launch, PendingRequest, Preempt, RunningTask, Wait

QUOTAS_META = "sharing:quotas"
"""Store meta key: every team's quota, ``{team: TeamQuota.to_json()}``."""

PREEMPTION_LOG = 100
"""How many recent preemptions the API and status page keep (the event stream has them all)."""


def preempted_key(task_id: str) -> str:
    """Store meta key marking ``task_id`` as killed by a preemption (value: who and why)."""
    return f"sharing:preempted:{task_id}"


def launch_key(task_id: str) -> str:
    """Store meta key: what the sharing step added to ``task_id``'s launch, ``{"env": {...},
    "gpus": [device indices]}`` (the devices it owns; the env a re-launch after a crash
    must repeat)."""
    return f"sharing:launch:{task_id}"


def _gang_size(spec: AppSpec) -> int:
    return gang_size_for(spec.labels, spec.instances) if GANG_LABEL in spec.labels else 1


def _held_reason(gpus: float, gang: int) -> str | None:
    """Why the ordinary path leaves a request to the sharing step, if it does."""
    if gang > 1:
        return f"a gang of {gang}, placed all or none by the sharing step"
    if gpus > 0:
        return "GPU devices are assigned by the sharing step"
    return None


def _app_request_id(app_id: str, i: int) -> str:
    return f"app:{app_id}#{i}"


class SharingPass(BackfillCommands):
    """The sharing step of a pass, and the quota commands and sharing queries the API reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sharing_waits: dict[str, Wait] = {}
        self._preemptions: deque[dict[str, Any]] = deque(maxlen=PREEMPTION_LOG)
        self._marked: set[str] = set()  # app tasks with a preemption mark in the store

    # ------------------------------------------------------------------ quotas

    def quotas(self) -> dict[str, TeamQuota]:
        """Stored quotas by team."""
        raw: Mapping[str, Any] = self.store.get_meta(QUOTAS_META) or {}
        return {team: parse_quota(doc) for team, doc in raw.items()}

    def put_quota(self, quota: TeamQuota) -> None:
        """Create or replace ``quota.team``'s quota (validated by the caller's parse)."""
        with self._lock:
            raw = dict(self.store.get_meta(QUOTAS_META) or {})
            raw[quota.team] = quota.to_json()
            self.store.put_meta(QUOTAS_META, raw)
        self.wake()

    def delete_quota(self, team: str) -> bool:
        """Remove ``team``'s quota; ``False`` when it had none."""
        with self._lock:
            raw = dict(self.store.get_meta(QUOTAS_META) or {})
            if raw.pop(team, None) is None:
                return False
            self.store.put_meta(QUOTAS_META, raw or None)
        self.wake()
        return True

    # ------------------------------------------------------------------ queries

    def sharing_waits(self) -> dict[str, Wait]:
        """Why each request the last sharing step saw still waits, by request id."""
        with self._lock:
            return dict(self._sharing_waits)

    def preemptions(self) -> list[dict[str, Any]]:
        """The most recent preemptions, newest last (the ``task_preempted`` events' bodies)."""
        with self._lock:
            return list(self._preemptions)

    def team_usage(self) -> dict[str, dict[str, Any]]:
        """Per team with a quota or a live task: usage, guarantee and the part borrowed."""
        with self._lock:
            running = self._running_for_sharing()
            quotas = self.quotas()
        usage = usage_by_team(running)
        out: dict[str, dict[str, Any]] = {}
        for team in sorted(set(usage) | set(quotas)):
            used = usage.get(team, Resources())
            q = quotas.get(team)
            g = q.guaranteed if q else Resources()
            borrowed = Resources(max(0.0, used.cpus - g.cpus), max(0.0, used.mem - g.mem),
                                 0.0, max(0.0, used.gpus - g.gpus))
            out[team] = {"used": _amounts(used), "guaranteed": _amounts(g),
                         "borrowed": _amounts(borrowed),
                         "borrowingLimit": _amounts(q.borrowing_limit)
                         if q and q.borrowing_limit else None}
        return out

    # ------------------------------------------------------------------ the step

    def _sharing_pass(self, now: datetime, report: PassReport) -> bool:
        """Decide and apply (see the module docstring). Returns whether anything was launched
        or killed, i.e. whether the caller's placer is stale."""
        self._backfill_pass(now)  # backfill runs join the queue like scheduled ones
        apps = self._apps()
        jobs = self.jobs.jobs()
        if self._marked:  # an ended app victim's mark is no longer needed
            live = {t.id for t in self.store.list_tasks() if not t.state.terminal}
            for gone in self._marked - live:
                self.store.put_meta(preempted_key(gone), None)
                self.store.put_meta(launch_key(gone), None)
            self._marked &= live
        pending, app_of, run_of = self._pending_for_sharing(now, apps, jobs)
        if not pending:
            self._sharing_waits = {}
            return False
        running = self._running_for_sharing()
        plan = decide(pending, self.nodes(), running, self.quotas(), now)
        changed = False
        for p in plan.preemptions:
            changed |= self._apply_preempt(p, now, report)
        by_request: dict[str, list[Launch]] = {}
        for launch in plan.launches:
            by_request.setdefault(launch.request_id, []).append(launch)
        for request_id, launches in by_request.items():
            staged: list[tuple[LaunchSpec, Task, Launch]] = []
            for launch in launches:
                if request_id in run_of:
                    run, job = run_of[request_id]
                    task = self.jobs.attempt_task(run, launch.host, now)
                    staged.append((launch_spec(job, task, run), task, launch))
                else:
                    spec = apps[app_of[request_id]]
                    task = Task(id=new_task_id(spec.id), app_id=spec.id, host=launch.host,
                                version=spec.version or "", state=TaskState.STAGING,
                                staged_at=now, ports=launch.ports)
                    staged.append((launch_spec(spec, task), task, launch))
            # MASTER_ADDR as the runtime reaches rank 0 (a node name may not resolve).
            master = self.runtime.probe_host(staged[0][1]) if len(staged) > 1 else None
            with self.store.atomic():  # a gang's members are written, then launched, together
                for i, (lspec, task, launch) in enumerate(staged):
                    env = dict(launch.env)
                    if master is not None and "MASTER_ADDR" in env:
                        env["MASTER_ADDR"] = master
                    staged[i] = (replace(lspec, env={**lspec.env, **env},
                                         gpu_devices=launch.gpu_devices), task, launch)
                    self.store.put_task(task)
                    if env or launch.gpu_devices:
                        self.store.put_meta(launch_key(task.id), {
                            "env": env, "gpus": list(launch.gpu_devices)})
                        self._marked.add(task.id)
            for lspec, task, _ in staged:
                self._launch(lspec, task, now)
                report.launched.append(task.id)
                changed = True
        self._sharing_waits = {w.request_id: w for w in plan.waits}
        for w in plan.waits:
            if w.request_id in run_of:
                run, _ = run_of[w.request_id]
                message = f"waiting: {w.reason}"
                if run.message != message:
                    self.store.put_run(run.with_(message=message))
        return changed

    def _launch(self, spec: LaunchSpec, task: Task, now: datetime) -> None:
        """Every launch, the applier's re-launch of a task written before a crash included:
        a gang member or GPU task gets back what the sharing step gave it (gang env,
        devices), which its definition alone does not hold."""
        if (spec.resources.gpus > 0 or GANG_LABEL in spec.labels) and not spec.gpu_devices \
                and "RANK" not in spec.env:
            saved = self.store.get_meta(launch_key(task.id))
            if isinstance(saved, dict):
                spec = replace(spec, env={**spec.env, **saved.get("env", {})},
                               gpu_devices=tuple(int(d) for d in saved.get("gpus", ())))
                self._marked.add(task.id)
        super()._launch(spec, task, now)

    def _apply_preempt(self, p: Preempt, now: datetime, report: PassReport) -> bool:
        task = self.store.get_task(p.victim.task_id)
        if task is None or task.state.terminal or task.kill_requested_at is not None:
            return False
        body = {
            "preemptor": self._request_owner(p.preemptor), "preemptorRequest": p.preemptor,
            "preemptorPriority": p.preemptor_priority, "taskId": task.id,
            "victim": task.job if task.job is not None else task.app_id,
            "victimKind": "job" if task.job is not None else "app", "victimTeam": p.victim.team,
            "victimPriority": p.victim.priority, "kind": p.victim.kind.value,
            "host": task.host, "graceSeconds": p.victim.grace_seconds,
            "reason": p.detail, "timestamp": iso(now),
        }
        with self.store.atomic():
            self.store.put_meta(preempted_key(task.id), body)
            self._kill(task, f"preempted: {p.detail}", now, grace=p.victim.grace_seconds)
        report.killed.append(task.id)
        if task.job is None:
            self._marked.add(task.id)
        self._preemptions.append(body)
        self.bus.publish("task_preempted", now, stream=DROMOS, **body)
        return True

    def _restart_broken_gang(self, spec: AppSpec, now: datetime) -> bool:
        """A gang app missing members while others live: the gang is broken (a member
        failed or was preempted), so the live members are killed and the whole gang is
        placed again. Returns whether members are still alive or being killed."""
        members = [t for t in self.store.list_tasks(spec.id)
                   if not t.state.terminal and t.job is None]
        for t in members:
            if t.kill_requested_at is None:
                self._kill(t, "gang member lost: the whole gang restarts", now)
        return bool(members)

    def _request_owner(self, request_id: str) -> str:
        """The app id or job name a pending request belongs to (for people)."""
        if request_id.startswith("app:"):
            return request_id[4:].rsplit("#", 1)[0]
        run = self.store.get_run(request_id)
        return run.job if run is not None else request_id

    def _quota_placer(self, placer: Placer) -> Placer:
        """The pass's placer for the ordinary path: ``placer`` itself when no team has a
        borrowing limit (nothing to refuse), else a :class:`QuotaPlacer` over the same
        cluster that refuses tasks above their team's ceiling."""
        quotas = self.quotas()
        held = {app_id: why for app_id, spec in self._apps().items()
                if (why := _held_reason(spec.resources.gpus, _gang_size(spec))) is not None}
        held.update({f"job:{name}": why for name, job in self.jobs.jobs().items()
                     if (why := _held_reason(job.gpus or 0.0, 1)) is not None})
        if not held and not any(q.borrowing_limit is not None for q in quotas.values()):
            return placer
        running = self._running_for_sharing()
        snapshot = ClusterSnapshot(tuple(self.nodes()), tuple(t.placed() for t in running))
        return QuotaPlacer(snapshot, self.strategy, quotas=quotas,
                           usage=usage_by_team(running), team_of=self._team_of_group,
                           held=held.get)

    def _team_of_group(self, group: str) -> str:
        """The team of a placement group: an app's top-level group, or a job's ``team``."""
        if group.startswith("job:"):
            job = self.jobs.jobs().get(group[4:])
            return (job.team or job.name) if job is not None else group[4:]
        return team_of_app(group)

    # ------------------------------------------------------------------ inputs

    def _running_for_sharing(self) -> list[RunningTask]:
        jobs = self.jobs.jobs()
        gangs = {a: _gang_size(spec) > 1 for a, spec in self._apps().items()}
        out: list[RunningTask] = []
        for t in self.store.list_tasks():
            if t.state.terminal:
                continue
            if t.job is not None:
                job = jobs.get(t.job)
                res = job.resources if job else Resources()
                team = (job.team or job.name) if job else t.job
                prio = job_priority(job.priority) if job else 0
            else:
                spec = self._spec_at(t.app_id, t.version)
                res = spec.resources if spec else Resources()
                team = team_of_app(t.app_id)
                prio = app_priority(spec.labels) if spec else 0
            devices: tuple[int, ...] = ()
            if res.gpus > 0:
                saved = self.store.get_meta(launch_key(t.id))
                if isinstance(saved, dict):
                    devices = tuple(int(d) for d in saved.get("gpus", ()))
                    self._marked.add(t.id)  # (after a restart) cleaned once it ends
            mark = self.store.get_meta(preempted_key(t.id)) if t.kill_requested_at else None
            preemptor = mark.get("preemptorRequest") if isinstance(mark, dict) else None
            out.append(RunningTask(
                id=t.id, owner=t.app_id, team=team, host=t.host, resources=res,
                priority=prio, started_at=t.started_at or t.staged_at,
                grace_seconds=self._grace(t), ports=t.ports, gpu_devices=devices,
                gang=f"{t.app_id}@{t.version}" if t.job is None and gangs.get(t.app_id)
                else None,
                killing=t.kill_requested_at is not None,
                preempted_for=str(preemptor) if preemptor else None))
        return out

    def _pending_for_sharing(
        self, now: datetime, apps: Mapping[str, AppSpec], jobs: Mapping[str, JobSpec],
    ) -> tuple[list[PendingRequest], dict[str, str], dict[str, tuple[JobRun, JobSpec]]]:
        """What the last pass could not place: app instances and queued runs."""
        pending: list[PendingRequest] = []
        app_of: dict[str, str] = {}
        run_of: dict[str, tuple[JobRun, JobSpec]] = {}
        for app_id, q in sorted(self._queue.items()):
            spec = apps.get(app_id)
            if spec is None:
                continue
            size = _gang_size(spec)
            # A broken gang restarts at once, backoff or not: its members are useless alone.
            if size > 1 and self._restart_broken_gang(spec, now):
                continue
            if q.rejection is None or (q.delayed_until is not None and q.delayed_until > now):
                continue
            # Never more than the app still misses (it may have been scaled since).
            live = sum(1 for t in self.store.list_tasks(app_id)
                       if not t.state.terminal and t.kill_requested_at is None)
            count = min(q.count, max(0, spec.instances - live))
            request = PlacementRequest.for_app(spec)
            if size > 1:
                for i in range(count // size):  # whole gangs only
                    rid = f"app:{app_id}#gang{i}"
                    app_of[rid] = app_id
                    pending.append(PendingRequest(rid, request, team_of_app(app_id),
                                                  app_priority(spec.labels), q.since,
                                                  gang_size=size))
                continue
            for i in range(count):
                rid = _app_request_id(app_id, i)
                app_of[rid] = app_id
                pending.append(PendingRequest(rid, request, team_of_app(app_id),
                                              app_priority(spec.labels), q.since))
        staged = {t.id for t in self.store.list_tasks() if t.job is not None}
        for run in self.store.list_runs(statuses=frozenset({RunStatus.QUEUED})):
            job = jobs.get(run.job)
            if job is None or not run.message.startswith("waiting: ") or run.handle \
                    or run.kill_requested_at is not None or (run.task_id or run.id) in staged \
                    or (run.not_before is not None and run.not_before > now):
                continue
            run_of[run.id] = (run, job)
            pending.append(PendingRequest(run.id, job_request(job), job.team or job.name,
                                          job_priority(job.priority), run.created_at))
        return pending, app_of, run_of


def _amounts(r: Resources) -> dict[str, float]:
    return {"cpus": r.cpus, "mem": r.mem, "gpus": r.gpus}
