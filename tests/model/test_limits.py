"""Bounded, finite, launchable definitions (issue 11, defects 1, 2 and 7): every bad value is
a SpecError at its JSON pointer, never a stored object that breaks arithmetic later."""

from __future__ import annotations

import math
from typing import Any

import pytest

from scheduler.model.app import parse_app
from scheduler.model.group import app_group_overlap, parse_group
from scheduler.model.job import parse_job
from scheduler.model.limits import (
    MAX_APP_ID_LENGTH,
    MAX_ENV_VALUE_LENGTH,
    MAX_LABEL_KEY_LENGTH,
    MAX_LABELS,
)
from scheduler.model.task import new_task_id
from scheduler.model.validation import SpecError

APP = {"id": "/web", "cmd": "sleep 100"}
JOB = {"name": "etl", "command": "true", "schedule": "R/2026-01-01T00:00:00Z/PT1H"}


def app_errors(**changes: Any) -> dict[str, list[str]]:
    with pytest.raises(SpecError) as exc:
        parse_app({**APP, **changes})
    return dict(exc.value.details)


def job_errors(**changes: Any) -> dict[str, list[str]]:
    with pytest.raises(SpecError) as exc:
        parse_job({**JOB, **changes})
    return dict(exc.value.details)


# --- defect 1: bounds on every duration and factor ------------------------------------------

@pytest.mark.parametrize(("changes", "path"), [
    ({"backoffFactor": 1e200}, "/backoffFactor"),
    ({"backoffSeconds": 1e12}, "/backoffSeconds"),
    ({"maxLaunchDelaySeconds": 1e12}, "/maxLaunchDelaySeconds"),
    ({"taskKillGracePeriodSeconds": 1e12}, "/taskKillGracePeriodSeconds"),
    ({"instances": 2**40}, "/instances"),
    ({"cpus": 1e300}, "/cpus"),
    ({"mem": 1e300}, "/mem"),
    ({"taskRateLimit": -1}, "/taskRateLimit"),
    ({"healthChecks": [{"intervalSeconds": 10**12}]}, "/healthChecks/0/intervalSeconds"),
    ({"healthChecks": [{"timeoutSeconds": 10**12}]}, "/healthChecks/0/timeoutSeconds"),
    ({"healthChecks": [{"gracePeriodSeconds": 10**12}]},
     "/healthChecks/0/gracePeriodSeconds"),
    ({"healthChecks": [{"delaySeconds": 10**12}]}, "/healthChecks/0/delaySeconds"),
    ({"healthChecks": [{"maxConsecutiveFailures": 10**12}]},
     "/healthChecks/0/maxConsecutiveFailures"),
    ({"readinessChecks": [{"intervalSeconds": 10**12}]}, "/readinessChecks/0/intervalSeconds"),
    ({"upgradeStrategy": {"deploymentTimeoutSeconds": 1e12}},
     "/upgradeStrategy/deploymentTimeoutSeconds"),
])
def test_app_durations_and_factors_are_bounded(changes: dict[str, Any], path: str) -> None:
    assert path in app_errors(**changes)


@pytest.mark.parametrize(("changes", "path"), [
    ({"retryDelay": "P99999999D"}, "/retryDelay"),
    ({"epsilon": "P99999999D"}, "/epsilon"),
    ({"retryDelay": "P400D"}, "/retryDelay"),
    ({"maxCompletionTime": 10**15}, "/maxCompletionTime"),
    ({"cpus": 1e300}, "/cpus"),
])
def test_job_durations_are_bounded(changes: dict[str, Any], path: str) -> None:
    assert path in job_errors(**changes)


def test_bounds_leave_ordinary_values_alone() -> None:
    app = parse_app({**APP, "backoffSeconds": 3600, "backoffFactor": 2,
                     "maxLaunchDelaySeconds": 86400, "taskKillGracePeriodSeconds": 600})
    assert app.backoffFactor == 2.0
    job = parse_job({**JOB, "retryDelay": "P1D", "epsilon": "PT12H"})
    assert job.retry_delay.days == 1


# --- defect 2: non-finite numbers ----------------------------------------------------------

NON_FINITE: list[Any] = [math.inf, -math.inf, math.nan, "inf", "Infinity", "NaN", "-inf"]


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("field", ["cpus", "mem", "disk", "gpus", "backoffSeconds",
                                   "backoffFactor", "maxLaunchDelaySeconds",
                                   "taskKillGracePeriodSeconds", "taskRateLimit"])
def test_non_finite_app_floats_are_rejected(field: str, value: Any) -> None:
    assert f"/{field}" in app_errors(**{field: value})


@pytest.mark.parametrize("value", NON_FINITE)
def test_non_finite_nested_floats_are_rejected(value: Any) -> None:
    errors = app_errors(upgradeStrategy={"minimumHealthCapacity": value})
    assert "/upgradeStrategy/minimumHealthCapacity" in errors


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_numbers_in_free_form_fields_are_rejected(value: float) -> None:
    # Fields Dromos keeps as given (any JSON) must still be strict JSON when returned.
    assert "/unreachableStrategy/inactiveAfterSeconds" in app_errors(
        unreachableStrategy={"inactiveAfterSeconds": value})
    assert "/container/volumes/0/size" in app_errors(
        container={"type": "DOCKER", "docker": {"image": "busybox"},
                   "volumes": [{"size": value}]})
    assert "/fetch/0/x" in job_errors(fetch=[{"x": value}])


@pytest.mark.parametrize("value", NON_FINITE)
@pytest.mark.parametrize("field", ["cpus", "mem", "disk"])
def test_non_finite_job_floats_are_rejected(field: str, value: Any) -> None:
    assert f"/{field}" in job_errors(**{field: value})


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_non_finite_numbers_in_a_group_are_rejected_at_their_path(value: float) -> None:
    with pytest.raises(SpecError) as exc:
        parse_group({"id": "/g", "apps": [{"id": "a", "cmd": "x", "cpus": value}]})
    assert "/apps/0/cpus" in dict(exc.value.details)


# --- defect 7: definitions that can never launch, bad names ---------------------------------

def test_instances_must_be_a_real_integer() -> None:
    assert "/instances" in app_errors(instances=True)
    assert "/instances" in app_errors(instances="3")
    assert "/healthChecks/0/intervalSeconds" in app_errors(
        healthChecks=[{"intervalSeconds": True}])
    assert "/retries" in job_errors(retries=True)


@pytest.mark.parametrize(("changes", "path"), [
    ({"cmd": "sleep\x00 1"}, "/cmd"),
    ({"cmd": None, "args": ["sleep", "1\x00"]}, "/args/1"),
    ({"env": {"A": "x\x00y"}}, "/env/A"),
    ({"env": {"A=B": "x"}}, "/env/A=B"),
    ({"env": {"": "x"}}, "/env/"),
    ({"env": {"A\x00": "x"}}, "/env/A\x00"),
    ({"env": {"A": "x" * (MAX_ENV_VALUE_LENGTH + 1)}}, "/env/A"),
    ({"labels": {"k" * (MAX_LABEL_KEY_LENGTH + 1): "v"}},
     "/labels/" + "k" * (MAX_LABEL_KEY_LENGTH + 1)),
    ({"labels": {f"k{i}": "v" for i in range(MAX_LABELS + 1)}}, "/labels"),
])
def test_definitions_that_can_never_launch_are_rejected(changes: dict[str, Any],
                                                        path: str) -> None:
    assert path in app_errors(**changes)


def test_an_app_id_must_leave_room_for_a_task_id() -> None:
    ok = "/" + "a" * (MAX_APP_ID_LENGTH - 1)
    assert len(new_task_id(parse_app({**APP, "id": ok}).id).encode()) <= 255
    assert "/id" in app_errors(id=ok + "b")


@pytest.mark.parametrize(("changes", "path"), [
    ({"command": "a\x00b"}, "/command"),
    ({"shell": False, "command": "", "arguments": ["a\x00"]}, "/arguments/0"),
    ({"environmentVariables": [{"name": "A=B", "value": "x"}]},
     "/environmentVariables/0/name"),
    ({"environmentVariables": [{"name": "A", "value": "\x00"}]},
     "/environmentVariables/0/value"),
])
def test_jobs_that_can_never_launch_are_rejected(changes: dict[str, Any], path: str) -> None:
    assert path in job_errors(**changes)


@pytest.mark.parametrize("name", [".", "..", "...", "abc\n", "a/b", ""])
def test_bad_job_names_are_rejected(name: str) -> None:
    assert "/name" in job_errors(name=name)


def test_a_very_long_time_zone_is_a_validation_error() -> None:
    assert "/scheduleTimeZone" in job_errors(scheduleTimeZone="A" * 5000)
    assert "/scheduleTimeZone" in job_errors(scheduleTimeZone="Europe/" + "x" * 300)


# --- defect 7: app and group ids may not overlap --------------------------------------------

@pytest.mark.parametrize(("new", "apps", "groups", "clash"), [
    ("/g", ["/g/x"], [], "/g"),            # /g is a group (it holds /g/x)
    ("/g", [], ["/g"], "/g"),              # /g is an (empty) declared group
    ("/g/x", ["/g"], [], "/g"),            # /g is an app, so it cannot hold /g/x
    ("/a/b/c", ["/a"], [], "/a"),
])
def test_an_app_id_may_not_be_a_group_id(new: str, apps: list[str], groups: list[str],
                                         clash: str) -> None:
    message = app_group_overlap(new, apps, groups)
    assert message is not None and clash in message


@pytest.mark.parametrize(("new", "apps", "groups"), [
    ("/g", ["/g"], []),                    # the same app again: a PUT, not an overlap
    ("/g/y", ["/g/x"], ["/g"]),            # a sibling inside a group
    ("/gg", ["/g/x"], ["/g"]),             # a prefix of the string is not a path prefix
])
def test_apps_beside_groups_are_fine(new: str, apps: list[str], groups: list[str]) -> None:
    assert app_group_overlap(new, apps, groups) is None
