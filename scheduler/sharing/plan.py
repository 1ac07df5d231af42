"""One pass of sharing decisions: quota admission, placement (gangs all or none), GPU
devices, and preemption when a request does not fit.

:func:`decide` is what the orchestrator calls once per pass with the cluster as observed and
everything pending; it returns intents (:class:`~.types.SharingPlan`) and acts on nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from scheduler.model.constraints import Operator
from scheduler.model.node import Node
from scheduler.model.quota import TeamQuota
from scheduler.model.resources import Resources
from scheduler.placement.pipeline import Placer, placed_task
from scheduler.placement.results import ClusterSnapshot, PlacedTask, Placement, PlacementRequest

from .gang import gang_env, gang_request, place_gang, release
from .gpus import assign_devices, cuda_visible_devices, whole_gpus
from .quota import admit, borrowed_tasks, guarantee_of, usage_by_team, within
from .types import (
    Launch,
    PendingRequest,
    Preempt,
    RunningTask,
    SharingPlan,
    Victim,
    Wait,
    WaitKind,
)
from .victims import (
    NoVictims,
    Preemptor,
    UnitsByHost,
    VerifyFn,
    candidate_units,
    choose_victims,
    victims_detail,
)


@dataclass(frozen=True)
class SharingPolicy:
    """Which parts of sharing are on. All off is plain FIFO: submission order, no quotas, no
    preemption (gangs stay all or none: a partial gang is never useful)."""

    priority_order: bool = True
    quotas: bool = True
    preemption: bool = True


FIFO = SharingPolicy(priority_order=False, quotas=False, preemption=False)


def decide(
    pending: Sequence[PendingRequest],
    nodes: Sequence[Node],
    running: Sequence[RunningTask],
    quotas: Mapping[str, TeamQuota],
    now: datetime,
    policy: SharingPolicy = SharingPolicy(),
) -> SharingPlan:
    """Decide what to launch, what to preempt and why everything else waits.

    Inputs: ``pending`` (requests not placed yet), ``nodes`` and ``running`` (every task that
    holds resources, being killed or not), ``quotas`` by team, ``now`` (for reasons only; no
    decision depends on wall time beyond the inputs). Requests are considered in order:
    nominated ones first (an earlier preemption freed room for them), then those that keep
    their team within its guarantee before those that would borrow (Kueue's order: a
    guarantee outranks another team's priority), then highest priority, then oldest.
    Each one is, in turn: admitted by its team's quota or told to wait for
    quota; placed (a gang all or none) and given GPU devices and gang environment; or, if it
    does not fit, given victims (preempted with their grace; the request waits for them to
    exit and is placed by a later pass) or told why it waits.

    Deterministic: the same inputs give the same plan.
    """
    del now  # decisions depend on the inputs only; kept for the orchestrator's uniform call
    pass_ = _Pass(nodes, running, quotas, policy)
    if policy.priority_order:
        order = sorted(pending, key=lambda r: (not (r.nominated or r.id in pass_.inflight),
                                               pass_.would_borrow(r),
                                               -r.priority, r.submitted_at, r.id))
    else:
        order = sorted(pending, key=lambda r: (r.submitted_at, r.id))
    for request in order:
        pass_.consider(request)
    return SharingPlan(tuple(pass_.launches), tuple(pass_.preemptions), tuple(pass_.waits))


class _Pass:
    """The mutable working state of one :func:`decide` call (never escapes it)."""

    def __init__(
        self,
        nodes: Sequence[Node],
        running: Sequence[RunningTask],
        quotas: Mapping[str, TeamQuota],
        policy: SharingPolicy,
    ) -> None:
        self.nodes = tuple(nodes)
        self.node_by_host = {n.hostname: n for n in self.nodes}
        self.running = tuple(running)
        self.quotas = quotas
        self.policy = policy
        self.placer = Placer(ClusterSnapshot(self.nodes, tuple(t.placed() for t in running)))
        self.usage = usage_by_team(running)
        self.borrowed = borrowed_tasks(running, quotas) if policy.quotas else frozenset(
            t.id for t in running)
        self.devices: dict[str, list[tuple[int, ...]]] = {}
        self.inflight: dict[str, list[RunningTask]] = {}
        for t in running:
            if t.gpu_devices:
                self.devices.setdefault(t.host, []).append(t.gpu_devices)
            if t.killing and t.preempted_for is not None:
                self.inflight.setdefault(t.preempted_for, []).append(t)
        self.extra: list[PlacedTask] = []  # placed in this pass
        self.victims: set[str] = set()  # chosen in this pass
        self.launches: list[Launch] = []
        self.preemptions: list[Preempt] = []
        self.waits: list[Wait] = []
        self._no_fit: dict[tuple[object, int], tuple[str, int]] = {}
        self._no_victims: set[tuple[object, int, str, int, bool]] = set()
        self._lowest = _lowest_priorities(running, self.borrowed)
        self._empty: Placer | None = None
        self._never_fits: dict[object, frozenset[str]] = {}
        self._unit_cache: dict[tuple[str, int, bool, frozenset[str]], UnitsByHost] = {}

    def would_borrow(self, request: PendingRequest) -> bool:
        """Whether ``request`` takes its team above its guarantee, by the usage at the start
        of the pass (only for ordering; ``consider`` admits against current usage)."""
        if not self.policy.quotas:
            return False
        used = self.usage.get(request.team, Resources())
        return not within(used + request.demand, guarantee_of(request.team, self.quotas))

    def consider(self, request: PendingRequest) -> None:
        size = request.gang_size
        gpus = whole_gpus(request.placement.resources.gpus)
        if gpus is None:
            self._wait(request, WaitKind.INVALID, "gpus must be a whole number of devices")
            return
        borrowing = False
        if self.policy.quotas:
            admission = admit(request.team, request.demand, self.usage, self.quotas)
            if not admission.admitted:
                self._wait(request, WaitKind.QUOTA, admission.reason)
                return
            borrowing = admission.borrowing
        preq = gang_request(request.placement) if size > 1 else request.placement
        # Capacity only shrinks within a pass, so a shape that did not fit never fits later.
        key = (_shape(preq), size)
        failed = self._no_fit.get(key)
        if failed is None:
            placements, summary = place_gang(self.placer, preq, size)
            if summary is None:
                self._launch(request, preq, placements, gpus, borrowing)
                return
            failed = (summary.describe(), len(placements))
            self._no_fit[key] = failed
        why, fitted = failed
        waiting_on = self.inflight.get(request.id)
        if waiting_on:
            grace = max(t.grace_seconds for t in waiting_on)
            self._wait(request, WaitKind.PREEMPTING,
                       f"waiting for {len(waiting_on)} preempted task(s) to exit "
                       f"(grace up to {grace:g} s)")
            return
        if not self.policy.preemption:
            self._wait(request, WaitKind.CAPACITY, f"no room: {why}")
            return
        preemptor = Preemptor(request.id, request.team, request.priority, borrowing)
        choice = self._victims_for(preq, size, preemptor, fitted)
        if isinstance(choice, NoVictims) or not choice:
            reason = choice.reason if isinstance(choice, NoVictims) else "nothing to preempt"
            self._wait(request, WaitKind.CAPACITY, f"no room: {why}; {reason}")
            return
        hosts = sorted({v.host for v in choice})
        detail = victims_detail(preemptor, choice, ", ".join(hosts))
        for v in choice:
            self.victims.add(v.task_id)
            self.preemptions.append(Preempt(v, request.id, request.priority, detail))
        self._wait(request, WaitKind.PREEMPTING, detail)

    # --- steps ---------------------------------------------------------------------------

    def _launch(self, request: PendingRequest, preq: PlacementRequest,
                placements: list[Placement], gpus: int, borrowing: bool) -> None:
        devices: list[tuple[int, ...]] = []
        for p in placements:
            node = self.node_by_host[p.host]
            got = assign_devices(node.resources.gpus, self.devices.get(p.host, ()), gpus)
            if got is None:  # the snapshot's device bookkeeping disagrees with its counts
                for q in placements:
                    self.placer.release(placed_task(preq, q))
                self._wait(request, WaitKind.CAPACITY, f"no free GPU devices on {p.host}")
                return
            devices.append(got)
            if got:
                self.devices.setdefault(p.host, []).append(got)
        for rank, (p, devs) in enumerate(zip(placements, devices, strict=True)):
            env: dict[str, str] = {}
            if request.gang_size > 1:
                env.update(gang_env(placements, rank))
            if devs:
                env["CUDA_VISIBLE_DEVICES"] = cuda_visible_devices(devs)
            self.launches.append(Launch(request.id, rank, p.host, p.ports, devs, env, borrowing))
            self.extra.append(placed_task(preq, p))
        self.usage[request.team] = self.usage.get(request.team, Resources()) + request.demand

    def _victims_for(self, preq: PlacementRequest, size: int, preemptor: Preemptor,
                     fitted: int) -> list[Victim] | NoVictims:
        """Victims for all ``size`` members (``fitted`` of them fit as things are), member by
        member on a cluster where the earlier members' victims are gone; all or none."""
        key = (_shape(preq), size, preemptor.team, preemptor.priority, preemptor.borrowing)
        if key in self._no_victims or not self._any_candidate(preemptor):
            return NoVictims("no task it may preempt")
        chosen: list[Victim] = []
        for _ in range(size + 1):
            own = frozenset(v.task_id for v in chosen)
            if own:  # a gang's later members: the cluster as if its earlier victims were gone
                trial = Placer(ClusterSnapshot(self.nodes, tuple(
                    t.placed() for t in self.running if t.id not in own) + tuple(self.extra)))
            else:
                trial = self.placer
            if own or self.victims:
                placements, summary = place_gang(trial, preq, size)
                if summary is None:
                    return chosen
                k = len(placements)
            else:  # the pass placer, where consider() already tried
                k = fitted
            placements, _ = trial.place_many(preq, k)  # the state in which member k fails
            before = [placed_task(preq, p) for p in placements]
            verify = VerifyFn(self.nodes, self.running, [*self.extra, *before], preq, own)
            units = self._units(preemptor, frozenset(self.victims) | own)
            choice = choose_victims(trial, preq, preemptor, self.nodes, units, verify,
                                    self._never(preq))
            release(trial, preq, placements)
            if isinstance(choice, NoVictims):
                self._no_victims.add(key)
                return choice
            chosen.extend(choice.victims)
        return NoVictims("the gang does not fit even after preemption")

    def _units(self, p: Preemptor, exclude: frozenset[str]) -> UnitsByHost:
        key = (p.team, p.priority, p.borrowing, exclude)
        units = self._unit_cache.get(key)
        if units is None:
            units = candidate_units(p, self.running, self.borrowed, exclude)
            self._unit_cache[key] = units
        return units

    def _never(self, preq: PlacementRequest) -> frozenset[str]:
        key = _shape(preq)
        never = self._never_fits.get(key)
        if never is None:
            if self._empty is None:
                self._empty = Placer(ClusterSnapshot(self.nodes))
            never = frozenset(r.host for r in self._empty.explain(preq))
            self._never_fits[key] = never
        return never

    def _any_candidate(self, p: Preemptor) -> bool:
        """Cheap pre-check: does any task exist this preemptor could ever take?"""
        own, borrowed_other = self._lowest
        if own.get(p.team, p.priority) < p.priority:
            return True
        for team, lowest in borrowed_other.items():
            if team != p.team and (lowest < p.priority or not p.borrowing):
                return True
        return False

    def _wait(self, request: PendingRequest, kind: WaitKind, reason: str) -> None:
        self.waits.append(Wait(request.id, kind, reason))


_COUNTING = frozenset({Operator.UNIQUE, Operator.MAX_PER, Operator.GROUP_BY, Operator.CLUSTER})


def _shape(preq: PlacementRequest) -> object:
    """What decides whether victims can be found for ``preq``: its resources, ports and
    constraints, and its app only where a constraint counts the app's own tasks."""
    counting = any(c.operator in _COUNTING for c in preq.constraints)
    return (preq.resources, preq.ports, preq.constraints, preq.app_id if counting else None)


def _lowest_priorities(
    running: Sequence[RunningTask], borrowed: frozenset[str]
) -> tuple[dict[str, int], dict[str, int]]:
    """Per team, the lowest priority of its live tasks, and of its live borrowed tasks."""
    own: dict[str, int] = {}
    lent: dict[str, int] = {}
    for t in running:
        if t.killing:
            continue
        own[t.team] = min(own.get(t.team, t.priority), t.priority)
        if t.id in borrowed:
            lent[t.team] = min(lent.get(t.team, t.priority), t.priority)
    return own, lent
