"""Run durations and history as Chronos's ``/job/stat/{name}`` and ``/stats/{metric}`` show them.

Pure: the caller passes runs or durations; nothing here reads the store or the clock.

Units, chosen to match Chronos on the wire:

* Inputs are durations in **seconds** (what :attr:`JobRun.duration_seconds` gives).
* ``histogram`` reports **milliseconds**: Chronos fed its histograms with run times in ms.
  ``taskStatHistory`` entries carry ``durationMs`` in the same unit, so a client can compare
  a run with the percentiles directly; ``duration`` stays Chronos's human string (``1m5s``).
* ``/stats/{metric}`` (``ranking``) reports **seconds**: Chronos divided its ms by 1000 there.
  Rankings are computed from :func:`histogram`, so ``ranking(...)[i]["time"] * 1000`` equals
  the job's histogram value exactly as served.

Percentiles use linear interpolation between closest ranks (numpy's default, "type 7"), not
the Codahale reservoir Chronos used; small samples therefore differ slightly from Chronos.
Chronos's ``mean`` was in fact the median (a serializer bug); Dromos reports the arithmetic
mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from itertools import pairwise
from typing import Any, Final

from scheduler.model.job import JobRun, RunStatus
from scheduler.model.timefmt import iso

METRICS: Final = (
    "99thPercentile", "98thPercentile", "95thPercentile", "75thPercentile", "median", "mean",
)
"""The metrics ``/stats/{metric}`` accepts, as Chronos names them."""

_QUANTILES: Final[Mapping[str, float]] = {
    "75thPercentile": 0.75,
    "95thPercentile": 0.95,
    "98thPercentile": 0.98,
    "99thPercentile": 0.99,
    "median": 0.5,
}

# Chronos's coarse per-run status: a task that did not succeed "failed", whatever the cause.
_CHRONOS_STATUS: Final[Mapping[RunStatus, str]] = {
    RunStatus.SUCCESS: "Success",
    RunStatus.FAILED: "Fail",
    RunStatus.KILLED: "Fail",
}


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (``0 <= q <= 1``; 0.99 is the 99th percentile) of sorted values.

    Linear interpolation between closest ranks: with ``n`` values and ``h = (n - 1) * q``,
    the result is ``x[floor h] + (h - floor h) * (x[floor h + 1] - x[floor h])``, clamped to
    that pair so rounding can never step outside it. So ``q = 0`` gives the minimum,
    ``q = 1`` the maximum, and the result is non-decreasing in ``q``.

    Raises :class:`ValueError` for an empty sequence (a percentile of nothing is undefined;
    :func:`histogram` decides what to show instead), ``q`` outside ``[0, 1]`` (catches a
    caller passing 99 for 0.99) and unsorted input. Values must be finite.
    """
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], got {q!r}")
    if any(a > b for a, b in pairwise(sorted_values)):
        raise ValueError("values must be sorted ascending")
    h = (len(sorted_values) - 1) * q
    i = math.floor(h)
    frac = h - i
    lo = float(sorted_values[i])
    if frac == 0.0 or i + 1 >= len(sorted_values):
        return lo
    hi = float(sorted_values[i + 1])
    return max(lo, min(hi, lo + frac * (hi - lo)))


def histogram(durations: Sequence[float]) -> dict[str, float | int]:
    """Chronos's histogram of run durations, in **milliseconds**.

    ``durations`` are in seconds, in any order. Keys: ``75thPercentile``, ``95thPercentile``,
    ``98thPercentile``, ``99thPercentile``, ``median``, ``mean`` (floats, rounded to the
    microsecond) and ``count`` (int). With no durations every value is ``0.0`` and ``count``
    is ``0``, as Chronos showed for a job that never ran.
    """
    ms = sorted(d * 1000.0 for d in durations)
    out: dict[str, float | int] = {}
    for key, q in _QUANTILES.items():
        out[key] = round(percentile(ms, q), 3) if ms else 0.0
    out["mean"] = round(math.fsum(ms) / len(ms), 3) if ms else 0.0
    out["count"] = len(ms)
    return out


def format_duration(seconds: float) -> str:
    """Chronos's human duration: ``5s``, ``1m5s``, ``2h0m7s`` (whole seconds, truncated).

    Leading zero units are left out; seconds always show. Hours do not roll over into days.
    """
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _finished(run: JobRun) -> bool:
    # Only runs that really ran: skipped runs and runs killed before they started have no
    # start time and no duration.
    return (run.status in _CHRONOS_STATUS and run.started_at is not None
            and run.finished_at is not None)


def _newest_first(run: JobRun) -> tuple[datetime, datetime, str]:
    assert run.finished_at is not None and run.started_at is not None
    return (run.finished_at, run.started_at, run.id)


def task_stat_history(runs: Sequence[JobRun], limit: int | None = None) -> list[dict[str, Any]]:
    """Finished runs as Chronos's ``taskStatHistory``, newest first (by end, then start time).

    Only runs that started and ended with ``success``, ``failed`` or ``killed`` appear;
    ``limit`` keeps the newest ``limit`` (``None``: all). Each entry:

    * Chronos's fields: ``taskId`` (the runtime id of the last attempt, else the run id),
      ``jobName``, ``slaveId`` (the host, ``""`` if unknown), ``startTime`` and ``endTime``
      (ISO-8601 UTC with ``Z``; Chronos wrote ``MM/dd/yy HH:mm:ss``, which loses the year's
      century and the zone), ``duration`` (:func:`format_duration`) and ``status``
      (``Success`` or ``Fail``, Chronos's words);
    * Dromos's additions: ``durationMs`` (float, same unit as the histogram), ``runId``,
      ``attempt``, ``exitCode`` (``None`` if unknown) and ``result`` (the run's own status:
      ``success``, ``failed`` or ``killed``).
    """
    done = sorted((r for r in runs if _finished(r)), key=_newest_first, reverse=True)
    if limit is not None:
        done = done[: max(0, limit)]
    out: list[dict[str, Any]] = []
    for run in done:
        assert run.started_at is not None and run.finished_at is not None
        seconds = (run.finished_at - run.started_at).total_seconds()
        out.append({
            "taskId": run.task_id or run.id,
            "jobName": run.job,
            "slaveId": run.host or "",
            "startTime": iso(run.started_at),
            "endTime": iso(run.finished_at),
            "duration": format_duration(seconds),
            "status": _CHRONOS_STATUS[run.status],
            "durationMs": round(seconds * 1000.0, 3),
            "runId": run.id,
            "attempt": run.attempt,
            "exitCode": run.exit_code,
            "result": run.status.value,
        })
    return out


def success_durations(runs: Sequence[JobRun]) -> list[float]:
    """Durations in seconds of the successful runs: what the histogram and rankings measure.

    Failed runs are left out (as in Chronos): a crash after one second says nothing about how
    long the job takes.
    """
    return [d for r in runs
            if r.status is RunStatus.SUCCESS and (d := r.duration_seconds) is not None]


def job_stat(runs: Sequence[JobRun], limit: int | None = None) -> dict[str, Any]:
    """The body of ``GET /scheduler/job/stat/{name}`` for one job's runs.

    ``{"histogram": histogram(success durations), "taskStatHistory": [...]}``; ``limit``
    applies to the history only, the histogram always covers every run given.
    """
    return {
        "histogram": histogram(success_durations(runs)),
        "taskStatHistory": task_stat_history(runs, limit),
    }


def ranking(durations_by_job: Mapping[str, Sequence[float]], metric: str) -> list[dict[str, Any]]:
    """The body of ``GET /scheduler/stats/{metric}``: jobs by that metric, slowest first.

    ``durations_by_job`` maps job names to durations in seconds; ``metric`` is one of
    :data:`METRICS` (anything else raises :class:`ValueError`, the API's 400/404). Each entry
    is ``{"jobNameLabel": name, "time": seconds}``; ties are ordered by name. Jobs without
    durations are left out: Chronos listed them with time 0, which reads as "instant".
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    rows = [(float(histogram(durations)[metric]) / 1000.0, name)
            for name, durations in durations_by_job.items() if durations]
    rows.sort(key=lambda row: (-row[0], row[1]))
    return [{"jobNameLabel": name, "time": time} for time, name in rows]
