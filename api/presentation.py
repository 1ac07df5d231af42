"""Presentation shared by the API modules: request accessors, Marathon's task and app JSON,
a job's status words and schedule text. API modules import these from here, never from each
other (each route module holds only its own routes and their private helpers)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request

from scheduler.batch.schedule_text import describe
from scheduler.model.app import AppSpec
from scheduler.model.job import JobRun, JobSpec, RunStatus
from scheduler.model.task import Task, TaskState
from scheduler.model.timefmt import iso
from scheduler.model.validation import SpecError
from scheduler.orchestrator import Orchestrator
from scheduler.queries import Queries
from scheduler.services.service_ports import service_ports

WEB_DIR = Path(__file__).parent / "web"
"""The status page's template, script and styles."""


def reads(o: Orchestrator) -> Queries:
    """The read-only front over ``o`` (a view holding no state of its own: cheap to make)."""
    return Queries(o)


def orch(request: Request) -> Orchestrator:
    o: Orchestrator = request.app.state.orchestrator
    return o


def qbool(value: str | None, default: bool = False) -> bool:
    """Marathon clients send true/True/false/False (and sometimes 1/0)."""
    if value is None or value == "":
        return default
    v = value.strip().lower()
    if v in ("true", "1", "yes"):
        return True
    if v in ("false", "0", "no"):
        return False
    raise SpecError("Invalid query parameter", [("", [f"{value!r} is not a boolean"])])


def task_json(o: Orchestrator, task: Task, spec: AppSpec | None) -> dict[str, Any]:
    results = o.health_results(task, spec) if spec else []
    return {
        "appId": task.app_id,
        "healthCheckResults": [r.to_json() for r in results],
        "host": task.host,
        "id": task.id,
        "ipAddresses": [{"ipAddress": reads(o).probe_host(task), "protocol": "IPv4"}],
        "ports": list(task.ports),
        "servicePorts": service_ports(spec) if spec else [],
        "slaveId": task.host,
        "stagedAt": iso(task.staged_at),
        "startedAt": iso(task.started_at) if task.started_at else None,
        "state": task.state.value,
        "version": task.version,
        "localVolumes": [],
    }


def counts_json(o: Orchestrator, spec: AppSpec, tasks: list[Task]) -> dict[str, int]:
    health = [o.is_healthy(t, spec) for t in tasks]
    return {
        "tasksStaged": sum(t.state in (TaskState.STAGING, TaskState.STARTING) for t in tasks),
        "tasksRunning": sum(t.state is TaskState.RUNNING for t in tasks),
        "tasksHealthy": sum(h is True for h in health),
        "tasksUnhealthy": sum(h is False for h in health),
    }


def app_json(o: Orchestrator, spec: AppSpec, embed: set[str],
             tasks: list[Task] | None = None) -> dict[str, Any]:
    """The app as Marathon shows it; ``embed`` (lowercase, prefix-free) adds sections."""
    out = o.marathon_json(spec)
    info = o.version_info(spec.id)
    out["versionInfo"] = {
        "lastScalingAt": info.get("lastScalingAt", spec.version),
        "lastConfigChangeAt": info.get("lastConfigChangeAt", spec.version),
    }
    tasks = tasks if tasks is not None else o.tasks(spec.id)
    if "counts" in embed or "tasks" in embed:
        out.update(counts_json(o, spec, tasks))
    if "deployments" in embed or "tasks" in embed:
        out["deployments"] = [{"id": d.id} for d in o.deployments_of(spec.id)]
    if "readiness" in embed:
        out["readinessCheckResults"] = []
    if "tasks" in embed:
        out["tasks"] = [task_json(o, t, spec) for t in tasks]
        if "healthsource" in embed:
            # Dromos-only, so only on request (embed=apps.healthSource): strict Marathon
            # clients reject unknown task fields.
            source = health_source(o, spec)
            for t in out["tasks"]:
                t["healthSource"] = source
    if "lasttaskfailure" in embed:
        ltf = o.last_task_failure(spec.id)
        if ltf:
            out["lastTaskFailure"] = ltf
    if "taskstats" in embed:
        out["taskStats"] = {}
    return out


def health_source(o: Orchestrator, spec: AppSpec) -> str | None:
    """Where the health of the app's tasks comes from: ``"dromos"`` (Dromos probes each task
    itself) or ``"kubernetes"`` (the pods' readiness, read from the API: the kubelet runs the
    checks); ``None`` when the app has no health checks."""
    if o.health is None or not spec.healthChecks:
        return None
    return o.health.source


def runtime_summary(o: Orchestrator) -> str:
    """``local (available)`` or ``docker (unavailable: <why>)``."""
    if o.runtime_available:
        return f"{reads(o).runtime_name} (available)"
    return f"{reads(o).runtime_name} (unavailable: {o.runtime_error or 'unknown'})"


def job_status(runs: list[JobRun]) -> tuple[str, str]:
    """(status idle/queued/running, state fresh/success/failure) from a job's runs."""
    status = "idle"
    if any(r.status is RunStatus.RUNNING for r in runs):
        status = "running"
    elif any(r.status is RunStatus.QUEUED for r in runs):
        status = "queued"
    state = "fresh"
    for r in runs:  # newest first
        if r.status is RunStatus.SUCCESS:
            state = "success"
            break
        if r.status in (RunStatus.FAILED, RunStatus.KILLED):
            state = "failure"
            break
    return status, state


def schedule_info(o: Orchestrator, job: JobSpec) -> dict[str, Any]:
    """For the status page: the schedule in words (``describe``), the next run (``next``, ISO
    in UTC or ``None``) and the IANA zone the schedule is read in (``zone``, ``None`` for a
    dependent job)."""
    q = reads(o)
    s = q.job_schedule(job)
    if s is None:
        return {"describe": "after " + ", ".join(job.parents or []), "next": None, "zone": None}
    nxt = q.job_next_fire(job, o.clock.now())
    return {"describe": describe(s), "next": iso(nxt) if nxt else None, "zone": s.tz}
