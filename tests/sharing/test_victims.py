"""Victim selection, one named case per rule (see scheduler/sharing/victims.py)."""

from __future__ import annotations

import pytest

from scheduler.sharing.types import PreemptionKind, RunningTask
from scheduler.sharing.victims import NoVictims, Preemptor, VictimChoice, select_victims
from tests.placement.factories import con
from tests.sharing.factories import make_node, make_request, quota, running

SERVICE = Preemptor("req", "a", 500, borrowing=False)


def _choose(
    nodes_cpus: dict[str, float],
    tasks: list[RunningTask],
    cpus: float,
    preemptor: Preemptor = SERVICE,
    **kw: object,
) -> VictimChoice | NoVictims:
    nodes = [make_node(h, cpus=c, mem=1e6) for h, c in nodes_cpus.items()]
    request = make_request("/a/new", cpus=cpus, mem=1.0, **kw)  # type: ignore[arg-type]
    return select_victims(request, preemptor, nodes, tasks)


def _ids(choice: VictimChoice | NoVictims) -> list[str]:
    assert isinstance(choice, VictimChoice), choice
    return sorted(v.task_id for v in choice.victims)


CASES: list[tuple[str, dict[str, float], list[RunningTask], float, list[str] | None]] = [
    ("fits already: no victims", {"n1": 4}, [running("b1", "n1", cpus=2)], 2, []),
    ("one lower-priority victim", {"n1": 4}, [running("b1", "n1", cpus=4)], 2, ["b1"]),
    (
        "lowest priority first",
        {"n1": 4},
        [running("best", "n1", cpus=2, priority=0), running("bat", "n1", cpus=2, priority=100)],
        2,
        ["best"],
    ),
    (
        "equal priority is never a victim",
        {"n1": 4},
        [running("svc", "n1", cpus=4, priority=500)],
        2,
        None,
    ),
    (
        "higher priority is never a victim",
        {"n1": 4},
        [running("crit", "n1", cpus=4, priority=1000)],
        2,
        None,
    ),
    (
        "no preemption when it would still not fit",
        {"n1": 4},
        [running("svc", "n1", cpus=3, priority=500), running("b1", "n1", cpus=1)],
        2,
        None,
    ),
    (
        "fewest victims across nodes",
        {"n1": 4, "n2": 4},
        [
            running("x1", "n1", cpus=2), running("x2", "n1", cpus=2),
            running("y1", "n2", cpus=4),
        ],
        4,
        ["y1"],
    ),
    (
        "reprieve: only what is needed on the node",
        {"n1": 6},
        [running("b1", "n1", cpus=2, age_s=10), running("b2", "n1", cpus=2, age_s=20),
         running("b3", "n1", cpus=2, age_s=30)],
        2,
        ["b1"],  # the youngest of equals goes
    ),
    (
        "a gang goes whole",
        {"n1": 4, "n2": 4},
        [running("g0", "n1", cpus=4, gang="g"), running("g1", "n2", cpus=4, gang="g")],
        2,
        ["g0", "g1"],
    ),
    (
        "tasks being killed are not victims again",
        {"n1": 4},
        [running("k", "n1", cpus=4, killing=True)],
        2,
        None,
    ),
]


@pytest.mark.parametrize(
    ("nodes", "tasks", "cpus", "expected"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_victim_selection(
    nodes: dict[str, float], tasks: list[RunningTask], cpus: float, expected: list[str] | None
) -> None:
    choice = _choose(nodes, tasks, cpus)
    if expected is None:
        assert isinstance(choice, NoVictims)
    else:
        assert _ids(choice) == expected


def test_victims_carry_their_grace_and_why() -> None:
    choice = _choose({"n1": 2}, [running("b1", "n1", cpus=2, grace=45.0)], 2)
    assert isinstance(choice, VictimChoice)
    (v,) = choice.victims
    assert (v.task_id, v.host, v.grace_seconds) == ("b1", "n1", 45.0)
    assert v.kind is PreemptionKind.PRIORITY
    assert choice.host == "n1"


def test_constraints_are_verified_after_freeing() -> None:
    # n1 has the cheapest victim but the request may only run on rack r2.
    nodes = [make_node("n1", cpus=2, rack="r1"), make_node("n2", cpus=2, rack="r2")]
    tasks = [running("cheap", "n1", cpus=2, priority=0), running("dear", "n2", cpus=2)]
    request = make_request("/a/new", cpus=2, mem=1.0, constraints=[con("rack", "IS", "r2")])
    choice = select_victims(request, SERVICE, nodes, tasks)
    assert isinstance(choice, VictimChoice)
    assert [v.task_id for v in choice.victims] == ["dear"]


def test_other_teams_guaranteed_tasks_are_not_taken_for_priority() -> None:
    # Team b runs within its guarantee: a's service may not take its batch task.
    nodes = [make_node("n1", cpus=4, mem=1e6)]
    tasks = [running("b1", "n1", cpus=4, team="b")]
    quotas = {"a": quota("a", 4), "b": quota("b", 4)}
    request = make_request("/a/new", cpus=2, mem=1.0)
    borrowing = Preemptor("req", "a", 500, borrowing=True)
    assert isinstance(select_victims(request, borrowing, nodes, tasks, quotas), NoVictims)


def test_reclaim_takes_borrowed_capacity_of_any_priority() -> None:
    # Team b borrows 4 cpus (guarantee 0) with a critical task; a is within its guarantee.
    nodes = [make_node("n1", cpus=4, mem=1e6)]
    tasks = [running("b1", "n1", cpus=4, team="b", priority=1000)]
    quotas = {"a": quota("a", 4), "b": quota("b", 0)}
    request = make_request("/a/new", cpus=2, mem=1.0)
    lender = Preemptor("req", "a", 100, borrowing=False)
    choice = select_victims(request, lender, nodes, tasks, quotas)
    assert isinstance(choice, VictimChoice)
    assert [(v.task_id, v.kind) for v in choice.victims] == [("b1", PreemptionKind.RECLAIM)]


def test_borrowed_tasks_go_before_guaranteed_ones() -> None:
    nodes = [make_node("n1", cpus=4, mem=1e6), make_node("n2", cpus=4, mem=1e6)]
    # a's own low-priority task on n1; b's borrowed task (same priority) on n2.
    tasks = [running("own", "n1", cpus=4, team="a", priority=0),
             running("lent", "n2", cpus=4, team="b", priority=0)]
    quotas = {"a": quota("a", 8), "b": quota("b", 0)}
    choice = select_victims(make_request("/a/new", cpus=4, mem=1.0),
                            Preemptor("req", "a", 500, borrowing=False), nodes, tasks, quotas)
    assert _ids(choice) == ["lent"]
