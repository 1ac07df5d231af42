"""Priority classes, gang labels, teams: parsing and where they are read from."""

from __future__ import annotations

import pytest

from scheduler.model.priority import (
    BATCH,
    SERVICE,
    app_priority,
    gang_size_for,
    job_priority,
    label_errors,
    parse_priority,
    priority_name,
    team_of_app,
)

PARSE_CASES = [
    ("critical", 1000), ("Service", 500), ("batch", 100), ("best-effort", 0),
    ("450", 450), (7, 7), (" -3 ", -3),
]


@pytest.mark.parametrize(("raw", "expected"), PARSE_CASES, ids=[str(c[0]) for c in PARSE_CASES])
def test_parse_priority(raw: str | int, expected: int) -> None:
    assert parse_priority(raw) == expected


@pytest.mark.parametrize("raw", ["urgent", "", "1e3", 10**9, True])
def test_bad_priorities_are_refused(raw: str | int) -> None:
    with pytest.raises(ValueError):
        parse_priority(raw)


def test_defaults_apps_service_jobs_batch() -> None:
    assert app_priority({}) == SERVICE
    assert app_priority({"dromos.io/priority": "best-effort"}) == 0
    assert job_priority(None) == BATCH
    assert job_priority("critical") == 1000


def test_label_errors_point_at_the_label() -> None:
    errs = label_errors({"dromos.io/priority": "urgent", "dromos.io/gang": "0"})
    assert [p for p, _ in errs] == ["/labels/dromos.io~1priority", "/labels/dromos.io~1gang"]
    assert label_errors({"dromos.io/gang": "true", "dromos.io/priority": "batch"}) == []


def test_gang_size() -> None:
    assert gang_size_for({}, 8) == 1
    assert gang_size_for({"dromos.io/gang": "true"}, 8) == 8
    assert gang_size_for({"dromos.io/gang": "4"}, 8) == 4


def test_names_and_teams() -> None:
    assert priority_name(500) == "service" and priority_name(450) == "450"
    assert team_of_app("/ml/train/a") == "ml" and team_of_app("/web") == "web"


def test_job_sharing_fields_are_optional_and_written_back_only_when_set() -> None:
    from scheduler.model.job import parse_job
    from scheduler.model.resources import Resources

    plain = parse_job({"name": "etl", "command": "true", "schedule": "R/2026-01-01T00:00:00Z/PT1H"})
    out = plain.to_chronos()
    assert not {"priority", "gangSize", "team", "gpus"} & out.keys()
    assert job_priority(plain.priority) == BATCH
    train = parse_job({"name": "train", "command": "true",
                       "schedule": "R/2026-01-01T00:00:00Z/PT1H", "priority": "service",
                       "gangSize": 8, "team": "ml", "gpus": 2})
    assert job_priority(train.priority) == SERVICE
    assert train.resources == Resources(0.1, 128, 256, 2)
    assert train.to_chronos()["gangSize"] == 8


def test_bad_job_and_app_sharing_values_are_422_with_paths() -> None:
    from scheduler.model.app import parse_app
    from scheduler.model.job import parse_job
    from scheduler.model.validation import SpecError

    with pytest.raises(SpecError) as e:
        parse_job({"name": "t", "command": "true", "schedule": "R/2026-01-01T00:00:00Z/PT1H",
                   "priority": "urgent", "gangSize": 0})
    assert {p for p, _ in e.value.details} == {"/priority", "/gangSize"}
    with pytest.raises(SpecError) as e2:
        parse_app({"id": "/ml/x", "cmd": "true", "labels": {"dromos.io/priority": "urgent"}})
    assert [p for p, _ in e2.value.details] == ["/labels/dromos.io~1priority"]
