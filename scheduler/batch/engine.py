"""The job engine's decisions: which occurrences run, which are skipped, what a finished
attempt means, which queued runs launch and which a kill marks. Pure: jobs, runs and ``now``
in, values and intents out; the orchestrator applies them (scheduler/orchestrator/jobs.py).

Rules (documented for users in the README):
- Every occurrence ``t`` of a schedule gets the run id ``<job>:<t as UTC basic ISO>``, written
  before anything is launched, so no restart can launch an occurrence twice.
- An occurrence is due once ``now >= t``. It runs if it is at most ``epsilon`` late;
  otherwise it is recorded as ``skipped`` ("more than epsilon late").
- Several occurrences due at once (Dromos was down, or paused): with the missed-run policy
  ``latest`` (default) only the latest may run (if within epsilon) and the earlier ones are
  recorded as skipped; with ``skip`` all of them are skipped. Long outages are recorded as at
  most :data:`MAX_SKIPPED_RECORDS` individual skipped runs plus one summary run.
- ``concurrent: false``: an occurrence that comes due while a run of the job is queued or
  running is skipped ("previous run still running").
- A finite ``Rn`` schedule whose last occurrence was handled disables its job.
- A failed attempt is retried ``retries`` times, each after ``retryDelay``; retries never
  create new occurrences (a finite schedule stays finite).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scheduler.batch.schedule import (
    IsoSchedule,
    Schedule,
    latest_at_or_before,
    next_fire,
    occurrences_between,
    remaining,
)
from scheduler.model.job import (
    JobRun,
    JobSpec,
    MissedRunPolicy,
    RunStatus,
    Trigger,
    attempt_task_id,
    scheduled_run_id,
)
from scheduler.model.limits import add_seconds
from scheduler.model.timefmt import iso

MAX_SKIPPED_RECORDS = 100


@dataclass(frozen=True)
class OccurrencePlan:
    """What to do about a scheduled job at ``now``.

    ``runs``: new runs to create (queued or skipped), oldest first. ``last_handled``: the
    newest occurrence now handled (persist it). ``exhausted``: a finite schedule is used up
    (disable the job). ``next_fire``: when this job next needs attention (``None``: never).
    """

    runs: tuple[JobRun, ...] = ()
    last_handled: datetime | None = None
    exhausted: bool = False
    next_fire: datetime | None = None


def _skipped(job: JobSpec, t: datetime, now: datetime, why: str,
             run_id: str | None = None) -> JobRun:
    return JobRun(
        id=run_id or scheduled_run_id(job.name, t), job=job.name, trigger=Trigger.SCHEDULE,
        status=RunStatus.SKIPPED, created_at=now, scheduled_for=t, finished_at=now,
        message=why,
    )


def plan_occurrences(
    job: JobSpec,
    schedule: Schedule,
    last_handled: datetime | None,
    active: Sequence[JobRun],
    now: datetime,
) -> OccurrencePlan:
    """Handle every occurrence of ``job`` in ``(last_handled, now]``.

    ``active`` are the job's runs that are queued or running (for ``concurrent``).
    A disabled job handles nothing and has no next fire time.
    """
    if job.disabled:
        return OccurrencePlan(last_handled=last_handled)
    latest_index, latest = latest_at_or_before(schedule, now)
    if latest is None or (last_handled is not None and latest <= last_handled):
        nxt = next_fire(schedule, last_handled, now)
        return OccurrencePlan(last_handled=last_handled, next_fire=nxt,
                              exhausted=_exhausted(schedule, last_handled, nxt))
    runs: list[JobRun] = []
    # Occurrences before the latest one are missed: record them (bounded for long outages).
    missed: list[datetime] = []
    # A cron schedule has no start: without a handled occurrence nothing before the latest
    # one can be called missed.
    walk = last_handled is not None or isinstance(schedule, IsoSchedule)
    for t in (occurrences_between(schedule, last_handled, latest - timedelta(microseconds=1))
              if walk else ()):
        if len(missed) == MAX_SKIPPED_RECORDS + 1:
            break  # never walk a long outage occurrence by occurrence
        missed.append(t)
    count_missed = len(missed)
    if len(missed) > MAX_SKIPPED_RECORDS:
        missed = missed[:MAX_SKIPPED_RECORDS]
        count_missed = _count_between(schedule, missed[-1], latest_index) or count_missed
    for t in missed:
        runs.append(_skipped(job, t, now, "missed: a later occurrence came due before it "
                                          "could run (Dromos was down or busy)"))
    if count_missed > len(missed):
        more = count_missed - len(missed)
        runs.append(_skipped(job, latest, now,
                             f"missed: {more} more occurrence(s) after "
                             f"{missed[-1].isoformat()} up to {latest.isoformat()} were not run",
                             run_id=scheduled_run_id(job.name, latest) + ".missed"))
    late = now - latest
    if count_missed and job.missedRunPolicy is MissedRunPolicy.SKIP:
        runs.append(_skipped(job, latest, now, "missed run policy is 'skip'"))
    elif late > job.epsilon_delta:
        runs.append(_skipped(job, latest, now,
                             f"more than epsilon late ({late.total_seconds():.1f}s > "
                             f"{job.epsilon_delta.total_seconds():g}s)"))
    elif not job.concurrent and any(not r.status.final for r in active):
        runs.append(_skipped(job, latest, now, "previous run still running "
                                               "(concurrent is false)"))
    else:
        runs.append(JobRun(
            id=scheduled_run_id(job.name, latest), job=job.name, trigger=Trigger.SCHEDULE,
            status=RunStatus.QUEUED, created_at=now, scheduled_for=latest,
            task_id=attempt_task_id(scheduled_run_id(job.name, latest), 0),
        ))
    nxt = next_fire(schedule, latest, now)
    return OccurrencePlan(runs=tuple(runs), last_handled=latest, next_fire=nxt,
                          exhausted=_exhausted(schedule, latest, nxt))


def _count_between(schedule: Schedule, after: datetime, latest_index: int | None) -> int:
    """How many occurrences lie strictly between ``after`` and the latest one, plus the
    ``MAX_SKIPPED_RECORDS`` already listed; 0 when it cannot be counted cheaply (cron)."""
    if latest_index is None or not isinstance(schedule, IsoSchedule):
        return 0
    after_index, _ = latest_at_or_before(schedule, after)
    if after_index is None:
        return 0
    return MAX_SKIPPED_RECORDS + (latest_index - after_index - 1)


def _exhausted(schedule: Schedule, last: datetime | None, nxt: datetime | None) -> bool:
    if not isinstance(schedule, IsoSchedule) or schedule.repetitions is None:
        return False
    left = remaining(schedule, last)
    return nxt is None or left == 0


@dataclass(frozen=True)
class AttemptOutcome:
    """The run after one attempt ended, and whether its job finished for good."""

    run: JobRun
    final: bool
    succeeded: bool
    notes: tuple[str, ...] = field(default=())


def after_attempt(job: JobSpec | None, run: JobRun, exit_code: int | None, killed: bool,
                  message: str, now: datetime) -> AttemptOutcome:
    """Success on exit 0; a kill is final; a failure is retried while retries remain."""
    if killed:
        done = run.with_(status=RunStatus.KILLED, finished_at=now, exit_code=exit_code,
                         message=message or "killed")
        return AttemptOutcome(done, final=True, succeeded=False)
    if exit_code == 0:
        done = run.with_(status=RunStatus.SUCCESS, finished_at=now, exit_code=0,
                         message=message)
        return AttemptOutcome(done, final=True, succeeded=True)
    retries = job.retries if job is not None else 0
    if run.attempt < retries:
        nxt = run.attempt + 1
        delay = job.retry_delay if job is not None else timedelta(0)
        again = run.with_(
            status=RunStatus.QUEUED, attempt=nxt, task_id=attempt_task_id(run.id, nxt),
            handle=None, host=None, exit_code=exit_code,
            not_before=add_seconds(now, delay.total_seconds()),
            message=f"attempt {run.attempt + 1} failed ({message}); retry {nxt} of {retries}",
        )
        return AttemptOutcome(again, final=False, succeeded=False)
    done = run.with_(status=RunStatus.FAILED, finished_at=now, exit_code=exit_code,
                     message=message)
    return AttemptOutcome(done, final=True, succeeded=False)


def launchable(runs: Sequence[JobRun], now: datetime) -> list[JobRun]:
    """Queued runs whose retry delay (if any) has passed, oldest first."""
    ready = [r for r in runs if r.status is RunStatus.QUEUED and r.handle is None
             and (r.not_before is None or r.not_before <= now)]
    return sorted(ready, key=lambda r: (r.created_at, r.id))


@dataclass(frozen=True)
class LaunchAttempt:
    """Intent: place and launch the current attempt of ``run`` (a queued run of ``job``)."""

    run: JobRun
    job: JobSpec


@dataclass(frozen=True)
class CloseRun:
    """Intent: store ``run``, already in its final state, without launching anything."""

    run: JobRun


def launch_intents(queued: Sequence[JobRun], jobs: Mapping[str, JobSpec], now: datetime,
                   staged: Set[str] = frozenset()) -> list[LaunchAttempt | CloseRun]:
    """What to do with the queued runs at ``now``, oldest first: close those whose job is gone
    or whose kill was asked for before they started; launch the rest whose retry delay has
    passed. A run whose attempt's task id is in ``staged`` (a task already written, its
    launch under way or to be retried by the orchestrator) is left alone."""
    out: list[LaunchAttempt | CloseRun] = []
    for run in launchable(queued, now):
        if run.task_id is not None and run.task_id in staged:
            continue
        job = jobs.get(run.job)
        if job is None:
            out.append(CloseRun(run.with_(status=RunStatus.KILLED, finished_at=now,
                                          message="job deleted")))
        elif run.kill_requested_at is not None:
            out.append(CloseRun(run.with_(status=RunStatus.KILLED, finished_at=now,
                                          message="killed before it started")))
        else:
            out.append(LaunchAttempt(run, job))
    return out


def kill_marks(active: Sequence[JobRun], now: datetime) -> list[JobRun]:
    """The runs a kill request marks (those not marked already), as they are to be stored.
    Marked queued runs never start; a marked running run's attempt is killed."""
    return [r.with_(kill_requested_at=now) for r in active
            if not r.status.final and r.kill_requested_at is None]


def counters_after(counters: Mapping[str, Any], job: JobSpec, run: JobRun, succeeded: bool,
                   now: datetime) -> dict[str, Any]:
    """Chronos's counters (successCount, errorCount, lastSuccess, ...) after ``run``'s
    final result; a killed run counts as neither success nor error."""
    c = dict(counters)
    if succeeded:
        c["successCount"] = int(c.get("successCount", 0)) + 1
        c["lastSuccess"] = iso(now)
        c["errorsSinceLastSuccess"] = 0
    elif run.status is RunStatus.FAILED:
        c["errorCount"] = int(c.get("errorCount", 0)) + 1
        c["lastError"] = iso(now)
        c["errorsSinceLastSuccess"] = int(c.get("errorsSinceLastSuccess", 0)) + 1
        if job.softError:
            c["softErrorCount"] = int(c.get("softErrorCount", 0)) + 1
    return c
