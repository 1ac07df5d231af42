"""Tasks: the *observed* side of a service instance or of one attempt of a job run."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from scheduler.model.app import task_id_prefix
from scheduler.model.job import JobRun, attempt_task_id
from scheduler.model.timefmt import iso, parse_iso


class TaskState(StrEnum):
    """Marathon/Mesos task states. Health and readiness are separate results, not states."""

    STAGING = "TASK_STAGING"
    STARTING = "TASK_STARTING"
    RUNNING = "TASK_RUNNING"
    FINISHED = "TASK_FINISHED"
    FAILED = "TASK_FAILED"
    KILLING = "TASK_KILLING"
    KILLED = "TASK_KILLED"
    LOST = "TASK_LOST"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def active(self) -> bool:
        """Counts toward the app's instances (not terminal, not being killed)."""
        return self in (TaskState.STAGING, TaskState.STARTING, TaskState.RUNNING)


_TERMINAL = {TaskState.FINISHED, TaskState.FAILED, TaskState.KILLED, TaskState.LOST}


def new_task_id(app_id: str) -> str:
    """Marathon's classic task id: ``prod_web.<uuid4>``."""
    return f"{task_id_prefix(app_id)}.{uuid.uuid4()}"


@dataclass(frozen=True)
class Task:
    """One placed instance of an app, or one attempt of a job run.

    ``handle`` is the runtime's own reference (``{"pid": .., "start_time": ..}`` for local
    processes, a container id, a pod name); empty until the runtime has launched it.
    ``exit_code`` is ``None`` while running or when the runtime could not learn it.
    ``kill_requested_at`` marks a kill Dromos asked for, so an exit is reported as KILLED.
    A job run's attempt has ``job`` (the job's name), ``run_id`` and ``attempt`` set, and
    ``app_id`` ``job:<name>`` (its placement group); app tasks leave them unset.
    """

    id: str
    app_id: str
    host: str
    version: str
    state: TaskState
    staged_at: datetime
    ports: tuple[int, ...] = ()
    started_at: datetime | None = None
    handle: Mapping[str, Any] = field(default_factory=dict)
    exit_code: int | None = None
    message: str = ""
    kill_requested_at: datetime | None = None
    finished_at: datetime | None = None
    job: str | None = None
    run_id: str | None = None
    attempt: int = 0

    def with_(self, **changes: Any) -> Task:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """Serialisation for the store (not the API shape)."""
        return {
            "id": self.id,
            "app_id": self.app_id,
            "host": self.host,
            "version": self.version,
            "state": self.state.value,
            "staged_at": iso(self.staged_at),
            "ports": list(self.ports),
            "started_at": iso(self.started_at) if self.started_at else None,
            "handle": dict(self.handle),
            "exit_code": self.exit_code,
            "message": self.message,
            "kill_requested_at": iso(self.kill_requested_at) if self.kill_requested_at else None,
            "finished_at": iso(self.finished_at) if self.finished_at else None,
            **({"job": self.job, "run_id": self.run_id, "attempt": self.attempt}
               if self.job is not None else {}),
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> Task:
        def ts(key: str) -> datetime | None:
            v = d.get(key)
            return parse_iso(v) if v else None

        staged = ts("staged_at")
        assert staged is not None
        return Task(
            id=d["id"],
            app_id=d["app_id"],
            host=d["host"],
            version=d["version"],
            state=TaskState(d["state"]),
            staged_at=staged,
            ports=tuple(d.get("ports", ())),
            started_at=ts("started_at"),
            handle=dict(d.get("handle") or {}),
            exit_code=d.get("exit_code"),
            message=d.get("message", ""),
            kill_requested_at=ts("kill_requested_at"),
            finished_at=ts("finished_at"),
            job=d.get("job"),
            run_id=d.get("run_id"),
            attempt=int(d.get("attempt", 0)),
        )


def job_app_id(job: str) -> str:
    """The placement group of a job's runs: UNIQUE/MAX_PER count this job's runs only."""
    return f"job:{job}"


def task_of_run(run: JobRun, *, host: str | None = None, ports: tuple[int, ...] = (),
                state: TaskState = TaskState.RUNNING) -> Task:
    """The task of a run's current attempt, as known from the run alone (its id, host,
    handle and kill mark); ``host`` overrides the run's own."""
    return Task(
        id=run.task_id or attempt_task_id(run.id, run.attempt), app_id=job_app_id(run.job),
        host=host if host is not None else (run.host or ""), version="", state=state,
        staged_at=run.created_at, ports=ports, handle=dict(run.handle or {}),
        kill_requested_at=run.kill_requested_at, started_at=run.started_at,
        job=run.job, run_id=run.id, attempt=run.attempt,
    )
