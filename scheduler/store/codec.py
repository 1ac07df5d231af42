"""How every store encodes what it keeps, so that all of them return identical values and
order them identically; also the argument checks they share (``list_runs``'s filters).

Stores keep *text*, never live objects: pydantic's ``frozen`` does not freeze the dicts and
lists inside a spec (``env``, ``labels``...) nor ``Task.handle``/``JobRun.handle``, so handing
out or keeping a reference would let a caller change stored state without a write. Decoding on
every read gives each caller its own copy, and makes the memory store lose exactly what SQLite
loses (e.g. sub-millisecond timestamps in tasks and runs).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from scheduler.model.app import AppSpec, parse_app
from scheduler.model.job import JobRun, JobSpec, RunStatus, parse_job
from scheduler.model.task import Task
from scheduler.model.timefmt import parse_iso

__all__ = [
    "check_limit",
    "decode_app",
    "decode_job",
    "decode_meta",
    "decode_run",
    "decode_task",
    "encode_app",
    "encode_job",
    "encode_meta",
    "encode_run",
    "encode_task",
    "require_version",
    "run_created_key",
    "run_sort_key",
    "statuses_filter",
    "task_sort_key",
    "version_sort_key",
]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


# --- apps --------------------------------------------------------------------------------------


def require_version(spec: AppSpec) -> str:
    """``spec.version``, or ``ValueError`` when it is ``None`` (a store cannot key it)."""
    if spec.version is None:
        raise ValueError(f"app {spec.id} has no version; the server must set one before storing")
    return spec.version


def encode_app(spec: AppSpec) -> str:
    """The spec as JSON text of ``spec.model_dump(mode="json")``."""
    return json.dumps(spec.model_dump(mode="json"), separators=(",", ":"))


def decode_app(text: str) -> AppSpec:
    """Inverse of :func:`encode_app`; the stored ``version`` is kept."""
    return parse_app(json.loads(text), keep_version=True)


def version_sort_key(version: str) -> str:
    """A text key whose order is the versions' age: larger is newer.

    Versions are ISO-8601 timestamps (the server writes ``2026-01-01T00:00:00.000Z``); they are
    compared as instants, so offsets and precision do not matter. A version that is not a
    timestamp is compared by its text.
    """
    try:
        instant = parse_iso(version)
    except ValueError:
        return version
    # Fixed width, zero-padded year: lexicographic order equals chronological order.
    return instant.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


# --- tasks -------------------------------------------------------------------------------------


def encode_task(task: Task) -> str:
    """The task as JSON text of :meth:`Task.to_json` (timestamps at millisecond precision)."""
    return json.dumps(task.to_json(), separators=(",", ":"))


def decode_task(text: str) -> Task:
    """Inverse of :func:`encode_task`."""
    return Task.from_json(json.loads(text))


def task_sort_key(task: Task) -> tuple[str, str]:
    """``list_tasks`` order: ``staged_at``, then id (ms-precision UTC text sorts by time)."""
    return (task.to_json()["staged_at"], task.id)


# --- jobs and runs -----------------------------------------------------------------------------


def encode_job(job: JobSpec) -> str:
    """The job as JSON text of ``job.model_dump(mode="json", by_alias=True)``."""
    return _dumps(job.model_dump(mode="json", by_alias=True))


def decode_job(text: str) -> JobSpec:
    """Inverse of :func:`encode_job` (validated again by :func:`parse_job`)."""
    return parse_job(json.loads(text))


def encode_run(run: JobRun) -> str:
    """The run as JSON text of :meth:`JobRun.to_json` (timestamps at millisecond precision).

    ``ValueError`` for a naive timestamp or a non-finite number in ``handle``; ``TypeError``
    for a ``handle`` JSON cannot hold.
    """
    return _dumps(run.to_json())


def decode_run(text: str) -> JobRun:
    """Inverse of :func:`encode_run`."""
    return JobRun.from_json(json.loads(text))


def run_created_key(created_at: datetime) -> str:
    """A text key ordering runs by ``created_at`` at the precision stores keep (milliseconds).

    Fixed width UTC with a zero-padded year, so text order is time order; two instants in the
    same millisecond get the same key (they are equal once stored), and ties go by run id.
    """
    instant = created_at.astimezone(UTC).replace(tzinfo=None)
    return instant.isoformat(timespec="milliseconds")


def run_sort_key(run: JobRun) -> tuple[str, str]:
    """``list_runs`` order, used reversed (newest first): ``created_at``, then id."""
    return (run_created_key(run.created_at), run.id)


def statuses_filter(statuses: frozenset[RunStatus] | None) -> list[str] | None:
    """The stored text of each status to keep, sorted; ``None`` keeps every status.

    Plain strings are accepted as well as :class:`RunStatus` members; an unknown one raises
    ``ValueError`` rather than silently matching nothing.
    """
    if statuses is None:
        return None
    return sorted(RunStatus(s).value for s in statuses)


def check_limit(limit: int | None) -> None:
    """``ValueError`` for a negative ``list_runs`` limit (``None`` means no limit)."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")


# --- meta --------------------------------------------------------------------------------------


def encode_meta(value: Any) -> str:
    """Strict JSON text of ``value``.

    Raises ``TypeError`` for values JSON cannot hold and ``ValueError`` for NaN/infinity
    (which ``json`` would otherwise write as non-standard tokens other readers reject).
    """
    return _dumps(value)


def decode_meta(text: str) -> Any:
    """Inverse of :func:`encode_meta`."""
    return json.loads(text)
