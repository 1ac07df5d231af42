"""Run statistics: percentiles, Chronos's histogram, task history and rankings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.batch.stats import (
    METRICS,
    format_duration,
    histogram,
    job_stat,
    percentile,
    ranking,
    success_durations,
    task_stat_history,
)
from scheduler.model.job import JobRun, RunStatus, Trigger, attempt_task_id, scheduled_run_id

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make_run(job: str = "etl", hour: int = 0, status: RunStatus = RunStatus.SUCCESS,
             seconds: float | None = 10.0, started: bool = True, **fields: Any) -> JobRun:
    """A run scheduled ``hour`` hours after T0 that took ``seconds`` (None: still running)."""
    at = T0 + timedelta(hours=hour)
    run_id = scheduled_run_id(job, at)
    attempt = int(fields.pop("attempt", 0))
    start = at if started else None
    end = at + timedelta(seconds=seconds) if started and seconds is not None else None
    if not started and status.final:
        end = at
    return JobRun(id=run_id, job=job, trigger=Trigger.SCHEDULE, status=status, created_at=at,
                  scheduled_for=at, task_id=attempt_task_id(run_id, attempt),
                  attempt=attempt, started_at=start, finished_at=end, **fields)


# --------------------------------------------------------------------------- percentile

PERCENTILE_CASES = {
    "single value at any q": ([7.0], 0.99, 7.0),
    "q=0 is the minimum": ([1.0, 2.0, 9.0], 0.0, 1.0),
    "q=1 is the maximum": ([1.0, 2.0, 9.0], 1.0, 9.0),
    "median of an odd count is the middle": ([1.0, 2.0, 9.0], 0.5, 2.0),
    "median of an even count interpolates": ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
    "75th interpolates between ranks": ([1.0, 2.0, 3.0, 4.0], 0.75, 3.25),
    "99th of 1..100": ([float(i) for i in range(1, 101)], 0.99, 99.01),
    "equal values": ([5.0, 5.0, 5.0], 0.3, 5.0),
    "ints accepted": ([1, 3], 0.5, 2.0),
}


@pytest.mark.parametrize(("values", "q", "expected"), PERCENTILE_CASES.values(),
                         ids=PERCENTILE_CASES.keys())
def test_percentile(values: list[float], q: float, expected: float) -> None:
    assert percentile(values, q) == pytest.approx(expected)


PERCENTILE_ERRORS = {
    "empty": ([], 0.5, "empty"),
    "q as a percentage": ([1.0], 99, r"\[0, 1\]"),
    "negative q": ([1.0], -0.1, r"\[0, 1\]"),
    "unsorted": ([2.0, 1.0], 0.5, "sorted"),
}


@pytest.mark.parametrize(("values", "q", "match"), PERCENTILE_ERRORS.values(),
                         ids=PERCENTILE_ERRORS.keys())
def test_percentile_rejects(values: list[float], q: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        percentile(values, q)


finite = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)
wide = st.floats(allow_nan=False, allow_infinity=False)
unit = st.floats(min_value=0.0, max_value=1.0)


@settings(max_examples=300, deadline=None)
@given(st.lists(wide, min_size=1, max_size=30), unit, unit)
def test_percentile_is_monotone_in_q_and_within_min_max(values: list[float], q1: float,
                                                        q2: float) -> None:
    xs = sorted(values)
    lo, hi = sorted((q1, q2))
    a, b = percentile(xs, lo), percentile(xs, hi)
    assert xs[0] <= a <= b <= xs[-1]


@settings(max_examples=200, deadline=None)
@given(st.lists(finite, min_size=1, max_size=30), unit)
def test_percentile_matches_numpy_linear_method(values: list[float], q: float) -> None:
    xs = sorted(values)
    expected = float(np.percentile(np.array(xs), q * 100, method="linear"))
    assert percentile(xs, q) == pytest.approx(expected, rel=1e-9, abs=1e-3)


# --------------------------------------------------------------------------- histogram


def test_histogram_reports_chronos_keys_in_milliseconds() -> None:
    h = histogram([4.0, 1.0, 3.0, 2.0])  # seconds, any order
    assert h == {"75thPercentile": 3250.0, "95thPercentile": 3850.0, "98thPercentile": 3940.0,
                 "99thPercentile": 3970.0, "median": 2500.0, "mean": 2500.0, "count": 4}
    assert isinstance(h["count"], int)


def test_histogram_mean_is_the_arithmetic_mean_not_the_median() -> None:
    h = histogram([1.0, 1.0, 10.0])
    assert (h["median"], h["mean"]) == (1000.0, 4000.0)


def test_histogram_of_nothing_is_zeros() -> None:
    h = histogram([])
    assert h["count"] == 0
    assert all(h[k] == 0.0 for k in METRICS)


def test_histogram_rounds_to_the_microsecond() -> None:
    assert histogram([0.0012345678])["median"] == 1.235


# --------------------------------------------------------------------------- history

DURATION_CASES = {
    "zero": (0, "0s"),
    "fraction truncated": (5.9, "5s"),
    "minutes": (65, "1m5s"),
    "whole hour keeps zero units": (3600, "1h0m0s"),
    "over a day stays in hours": (90061, "25h1m1s"),
    "negative clamps": (-3, "0s"),
}


@pytest.mark.parametrize(("seconds", "text"), DURATION_CASES.values(), ids=DURATION_CASES.keys())
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_task_stat_history_entry_has_chronos_fields() -> None:
    run = make_run(hour=1, seconds=65.25, host="node-1", exit_code=0)
    (entry,) = task_stat_history([run])
    assert entry == {
        "taskId": "etl:20260101T010000Z", "jobName": "etl", "slaveId": "node-1",
        "startTime": "2026-01-01T01:00:00.000Z", "endTime": "2026-01-01T01:01:05.250Z",
        "duration": "1m5s", "status": "Success", "durationMs": 65250.0,
        "runId": "etl:20260101T010000Z", "attempt": 0, "exitCode": 0, "result": "success",
    }


def test_task_stat_history_is_newest_first_and_only_finished_runs() -> None:
    runs = [
        make_run(hour=1),
        make_run(hour=3, status=RunStatus.FAILED, exit_code=1),
        make_run(hour=2, status=RunStatus.KILLED),
        make_run(hour=4, status=RunStatus.RUNNING, seconds=None),
        make_run(hour=5, status=RunStatus.QUEUED, started=False),
        make_run(hour=6, status=RunStatus.SKIPPED, started=False),
        make_run(hour=7, status=RunStatus.KILLED, started=False),  # killed before it started
    ]
    history = task_stat_history(runs)
    assert [(e["startTime"][11:13], e["status"], e["result"]) for e in history] == [
        ("03", "Fail", "failed"), ("02", "Fail", "killed"), ("01", "Success", "success")]


def test_task_stat_history_orders_by_end_time() -> None:
    long = make_run(hour=0, seconds=7200)  # started first, ended last
    short = make_run(hour=1, seconds=60)
    assert [e["runId"] for e in task_stat_history([short, long])] == [long.id, short.id]


def test_task_stat_history_limit_keeps_the_newest() -> None:
    runs = [make_run(hour=h) for h in range(5)]
    assert [e["startTime"][11:13] for e in task_stat_history(runs, limit=2)] == ["04", "03"]
    assert task_stat_history(runs, limit=0) == []


def test_task_stat_history_uses_the_last_attempts_task_id() -> None:
    (entry,) = task_stat_history([make_run(attempt=2)])
    assert entry["taskId"] == "etl:20260101T000000Z.retry2"
    assert entry["attempt"] == 2


def test_task_stat_history_falls_back_to_the_run_id() -> None:
    run = make_run().with_(task_id=None, host=None)
    (entry,) = task_stat_history([run])
    assert (entry["taskId"], entry["slaveId"]) == (run.id, "")


def test_job_stat_histogram_counts_successes_history_shows_all() -> None:
    runs = [make_run(hour=0, seconds=10), make_run(hour=1, seconds=20),
            make_run(hour=2, seconds=1, status=RunStatus.FAILED)]
    stat = job_stat(runs, limit=10)
    assert set(stat) == {"histogram", "taskStatHistory"}
    assert stat["histogram"]["count"] == 2
    assert stat["histogram"]["median"] == 15000.0
    assert [e["status"] for e in stat["taskStatHistory"]] == ["Fail", "Success", "Success"]
    # The same unit on both sides: a run's durationMs is comparable with the percentiles.
    assert stat["taskStatHistory"][1]["durationMs"] == 20000.0


def test_success_durations_skip_failures_and_unfinished_runs() -> None:
    runs = [make_run(seconds=3), make_run(status=RunStatus.FAILED, seconds=9),
            make_run(status=RunStatus.RUNNING, seconds=None)]
    assert success_durations(runs) == [3.0]


# --------------------------------------------------------------------------- ranking


def test_ranking_is_slowest_first_in_seconds() -> None:
    durations = {"fast": [1.0, 2.0], "slow": [30.0, 40.0], "mid": [5.0]}
    assert ranking(durations, "median") == [
        {"jobNameLabel": "slow", "time": 35.0},
        {"jobNameLabel": "mid", "time": 5.0},
        {"jobNameLabel": "fast", "time": 1.5},
    ]


def test_ranking_ties_are_ordered_by_name_and_empty_jobs_left_out() -> None:
    rows = ranking({"b": [2.0], "a": [2.0], "never-ran": []}, "mean")
    assert [r["jobNameLabel"] for r in rows] == ["a", "b"]


@pytest.mark.parametrize("metric", METRICS)
def test_ranking_agrees_with_the_histogram(metric: str) -> None:
    durations = [0.25, 1.5, 2.0, 8.125, 9.0]
    (row,) = ranking({"etl": durations}, metric)
    assert row["time"] * 1000 == pytest.approx(histogram(durations)[metric])


@pytest.mark.parametrize("metric", ["99percentile", "count", "", "Median"])
def test_ranking_rejects_unknown_metrics(metric: str) -> None:
    with pytest.raises(ValueError, match="unknown metric"):
        ranking({"etl": [1.0]}, metric)
