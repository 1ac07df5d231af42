"""Property tests: invariants of every placement set, and agreement with a naive oracle."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.constraints import Constraint, Operator
from scheduler.model.node import Node
from scheduler.placement.pipeline import Placer, placed_task
from scheduler.placement.results import (
    PlacedTask,
    Placement,
    PlacementRequest,
    RejectionSummary,
    Strategy,
)
from tests.placement.factories import con, make_node, make_request, snapshot
from tests.placement.oracle import Oracle, dims

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)

CONSTRAINTS = [
    con("hostname", "UNIQUE"),
    con("rack", "UNIQUE"),
    con("rack", "MAX_PER", "2"),
    con("zone", "MAX_PER", "1"),
    con("zone", "CLUSTER", "z0"),
    con("zone", "CLUSTER"),
    con("rack", "CLUSTER"),
    con("zone", "GROUP_BY"),
    con("rack", "GROUP_BY", "3"),
    con("rack", "LIKE", "r[01]"),
    con("zone", "UNLIKE", "z1"),
    con("rack", "IS", "r2"),
    con("hostname", "LIKE", "h[0-3]"),
]
PORT_RANGES = [(), ((31000, 31002),), ((31005, 31006), (31000, 31001)), ((31003, 31010),)]


@st.composite
def clusters(draw: st.DrawFn, max_nodes: int = 7) -> list[Node]:
    n = draw(st.integers(1, max_nodes))
    names = draw(st.permutations(range(n)))
    nodes = []
    for i in range(n):
        attrs = {}
        rack = draw(st.sampled_from([None, "r0", "r1", "r2"]))
        zone = draw(st.sampled_from([None, "z0", "z1", "z1"]))
        if rack:
            attrs["rack"] = rack
        if zone:
            attrs["zone"] = zone
        nodes.append(make_node(
            f"h{names[i]}",
            cpus=draw(st.sampled_from([0.5, 1.0, 2.0, 4.0])),
            mem=draw(st.sampled_from([256.0, 1024.0, 2048.0])),
            disk=draw(st.sampled_from([0.0, 100.0, 1000.0])),
            gpus=draw(st.sampled_from([0.0, 0.0, 1.0])),
            ports=draw(st.sampled_from(PORT_RANGES)),
            **attrs,
        ))
    return nodes


@st.composite
def requests(draw: st.DrawFn, app_id: str) -> PlacementRequest:
    return make_request(
        app_id,
        # Binary fractions only: sums are exact, so a Placer that placed and released and one
        # rebuilt from the survivors hold bit-identical numbers (no rounding-made ties).
        cpus=draw(st.sampled_from([0.0, 0.125, 0.25, 0.5, 1.0])),
        mem=draw(st.sampled_from([0.0, 64.0, 256.0, 512.0])),
        disk=draw(st.sampled_from([0.0, 0.0, 50.0])),
        gpus=draw(st.sampled_from([0.0, 0.0, 0.0, 1.0])),
        ports=draw(st.lists(st.sampled_from([0, 0, 31000, 31001, 31005]), max_size=2)),
        constraints=draw(st.lists(st.sampled_from(CONSTRAINTS), max_size=2)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[Node], list[PlacementRequest], list[tuple[int, int]]]:
    """Nodes, one fixed request per app, and operations: (app, count) places ``count``
    tasks of that app; (-1, k) releases the k-th live task (modulo how many there are)."""
    nodes = draw(clusters())
    apps = [draw(requests(f"/app{i}")) for i in range(draw(st.integers(1, 3)))]
    ops = draw(st.lists(
        st.one_of(
            st.tuples(st.integers(0, len(apps) - 1), st.integers(1, 4)),
            st.tuples(st.just(-1), st.integers(0, 50)),
        ),
        max_size=12,
    ))
    return nodes, apps, ops


# --- invariants -------------------------------------------------------------------------------


def assert_no_node_over_capacity(nodes: Sequence[Node], tasks: Sequence[PlacedTask]) -> None:
    by_host = {n.hostname: n for n in nodes}
    used: dict[str, list[float]] = defaultdict(lambda: [0.0] * 4)
    ports: dict[str, list[int]] = defaultdict(list)
    for t in tasks:
        for d, x in enumerate(dims(t.resources)):
            used[t.host][d] += x
        ports[t.host].extend(t.ports)
    for host, amounts in used.items():
        cap = dims(by_host[host].resources)
        assert all(a <= c + 1e-6 for a, c in zip(amounts, cap, strict=True)), (host, amounts)
    for host, held in ports.items():
        assert len(held) == len(set(held)), f"port double-booked on {host}: {held}"
        ranges = by_host[host].ports
        assert all(any(lo <= p <= hi for lo, hi in ranges) for p in held), (host, held)


def assert_constraints_hold(
    nodes: Sequence[Node], tasks: Sequence[PlacedTask], apps: Sequence[PlacementRequest]
) -> None:
    by_host = {n.hostname: n for n in nodes}
    for request in apps:
        mine = [by_host[t.host] for t in tasks if t.app_id == request.app_id]
        for c in request.constraints:
            values = [n.attribute(c.field) for n in mine]
            counts = Counter(values)
            if c.operator is Operator.UNLIKE:
                assert not any(v is not None and c.pattern.fullmatch(v) for v in values), c
                continue
            assert None not in counts, f"{c.describe()}: a task on a node without the field"
            if c.operator is Operator.UNIQUE:
                assert max(counts.values(), default=0) <= 1, (c, counts)
            elif c.operator is Operator.MAX_PER:
                assert max(counts.values(), default=0) <= c.int_value, (c, counts)
            elif c.operator is Operator.CLUSTER:
                allowed = {c.value} if c.value else set(list(counts)[:1])
                assert set(counts) <= allowed, (c, counts)
            elif c.operator is Operator.LIKE:
                assert all(c.pattern.fullmatch(v or "") for v in values), (c, values)
            elif c.operator is Operator.IS:
                assert set(counts) <= {c.value}, (c, counts)


def assert_funnel_is_consistent(summary: RejectionSummary, n_nodes: int) -> None:
    assert summary.nodes == n_nodes
    alive = n_nodes
    for stage in summary.stages:
        assert stage.processed == alive
        assert 0 <= stage.declined <= stage.processed
        alive -= stage.declined
    assert alive == 0, "a failed placement must leave no node standing"


# --- the differential test --------------------------------------------------------------------


@dataclass
class Run:
    """A Placer and the oracle following it, with the live tasks in placement order."""

    nodes: list[Node]
    placer: Placer
    oracle: Oracle
    strategy: Strategy

    def place(self, request: PlacementRequest) -> Placement | RejectionSummary:
        oracle = self.oracle
        by_host = {n.hostname: n for n in self.nodes}
        failures = {n.hostname: oracle.first_failure(request, n) for n in oracle.nodes}
        feasible = [h for h, f in failures.items() if f is None]
        # explain() names exactly the infeasible nodes, each with the oracle's first stage.
        explained = {r.host: (r.reason, r.detail) for r in self.placer.explain(request)}
        assert explained == {h: f for h, f in failures.items() if f is not None}

        result = self.placer.place(request)
        if not feasible:
            assert isinstance(result, RejectionSummary), result
            assert_funnel_is_consistent(result, len(self.nodes))
            per_stage = Counter(failures.values())
            for stage in result.stages:
                assert stage.declined == per_stage.pop((stage.reason, stage.detail), 0)
            return result
        assert isinstance(result, Placement), result
        assert result.host in feasible
        score = oracle.balanced_score if self.strategy is Strategy.BINPACK else oracle.spread_score
        best = max(score(request, by_host[h]) for h in feasible)
        assert score(request, by_host[result.host]) >= best - 1e-9
        assert result.ports == oracle.expected_ports(request, by_host[result.host])
        oracle.add(placed_task(request, result))
        return result

    def release(self, k: int) -> None:
        if self.oracle.tasks:
            task = self.oracle.tasks[k % len(self.oracle.tasks)]
            self.placer.release(task)
            self.oracle.remove(task)


@PROPERTY_SETTINGS
@given(scenarios(), st.sampled_from([Strategy.BINPACK, Strategy.SPREAD]))
def test_placer_agrees_with_the_oracle_and_keeps_every_invariant(
    scenario: tuple[list[Node], list[PlacementRequest], list[tuple[int, int]]],
    strategy: Strategy,
) -> None:
    nodes, apps, ops = scenario
    run = Run(nodes, Placer(snapshot(nodes), strategy), Oracle(list(nodes)), strategy)
    for app, arg in ops:
        if app < 0:
            run.release(arg)
            continue
        for _ in range(arg):
            if isinstance(run.place(apps[app]), RejectionSummary):
                break
        assert_no_node_over_capacity(nodes, run.oracle.tasks)
        assert_constraints_hold(nodes, run.oracle.tasks, apps)
    for n in nodes:
        free = run.placer.free(n.hostname)
        assert all(
            abs(a - b) < 1e-6 for a, b in zip(dims(free), run.oracle.free(n), strict=True)
        )

    # A Placer rebuilt from the live tasks makes the same next decisions: the incremental
    # caches of the first one hold nothing a fresh one would not compute.
    rebuilt = Placer(snapshot(nodes, run.oracle.tasks), strategy)
    for request in apps * 2:
        assert rebuilt.place(request) == run.placer.place(request)


@PROPERTY_SETTINGS
@given(scenarios())
def test_no_node_over_capacity_and_no_constraint_broken_at_scale(
    scenario: tuple[list[Node], list[PlacementRequest], list[tuple[int, int]]],
) -> None:
    nodes, apps, ops = scenario
    placer = Placer(snapshot(nodes))
    live: list[PlacedTask] = []
    for app, arg in ops * 3:
        if app < 0:
            if live:
                placer.release(live.pop(arg % len(live)))
            continue
        placements, _ = placer.place_many(apps[app], arg * 3)
        live.extend(placed_task(apps[app], p) for p in placements)
        assert_no_node_over_capacity(nodes, live)
        assert_constraints_hold(nodes, live, apps)


@PROPERTY_SETTINGS
@given(
    clusters(),
    requests("/app"),
    st.integers(0, 12),
    st.sampled_from([Strategy.BINPACK, Strategy.SPREAD]),
    st.lists(st.tuples(requests("/other"), st.integers(1, 6)), max_size=2),
)
def test_place_many_count_and_rejection_are_consistent(
    nodes: list[Node],
    request: PlacementRequest,
    count: int,
    strategy: Strategy,
    before: list[tuple[PlacementRequest, int]],
) -> None:
    placer = Placer(snapshot(nodes), strategy)
    twin = Placer(snapshot(nodes), strategy)
    # Earlier bursts (of another app, or this one) leave caches and counts behind.
    for other, n in [*before, (request, 2)]:
        got, _ = placer.place_many(other, n)
        # After a failure nothing changes, so the twin's remaining tries fail as well.
        expected = [twin.place(other) for _ in range(n)]
        assert got == [p for p in expected if isinstance(p, Placement)]
    placements, summary = placer.place_many(request, count)
    assert len(placements) <= count
    assert (summary is None) == (len(placements) == count)
    # The same as placing one at a time.
    singles = [twin.place(request) for _ in range(len(placements) + (summary is not None))]
    assert singles[: len(placements)] == placements
    if summary is not None:
        assert singles[-1] == summary
        assert_funnel_is_consistent(summary, len(nodes))
        # A failure changes nothing: asking again gives the same summary, and every node
        # is explained.
        assert placer.place(request) == summary
        assert len(placer.explain(request)) == len(nodes)


@st.composite
def zoned_clusters(draw: st.DrawFn) -> list[Node]:
    n = draw(st.integers(1, 9))
    zones = draw(st.lists(st.sampled_from(["za", "zb", "zc", "zd"]), min_size=n, max_size=n))
    return [make_node(f"n{i}", cpus=64, mem=65536, zone=z) for i, z in enumerate(zones)]


@PROPERTY_SETTINGS
@given(
    zoned_clusters(),
    st.integers(1, 30),
    st.sampled_from([Strategy.BINPACK, Strategy.SPREAD]),
    st.lists(st.sampled_from([None, *CONSTRAINTS[:2]]), max_size=1),
)
def test_group_by_spread_differs_by_at_most_one_when_capacity_suffices(
    nodes: list[Node], count: int, strategy: Strategy, extra: list[Constraint | None]
) -> None:
    constraints = [con("zone", "GROUP_BY"), *(c for c in extra if c is not None)]
    request = make_request(cpus=1, mem=64, constraints=constraints)
    placer = Placer(snapshot(nodes), strategy)
    zone_of = {n.hostname: n.attributes["zone"] for n in nodes}
    counts = Counter({z: 0 for z in zone_of.values()})
    for _ in range(count):
        result = placer.place(request)
        if isinstance(result, RejectionSummary):
            # Only an extra UNIQUE can run out of room; without it capacity is ample.
            assert len(constraints) > 1
            break
        counts[zone_of[result.host]] += 1
        if len(constraints) == 1:
            assert max(counts.values()) - min(counts.values()) <= 1, counts
