"""Quota accounting with borrowing (Kueue's cohort model), as pure functions.

Usage of a team is the sum of what its tasks hold, not counting tasks already being killed
(their capacity is on its way back). A team may use up to ``guaranteed + borrowing_limit``;
anything above ``guaranteed`` is *borrowed* and is what a lender takes back first. A team
without a quota has a guarantee of zero and no borrowing limit: all it runs is borrowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scheduler.model.quota import TeamQuota
from scheduler.model.resources import EPSILON, Resources

from .types import RunningTask

_DIMS = ("cpus", "mem", "gpus")


def usage_by_team(running: Iterable[RunningTask]) -> dict[str, Resources]:
    """What each team's live (not killing) tasks hold."""
    # Plain float sums: this runs over every task once per pass.
    sums: dict[str, list[float]] = {}
    for t in running:
        if not t.killing:
            acc = sums.get(t.team)
            if acc is None:
                acc = sums[t.team] = [0.0, 0.0, 0.0, 0.0]
            r = t.resources
            acc[0] += r.cpus
            acc[1] += r.mem
            acc[2] += r.disk
            acc[3] += r.gpus
    return {team: Resources(*acc) for team, acc in sums.items()}


def guarantee_of(team: str, quotas: Mapping[str, TeamQuota]) -> Resources:
    q = quotas.get(team)
    return q.guaranteed if q is not None else Resources()


def within(amount: Resources, limit: Resources) -> bool:
    """``amount`` fits ``limit`` in cpus, mem and gpus (disk is not a quota dimension)."""
    return all(getattr(amount, d) <= getattr(limit, d) + EPSILON for d in _DIMS)


@dataclass(frozen=True)
class Admission:
    """The quota's answer for one request.

    ``admitted``: the team may start it (placement still has to find room). ``borrowing``:
    admitting it takes the team above its guarantee. ``reason`` explains a refusal
    (``waiting for quota: team ml uses 60 of 64 cpus guaranteed + 8 borrowable``); empty
    when admitted.
    """

    admitted: bool
    borrowing: bool
    reason: str = ""


def admit(
    team: str,
    demand: Resources,
    usage: Mapping[str, Resources],
    quotas: Mapping[str, TeamQuota],
) -> Admission:
    """May ``team`` start something needing ``demand`` now, given every team's ``usage``?

    Refused only by the team's own ceiling (guarantee + borrowing limit); whether idle
    capacity exists is the placement pipeline's question, and whether a guarantee can be
    taken back from borrowers is :func:`borrowed_tasks`'."""
    used = usage.get(team, Resources())
    after = used + demand
    guarantee = guarantee_of(team, quotas)
    borrowing = not within(after, guarantee)
    q = quotas.get(team)
    if q is None or q.borrowing_limit is None:
        return Admission(True, borrowing)
    ceiling = q.guaranteed + q.borrowing_limit
    for d in _DIMS:
        if getattr(after, d) > getattr(ceiling, d) + EPSILON:
            return Admission(
                False,
                borrowing,
                f"waiting for quota: team {team} uses {_num(getattr(used, d))} of "
                f"{_num(getattr(q.guaranteed, d))} {d} guaranteed + "
                f"{_num(getattr(q.borrowing_limit, d))} borrowable, "
                f"needs {_num(getattr(demand, d))} more",
            )
    return Admission(True, borrowing)


def borrowed_tasks(
    running: Iterable[RunningTask], quotas: Mapping[str, TeamQuota]
) -> frozenset[str]:
    """Ids of the tasks that run on borrowed capacity: per team above its guarantee, its
    cheapest tasks to lose (lowest priority, then youngest) until what they hold covers the
    excess in every dimension. Killing tasks are not counted. Deterministic."""
    by_team: dict[str, list[RunningTask]] = {}
    for t in running:
        if not t.killing:
            by_team.setdefault(t.team, []).append(t)
    out: set[str] = set()
    for team, tasks in by_team.items():
        total = Resources()
        for t in tasks:
            total = total + t.resources
        excess = total - guarantee_of(team, quotas)
        tasks.sort(key=lambda t: (t.priority, -t.started_at.timestamp(), t.id))
        for t in tasks:
            if not _positive(excess):
                break
            if _overlaps(t.resources, excess):
                out.add(t.id)
                excess = excess - t.resources
    return frozenset(out)


def reclaim(
    team: str,
    demand: Resources,
    running: Iterable[RunningTask],
    quotas: Mapping[str, TeamQuota],
) -> tuple[RunningTask, ...]:
    """Cluster-wide, which borrowed tasks of *other* teams give ``team`` back ``demand`` of its
    guarantee: lowest priority, then youngest, first, stopping once enough is freed.

    Empty when ``team`` would be above its guarantee with ``demand`` (it cannot reclaim to
    borrow) or when nothing is borrowed. Node-blind: the placement-aware choice is
    :func:`scheduler.sharing.victims.select_victims`; this is the accounting view (how much a
    lender is owed, shown as "reclaiming ... from team X")."""
    tasks = list(running)
    usage = usage_by_team(tasks)
    if not within(usage.get(team, Resources()) + demand, guarantee_of(team, quotas)):
        return ()
    borrowed = borrowed_tasks(tasks, quotas)
    pool = sorted(
        (t for t in tasks if t.id in borrowed and t.team != team),
        key=lambda t: (t.priority, -t.started_at.timestamp(), t.id),
    )
    need = demand
    out: list[RunningTask] = []
    for t in pool:
        if not _positive(need):
            break
        if _overlaps(t.resources, need):
            out.append(t)
            need = need - t.resources
    return tuple(out)


def _positive(r: Resources) -> bool:
    return any(getattr(r, d) > EPSILON for d in _DIMS)


def _overlaps(held: Resources, wanted: Resources) -> bool:
    """``held`` gives back something of a dimension still ``wanted``."""
    return any(getattr(held, d) > EPSILON and getattr(wanted, d) > EPSILON for d in _DIMS)


def _num(x: float) -> str:
    return f"{x:g}"
