"""Table tests: one checker at a time, over a handful of nodes, by name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from scheduler.model.constraints import Constraint
from scheduler.placement.checkers import (
    ClusterState,
    PortFit,
    ResourceFit,
    checkers_for,
    constraint_checker,
)
from scheduler.placement.results import PlacedTask
from tests.placement.factories import con, make_node, make_request, make_task, snapshot

# Racks r1 (a, b), r2 (c), r10 (d); zones z1 (a, c), z2 (b, d); e has no attributes.
NODES = (
    make_node("a", rack="r1", zone="z1"),
    make_node("b", rack="r1", zone="z2"),
    make_node("c", rack="r2", zone="z1"),
    make_node("d", rack="r10", zone="z2"),
    make_node("e"),
)


def passing(state: ClusterState, mask: np.ndarray) -> set[str]:
    return {h for h, ok in zip(state.hostnames, mask.tolist(), strict=True) if ok}


@dataclass(frozen=True)
class Case:
    constraint: Constraint
    tasks: tuple[PlacedTask, ...]
    expected: set[str]
    app_id: str = "/app"
    # GROUP_BY balances over values that can still take the task: nodes outside this set
    # fail "every other stage" (None = every node passes them).
    others: frozenset[str] | None = None


CONSTRAINT_CASES = {
    # UNIQUE
    "unique passes nodes without a task of the app": Case(
        con("hostname", "UNIQUE"), (make_task("a"),), {"b", "c", "d", "e"}),
    "unique ignores other apps' tasks": Case(
        con("hostname", "UNIQUE"), (make_task("a", app_id="/other"),), {"a", "b", "c", "d", "e"}),
    "unique on rack blocks the whole rack": Case(
        con("rack", "UNIQUE"), (make_task("a"),), {"c", "d"}),
    "unique fails node without attribute": Case(
        con("rack", "UNIQUE"), (), {"a", "b", "c", "d"}),
    # CLUSTER
    "cluster value keeps exact matches only": Case(
        con("rack", "CLUSTER", "r1"), (), {"a", "b"}),
    "cluster value is not a prefix match": Case(
        con("rack", "CLUSTER", "r1"), (make_task("d"),), {"a", "b"}),
    "cluster without value and no tasks accepts any node with the field": Case(
        con("zone", "CLUSTER"), (), {"a", "b", "c", "d"}),
    "cluster without value follows the app's first task": Case(
        con("zone", "CLUSTER"), (make_task("b"), make_task("a")), {"b", "d"}),
    "cluster without value ignores other apps": Case(
        con("zone", "CLUSTER"), (make_task("b", app_id="/other"),), {"a", "b", "c", "d"}),
    "cluster without value skips tasks on nodes lacking the field": Case(
        con("zone", "CLUSTER"), (make_task("e"), make_task("c")), {"a", "c"}),
    "cluster on hostname pins to one node": Case(
        con("hostname", "CLUSTER"), (make_task("c"),), {"c"}),
    # GROUP_BY
    "group_by with no tasks accepts every value": Case(
        con("zone", "GROUP_BY"), (), {"a", "b", "c", "d"}),
    "group_by accepts only the least loaded values": Case(
        con("zone", "GROUP_BY"), (make_task("a"),), {"b", "d"}),
    "group_by counts per value, not per node": Case(
        con("rack", "GROUP_BY"), (make_task("a"), make_task("c")), {"d"}),
    "group_by prefers the least loaded value": Case(
        con("zone", "GROUP_BY"),
        (make_task("a"), make_task("a"), make_task("b")),
        {"b", "d"},
        others=frozenset({"a", "b", "c", "d"}),
    ),
    "group_by skips a least loaded value without room": Case(
        con("zone", "GROUP_BY"), (make_task("a"),), {"a", "c"}, others=frozenset({"a", "c", "e"})),
    "group_by with n behaves the same": Case(
        con("zone", "GROUP_BY", "3"), (make_task("a"),), {"b", "d"}),
    "group_by ignores other apps": Case(
        con("zone", "GROUP_BY"), (make_task("a", app_id="/other"),), {"a", "b", "c", "d"}),
    "group_by with no roomy value passes nothing": Case(
        con("zone", "GROUP_BY"), (), set(), others=frozenset({"e"})),
    # LIKE
    "like needs a full match": Case(con("rack", "LIKE", "r[12]"), (), {"a", "b", "c"}),
    "like fails node without attribute": Case(con("rack", "LIKE", ".*"), (), {"a", "b", "c", "d"}),
    "like on hostname": Case(con("hostname", "LIKE", "[a-c]"), (), {"a", "b", "c"}),
    # UNLIKE
    "unlike passes node without attribute": Case(con("rack", "UNLIKE", "r1"), (), {"c", "d", "e"}),
    "unlike rejects full matches only": Case(con("rack", "UNLIKE", "r1.*"), (), {"c", "e"}),
    # MAX_PER
    "max_per 2 rejects third on same rack": Case(
        con("rack", "MAX_PER", "2"), (make_task("a"), make_task("b")), {"c", "d"}),
    "max_per 2 allows a second on the rack": Case(
        con("rack", "MAX_PER", "2"), (make_task("a"),), {"a", "b", "c", "d"}),
    "max_per fails node without attribute": Case(
        con("rack", "MAX_PER", "5"), (), {"a", "b", "c", "d"}),
    "max_per on hostname": Case(
        con("hostname", "MAX_PER", "1"), (make_task("a"),), {"b", "c", "d", "e"}),
    # IS
    "is exact match": Case(con("zone", "IS", "z2"), (), {"b", "d"}),
    "is fails node without attribute": Case(con("rack", "IS", "r10"), (), {"d"}),
    "is on an unknown value passes nothing": Case(con("zone", "IS", "z9"), (), set()),
    "any operator on an unknown field passes nothing but unlike": Case(
        con("dc", "UNIQUE"), (), set()),
    "unlike on an unknown field passes everything": Case(
        con("dc", "UNLIKE", "x"), (), {"a", "b", "c", "d", "e"}),
}


@pytest.mark.parametrize("case", CONSTRAINT_CASES.values(), ids=CONSTRAINT_CASES.keys())
def test_constraint_checker(case: Case) -> None:
    state = ClusterState(snapshot(NODES, case.tasks))
    checker = constraint_checker(case.constraint)
    others = None
    if checker.needs_others:
        allowed = case.others if case.others is not None else set(state.hostnames)
        others = np.array([h in allowed for h in state.hostnames])
    assert passing(state, checker.mask(state, case.app_id, others)) == case.expected
    assert checker.reason == "UnfulfilledConstraint"
    assert checker.detail == case.constraint.describe()


def test_constraint_detail_is_the_marathon_description() -> None:
    assert constraint_checker(con("rack", "MAX_PER", "2")).detail == "MAX_PER rack 2"
    assert constraint_checker(con("hostname", "UNIQUE")).detail == "UNIQUE hostname"


def test_counting_checkers_see_reservations_and_releases() -> None:
    state = ClusterState(snapshot(NODES))
    unique = constraint_checker(con("rack", "UNIQUE"))
    state.reserve(state.index["a"], "/app", make_request().resources, ())
    assert passing(state, unique.mask(state, "/app", None)) == {"c", "d"}
    state.unreserve(state.index["a"], "/app", make_request().resources, ())
    assert passing(state, unique.mask(state, "/app", None)) == {"a", "b", "c", "d"}


# --- resources and ports ----------------------------------------------------------------

SMALL = (
    make_node("big", cpus=4, mem=1024, gpus=1),
    make_node("small", cpus=0.3, mem=100),
    make_node("over", cpus=1, mem=1024),
)


@dataclass(frozen=True)
class ResourceCase:
    dimension: int
    amount: float
    expected: set[str]
    tasks: tuple[PlacedTask, ...] = ()


RESOURCE_CASES = {
    "cpus that fit exactly": ResourceCase(0, 0.3, {"big", "small", "over"}),
    "float sums fit (0.1 + 0.2 into 0.3)": ResourceCase(
        0, 0.2, {"big", "small", "over"}, (make_task("small", cpus=0.1, mem=0),)),
    "insufficient cpus": ResourceCase(0, 0.5, {"big", "over"}),
    "insufficient mem": ResourceCase(1, 512, {"big", "over"}),
    "gpus only on gpu nodes": ResourceCase(3, 1, {"big"}),
    "zero gpus fit nodes without gpus": ResourceCase(3, 0, {"big", "small", "over"}),
    "an overcommitted node fails even a zero request": ResourceCase(
        0, 0, {"big", "small"}, (make_task("over", cpus=2, mem=0),)),
}


@pytest.mark.parametrize("case", RESOURCE_CASES.values(), ids=RESOURCE_CASES.keys())
def test_resource_fit(case: ResourceCase) -> None:
    state = ClusterState(snapshot(SMALL, case.tasks))
    checker = ResourceFit(case.dimension, case.amount)
    assert passing(state, checker.mask(state, "/app", None)) == case.expected
    for i, host in enumerate(state.hostnames):
        assert checker.admits(state, i) == (host in case.expected), host


def test_resource_stage_names() -> None:
    stages = checkers_for(make_request())
    assert [(s.reason, s.detail) for s in stages[:5]] == [
        ("InsufficientCpus", "insufficient cpus"),
        ("InsufficientMemory", "insufficient mem"),
        ("InsufficientDisk", "insufficient disk"),
        ("InsufficientGpus", "insufficient gpus"),
        ("InsufficientPorts", "insufficient ports"),
    ]


def test_zero_request_is_trivial_unless_a_node_is_overcommitted() -> None:
    fresh = ClusterState(snapshot(SMALL))
    over = ClusterState(snapshot(SMALL, (make_task("over", cpus=2, mem=0),)))
    assert ResourceFit(0, 0).trivial(fresh)
    assert not ResourceFit(0, 0).trivial(over)
    assert ResourceFit(1, 0).trivial(over)
    assert not ResourceFit(0, 1).trivial(fresh)


PORT_NODES = (
    make_node("p3", ports=((31000, 31002),)),
    make_node("p2", ports=((31000, 31000), (32000, 32000))),
    make_node("none", ports=()),
)


@dataclass(frozen=True)
class PortCase:
    slots: tuple[int, ...]
    expected: set[str]
    tasks: tuple[PlacedTask, ...] = ()


PORT_CASES = {
    "no ports fit everywhere": PortCase((), {"p3", "p2", "none"}),
    "enough dynamic ports": PortCase((0, 0), {"p3", "p2"}),
    "not enough dynamic ports": PortCase((0, 0, 0), {"p3"}),
    "fixed port in range and free": PortCase((32000,), {"p2"}),
    "fixed port outside every range": PortCase((31005,), set()),
    "fixed port already taken": PortCase((31000,), {"p2"}, (make_task("p3", ports=(31000,)),)),
    "fixed and dynamic ports come from the same ranges": PortCase((31000, 0, 0), {"p3"}),
    "taken ports reduce the dynamic count": PortCase(
        (0, 0), {"p2"}, (make_task("p3", ports=(31000, 31001)),)),
    "duplicate fixed ports never fit": PortCase((31000, 31000), set()),
    "ports held outside the ranges do not count": PortCase(
        (0, 0, 0), {"p3"}, (make_task("p3", ports=(9999,)),)),
}


@pytest.mark.parametrize("case", PORT_CASES.values(), ids=PORT_CASES.keys())
def test_port_fit(case: PortCase) -> None:
    state = ClusterState(snapshot(PORT_NODES, case.tasks))
    checker = PortFit(case.slots)
    assert passing(state, checker.mask(state, "/app", None)) == case.expected
    for i, host in enumerate(state.hostnames):
        assert checker.admits(state, i) == (host in case.expected), host


def test_fixed_port_mask_follows_reserve_and_release() -> None:
    state = ClusterState(snapshot(PORT_NODES))
    fit = PortFit((31000,))
    assert passing(state, fit.mask(state, "/app", None)) == {"p3", "p2"}
    state.reserve(state.index["p3"], "/app", make_request().resources, (31000,))
    assert passing(state, fit.mask(state, "/app", None)) == {"p2"}
    state.unreserve(state.index["p3"], "/app", make_request().resources, (31000,))
    assert passing(state, fit.mask(state, "/app", None)) == {"p3", "p2"}


def test_state_orders_nodes_by_hostname_and_rejects_duplicates() -> None:
    state = ClusterState(snapshot([make_node("b"), make_node("a"), make_node("c")]))
    assert state.hostnames == ("a", "b", "c")
    with pytest.raises(ValueError, match="duplicate hostname 'a'"):
        ClusterState(snapshot([make_node("a"), make_node("a")]))


def test_state_ignores_tasks_on_unknown_hosts() -> None:
    state = ClusterState(snapshot([make_node("a")], [make_task("ghost", cpus=3)]))
    assert state.free[0, 0] == 4.0
    assert "/app" not in state.apps


def test_unreserve_without_a_recorded_task_raises() -> None:
    state = ClusterState(snapshot([make_node("a")]))
    with pytest.raises(ValueError, match="no task of '/app'"):
        state.unreserve(0, "/app", make_request().resources, ())


def test_field_encoding_is_shared_and_static_masks_are_cached() -> None:
    state = ClusterState(snapshot(NODES))
    fi = state.field_index("rack")
    assert fi.values == ("r1", "r10", "r2")
    assert state.field_index("rack") is fi
    assert fi.equals("r1") is fi.equals("r1")
    assert state.field_index("hostname").identity
    # e lacks the field: it sits in the extra "missing" slot after the values.
    assert fi.codes[state.index["e"]] == fi.missing == 3
