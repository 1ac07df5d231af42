"""The read-only front the HTTP API reads through.

:class:`Queries` answers what ``api`` shows that the orchestrator's own query methods do not:
stored records (ended tasks, job runs, old app versions), the job runner's counters and
schedule positions, and the runtime's name and addresses. ``api`` reads through this class
and changes state only through the orchestrator's command methods; it never reaches into the
orchestrator's store, job runner or runtime, so those can be rearranged behind this front.

Every method is a read: none changes state, none starts work on a runtime's backend (except
:attr:`runtime`, which the log routes use to read a task's output).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from scheduler.batch.schedule import Schedule, next_fire
from scheduler.model.app import AppSpec
from scheduler.model.job import JobRun, JobSpec, RunStatus
from scheduler.model.task import Task
from scheduler.orchestrator import Orchestrator
from scheduler.orchestrator.group_commands import INDEX_KEY as GROUP_INDEX_KEY
from scheduler.placement.results import RejectionSummary
from scheduler.runtimes.base import Runtime


class Queries:
    """Reads over one orchestrator (its store protocol, job runner and runtime)."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._o = orchestrator

    # ------------------------------------------------------------------ consistency

    def quiescent(self) -> AbstractContextManager[Any]:
        """A section in which no orchestrator change is half done: it holds the lock every
        command and control-loop pass holds, so it waits for a running pass. The API builds
        its cached fragments in one (an event is published inside the section whose write it
        reports, so a fragment built after the event sees the write); reads of cached
        fragments never enter one."""
        return self._o._lock

    # ------------------------------------------------------------------ runtime

    @property
    def runtime(self) -> Runtime:
        """The runtime, for reading task output (its logs and sandbox files)."""
        return self._o.runtime

    @property
    def runtime_name(self) -> str:
        return self._o.runtime.name

    def probe_host(self, task: Task) -> str:
        """The address a task is reached at (health checks, ``ipAddresses``)."""
        return self._o.runtime.probe_host(task)

    # ------------------------------------------------------------------ stored records

    def stored_app(self, app_id: str) -> AppSpec | None:
        """The stored definition of ``app_id``, ``None`` if there is none."""
        return self._o.store.get_app(app_id)

    def stored_app_version(self, app_id: str, version: str) -> AppSpec | None:
        """A stored version of an app's definition, ``None`` if unknown."""
        return self._o.store.get_app_version(app_id, version)

    def group_ids(self) -> list[str]:
        """Every stored group id (the group index the group applier keeps)."""
        return list(self._o.store.get_meta(GROUP_INDEX_KEY) or [])

    def all_tasks(self) -> list[Task]:
        """Every stored task, ended ones not yet expunged included."""
        return self._o.store.list_tasks()

    def task(self, task_id: str) -> Task | None:
        """A stored task, ``None`` if unknown (ended app tasks are expunged)."""
        return self._o.store.get_task(task_id)

    def run(self, run_id: str) -> JobRun | None:
        """A job run, ``None`` if unknown."""
        return self._o.store.get_run(run_id)

    def runs(self, statuses: frozenset[RunStatus] | None = None) -> list[JobRun]:
        """Runs of every job, newest first, optionally only with the given statuses."""
        return self._o.store.list_runs(statuses=statuses)

    # ------------------------------------------------------------------ jobs

    def job_counters(self, name: str) -> dict[str, Any]:
        """Chronos's per-job counters (``successCount``, ``lastSuccess``, …)."""
        return self._o.jobs.counters(name)

    def job_waiting(self, name: str) -> RejectionSummary | None:
        """Why a job's queued run cannot be placed, if it cannot."""
        return self._o.jobs.waiting.get(name)

    def job_schedule(self, job: JobSpec) -> Schedule | None:
        """The job's parsed schedule, ``None`` for a dependent job."""
        return self._o.jobs.schedule_of(job)

    def job_next_fire(self, job: JobSpec, now: datetime) -> datetime | None:
        """When the job's schedule fires next (``None``: never, or no schedule)."""
        s = self._o.jobs.schedule_of(job)
        if s is None:
            return None
        return self._o.jobs.next_fire(job.name) or next_fire(
            s, self._o.jobs.last_handled(job.name), now)
