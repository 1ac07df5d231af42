"""Quota accounting with borrowing: admission, borrowed tasks, reclaim."""

from __future__ import annotations

import pytest

from scheduler.model.quota import oversubscribed, parse_quota
from scheduler.model.resources import Resources
from scheduler.model.validation import SpecError
from scheduler.sharing.quota import admit, borrowed_tasks, reclaim, usage_by_team
from tests.sharing.factories import quota, running

QUOTAS = {
    "ml": quota("ml", cpus=8, mem=8192, gpus=2, borrow=(4, 4096, 0)),
    "etl": quota("etl", cpus=8, mem=8192),
}

ADMIT_CASES = [
    # (name, team, used cpus, demand cpus, demand gpus, admitted, borrowing)
    ("within guarantee", "ml", 0, 4, 0, True, False),
    ("exactly the guarantee", "ml", 4, 4, 0, True, False),
    ("borrowing within the limit", "ml", 8, 4, 0, True, True),
    ("above guarantee + limit", "ml", 8, 5, 0, False, True),
    ("gpus have no borrowing room", "ml", 0, 1, 3, False, True),
    ("no limit: may borrow anything", "etl", 8, 100, 0, True, True),
    ("a team without quota borrows everything", "adhoc", 0, 1, 0, True, True),
]


@pytest.mark.parametrize(
    ("team", "used", "cpus", "gpus", "admitted", "borrowing"),
    [c[1:] for c in ADMIT_CASES],
    ids=[c[0] for c in ADMIT_CASES],
)
def test_admission(
    team: str, used: float, cpus: float, gpus: float, admitted: bool, borrowing: bool
) -> None:
    usage = {team: Resources(cpus=used, mem=0)}
    got = admit(team, Resources(cpus=cpus, mem=0, gpus=gpus), usage, QUOTAS)
    assert (got.admitted, got.borrowing) == (admitted, borrowing)
    assert (got.reason == "") == admitted


def test_wait_reason_names_team_usage_and_quota() -> None:
    got = admit("ml", Resources(cpus=5), {"ml": Resources(cpus=8)}, QUOTAS)
    assert got.reason == (
        "waiting for quota: team ml uses 8 of 8 cpus guaranteed + 4 borrowable, needs 5 more"
    )


def test_usage_ignores_tasks_being_killed() -> None:
    tasks = [running("a", "n", cpus=2, team="ml"), running("b", "n", cpus=3, team="ml",
                                                           killing=True)]
    assert usage_by_team(tasks) == {"ml": Resources(cpus=2, mem=128)}


BORROWED_CASES = [
    ("within guarantee: nothing borrowed", [("t1", 4, 100, 0)], 8, []),
    ("excess covered by the lowest priority", [("hi", 4, 500, 0), ("lo", 4, 0, 0)], 4, ["lo"]),
    ("youngest of equals", [("old", 4, 100, 50), ("new", 4, 100, 10)], 4, ["new"]),
    ("as many as the excess needs", [("a", 2, 0, 0), ("b", 2, 0, 1), ("c", 2, 0, 2)], 2,
     ["a", "b"]),
    ("partly borrowed counts as borrowed", [("a", 3, 0, 0), ("b", 3, 0, 1)], 4, ["a"]),
]


@pytest.mark.parametrize(
    ("tasks", "guarantee", "expected"),
    [c[1:] for c in BORROWED_CASES],
    ids=[c[0] for c in BORROWED_CASES],
)
def test_borrowed_tasks(
    tasks: list[tuple[str, float, int, float]], guarantee: float, expected: list[str]
) -> None:
    running_ = [running(i, "n", cpus=c, mem=0, priority=p, age_s=age, team="ml")
                for i, c, p, age in tasks]
    quotas = {"ml": quota("ml", cpus=guarantee, mem=0)}
    assert sorted(borrowed_tasks(running_, quotas)) == expected


def test_reclaim_takes_only_what_the_lender_is_owed() -> None:
    tasks = [running(f"b{i}", "n", cpus=2, mem=0, team="b", priority=i) for i in range(4)]
    quotas = {"a": quota("a", cpus=8, mem=0), "b": quota("b", cpus=0, mem=0)}
    got = reclaim("a", Resources(cpus=3), tasks, quotas)
    assert [t.id for t in got] == ["b0", "b1"]


def test_no_reclaim_to_borrow() -> None:
    tasks = [running("b0", "n", cpus=2, mem=0, team="b")]
    quotas = {"a": quota("a", cpus=1, mem=0), "b": quota("b", cpus=0, mem=0)}
    assert reclaim("a", Resources(cpus=2), tasks, quotas) == ()


def test_parse_quota_and_errors_point_at_the_field() -> None:
    q = parse_quota({"team": "ml", "guaranteed": {"cpus": 8, "gpus": 2},
                     "borrowingLimit": {"cpus": 4}})
    assert q.guaranteed == Resources(cpus=8, gpus=2)
    assert q.borrowing_limit == Resources(cpus=4)
    assert q.to_json()["borrowingLimit"] == {"cpus": 4, "mem": 0, "gpus": 0}
    with pytest.raises(SpecError) as e:
        parse_quota({"team": "ML!", "guaranteed": {"cpus": -1}})
    assert {p for p, _ in e.value.details} == {"/team", "/guaranteed/cpus"}


def test_oversubscribed_guarantees() -> None:
    quotas = [quota("a", cpus=6, mem=0), quota("b", cpus=6, mem=0)]
    assert oversubscribed(quotas, Resources(cpus=10, mem=10)) == ["cpus"]
    assert oversubscribed(quotas, Resources(cpus=12, mem=0)) == []
