"""The job engine's pure decisions, with named cases and a frozen clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.batch.engine import (
    MAX_SKIPPED_RECORDS,
    after_attempt,
    launchable,
    plan_occurrences,
)
from scheduler.batch.schedule import parse_schedule
from scheduler.model.job import JobRun, JobSpec, RunStatus, Trigger, parse_job

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(schedule: str = "R/2026-01-01T00:00:00Z/PT1M", **extra: Any) -> JobSpec:
    return parse_job({"name": "etl", "command": "true", "schedule": schedule,
                      "epsilon": "PT30S", **extra})


def plan(j: JobSpec, last: datetime | None, now: datetime, active: list[JobRun] | None = None):
    return plan_occurrences(j, parse_schedule(j.schedule or "", j.time_zone), last,
                            active or [], now)


def test_an_occurrence_on_time_gets_a_queued_run_with_a_deterministic_id() -> None:
    p = plan(job(), None, T0)
    [run] = p.runs
    assert run.status is RunStatus.QUEUED and run.id == "etl:20260101T000000Z"
    assert p.last_handled == T0 and p.next_fire == T0 + timedelta(minutes=1)


def test_nothing_happens_before_the_next_occurrence() -> None:
    p = plan(job(), T0, T0 + timedelta(seconds=59))
    assert p.runs == () and p.next_fire == T0 + timedelta(minutes=1)


def test_late_within_epsilon_still_runs() -> None:
    [run] = plan(job(), None, T0 + timedelta(seconds=29)).runs
    assert run.status is RunStatus.QUEUED


def test_late_beyond_epsilon_is_skipped_with_a_reason() -> None:
    [run] = plan(job(), None, T0 + timedelta(seconds=31)).runs
    assert run.status is RunStatus.SKIPPED and "more than epsilon late" in run.message


def test_after_downtime_only_the_latest_missed_occurrence_runs() -> None:
    p = plan(job(), T0, T0 + timedelta(minutes=5, seconds=10))
    statuses = [(r.scheduled_for, r.status) for r in p.runs]
    assert statuses[-1] == (T0 + timedelta(minutes=5), RunStatus.QUEUED)
    assert [s for _, s in statuses[:-1]] == [RunStatus.SKIPPED] * 4
    assert len({r.id for r in p.runs}) == 5


def test_skip_policy_skips_every_missed_occurrence() -> None:
    p = plan(job(missedRunPolicy="skip"), T0, T0 + timedelta(minutes=3))
    assert all(r.status is RunStatus.SKIPPED for r in p.runs) and len(p.runs) == 3


def test_a_long_outage_is_recorded_in_bounded_form_and_fast() -> None:
    j = job("R/2026-01-01T00:00:00Z/PT1S")
    started = time.perf_counter()
    p = plan(j, T0, T0 + timedelta(days=10))
    assert time.perf_counter() - started < 2.0  # generous: it must not walk 864,000 items
    skipped = [r for r in p.runs if r.status is RunStatus.SKIPPED]
    assert len(skipped) == MAX_SKIPPED_RECORDS + 1
    assert "more occurrence(s)" in skipped[-1].message
    assert p.runs[-1].status is RunStatus.QUEUED


def test_not_concurrent_skips_while_a_run_is_active() -> None:
    active = JobRun(id="etl:x", job="etl", trigger=Trigger.SCHEDULE,
                    status=RunStatus.RUNNING, created_at=T0)
    [run] = plan(job(), None, T0, [active]).runs
    assert run.status is RunStatus.SKIPPED and "still running" in run.message
    [run] = plan(job(concurrent=True), None, T0, [active]).runs
    assert run.status is RunStatus.QUEUED


def test_a_finite_schedule_is_exhausted_after_its_last_occurrence() -> None:
    j = job("R2/2026-01-01T00:00:00Z/PT1M")
    assert not plan(j, None, T0).exhausted
    last = plan(j, T0, T0 + timedelta(minutes=1))
    assert last.exhausted and last.next_fire is None


def test_a_disabled_job_does_nothing() -> None:
    p = plan(job(disabled=True), None, T0 + timedelta(hours=1))
    assert p.runs == () and p.next_fire is None


def test_cron_without_history_runs_only_the_latest() -> None:
    p = plan(job("cron: * * * * *"), None, T0 + timedelta(minutes=10))
    assert [r.status for r in p.runs] == [RunStatus.QUEUED]


def queued() -> JobRun:
    return JobRun(id="etl:r", job="etl", trigger=Trigger.SCHEDULE, status=RunStatus.RUNNING,
                  created_at=T0, task_id="etl:r", handle={"pid": 1})


def test_success_is_final() -> None:
    out = after_attempt(job(), queued(), 0, False, "", T0)
    assert out.final and out.succeeded and out.run.status is RunStatus.SUCCESS


def test_failure_is_retried_after_the_delay_with_a_new_task_id() -> None:
    out = after_attempt(job(retries=2, retryDelay="PT10S"), queued(), 3, False, "exit 3", T0)
    assert not out.final and out.run.status is RunStatus.QUEUED
    assert out.run.attempt == 1 and out.run.task_id == "etl:r.retry1"
    assert out.run.not_before == T0 + timedelta(seconds=10) and out.run.handle is None


def test_failure_without_retries_left_is_final() -> None:
    run = queued().with_(attempt=2)
    out = after_attempt(job(retries=2), run, 1, False, "exit 1", T0)
    assert out.final and not out.succeeded and out.run.status is RunStatus.FAILED


def test_a_kill_is_final_and_not_retried() -> None:
    out = after_attempt(job(retries=5), queued(), 143, True, "", T0)
    assert out.final and out.run.status is RunStatus.KILLED


def test_launchable_waits_for_the_retry_delay() -> None:
    waiting = queued().with_(status=RunStatus.QUEUED, handle=None,
                             not_before=T0 + timedelta(seconds=5))
    assert launchable([waiting], T0) == []
    assert launchable([waiting], T0 + timedelta(seconds=5)) == [waiting]


@pytest.mark.parametrize("delay", ["P99999999D", "P999999999D", "P1Y", "garbage", "-PT5S"])
def test_a_stored_retry_delay_never_breaks_the_arithmetic(delay: str) -> None:
    # Validation refuses these; a stored job that bypassed it must still not raise.
    j = job(retries=2).model_copy(update={"retryDelay": delay, "epsilon": delay})
    out = after_attempt(j, queued(), 1, False, "exit 1", T0)
    assert out.run.not_before is not None
    assert T0 <= out.run.not_before <= T0 + timedelta(days=365)
    p = plan(j, None, datetime(2026, 1, 1, 0, 5, tzinfo=UTC))
    assert p.last_handled == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
