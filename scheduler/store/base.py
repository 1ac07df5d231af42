"""The StateStore protocol: the one durable source of truth for desired and observed state."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from scheduler.model.app import AppSpec
from scheduler.model.job import JobRun, JobSpec, RunStatus
from scheduler.model.task import Task


class AlreadyExists(Exception):
    """``create_app`` for an id that is already stored."""


class StoreClosed(RuntimeError):
    """A store method was called after ``close()`` (every implementation raises this)."""


class StateStore(Protocol):
    """Apps (with every stored version), tasks, and small JSON metadata.

    Contract:
    - Every method that writes is durable when it returns (SQLite: WAL + synchronous=FULL),
      unless called inside ``atomic()``, in which case all writes of the block become durable
      together when the block exits normally, and none of them if it raises.
    - ``put_app`` requires ``spec.version`` to be set; each distinct version of an app is kept
      until the app is deleted. Storing the same version twice overwrites it.
    - Reads return what was last written (read-your-writes), also inside ``atomic()``.
    - Implementations are safe to call from several threads.
    """

    def create_app(self, spec: AppSpec) -> None:
        """Store a new app (its first version). Raises :class:`AlreadyExists`."""
        ...

    def put_app(self, spec: AppSpec) -> None:
        """Store ``spec`` as the app's current definition and record its version."""
        ...

    def get_app(self, app_id: str) -> AppSpec | None:
        """The current definition; ``None`` when no such app."""
        ...

    def list_apps(self) -> list[AppSpec]:
        """Every app's current definition, ordered by id."""
        ...

    def delete_app(self, app_id: str) -> bool:
        """Delete the app and all its versions. False when it did not exist."""
        ...

    def list_app_versions(self, app_id: str) -> list[str]:
        """Stored version strings, newest first; empty when the app is unknown."""
        ...

    def get_app_version(self, app_id: str, version: str) -> AppSpec | None:
        """The app as it was at ``version``; ``None`` when unknown."""
        ...

    def put_task(self, task: Task) -> None:
        """Insert or replace the task with ``task.id``."""
        ...

    def get_task(self, task_id: str) -> Task | None: ...

    def list_tasks(self, app_id: str | None = None) -> list[Task]:
        """All tasks, or those of one app, ordered by ``staged_at`` then id."""
        ...

    def delete_task(self, task_id: str) -> bool:
        """False when there was no such task."""
        ...

    # ---- jobs (Chronos side) ------------------------------------------------------------

    def put_job(self, job: JobSpec) -> None:
        """Create or replace the job named ``job.name``."""
        ...

    def get_job(self, name: str) -> JobSpec | None: ...

    def list_jobs(self) -> list[JobSpec]:
        """Every job, ordered by name."""
        ...

    def delete_job(self, name: str) -> bool:
        """Delete the job and all its runs. False when it did not exist."""
        ...

    def create_run(self, run: JobRun) -> bool:
        """Insert ``run`` unless a run with its id exists; True when inserted.

        This is what makes "an occurrence is never launched twice" hold across restarts:
        the run id is deterministic and only the first writer wins.
        """
        ...

    def put_run(self, run: JobRun) -> None:
        """Insert or replace the run with ``run.id``."""
        ...

    def get_run(self, run_id: str) -> JobRun | None: ...

    def list_runs(
        self,
        job: str | None = None,
        statuses: frozenset[RunStatus] | None = None,
        limit: int | None = None,
    ) -> list[JobRun]:
        """Runs, newest first (by ``created_at``, then id descending), optionally of one job,
        only with the given statuses, at most ``limit``."""
        ...

    def get_meta(self, key: str) -> Any | None:
        """A JSON value stored under ``key``; ``None`` when absent."""
        ...

    def put_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value; ``None`` deletes the key."""
        ...

    def atomic(self) -> AbstractContextManager[None]:
        """A transaction: all writes inside commit together, or none do. Re-entrant."""
        ...

    def close(self) -> None: ...

