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
