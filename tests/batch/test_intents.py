"""The job engine's intents: which queued runs launch or close, which a kill marks, and the
counters after a final result. Pure: runs, jobs and ``now`` in, values out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.batch.engine import (
    CloseRun,
    LaunchAttempt,
    counters_after,
    kill_marks,
    launch_intents,
)
from scheduler.model.job import JobRun, RunStatus, Trigger, parse_job

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ETL = parse_job({"name": "etl", "command": "true", "schedule": "R/2026-01-01T00:00:00Z/PT1H",
                 "softError": True})


def run(run_id: str, status: RunStatus = RunStatus.QUEUED, job: str = "etl",
        offset: float = 0, **changes: object) -> JobRun:
    r = JobRun(id=run_id, job=job, trigger=Trigger.MANUAL, status=status,
               created_at=T0 + timedelta(seconds=offset), task_id=run_id)
    return r.with_(**changes) if changes else r


def test_queued_runs_launch_oldest_first_and_a_retry_waits_out_its_delay() -> None:
    later = run("etl:b", offset=2)
    first = run("etl:a", offset=1)
    delayed = run("etl:c", not_before=T0 + timedelta(seconds=30))
    intents = launch_intents([later, first, delayed], {"etl": ETL}, T0 + timedelta(seconds=5))
    assert intents == [LaunchAttempt(first, ETL), LaunchAttempt(later, ETL)]


def test_a_run_of_a_deleted_job_or_killed_before_it_started_closes_as_killed() -> None:
    orphan = run("gone:a", job="gone")
    marked = run("etl:a", kill_requested_at=T0)
    intents = launch_intents([orphan, marked], {"etl": ETL}, T0)
    assert [(type(i), i.run.id, i.run.status, i.run.message) for i in intents] == [
        (CloseRun, "etl:a", RunStatus.KILLED, "killed before it started"),
        (CloseRun, "gone:a", RunStatus.KILLED, "job deleted"),
    ]


def test_a_run_whose_attempt_is_already_staged_is_left_to_the_orchestrator() -> None:
    assert launch_intents([run("etl:a")], {"etl": ETL}, T0, staged={"etl:a"}) == []


def test_a_kill_marks_only_active_runs_not_marked_before() -> None:
    active = run("etl:a", RunStatus.RUNNING)
    again = run("etl:b", kill_requested_at=T0)
    done = run("etl:c", RunStatus.SUCCESS)
    now = T0 + timedelta(seconds=9)
    assert kill_marks([active, again, done], now) == [active.with_(kill_requested_at=now)]


def test_counters_count_successes_errors_and_soft_errors_but_not_kills() -> None:
    ok = counters_after({}, ETL, run("etl:a", RunStatus.SUCCESS), True, T0)
    assert ok == {"successCount": 1, "lastSuccess": "2026-01-01T00:00:00.000Z",
                  "errorsSinceLastSuccess": 0}
    failed = counters_after(ok, ETL, run("etl:b", RunStatus.FAILED), False, T0)
    assert (failed["errorCount"], failed["softErrorCount"],
            failed["errorsSinceLastSuccess"]) == (1, 1, 1)
    assert counters_after(failed, ETL, run("etl:c", RunStatus.KILLED), False, T0) == failed
