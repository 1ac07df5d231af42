"""A discrete-time simulation of one shared cluster, driving :func:`.plan.decide` the way the
orchestrator will: a frozen clock advanced in steps, no runtime (a launched task holds its
resources until its simulated duration ends; a preempted one until its grace period ends).

Used by ``tests/sharing/test_simulation.py`` (invariants) and ``bench/contention.py``
(figures, against plain FIFO). Pure and deterministic for a given workload and policy.

Times are pass-quantised: a request is first considered at the pass after it arrives and its
wait is counted from that pass, so a request placed at once waits 0 s whatever the step.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from scheduler.model.constraints import Constraint, Operator
from scheduler.model.node import Node
from scheduler.model.priority import BATCH, BEST_EFFORT, CRITICAL, SERVICE
from scheduler.model.quota import TeamQuota
from scheduler.model.resources import Resources
from scheduler.placement.results import PlacementRequest

from .plan import SharingPolicy, decide
from .quota import borrowed_tasks, guarantee_of, usage_by_team, within
from .types import PendingRequest, RunningTask, WaitKind
from .victims import never_fits

EPOCH = datetime(2026, 12, 1, tzinfo=UTC)
NO_GPU = Constraint("gpu_model", Operator.UNLIKE, ".*")
DAY_S = 86_400.0


class Kind(StrEnum):
    SERVICE = "service"
    JOB = "job"
    GANG = "gang"
    BEST_EFFORT = "best-effort"


@dataclass(frozen=True)
class Arrival:
    """One request entering the queue at ``at_s`` that, once placed, runs ``duration_s``."""

    at_s: float
    request: PendingRequest
    kind: Kind
    duration_s: float
    grace_s: float


@dataclass(frozen=True)
class Workload:
    nodes: tuple[Node, ...]
    quotas: Mapping[str, TeamQuota]
    arrivals: tuple[Arrival, ...]
    day_s: float


@dataclass
class SimResult:
    """What one simulated run measured. Waits are seconds from first consideration to
    launch, per first placement (re-queues after a preemption are counted apart)."""

    waits: dict[Kind, list[float]] = field(default_factory=lambda: {k: [] for k in Kind})
    utilisation: float = 0.0
    guarantee_violations: int = 0
    deadlocks: int = 0
    preemptions: int = 0
    equal_or_higher_for_priority: int = 0
    passes: int = 0
    left_pending: int = 0
    fragmentation_waits: int = 0
    violation_examples: list[str] = field(default_factory=list)


def _ts(s: float) -> datetime:
    return EPOCH + timedelta(seconds=s)


def generate_workload(nodes: int, seed: int = 1, day_s: float = DAY_S,
                      load: float = 1.0) -> Workload:
    """Three teams on ``nodes`` machines (one in ten with 8 GPUs), over ``day_s`` seconds.

    - ``web``: services (a few critical), guaranteed 30 % of cpus.
    - ``data``: ETL jobs with a night peak and best-effort backfills, guaranteed 35 %.
    - ``ml``: training gangs of 2-8 members on GPU nodes, some services and ETL, guaranteed
      25 % of cpus and 90 % of the GPUs.

    ``load`` scales the batch arrival rates (1.0 keeps the cluster contended most of the day).
    """
    rng = random.Random(seed)
    node_list: list[Node] = []
    for i in range(nodes):
        gpu = i % 10 == 0
        node_list.append(Node(
            hostname=f"node-{i:04d}",
            resources=Resources(32.0 if gpu else 16.0, 131072.0 if gpu else 65536.0, 0.0,
                                8.0 if gpu else 0.0),
            ports=((31000, 31999),),
            attributes={"rack": f"r{i % 20}", **({"gpu_model": "a100"} if gpu else {})},
        ))
    total = Resources()
    for n in node_list:
        total = total + n.resources
    quotas = {
        team: TeamQuota(team, Resources(total.cpus * c, total.mem * c, total.gpus * g))
        for team, c, g in (("web", 0.30, 0.0), ("data", 0.35, 0.05), ("ml", 0.25, 0.9))
    }
    arrivals: list[Arrival] = []
    seq = 0

    def add(at: float, team: str, owner: str, kind: Kind, cpus: float, mem: float,
            gpus: float, priority: int, duration: float, grace: float, gang: int = 1) -> None:
        nonlocal seq
        seq += 1
        # GPU nodes are kept for work that can use them, as an operator would with a taint:
        # services and ETL stay off them; best-effort backfills may soak them up (and are
        # the first to go when a training gang needs them).
        keep_off = kind in (Kind.SERVICE, Kind.JOB)
        req = PendingRequest(
            id=f"{kind.value}-{seq}",
            placement=PlacementRequest(owner, Resources(cpus, mem, 0.0, gpus),
                                       constraints=(NO_GPU,) if keep_off else ()),
            team=team, priority=priority, submitted_at=_ts(at), gang_size=gang)
        arrivals.append(Arrival(at, req, kind, duration, grace))

    def poisson(rate_per_h: float, shape: float = 0.0) -> list[float]:
        """Arrival times; ``shape`` > 0 doubles the rate around 02:00."""
        out: list[float] = []
        t = 0.0
        peak = rate_per_h * (1 + shape)
        while True:
            t += rng.expovariate(peak / 3600.0)
            if t >= day_s:
                return out
            hour = (t / 3600.0) % 24
            here = rate_per_h * (1 + shape * math.cos((hour - 2) / 24 * 2 * math.pi))
            if rng.random() < here / peak:
                out.append(t)

    scale = nodes / 500.0
    # Services: an initial fleet, then deploys all day (each instance lives 2-12 h).
    for team, count, rate in (("web", 260, 40), ("data", 60, 10), ("ml", 40, 6)):
        for k in range(int(count * scale)):
            prio = CRITICAL if k % 20 == 0 else SERVICE
            add(0.0, team, f"/{team}/svc-{k % 40}", Kind.SERVICE, rng.choice((2.0, 4.0, 8.0)),
                4096.0, 0.0, prio, rng.uniform(4, 30) * 3600, 20.0)
        for at in poisson(rate * scale):
            add(at, team, f"/{team}/svc-{rng.randrange(40)}", Kind.SERVICE,
                rng.choice((2.0, 4.0, 8.0)), 4096.0, 0.0, SERVICE,
                rng.uniform(2, 12) * 3600, 20.0)
    # ETL: whole and half nodes, 30 min - 3 h.
    for team, rate in (("data", 110), ("ml", 25), ("web", 15)):
        for at in poisson(rate * scale * load, shape=0.8):
            add(at, team, f"etl-{team}-{rng.randrange(60)}", Kind.JOB, rng.choice((4.0, 8.0, 16.0)),
                16384.0, 0.0, BATCH, rng.uniform(0.5, 3) * 3600, 30.0)
    # Best-effort backfills soak up what is idle.
    for at in poisson(60 * scale * load):
        add(at, "data", f"backfill-{rng.randrange(20)}", Kind.BEST_EFFORT, 8.0, 8192.0, 0.0,
            BEST_EFFORT, rng.uniform(0.5, 2) * 3600, 10.0)
    # Training gangs on GPU nodes: 2-8 members, 16 cpus and 4 GPUs each, 2-6 h.
    for at in poisson(1.6 * scale * load):
        add(at, "ml", f"train-{rng.randrange(10)}", Kind.GANG, 16.0, 65536.0, 4.0, BATCH,
            rng.uniform(2, 6) * 3600, 60.0, gang=rng.choice((2, 4, 4, 8)))
    arrivals.sort(key=lambda a: (a.at_s, a.request.id))
    return Workload(tuple(node_list), quotas, tuple(arrivals), day_s)


@dataclass
class _Queued:
    arrival: Arrival
    first_seen: float | None = None
    requeued: bool = False
    attempt: int = 0
    nominated: bool = False
    in_guarantee_since: float | None = None
    last_reason: str = ""


def simulate(workload: Workload, policy: SharingPolicy, step_s: float = 30.0,
             drain_s: float = 12 * 3600.0) -> SimResult:
    """Run ``workload`` under ``policy``: arrivals over the day, then ``drain_s`` with no new
    work so every finite job can finish. See :class:`SimResult` for what is measured.

    A *guarantee violation* is a request that kept its team within its guarantee yet waited
    longer than the longest grace period plus two passes while some node it may use could
    have been cleared for one member by taking back other teams' borrowed capacity. Such a
    wait with no such node is counted as a *fragmentation wait* instead: guarantees are
    aggregate (the cohort model), and no preemption of borrowed capacity can make room on a
    single node that does not hold enough of it. A *deadlock* is a pass after
    which nothing can ever change (requests pending, nothing running will end, nothing
    being killed, no decision made) or a request still pending at the end of the drain.
    """
    res = SimResult()
    quotas = workload.quotas
    arrivals = list(workload.arrivals)
    max_grace = max((a.grace_s for a in arrivals), default=0.0)
    patience = max_grace + 2 * step_s
    total_cpus = sum(n.resources.cpus for n in workload.nodes)
    queue: dict[str, _Queued] = {}
    running: dict[str, RunningTask] = {}
    ends: dict[str, float] = {}  # task id -> when it finishes (or exits after its grace)
    origin: dict[str, _Queued] = {}  # task id -> its request
    members: dict[str, list[str]] = {}  # request id -> its running task ids
    next_arrival = 0
    never_cache: dict[object, frozenset[str]] = {}
    used_cpu_s = 0.0
    t = 0.0
    changed = True
    horizon = workload.day_s + drain_s
    while t <= horizon:
        # 1. Exits: finished tasks and preempted ones whose grace ran out.
        for tid in [k for k, end in ends.items() if end <= t]:
            task = running.pop(tid)
            del ends[tid]
            q = origin.pop(tid)
            rid = q.arrival.request.id
            members[rid].remove(tid)
            changed = True
            if task.killing and not members[rid]:
                del members[rid]
                q.requeued, q.nominated = True, False
                queue[rid] = q  # preempted: back in the queue, not a failure
            elif not members[rid]:
                del members[rid]
        # 2. Arrivals.
        while next_arrival < len(arrivals) and arrivals[next_arrival].at_s <= t:
            a = arrivals[next_arrival]
            queue[a.request.id] = _Queued(a)
            next_arrival += 1
            changed = True
        for q in queue.values():
            if q.first_seen is None:
                q.first_seen = t
        # Guarantees, judged on the state this pass's decision sees.
        rooms: _Rooms | None = None
        for q in queue.values():
            if q.in_guarantee_since is not None and t - q.in_guarantee_since > patience:
                r = q.arrival.request
                if rooms is None:
                    rooms = _Rooms(workload, list(running.values()), never_cache)
                room = rooms.room(r)
                if room == "free":
                    continue  # it fits as things are: this pass places it, or judge it next
                q.in_guarantee_since = None  # count each stretch once
                if room == "none":
                    res.fragmentation_waits += 1
                    continue
                res.guarantee_violations += 1
                if len(res.violation_examples) < 5:
                    res.violation_examples.append(
                        f"t={t:.0f} {r.id} team {r.team} ({q.arrival.kind.value}, "
                        f"x{r.gang_size}): {q.last_reason}")
        # 3. Decide (only when something changed: decide is deterministic).
        if changed and queue:
            res.passes += 1
            pend = [replace(q.arrival.request, nominated=q.nominated) for q in queue.values()]
            plan = decide(pend, workload.nodes, list(running.values()), quotas, _ts(t), policy)
            by_id = {r.id: r for r in pend}
            for launch in plan.launches:
                q = queue[launch.request_id]
                req = by_id[launch.request_id]
                tid = f"{req.id}#{q.attempt}.{launch.rank}"
                running[tid] = RunningTask(
                    tid, req.placement.app_id, req.team, launch.host, req.placement.resources,
                    req.priority, _ts(t), q.arrival.grace_s, launch.ports, launch.gpu_devices,
                    gang=f"{req.id}#{q.attempt}" if req.gang_size > 1 else None)
                ends[tid] = t + q.arrival.duration_s
                origin[tid] = q
                members.setdefault(req.id, []).append(tid)
            for rid in {lch.request_id for lch in plan.launches}:
                q = queue.pop(rid)
                assert q.first_seen is not None
                if not q.requeued:
                    res.waits[q.arrival.kind].append(t - q.first_seen)
                q.attempt += 1
            for p in plan.preemptions:
                v = running[p.victim.task_id]
                if v.priority >= p.preemptor_priority and p.victim.kind.value == "priority":
                    res.equal_or_higher_for_priority += 1
                running[v.id] = replace(v, killing=True, preempted_for=p.preemptor)
                ends[v.id] = t + v.grace_seconds
                res.preemptions += 1
            for rid in {p.preemptor for p in plan.preemptions}:
                queue[rid].nominated = True
            usage = usage_by_team(running.values())
            for w in plan.waits:
                q = queue[w.request_id]
                q.last_reason = w.reason
                req = by_id[w.request_id]
                inside = w.kind is not WaitKind.INVALID and within(
                    usage.get(req.team, Resources()) + req.demand,
                    guarantee_of(req.team, quotas))
                if not inside:
                    q.in_guarantee_since = None
                elif q.in_guarantee_since is None:
                    q.in_guarantee_since = t
            changed = bool(plan.launches or plan.preemptions)
            if not changed and not ends and next_arrival == len(arrivals):
                res.deadlocks += 1  # nothing will ever free capacity or bring new work
                break
        if t < workload.day_s:
            used_cpu_s += sum(r.resources.cpus for r in running.values()) * step_s
        if not queue and not ends and next_arrival == len(arrivals):
            break
        t += step_s
    res.left_pending = len(queue)
    res.deadlocks += sum(1 for q in queue.values() if q.arrival.kind is not Kind.SERVICE)
    res.utilisation = used_cpu_s / (total_cpus * workload.day_s) if total_cpus else 0.0
    return res


class _Rooms:
    """Answers :meth:`room` for many requests against one cluster state (built lazily once
    per pass: who holds what per node, which tasks are borrowed)."""

    def __init__(self, workload: Workload, running: list[RunningTask],
                 never: dict[object, frozenset[str]]) -> None:
        self._workload = workload
        self._never = never  # shared across passes: depends on the nodes only
        borrowed = borrowed_tasks(running, workload.quotas)
        self._held: dict[str, Resources] = {}
        self._lent: dict[str, dict[str, Resources]] = {}  # host -> team -> borrowed there
        for task in running:
            self._held[task.host] = self._held.get(task.host, Resources()) + task.resources
            if task.id in borrowed and not task.killing:
                by_team = self._lent.setdefault(task.host, {})
                by_team[task.team] = by_team.get(task.team, Resources()) + task.resources

    def room(self, request: PendingRequest) -> str:
        """Where one member of ``request`` could go on a node it may use: ``"free"`` (it fits
        as things are), ``"reclaim"`` (it fits once other teams' borrowed tasks there are
        gone, whatever else runs there stays) or ``"none"``."""
        preq = request.placement
        key = (preq.resources, preq.ports, preq.constraints)
        never = self._never.get(key)
        if never is None:
            never = self._never[key] = never_fits(self._workload.nodes, preq)
        need = preq.resources
        answer = "none"
        for node in self._workload.nodes:
            host = node.hostname
            if host in never:
                continue
            free = node.resources - self._held.get(host, Resources())
            if need.fits_in(free):
                return "free"
            lent = self._lent.get(host)
            if lent:
                for team, amount in lent.items():
                    if team != request.team:
                        free = free + amount
                if need.fits_in(free):
                    answer = "reclaim"
        return answer


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))
    return ordered[k]
