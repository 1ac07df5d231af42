"""Invariants of sharing, over generated clusters (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.sharing.plan import decide
from scheduler.sharing.quota import borrowed_tasks
from scheduler.sharing.types import PreemptionKind, RunningTask
from tests.sharing.factories import T0, make_node, pending, quota, running

PRIORITIES = st.sampled_from([0, 100, 250, 500, 1000])
TEAMS = st.sampled_from(["a", "b", "c"])
GANGS = {"g1": (100, "b"), "g2": (0, "a")}


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list, list[RunningTask]]:  # type: ignore[type-arg]
    n = draw(st.integers(1, 6))
    nodes = [make_node(f"n{i}", cpus=draw(st.sampled_from([2.0, 4.0, 8.0])), mem=1e6)
             for i in range(n)]
    tasks: list[RunningTask] = []
    for i, node in enumerate(nodes):
        left = node.resources.cpus
        for j in range(draw(st.integers(0, 4))):
            cpus = draw(st.sampled_from([1.0, 2.0, 4.0]))
            if cpus > left:
                break
            left -= cpus
            gang = draw(st.sampled_from([None, None, "g1", "g2"]))
            # members of one gang share its team and priority, as real gangs do
            prio, team = GANGS[gang] if gang else (draw(PRIORITIES), draw(TEAMS))
            tasks.append(running(f"t{i}-{j}", node.hostname, cpus=cpus, mem=1.0,
                                 priority=prio, team=team,
                                 age_s=draw(st.integers(0, 1000)), gang=gang))
    return nodes, tasks


@settings(max_examples=150, deadline=None)
@given(clusters(), st.lists(st.tuples(PRIORITIES, TEAMS, st.sampled_from([1.0, 2.0, 4.0]),
                                      st.integers(1, 3)), min_size=1, max_size=4),
       st.booleans())
def test_no_victim_of_equal_or_higher_priority_except_reclaim(
    cluster: tuple[list, list[RunningTask]],  # type: ignore[type-arg]
    asks: list[tuple[int, str, float, int]],
    with_quotas: bool,
) -> None:
    nodes, tasks = cluster
    quotas = {"a": quota("a", cpus=6, mem=1e9), "b": quota("b", cpus=4, mem=1e9)} \
        if with_quotas else {}
    reqs = [pending(f"r{i}", cpus=c, mem=1.0, priority=p, team=t, gang=g, at_s=i)
            for i, (p, t, c, g) in enumerate(asks)]
    plan = decide(reqs, nodes, tasks, quotas, T0)
    borrowed = borrowed_tasks(tasks, quotas)
    by_id = {t.id: t for t in tasks}
    teams = {r.id: r.team for r in reqs}
    for p in plan.preemptions:
        victim = by_id[p.victim.task_id]
        if victim.priority >= p.preemptor_priority:
            # the one exception: a team within its guarantee taking back borrowed capacity
            assert p.victim.kind is PreemptionKind.RECLAIM
            assert victim.team != teams[p.preemptor]
            assert victim.id in borrowed or victim.gang is not None
        assert not victim.killing
    if not with_quotas:
        assert all(by_id[p.victim.task_id].priority < p.preemptor_priority
                   for p in plan.preemptions)


@settings(max_examples=150, deadline=None)
@given(clusters(), st.lists(st.tuples(st.sampled_from([1.0, 2.0, 4.0]), st.integers(1, 4)),
                            min_size=1, max_size=4))
def test_gang_members_all_placed_or_none(
    cluster: tuple[list, list[RunningTask]],  # type: ignore[type-arg]
    gangs: list[tuple[float, int]],
) -> None:
    nodes, tasks = cluster
    reqs = [pending(f"g{i}", cpus=c, mem=1.0, priority=100, gang=n, at_s=i)
            for i, (c, n) in enumerate(gangs)]
    plan = decide(reqs, nodes, tasks, {}, T0)
    for r in reqs:
        ranks = sorted(lch.rank for lch in plan.launches if lch.request_id == r.id)
        assert ranks in ([], list(range(r.gang_size)))
    # and nothing placed over capacity
    used: dict[str, float] = {}
    for t in tasks:
        used[t.host] = used.get(t.host, 0.0) + t.resources.cpus
    for lch in plan.launches:
        used[lch.host] = used.get(lch.host, 0.0) + 1.0 * next(
            r.placement.resources.cpus for r in reqs if r.id == lch.request_id)
    assert all(used[n.hostname] <= n.resources.cpus + 1e-9 for n in nodes if n.hostname in used)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([4.0, 8.0]), min_size=1, max_size=5),
       st.lists(st.sampled_from([1.0, 2.0]), min_size=1, max_size=12),
       st.sampled_from([1.0, 2.0, 4.0]), PRIORITIES, PRIORITIES,
       st.sampled_from([5.0, 30.0, 120.0]))
def test_team_below_guarantee_gets_capacity_back_within_one_grace_period(
    sizes: list[float], task_cpus: list[float], ask: float, lender_prio: int,
    borrower_prio: int, grace: float,
) -> None:
    # Team b (no guarantee) fills the cluster; team a is guaranteed all of it.
    nodes = [make_node(f"n{i}", cpus=c, mem=1e6) for i, c in enumerate(sizes)]
    tasks: list[RunningTask] = []
    for i, node in enumerate(nodes):
        left, j = node.resources.cpus, 0
        while left > 0:
            c = min(task_cpus[(i + j) % len(task_cpus)], left)
            tasks.append(running(f"b{i}-{j}", node.hostname, cpus=c, mem=1.0, team="b",
                                 priority=borrower_prio, grace=grace, age_s=j))
            left -= c
            j += 1
    total = sum(sizes)
    quotas = {"a": quota("a", cpus=total, mem=1e9), "b": quota("b", cpus=0, mem=0)}
    req = pending("lender", cpus=ask, mem=1.0, team="a", priority=lender_prio)
    plan = decide([req], nodes, tasks, quotas, T0)
    assert plan.preemptions, plan.waits
    assert all(p.victim.grace_seconds <= grace for p in plan.preemptions)
    # One grace period later the victims have exited: the next pass places the request.
    gone = {p.victim.task_id for p in plan.preemptions}
    after = [t for t in tasks if t.id not in gone]
    plan2 = decide([req], nodes, after, quotas, T0)
    assert [lch.request_id for lch in plan2.launches] == ["lender"]
    assert ask <= sum(
        t.resources.cpus for t in tasks if t.id in gone) + 1e-9
