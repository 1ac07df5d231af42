"""The Placer end to end: funnel, explain, ports, release, place_many, edge cases."""

from __future__ import annotations

from collections import Counter

import pytest

from scheduler.model.app import AppSpec
from scheduler.model.resources import Resources
from scheduler.placement.pipeline import Placer, placed_task
from scheduler.placement.rankers import Spread
from scheduler.placement.results import (
    MARATHON_REASONS,
    Placement,
    PlacementRequest,
    Rejection,
    RejectionSummary,
    StageCount,
    Strategy,
)
from tests.placement.factories import con, make_node, make_request, make_task, snapshot


def placed(result: Placement | RejectionSummary) -> Placement:
    assert isinstance(result, Placement), result
    return result


def rejected(result: Placement | RejectionSummary) -> RejectionSummary:
    assert isinstance(result, RejectionSummary), result
    return result


# --- the funnel ---------------------------------------------------------------------------

# One node per way of failing, in pipeline order, plus one that only fails the last stage.
FUNNEL_NODES = [
    make_node("a-nocpu", cpus=0.5),
    make_node("b-nomem", mem=64),
    make_node("c-nodisk", disk=0),
    make_node("d-nogpu", disk=100),
    make_node("e-noports", disk=100, gpus=1, ports=()),
    make_node("f-wrongrack", disk=100, gpus=1, rack="r2"),
    make_node("g-taken", disk=100, gpus=1, rack="r1"),
]
FUNNEL_REQUEST = make_request(
    cpus=1, mem=128, disk=10, gpus=1, ports=(0,),
    constraints=(con("rack", "LIKE", "r1"), con("hostname", "UNIQUE")),
)


def funnel_placer() -> Placer:
    return Placer(snapshot(FUNNEL_NODES, [make_task("g-taken", cpus=0.1, mem=1)]))


def test_rejection_funnel_counts_each_node_at_its_first_failing_stage() -> None:
    summary = rejected(funnel_placer().place(FUNNEL_REQUEST))
    assert summary.nodes == 7
    assert summary.stages == (
        StageCount("InsufficientCpus", "insufficient cpus", 7, 1),
        StageCount("InsufficientMemory", "insufficient mem", 6, 1),
        StageCount("InsufficientDisk", "insufficient disk", 5, 1),
        StageCount("InsufficientGpus", "insufficient gpus", 4, 1),
        StageCount("InsufficientPorts", "insufficient ports", 3, 1),
        StageCount("UnfulfilledConstraint", "LIKE rack r1", 2, 1),
        StageCount("UnfulfilledConstraint", "UNIQUE hostname", 1, 1),
    )


def test_rejection_summary_describe_and_marathon_shape() -> None:
    summary = rejected(funnel_placer().place(FUNNEL_REQUEST))
    assert summary.describe() == (
        "1 node: insufficient cpus; 1 node: insufficient mem; 1 node: insufficient disk; "
        "1 node: insufficient gpus; 1 node: insufficient ports; 1 node: LIKE rack r1; "
        "1 node: UNIQUE hostname"
    )
    marathon = {e["reason"]: e for e in summary.to_marathon()}
    assert list(marathon) == list(MARATHON_REASONS)
    assert marathon["InsufficientCpus"] == {
        "reason": "InsufficientCpus", "declined": 1, "processed": 7}
    assert marathon["InsufficientPorts"] == {
        "reason": "InsufficientPorts", "declined": 1, "processed": 3}
    # Two constraint stages merge: declined adds up, processed is the first one's.
    assert marathon["UnfulfilledConstraint"] == {
        "reason": "UnfulfilledConstraint", "declined": 2, "processed": 2}
    assert marathon["UnfulfilledRole"] == {"reason": "UnfulfilledRole", "declined": 0,
                                           "processed": 0}


def test_explain_gives_each_infeasible_node_its_first_rejection() -> None:
    placer = funnel_placer()
    assert placer.explain(FUNNEL_REQUEST) == [
        Rejection("a-nocpu", "InsufficientCpus", "insufficient cpus"),
        Rejection("b-nomem", "InsufficientMemory", "insufficient mem"),
        Rejection("c-nodisk", "InsufficientDisk", "insufficient disk"),
        Rejection("d-nogpu", "InsufficientGpus", "insufficient gpus"),
        Rejection("e-noports", "InsufficientPorts", "insufficient ports"),
        Rejection("f-wrongrack", "UnfulfilledConstraint", "LIKE rack r1"),
        Rejection("g-taken", "UnfulfilledConstraint", "UNIQUE hostname"),
    ]


def test_explain_leaves_out_feasible_nodes_and_changes_nothing() -> None:
    placer = Placer(snapshot([make_node("a", cpus=1), make_node("b", cpus=4)]))
    request = make_request(cpus=2)
    assert placer.explain(request) == [Rejection("a", "InsufficientCpus", "insufficient cpus")]
    assert placer.free("b") == Resources(4, 4096, 0, 0)
    assert placed(placer.place(request)).host == "b"


def test_describe_of_an_empty_cluster() -> None:
    summary = rejected(Placer(snapshot([])).place(make_request()))
    assert summary.nodes == 0
    assert summary.describe() == "no nodes"
    assert Placer(snapshot([])).explain(make_request()) == []


def test_a_failed_placement_records_nothing() -> None:
    placer = Placer(snapshot([make_node("a", cpus=1)]))
    rejected(placer.place(make_request(cpus=2, ports=(0,))))
    assert placer.free("a") == Resources(1, 4096, 0, 0)
    assert placed(placer.place(make_request(cpus=1, ports=(0,)))).ports == (31000,)


# --- recording placements ------------------------------------------------------------------


def test_placement_reserves_resources_on_the_chosen_node() -> None:
    placer = Placer(snapshot([make_node("a")]))
    placed(placer.place(make_request(cpus=1.5, mem=1000, disk=0)))
    assert placer.free("a") == Resources(2.5, 3096, 0, 0)


def test_later_constraint_checks_see_earlier_placements() -> None:
    placer = Placer(snapshot([make_node("a"), make_node("b")]))
    request = make_request(constraints=[con("hostname", "UNIQUE")])
    hosts = {placed(placer.place(request)).host, placed(placer.place(request)).host}
    assert hosts == {"a", "b"}
    summary = rejected(placer.place(request))
    assert summary.describe() == "2 nodes: UNIQUE hostname"


def test_snapshot_tasks_count_for_resources_and_constraints() -> None:
    placer = Placer(snapshot(
        [make_node("a", rack="r1"), make_node("b", rack="r1"), make_node("c", rack="r2")],
        [make_task("a", cpus=4), make_task("b", app_id="/web")],
    ))
    request = make_request(app_id="/web", constraints=[con("rack", "MAX_PER", "1")])
    assert placed(placer.place(request)).host == "c"
    assert rejected(placer.place(request)).describe() == (
        "1 node: insufficient cpus; 2 nodes: MAX_PER rack 1")


def test_counting_is_per_app() -> None:
    placer = Placer(snapshot([make_node("a")], [make_task("a", app_id="/other")]))
    request = make_request(app_id="/mine", constraints=[con("hostname", "UNIQUE")])
    assert placed(placer.place(request)).host == "a"


def test_tasks_on_unknown_hosts_are_ignored() -> None:
    placer = Placer(snapshot([make_node("a")], [make_task("gone", cpus=100)]))
    request = make_request(constraints=[con("hostname", "UNIQUE")])
    assert placed(placer.place(request)).host == "a"
    placer.release(make_task("gone", cpus=100))  # held nothing here: no-op
    assert placer.free("a") == Resources(3, 4096 - 128, 0, 0)


def test_duplicate_hostnames_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate hostname"):
        Placer(snapshot([make_node("a"), make_node("a")]))


def test_overcommitted_snapshot_node_takes_nothing() -> None:
    placer = Placer(snapshot([make_node("a", cpus=1)], [make_task("a", cpus=2)]))
    summary = rejected(placer.place(make_request(cpus=0, mem=1)))
    assert summary.describe() == "1 node: insufficient cpus"


# --- ports ---------------------------------------------------------------------------------


def test_dynamic_ports_are_the_lowest_free_ones() -> None:
    placer = Placer(snapshot([make_node("a")], [make_task("a", ports=(31000, 31002))]))
    assert placed(placer.place(make_request(ports=(0, 0)))).ports == (31001, 31003)
    assert placed(placer.place(make_request(ports=(0,)))).ports == (31004,)


def test_ports_come_back_in_slot_order() -> None:
    placer = Placer(snapshot([make_node("a")]))
    result = placed(placer.place(make_request(ports=(0, 31000, 0, 31005))))
    # 31000 is the task's own fixed port, so dynamic slots skip it.
    assert result.ports == (31001, 31000, 31002, 31005)


def test_fixed_port_is_exclusive_per_node() -> None:
    placer = Placer(snapshot([make_node("a"), make_node("b")]))
    request = make_request(ports=(31005,))
    hosts = [placed(placer.place(request)).host for _ in range(2)]
    assert sorted(hosts) == ["a", "b"]
    assert rejected(placer.place(request)).describe() == "2 nodes: insufficient ports"
    # Dynamic requests on the same node step around the fixed port.
    assert placed(placer.place(make_request(ports=(0,) * 6))).ports == (
        31000, 31001, 31002, 31003, 31004, 31006)


def test_dynamic_ports_span_several_ranges_lowest_first() -> None:
    node = make_node("a", ports=((32000, 32002), (31000, 31001)))
    placer = Placer(snapshot([node]))
    assert placed(placer.place(make_request(ports=(0, 0, 0)))).ports == (31000, 31001, 32000)
    assert placed(placer.place(make_request(ports=(0, 0)))).ports == (32001, 32002)
    assert rejected(placer.place(make_request(ports=(0,)))).describe() == (
        "1 node: insufficient ports")


def test_released_ports_are_handed_out_again_lowest_first() -> None:
    placer = Placer(snapshot([make_node("a")]))
    request = make_request(ports=(0, 0))
    first = placed(placer.place(request))
    second = placed(placer.place(request))
    assert (first.ports, second.ports) == ((31000, 31001), (31002, 31003))
    placer.release(placed_task(request, first))
    assert placed(placer.place(make_request(ports=(0, 0, 0)))).ports == (31000, 31001, 31004)


# --- release ---------------------------------------------------------------------------------


def test_release_frees_resources_ports_and_constraint_counts() -> None:
    placer = Placer(snapshot([make_node("a", cpus=1)]))
    request = make_request(cpus=1, ports=(31000,), constraints=[con("hostname", "UNIQUE")])
    first = placed(placer.place(request))
    assert rejected(placer.place(request)).stages[0].declined == 1
    placer.release(placed_task(request, first))
    assert placer.free("a") == Resources(1, 4096, 0, 0)
    assert placed(placer.place(request)) == first


def test_release_of_a_snapshot_task_makes_room() -> None:
    task = make_task("a", cpus=4, ports=(31000,))
    placer = Placer(snapshot([make_node("a")], [task]))
    request = make_request(cpus=4, ports=(31000,))
    rejected(placer.place(request))
    placer.release(task)
    assert placed(placer.place(request)) == Placement("a", (31000,))


def test_release_of_an_unrecorded_task_raises() -> None:
    placer = Placer(snapshot([make_node("a")]))
    with pytest.raises(ValueError, match="no task of '/app' is recorded on 'a'"):
        placer.release(make_task("a"))
    placed(placer.place(make_request()))
    placer.release(make_task("a"))
    with pytest.raises(ValueError):
        placer.release(make_task("a"))


# --- place_many ------------------------------------------------------------------------------


def test_place_many_places_all_when_they_fit() -> None:
    placer = Placer(snapshot([make_node("a", cpus=2), make_node("b", cpus=2)]))
    placements, summary = placer.place_many(make_request(cpus=1), 4)
    assert summary is None
    assert Counter(p.host for p in placements) == {"a": 2, "b": 2}


def test_place_many_stops_at_the_first_failure() -> None:
    placer = Placer(snapshot([make_node("a", cpus=2), make_node("b", cpus=1)]))
    placements, summary = placer.place_many(make_request(cpus=1), 5)
    assert len(placements) == 3
    assert summary is not None
    assert summary.describe() == "2 nodes: insufficient cpus"


def test_place_many_zero_and_negative() -> None:
    placer = Placer(snapshot([make_node("a")]))
    assert placer.place_many(make_request(), 0) == ([], None)
    with pytest.raises(ValueError, match="count must be >= 0"):
        placer.place_many(make_request(), -1)


# --- constraints through the whole pipeline ----------------------------------------------------


def test_cluster_without_value_pins_to_the_first_placement() -> None:
    nodes = [make_node(f"{z}{i}", cpus=1, zone=z) for z in ("x", "y") for i in range(3)]
    placer = Placer(snapshot(nodes))
    request = make_request(cpus=1, constraints=[con("zone", "CLUSTER")])
    placements, summary = placer.place_many(request, 4)
    assert [p.host for p in placements] == ["x0", "x1", "x2"]
    assert summary is not None and summary.describe() == (
        "3 nodes: insufficient cpus; 3 nodes: CLUSTER zone")


def test_cluster_without_value_is_released_when_the_app_has_no_task_left() -> None:
    nodes = [make_node("x0", cpus=1, zone="x"), make_node("y0", cpus=2, zone="y")]
    placer = Placer(snapshot(nodes, [make_task("x0", cpus=0.5)]))
    request = make_request(cpus=1, constraints=[con("zone", "CLUSTER")])
    assert rejected(placer.place(request)).describe() == (
        "1 node: insufficient cpus; 1 node: CLUSTER zone")
    placer.release(make_task("x0", cpus=0.5))
    # Free again: binpack opens the bigger node, and the app is pinned to its zone.
    placements, summary = placer.place_many(request, 3)
    assert [p.host for p in placements] == ["y0", "y0"]
    assert summary is not None and summary.describe() == (
        "1 node: insufficient cpus; 1 node: CLUSTER zone")


def test_cluster_pin_moves_to_the_next_oldest_task() -> None:
    nodes = [make_node("x0", zone="x"), make_node("y0", zone="y"), make_node("z0", zone="z")]
    tasks = [make_task("y0"), make_task("z0")]
    placer = Placer(snapshot(nodes, tasks))
    request = make_request(constraints=[con("zone", "CLUSTER")])
    assert placed(placer.place(request)).host == "y0"
    placer.release(make_task("y0"))
    placer.release(make_task("y0"))
    assert placed(placer.place(request)).host == "z0"


def test_group_by_spreads_evenly() -> None:
    nodes = [make_node(f"{z}{i}", cpus=8, zone=z) for z in "abc" for i in range(2)]
    placer = Placer(snapshot(nodes))
    placements, summary = placer.place_many(
        make_request(cpus=1, constraints=[con("zone", "GROUP_BY")]), 7)
    assert summary is None
    counts = Counter(p.host[0] for p in placements)
    assert sorted(counts.values()) == [2, 2, 3]


def test_group_by_falls_back_when_the_least_loaded_value_is_full() -> None:
    nodes = [make_node("a0", cpus=1, zone="a"), make_node("b0", cpus=8, zone="b"),
             make_node("c0", cpus=8, zone="c")]
    placer = Placer(snapshot(nodes))
    request = make_request(cpus=1, constraints=[con("zone", "GROUP_BY")])
    placements, summary = placer.place_many(request, 7)
    assert summary is None
    # a holds one task and is full; b and c take the rest evenly, never waiting on a.
    assert Counter(p.host for p in placements) == {"a0": 1, "b0": 3, "c0": 3}
    # When a has room again it is first in line.
    placer.release(placed_task(request, next(p for p in placements if p.host == "b0")))
    placer.release(placed_task(request, next(p for p in placements if p.host == "a0")))
    assert placed(placer.place(request)).host == "a0"


def test_group_by_declines_busier_values_only_while_a_quieter_one_has_room() -> None:
    nodes = [make_node("a0", cpus=1, zone="a"), make_node("b0", cpus=8, zone="b")]
    placer = Placer(snapshot(nodes, [make_task("b0")]))
    small, big = (make_request(cpus=c, constraints=[con("zone", "GROUP_BY")]) for c in (1, 2))
    assert placer.explain(small) == [Rejection("b0", "UnfulfilledConstraint", "GROUP_BY zone")]
    # a0 cannot hold the big task, so zone b is the only value with room and GROUP_BY
    # lets it through rather than leaving the task waiting.
    assert placer.explain(big) == [Rejection("a0", "InsufficientCpus", "insufficient cpus")]
    assert placed(placer.place(big)).host == "b0"


def test_constraints_are_checked_in_request_order() -> None:
    placer = Placer(snapshot([make_node("a", rack="r1")], [make_task("a")]))
    request = make_request(constraints=[con("hostname", "UNIQUE"), con("rack", "IS", "r2")])
    assert placer.explain(request) == [
        Rejection("a", "UnfulfilledConstraint", "UNIQUE hostname")]
    reordered = make_request(constraints=[con("rack", "IS", "r2"), con("hostname", "UNIQUE")])
    assert placer.explain(reordered) == [
        Rejection("a", "UnfulfilledConstraint", "IS rack r2")]


# --- strategy and determinism ------------------------------------------------------------------


def test_binpack_fills_one_node_before_the_next() -> None:
    placer = Placer(snapshot([make_node("a"), make_node("b")]))
    placements, _ = placer.place_many(make_request(cpus=1, mem=1024), 4)
    assert {p.host for p in placements} == {"a"}


def test_spread_alternates_between_nodes() -> None:
    placer = Placer(snapshot([make_node("a"), make_node("b")]), Strategy.SPREAD)
    placements, _ = placer.place_many(make_request(cpus=1, mem=1024), 4)
    assert [p.host for p in placements] == ["a", "b", "a", "b"]


def test_same_inputs_same_answers_whatever_the_node_order() -> None:
    nodes = [make_node(f"n{i}", cpus=1 + i % 3, rack=f"r{i % 2}") for i in range(8)]
    requests = [
        make_request("/a", cpus=0.5, ports=(0,), constraints=[con("rack", "MAX_PER", "3")]),
        make_request("/b", cpus=1, constraints=[con("hostname", "UNIQUE")]),
    ]

    def run(order: list[int]) -> list[Placement | RejectionSummary]:
        placer = Placer(snapshot([nodes[i] for i in order]))
        return [placer.place(requests[k % 2]) for k in range(14)]

    assert run(list(range(8))) == run([3, 1, 7, 0, 6, 2, 5, 4])


def test_requests_built_from_an_app_spec() -> None:
    spec = AppSpec.model_validate({
        "id": "/x", "cmd": "sleep 1", "cpus": 0.5, "mem": 64, "requirePorts": True,
        "portDefinitions": [{"port": 0}, {"port": 31007}],
        "constraints": [["hostname", "UNIQUE"]],
    })
    placer = Placer(snapshot([make_node("a"), make_node("b")]))
    placements, summary = placer.place_many(PlacementRequest.for_app(spec), 3)
    assert placements == [Placement("a", (31000, 31007)), Placement("b", (31000, 31007))]
    assert summary is not None and summary.describe() == "2 nodes: insufficient ports"


def test_a_given_ranker_overrides_the_strategy() -> None:
    # Spread sends the second task to the other (empty) node; binpack stacks it (the
    # task asks for the nodes' own mem:cpu, so nothing is skewed).
    nodes = [make_node("a"), make_node("b")]
    for placer in (Placer(snapshot(nodes), Strategy.BINPACK, ranker=Spread()),
                   Placer(snapshot(nodes), Strategy.SPREAD)):
        hosts = [p.host for p in placer.place_many(make_request(cpus=1, mem=1024), 2)[0]]
        assert hosts == ["a", "b"]
    placer = Placer(snapshot(nodes), Strategy.BINPACK)
    assert [p.host for p in placer.place_many(make_request(cpus=1, mem=1024), 2)[0]] == ["a", "a"]
