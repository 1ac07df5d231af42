"""An in-process :class:`~scheduler.store.base.StateStore` for tests and throwaway runs.

How it encodes what it keeps is shared with the SQLite store and lives in
:mod:`scheduler.store.codec`; the helpers are re-exported here for older imports.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from scheduler.model.app import AppSpec
from scheduler.model.job import JobRun, JobSpec, RunStatus
from scheduler.model.task import Task
from scheduler.store.base import AlreadyExists, StateStore, StoreClosed
from scheduler.store.codec import (
    check_limit,
    decode_app,
    decode_job,
    decode_meta,
    decode_run,
    decode_task,
    encode_app,
    encode_job,
    encode_meta,
    encode_run,
    encode_task,
    require_version,
    run_created_key,
    statuses_filter,
    task_sort_key,
    version_sort_key,
)

__all__ = [
    "MemoryStore",
    "StoreClosed",
    "decode_app",
    "decode_meta",
    "decode_task",
    "encode_app",
    "encode_meta",
    "encode_task",
    "require_version",
    "task_sort_key",
    "version_sort_key",
]


# --- the store ---------------------------------------------------------------------------------


class _RunRow(NamedTuple):
    """A stored run: its encoded body and the columns ``list_runs`` filters and sorts by."""

    job: str
    created_key: str  # run_created_key(created_at)
    status: str
    body: str


@dataclass
class _State:
    """Everything the store holds, as encoded text (immutable values: a copy is shallow)."""

    apps: dict[str, str] = field(default_factory=dict)  # app id -> current spec
    versions: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> version -> spec
    tasks: dict[str, str] = field(default_factory=dict)  # task id -> task
    jobs: dict[str, str] = field(default_factory=dict)  # job name -> spec
    runs: dict[str, _RunRow] = field(default_factory=dict)  # run id -> run
    meta: dict[str, str] = field(default_factory=dict)  # key -> JSON value

    def copy(self) -> _State:
        return _State(
            apps=dict(self.apps),
            versions={k: dict(v) for k, v in self.versions.items()},
            tasks=dict(self.tasks),
            jobs=dict(self.jobs),
            runs=dict(self.runs),
            meta=dict(self.meta),
        )


class MemoryStore:
    """The :class:`~scheduler.store.base.StateStore` contract, kept in memory (not durable).

    - Thread safety: one re-entrant lock guards every call. ``atomic()`` holds it for the
      whole block, so other threads neither see a block's uncommitted writes nor interleave
      their own; do not wait inside a block for another thread that uses the store.
    - ``atomic()`` nests like savepoints: an inner block that raises undoes only its own
      writes (the outer block may catch the exception and go on); the outermost block decides
      whether anything is kept.
    - Values are copied in and out, so mutating a returned or a passed-in object never changes
      stored state.
    - A run belongs to a stored job: ``create_run``/``put_run`` raise ``KeyError`` for an
      unknown job, and ``delete_job`` deletes the job's runs (as SQLite's foreign key does).
    - After :meth:`close` every method raises :class:`StoreClosed`.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state = _State()
        self._closed = False

    # --- transactions ----------------------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction: all writes inside commit together, or none do. Re-entrant.

        Rollback restores a snapshot taken on entry; every nesting level takes its own.
        """
        with self._lock:
            self._check_open()
            snapshot = self._state.copy()
            try:
                yield
            except BaseException:
                self._state = snapshot
                raise

    # --- apps ------------------------------------------------------------------------------

    def create_app(self, spec: AppSpec) -> None:
        """Store a new app (its first version).

        Raises :class:`AlreadyExists` when the id is stored, ``ValueError`` without a version.
        """
        version = require_version(spec)
        text = encode_app(spec)
        with self._lock:
            self._check_open()
            if spec.id in self._state.apps:
                raise AlreadyExists(spec.id)
            self._state.apps[spec.id] = text
            self._state.versions[spec.id] = {version: text}

    def put_app(self, spec: AppSpec) -> None:
        """Make ``spec`` the app's current definition (creating the app) and keep its version.

        The current definition is the one last put, whatever its version's age. Putting a
        version that is already stored replaces that version. ``ValueError`` without a version.
        """
        version = require_version(spec)
        text = encode_app(spec)
        with self._lock:
            self._check_open()
            self._state.apps[spec.id] = text
            self._state.versions.setdefault(spec.id, {})[version] = text

    def get_app(self, app_id: str) -> AppSpec | None:
        """The current definition; ``None`` when no such app."""
        with self._lock:
            self._check_open()
            text = self._state.apps.get(app_id)
        return None if text is None else decode_app(text)

    def list_apps(self) -> list[AppSpec]:
        """Every app's current definition, ordered by id."""
        with self._lock:
            self._check_open()
            texts = [self._state.apps[k] for k in sorted(self._state.apps)]
        return [decode_app(t) for t in texts]

    def delete_app(self, app_id: str) -> bool:
        """Delete the app and all its versions (not its tasks). False when it did not exist."""
        with self._lock:
            self._check_open()
            if app_id not in self._state.apps:
                return False
            del self._state.apps[app_id]
            self._state.versions.pop(app_id, None)
            return True

    def list_app_versions(self, app_id: str) -> list[str]:
        """Stored versions, newest first (see :func:`version_sort_key`); empty when unknown."""
        with self._lock:
            self._check_open()
            versions = list(self._state.versions.get(app_id, {}))
        return sorted(versions, key=lambda v: (version_sort_key(v), v), reverse=True)

    def get_app_version(self, app_id: str, version: str) -> AppSpec | None:
        """The app as it was at ``version``; ``None`` when the app or version is unknown."""
        with self._lock:
            self._check_open()
            text = self._state.versions.get(app_id, {}).get(version)
        return None if text is None else decode_app(text)

    # --- tasks -----------------------------------------------------------------------------

    def put_task(self, task: Task) -> None:
        """Insert or replace the task with ``task.id``."""
        text = encode_task(task)
        with self._lock:
            self._check_open()
            self._state.tasks[task.id] = text

    def get_task(self, task_id: str) -> Task | None:
        """The task; ``None`` when unknown."""
        with self._lock:
            self._check_open()
            text = self._state.tasks.get(task_id)
        return None if text is None else decode_task(text)

    def list_tasks(self, app_id: str | None = None) -> list[Task]:
        """All tasks, or those of one app, ordered by ``staged_at`` then id."""
        with self._lock:
            self._check_open()
            texts = list(self._state.tasks.values())
        tasks = [decode_task(t) for t in texts]
        if app_id is not None:
            tasks = [t for t in tasks if t.app_id == app_id]
        return sorted(tasks, key=task_sort_key)

    def delete_task(self, task_id: str) -> bool:
        """Delete the task. False when there was no such task."""
        with self._lock:
            self._check_open()
            return self._state.tasks.pop(task_id, None) is not None

    # --- jobs ------------------------------------------------------------------------------

    def put_job(self, job: JobSpec) -> None:
        """Create or replace the job named ``job.name``; replacing keeps its runs.

        ``ValueError`` when the spec holds a value strict JSON cannot (e.g. an infinite
        ``cpus``); nothing is stored.
        """
        text = encode_job(job)
        with self._lock:
            self._check_open()
            self._state.jobs[job.name] = text

    def get_job(self, name: str) -> JobSpec | None:
        """The job; ``None`` when unknown."""
        with self._lock:
            self._check_open()
            text = self._state.jobs.get(name)
        return None if text is None else decode_job(text)

    def list_jobs(self) -> list[JobSpec]:
        """Every job, ordered by name."""
        with self._lock:
            self._check_open()
            texts = [self._state.jobs[k] for k in sorted(self._state.jobs)]
        return [decode_job(t) for t in texts]

    def delete_job(self, name: str) -> bool:
        """Delete the job and all its runs. False when it did not exist."""
        with self._lock:
            self._check_open()
            if self._state.jobs.pop(name, None) is None:
                return False
            runs = self._state.runs
            for run_id in [k for k, row in runs.items() if row.job == name]:
                del runs[run_id]
            return True

    # --- runs ------------------------------------------------------------------------------

    def create_run(self, run: JobRun) -> bool:
        """Insert ``run`` unless a run with its id exists; True when inserted.

        ``KeyError`` when ``run.job`` is not a stored job (whether or not the id exists).
        """
        row = _run_row(run)
        with self._lock:
            self._check_open()
            self._require_job(run.job)
            if run.id in self._state.runs:
                return False
            self._state.runs[run.id] = row
            return True

    def put_run(self, run: JobRun) -> None:
        """Insert or replace the run with ``run.id``. ``KeyError`` for an unknown job."""
        row = _run_row(run)
        with self._lock:
            self._check_open()
            self._require_job(run.job)
            self._state.runs[run.id] = row

    def get_run(self, run_id: str) -> JobRun | None:
        """The run; ``None`` when unknown."""
        with self._lock:
            self._check_open()
            row = self._state.runs.get(run_id)
        return None if row is None else decode_run(row.body)

    def list_runs(
        self,
        job: str | None = None,
        statuses: frozenset[RunStatus] | None = None,
        limit: int | None = None,
    ) -> list[JobRun]:
        """Runs, newest first (by ``created_at``, then id descending), optionally of one job,
        only with the given statuses, at most ``limit``.

        An empty ``statuses`` matches nothing; ``ValueError`` for a negative ``limit``.
        """
        wanted = statuses_filter(statuses)
        check_limit(limit)
        with self._lock:
            self._check_open()
            rows = [
                (row.created_key, run_id, row.body)
                for run_id, row in self._state.runs.items()
                if (job is None or row.job == job)
                and (wanted is None or row.status in wanted)
            ]
        rows.sort(reverse=True)
        if limit is not None:
            rows = rows[:limit]
        return [decode_run(body) for _, _, body in rows]

    def _require_job(self, name: str) -> None:
        if name not in self._state.jobs:
            raise KeyError(f"no job named {name!r}")

    # --- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any | None:
        """The JSON value stored under ``key``; ``None`` when absent."""
        with self._lock:
            self._check_open()
            text = self._state.meta.get(key)
        return None if text is None else decode_meta(text)

    def put_meta(self, key: str, value: Any) -> None:
        """Store a JSON value; ``None`` deletes the key (absent or not).

        ``TypeError``/``ValueError`` when ``value`` is not strict JSON; nothing is stored.
        """
        text = None if value is None else encode_meta(value)
        with self._lock:
            self._check_open()
            if text is None:
                self._state.meta.pop(key, None)
            else:
                self._state.meta[key] = text

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Drop everything; later calls raise :class:`StoreClosed`. Idempotent."""
        with self._lock:
            self._closed = True
            self._state = _State()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")


def _run_row(run: JobRun) -> _RunRow:
    body = encode_run(run)
    return _RunRow(run.job, run_created_key(run.created_at), run.status.value, body)


if TYPE_CHECKING:
    # mypy checks here that the class still implements the whole protocol.
    def _implements_protocol(store: MemoryStore) -> StateStore:
        return store
