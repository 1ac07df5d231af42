"""Launch backoff arithmetic never raises, whatever a stored definition holds (issue 11,
defect 1: a definition that bypassed validation must not stop the control loop)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.model.app import AppSpec, parse_app
from scheduler.model.limits import MAX_DURATION_SECONDS
from scheduler.services.backoff import Backoff

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def bypassed(**fields: float) -> AppSpec:
    """An app whose numbers never went through validation (an old store, a bug)."""
    return parse_app({"id": "/web", "cmd": "x"}).model_copy(update=fields)


def failed(times: int) -> Backoff:
    return Backoff(failures=times, last_failure_at=T0, version=None)


@pytest.mark.parametrize("fields", [
    {"backoffFactor": 1e200},
    {"backoffSeconds": 1e12, "maxLaunchDelaySeconds": 1e12},
    {"backoffSeconds": math.inf, "maxLaunchDelaySeconds": math.inf},
    {"backoffSeconds": math.nan},
    {"backoffFactor": math.nan, "maxLaunchDelaySeconds": math.nan},
    {"backoffSeconds": 1e308, "backoffFactor": 1e308, "maxLaunchDelaySeconds": 1e308},
])
@pytest.mark.parametrize("failures", [1, 2, 50, 10**6])
def test_any_stored_value_gives_a_bounded_delay(fields: dict[str, float], failures: int) -> None:
    spec = bypassed(**fields)
    delay = failed(failures).delay_seconds(spec)
    assert 0 <= delay <= MAX_DURATION_SECONDS
    at = failed(failures).launch_allowed_at(spec)
    assert at is not None and T0 <= at <= T0 + timedelta(seconds=MAX_DURATION_SECONDS)


def test_a_huge_factor_waits_the_cap_not_forever() -> None:
    spec = bypassed(backoffFactor=1e200, backoffSeconds=1, maxLaunchDelaySeconds=300)
    assert failed(3).delay_seconds(spec) == 300


def test_ordinary_backoff_is_unchanged() -> None:
    spec = parse_app({"id": "/web", "cmd": "x", "backoffSeconds": 10, "backoffFactor": 2,
                      "maxLaunchDelaySeconds": 60})
    assert [failed(k).delay_seconds(spec) for k in range(5)] == [0, 10, 20, 40, 60]


def test_a_launch_time_beyond_the_calendar_is_the_last_representable_instant() -> None:
    late = datetime(9999, 12, 31, tzinfo=UTC)
    spec = bypassed(backoffSeconds=1e6, maxLaunchDelaySeconds=1e6)
    at = Backoff(failures=1, last_failure_at=late).launch_allowed_at(spec)
    assert at == datetime.max.replace(tzinfo=UTC)
