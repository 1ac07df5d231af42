"""Victim selection: which running tasks to preempt so a request that does not fit can.

The rules (each one a test in ``tests/sharing/test_victims.py``):

- A task may be taken for **priority** only when its priority is strictly lower than the
  preemptor's, and it is in the preemptor's own team or runs on capacity its team borrowed
  (a team's guaranteed share is never taken for another team's priority).
- A task may be taken for **reclaim**, whatever its priority, only when it runs on capacity
  its team borrowed, it is another team's, and the preemptor's team stays within its own
  guarantee with the request (Kueue's ``reclaimWithinCohort: Any``: a guarantee is a promise).
  This is the one way a task of equal or higher priority is ever preempted.
- Tasks already being killed are never victims; a gang member is never taken alone (its
  whole gang goes, and counts as that many victims).
- Per node, all candidates are evicted on paper and then reprieved, least preferred victim
  first (highest priority, oldest), while the request still fits: the victims left are the
  lowest-priority set that suffices (the Kubernetes scheduler's method). Preferred victims:
  reclaimable borrowed tasks first, then lowest priority, then youngest.
- Across nodes: the fewest victims, then the fewest not on borrowed capacity, then the
  lowest highest-victim priority, then the lowest priority sum, then hostname.
- The chosen node is verified with the placement pipeline itself (constraints, ports) on a
  snapshot without the victims; a node that still cannot take the request is skipped. No
  victims are proposed when no node would take the request afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scheduler.model.constraints import Constraint, Operator
from scheduler.model.node import HOSTNAME_FIELD, Node
from scheduler.model.quota import TeamQuota
from scheduler.model.resources import Resources
from scheduler.placement.pipeline import Placer
from scheduler.placement.results import (
    ClusterSnapshot,
    PlacedTask,
    Placement,
    PlacementRequest,
    RejectionSummary,
)

from .quota import borrowed_tasks
from .types import PreemptionKind, RunningTask, Victim


@dataclass(frozen=True)
class Preemptor:
    """Who asks: the pending request's id, team and priority, and whether its admission
    takes the team above its guarantee (a borrowing request cannot reclaim)."""

    id: str
    team: str
    priority: int
    borrowing: bool


@dataclass(frozen=True)
class VictimChoice:
    """Preempt ``victims`` (in preference order) and the request fits on ``host``."""

    host: str
    victims: tuple[Victim, ...]


@dataclass(frozen=True)
class NoVictims:
    """No preemption would let the request fit; ``reason`` says why."""

    reason: str


def victim_kind(
    preemptor: Preemptor, task: RunningTask, borrowed: frozenset[str]
) -> PreemptionKind | None:
    """Whether ``task`` may be preempted for ``preemptor``, and as what (``None``: never)."""
    if task.killing:
        return None
    is_borrowed = task.id in borrowed
    if task.priority < preemptor.priority and (task.team == preemptor.team or is_borrowed):
        return PreemptionKind.PRIORITY
    if is_borrowed and task.team != preemptor.team and not preemptor.borrowing:
        return PreemptionKind.RECLAIM
    return None


@dataclass(frozen=True)
class _Unit:
    """What goes together: one task, or every live member of one gang."""

    tasks: tuple[RunningTask, ...]
    kind: PreemptionKind
    borrowed: bool
    priority: int
    newest: float

    def held_on(self, host: str) -> Resources:
        out = Resources()
        for t in self.tasks:
            if t.host == host:
                out = out + t.resources
        return out

    def order(self) -> tuple[int, int, float, str]:
        """Sort key: most preferred victim first."""
        return (0 if self.borrowed else 1, self.priority, -self.newest, self.tasks[0].id)


UnitsByHost = dict[str, list["_Unit"]]


def candidate_units(
    preemptor: Preemptor,
    running: Sequence[RunningTask],
    borrowed: frozenset[str],
    exclude: frozenset[str],
) -> UnitsByHost:
    """What ``preemptor`` may take, as units (a task, or a whole gang) by every host they
    hold something on; ``exclude``: tasks already chosen as victims in this pass."""
    groups: dict[str, list[RunningTask]] = {}
    for t in running:
        if not t.killing and t.id not in exclude:
            groups.setdefault(t.gang or f"task:{t.id}", []).append(t)
    by_host: dict[str, list[_Unit]] = {}
    for members in groups.values():
        kinds = [victim_kind(preemptor, t, borrowed) for t in members]
        # A gang partly on borrowed capacity may be reclaimed whole, but only from another
        # team; otherwise every member must be a victim in its own right.
        partly_reclaimable = PreemptionKind.RECLAIM in kinds and all(
            t.team != preemptor.team for t in members)
        if any(k is None for k in kinds) and not partly_reclaimable:
            continue
        reclaim = PreemptionKind.RECLAIM in kinds
        kind = PreemptionKind.RECLAIM if reclaim else PreemptionKind.PRIORITY
        unit = _Unit(
            tasks=tuple(sorted(members, key=lambda t: t.id)),
            kind=kind,
            borrowed=any(t.id in borrowed for t in members),
            priority=max(t.priority for t in members),
            newest=max(t.started_at.timestamp() for t in members),
        )
        for host in {t.host for t in members}:
            by_host.setdefault(host, []).append(unit)
    return by_host


def _on_node(need: Resources, free: Resources, units: list[_Unit], host: str) -> list[_Unit] | None:
    """The lowest-priority set of ``units`` whose eviction lets ``need`` fit in ``free``."""
    units = sorted(units, key=_Unit.order)
    avail = free
    for u in units:
        avail = avail + u.held_on(host)
    if not need.fits_in(avail):
        return None
    chosen = list(units)
    for u in reversed(units):
        after = avail - u.held_on(host)
        if need.fits_in(after):
            avail = after
            chosen.remove(u)
    return chosen


def pinned(request: PlacementRequest, host: str) -> PlacementRequest:
    """``request`` allowed only on ``host`` (every other constraint kept)."""
    pin = Constraint(HOSTNAME_FIELD, Operator.IS, host)
    return PlacementRequest(
        request.app_id, request.resources, request.ports, (*request.constraints, pin)
    )


def choose_victims(
    placer: Placer,
    request: PlacementRequest,
    preemptor: Preemptor,
    nodes: Sequence[Node],
    units_by_host: UnitsByHost,
    verify: VerifyFn,
    never: frozenset[str] = frozenset(),
) -> VictimChoice | NoVictims:
    """The core of :func:`select_victims` over an existing ``placer`` (whose free capacity
    already counts everything placed in this pass), choosing among ``units_by_host``
    (:func:`candidate_units`). ``never``: hosts that cannot take the request even
    when empty (see :func:`never_fits`), skipped up front. ``verify(host, victims)`` answers
    whether the request really fits on ``host`` once ``victims`` are gone; at most
    :data:`VERIFY_LIMIT` candidates are verified."""
    need = request.resources
    options: list[tuple[tuple[int, int, int, int, str], str, list[_Unit]]] = []
    for node in nodes:
        units = units_by_host.get(node.hostname)
        if not units or node.hostname in never:
            continue
        chosen = _on_node(need, placer.free(node.hostname), units, node.hostname)
        if not chosen:
            continue
        count = sum(len(u.tasks) for u in chosen)
        # Borrowed capacity is given back before anyone's guaranteed share is touched.
        guaranteed = sum(len(u.tasks) for u in chosen if not u.borrowed)
        top = max(u.priority for u in chosen)
        total = sum(u.priority * len(u.tasks) for u in chosen)
        options.append(((count, guaranteed, top, total, node.hostname), node.hostname, chosen))
    options.sort(key=lambda o: o[0])
    for _, host, chosen in options[:VERIFY_LIMIT]:
        victims = tuple(
            Victim(t.id, t.host, t.owner, t.team, t.priority, t.grace_seconds, u.kind)
            for u in chosen
            for t in u.tasks
        )
        if verify(host, victims):
            return VictimChoice(host, victims)
    if not options:
        return NoVictims(
            f"no node would fit it after preempting tasks of lower priority than "
            f"{preemptor.priority} or capacity borrowed from team {preemptor.team}'s guarantee"
        )
    return NoVictims(f"{len(options)} nodes could free the resources, but none meets its "
                     "constraints and ports")


# Candidates verified with the full pipeline before giving up: beyond the best few, a node
# that frees enough but breaks a counting constraint (UNIQUE, MAX_PER) rarely differs from
# the ones already tried, and each verification costs a snapshot rebuild.
VERIFY_LIMIT = 8


def never_fits(nodes: Sequence[Node], request: PlacementRequest) -> frozenset[str]:
    """Hosts that could not take ``request`` even with no task on them (static constraints,
    capacity too small, fixed ports outside their ranges)."""
    empty = Placer(ClusterSnapshot(tuple(nodes)))
    return frozenset(r.host for r in empty.explain(request))


class VerifyFn:
    """Checks a candidate with the real pipeline on a fresh snapshot: the cluster without the
    victims and without ``gone`` (victims chosen before for the same request), plus ``extra``
    (tasks placed earlier in the same pass)."""

    def __init__(
        self,
        nodes: Sequence[Node],
        running: Sequence[RunningTask],
        extra: Sequence[PlacedTask],
        request: PlacementRequest,
        gone: frozenset[str] = frozenset(),
    ) -> None:
        self._nodes = tuple(nodes)
        self._running = running
        self._extra = tuple(extra)
        self._request = request
        self._gone = gone

    def __call__(self, host: str, victims: tuple[Victim, ...]) -> bool:
        gone = self._gone | {v.task_id for v in victims}
        tasks = tuple(t.placed() for t in self._running if t.id not in gone) + self._extra
        placer = Placer(ClusterSnapshot(self._nodes, tasks))
        return isinstance(placer.place(pinned(self._request, host)), Placement)


def select_victims(
    request: PlacementRequest,
    preemptor: Preemptor,
    nodes: Sequence[Node],
    running: Sequence[RunningTask],
    quotas: Mapping[str, TeamQuota] | None = None,
) -> VictimChoice | NoVictims:
    """Victims whose preemption lets one task of ``request`` be placed, or why there are none.

    Pure: the cluster is ``nodes`` plus ``running`` (every task holding resources, including
    ones being killed). When the request already fits, there is nothing to preempt: returns a
    choice with no victims on the node the pipeline would pick.
    """
    placer = Placer(ClusterSnapshot(tuple(nodes), tuple(t.placed() for t in running)))
    direct = placer.place(request)
    if not isinstance(direct, RejectionSummary):
        return VictimChoice(direct.host, ())
    borrowed = borrowed_tasks(running, quotas or {})
    verify = VerifyFn(nodes, running, (), request)
    units = candidate_units(preemptor, running, borrowed, frozenset())
    return choose_victims(placer, request, preemptor, nodes, units, verify,
                          never=never_fits(nodes, request))


def victims_detail(preemptor: Preemptor, victims: Iterable[Victim], host: str) -> str:
    """``preempting 2 tasks on node-7 for prod_web (priority 500): etl:… (batch, priority)``."""
    vs = list(victims)
    names = ", ".join(f"{v.task_id} ({v.priority}, {v.kind.value})" for v in vs)
    return (
        f"preempting {len(vs)} task{'s' if len(vs) != 1 else ''} on {host} for "
        f"{preemptor.id} (team {preemptor.team}, priority {preemptor.priority}): {names}"
    )
