"""The placement pipeline: feasibility → ranking → selection, in one place, in order.

Stages, cheapest first (each one a checker from :mod:`.checkers`, one boolean per node):

1. cpus   — ``InsufficientCpus``    one vector comparison
2. mem    — ``InsufficientMemory``  one vector comparison
3. disk   — ``InsufficientDisk``    one vector comparison
4. gpus   — ``InsufficientGpus``    one vector comparison
5. ports  — ``InsufficientPorts``   free-port count, plus one live mask per fixed port
6. one stage per constraint, in the request's order — ``UnfulfilledConstraint``, detail
   ``Constraint.describe()``. Static operators (IS, LIKE, UNLIKE, CLUSTER value) read cached
   masks; counting ones (UNIQUE, MAX_PER, GROUP_BY, CLUSTER without value) read per-value
   task counts of the app and gather them to nodes with one ``take``. GROUP_BY is evaluated
   after the others: it balances over the values that can still take the task, which needs
   every other stage's answer first (see ``GroupByChecker``); its funnel position stays the
   request's order.

Then the ranker (:mod:`.rankers`) scores the feasible nodes and the best one wins (ties:
lowest hostname).

Success never builds the funnel: it ANDs only the stages that can reject anything and ranks.
Only a failure (or :meth:`Placer.explain`) evaluates every stage separately to say *why*.
Both paths use the same checkers, so the funnel always agrees with what placement did.

Two caches keep a burst of placements (``place_many``, or many apps of one shape) from
redoing whole-cluster work: node-local stages (resources, ports) and ranker scores depend only
on each node's own state, so a compiled request keeps their arrays and refreshes just the
nodes touched since it last ran (``ClusterState.touched``), falling back to a full vector
recomputation when many nodes changed. Constraint stages depend on other nodes (per-value
counts) and are evaluated in full per placement, except inside ``place_many``: when every
constraint of the request is static (IS, LIKE, UNLIKE, CLUSTER value) or a per-value limit
(UNIQUE, MAX_PER), a placement changes feasibility only at its own node and, once a value is
full, at that value's nodes, so the burst patches its ranked array there instead of
rebuilding it over every node (``Placer._place_burst``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scheduler.model.resources import Resources

from .checkers import (
    BoolArray,
    Checker,
    ClusterState,
    ConstraintChecker,
    FloatArray,
    checkers_for,
    resource_vector,
)
from .rankers import Ranker, ranker_for
from .results import (
    ClusterSnapshot,
    PlacedTask,
    Placement,
    PlacementRequest,
    Rejection,
    RejectionSummary,
    StageCount,
    Strategy,
)

# Compiled requests kept per Placer. A Placer lives for one reconcile pass and sees a few
# distinct requests per app; the bound only protects against a caller that never repeats.
_PLAN_CACHE_SIZE = 4096


# Beyond this many distinct nodes changed since a compiled request last ran, recomputing its
# node-local stages over all nodes (one vector comparison each, ~1-2 µs at 5,000 nodes) is
# cheaper than asking each stage about each changed node in Python (~0.5 µs a question).
_MASK_PATCH_LIMIT = 4

# Cached scores: up to this many distinct changed nodes are rescored one by one in Python
# (Ranker.score_of, ~1.5 µs each); up to n / _SCORE_FULL_DIVISOR of them are rescored by one
# vector pass over just those nodes; beyond that, every node is (at 5,000 nodes a full pass
# costs ~100 µs, a pass over 40 nodes ~15 µs, mostly numpy's fixed cost per call).
_SCORE_PATCH_LIMIT = 8
_SCORE_FULL_DIVISOR = 4


# Score arrays cached per request shape (one float per node each); workloads repeat a handful
# of shapes, and the bound keeps memory at a few MiB per thousand nodes.
_SCORE_CACHE_SIZE = 128


@dataclass
class _Scores:
    """A ranker's scores of every node for one request shape, as of ``seen`` entries of
    ``ClusterState.touched``."""

    values: FloatArray
    seen: int


@dataclass
class _Plan:
    """One request compiled against one Placer.

    ``stages`` is the full funnel. The fast path splits it: ``local`` are the node-local
    stages (resources, ports) that can reject something in this state — a zero request on a
    dimension no node overcommits cannot — ``shared`` the other non-GROUP_BY constraint
    stages, and ``group_by`` the GROUP_BY stages, which need the rest first.

    ``local_mask`` is the AND of the ``local`` stages as of ``seen`` entries of
    ``ClusterState.touched``; it is private to the plan and patched in place.
    """

    request: PlacementRequest
    shape: tuple[float, ...]
    stages: tuple[Checker, ...]
    local: tuple[Checker, ...]
    shared: tuple[Checker, ...]
    group_by: tuple[Checker, ...]
    local_mask: BoolArray | None = None
    seen: int = 0

    @property
    def burst(self) -> bool:
        """Whether a placement changes this request's feasibility only at the node placed on
        and, for counting constraints, at the nodes sharing its value: no GROUP_BY, and
        every other constraint stage static or per-value counting."""
        return not self.group_by and all(
            isinstance(s, ConstraintChecker) and (s.static or s.limit is not None)
            for s in self.shared
        )


def placed_task(request: PlacementRequest, placement: Placement) -> PlacedTask:
    """The task a successful placement of ``request`` holds (what :meth:`Placer.release`
    takes back)."""
    return PlacedTask(
        app_id=request.app_id,
        host=placement.host,
        resources=request.resources,
        ports=placement.ports,
    )


class Placer:
    """Built from one :class:`ClusterSnapshot`; owns a private mutable view of free resources.

    Every successful :meth:`place` reserves the task's resources and ports on its node and
    records the task (app, node), so later constraint checks of the same Placer see it.
    Constraint counting only ever looks at tasks of the request's own ``app_id`` (snapshot
    tasks plus tasks placed by this Placer). Snapshot tasks on hosts that are not snapshot
    nodes are ignored. Deterministic: the same snapshot and the same calls give the same
    answers (no clocks, no randomness, ties broken by hostname).

    ``ranker`` overrides the strategy's ranker (to compare rankers on one workload, as
    bench/placement.py does). Raises ``ValueError`` when the snapshot lists a hostname twice.
    """

    def __init__(
        self,
        snapshot: ClusterSnapshot,
        strategy: Strategy = Strategy.BINPACK,
        *,
        ranker: Ranker | None = None,
    ) -> None:
        self._state = ClusterState(snapshot)
        self._ranker = ranker if ranker is not None else ranker_for(strategy)
        self._plans: dict[PlacementRequest, _Plan] = {}
        self._scores: dict[tuple[float, ...], _Scores] = {}

    # --- public API ----------------------------------------------------------------------

    def place(self, request: PlacementRequest) -> Placement | RejectionSummary:
        """Place one task of ``request``.

        Success: the chosen node and its host ports (one per slot of ``request.ports``, in
        slot order), with resources, ports and the task recorded in this Placer. Failure: a
        :class:`RejectionSummary` with one stage per checker in pipeline order; nothing is
        recorded.
        """
        return self._place(self._plan(request))

    def place_many(
        self, request: PlacementRequest, count: int
    ) -> tuple[list[Placement], RejectionSummary | None]:
        """Place up to ``count`` tasks of ``request``, one after the other (each one sees the
        previous ones). Stops at the first failure and returns its summary; the summary is
        ``None`` exactly when all ``count`` were placed. ``count`` < 0 raises ``ValueError``.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        plan = self._plan(request)
        if plan.burst:
            return self._place_burst(plan, count)
        placed: list[Placement] = []
        for _ in range(count):
            result = self._place(plan)
            if isinstance(result, RejectionSummary):
                return placed, result
            placed.append(result)
        return placed, None

    def release(self, task: PlacedTask) -> None:
        """Give back what ``task`` holds: its resources, its ports, and its place in the app's
        constraint counts (for a kill planned in the same pass).

        A task on a host that is not in the snapshot held nothing here: no-op. Raises
        ``ValueError`` when no task of ``task.app_id`` is recorded on ``task.host``.
        """
        i = self._state.index.get(task.host)
        if i is None:
            return
        self._state.unreserve(i, task.app_id, task.resources, task.ports)

    def explain(self, request: PlacementRequest) -> list[Rejection]:
        """For every node that cannot take ``request`` now, the first stage that rejects it,
        in hostname order. Feasible nodes are not listed. Changes nothing."""
        plan = self._plan(request)
        masks = self._stage_masks(plan)
        hostnames = self._state.hostnames
        out: list[tuple[int, Rejection]] = []
        alive = np.ones(self._state.n, dtype=np.bool_)
        for stage, m in zip(plan.stages, masks, strict=True):
            for i in np.flatnonzero(alive & ~m).tolist():
                out.append((i, Rejection(hostnames[i], stage.reason, stage.detail)))
            alive &= m
        out.sort(key=lambda pair: pair[0])
        return [r for _, r in out]

    def free(self, host: str) -> Resources:
        """What is unreserved on ``host`` now (negative where the snapshot overcommits it).
        Raises ``KeyError`` for a host that is not in the snapshot."""
        f = self._state.free[:, self._state.index[host]]
        return Resources(float(f[0]), float(f[1]), float(f[2]), float(f[3]))

    # --- internals -----------------------------------------------------------------------

    def _plan(self, request: PlacementRequest) -> _Plan:
        plan = self._plans.get(request)
        if plan is not None:
            return plan
        stages = checkers_for(request)
        state = self._state
        plan = _Plan(
            request=request,
            shape=tuple(resource_vector(request.resources).tolist()),
            stages=stages,
            local=tuple(s for s in stages if s.local and not s.trivial(state)),
            shared=tuple(
                s for s in stages if not s.local and not s.needs_others and not s.trivial(state)
            ),
            group_by=tuple(s for s in stages if s.needs_others),
        )
        if len(self._plans) >= _PLAN_CACHE_SIZE:
            self._plans.clear()
        self._plans[request] = plan
        return plan

    def _place(self, plan: _Plan) -> Placement | RejectionSummary:
        state = self._state
        feasible = self._feasible(plan)
        # Highest score among feasible nodes; argmax takes the first maximum, which is the
        # lowest hostname (node order) — the same answer as Ranker.select, from cached scores.
        ranked = np.where(feasible, self._node_scores(plan), -1.0)
        chosen = int(ranked.argmax()) if state.n else 0
        if state.n == 0 or not feasible[chosen]:
            return self._summary(plan)
        return self._commit(plan, chosen)

    def _commit(self, plan: _Plan, chosen: int) -> Placement:
        state = self._state
        request = plan.request
        ports = state.choose_ports(chosen, request.ports)
        state.reserve(chosen, request.app_id, request.resources, ports)
        return Placement(host=state.hostnames[chosen], ports=ports)

    def _place_burst(
        self, plan: _Plan, count: int
    ) -> tuple[list[Placement], RejectionSummary | None]:
        """``place_many`` for a request whose stages a placement changes predictably (see
        ``_Plan.burst``): the ranked array is built once and then patched where the last
        placement changed it, instead of being rebuilt over every node per placement. Same
        answers as ``_place`` in a loop (the property tests hold the two equal)."""
        state = self._state
        app_id = plan.request.app_id
        counted = [
            (s.limit, s.field, state.field_index(s.field))
            for s in plan.shared
            if isinstance(s, ConstraintChecker) and s.limit is not None
        ]
        placed: list[Placement] = []
        if count == 0:
            return placed, None
        feasible = self._feasible(plan).copy()
        ranked = np.where(feasible, self._node_scores(plan), -1.0)
        # Both caches are current now and each placement below adds one entry to
        # state.touched (its own node), so they are patched here directly: the single-change
        # paths of _local_mask and _node_scores, inlined.
        local = plan.local_mask
        assert local is not None  # set by _feasible above
        entry = self._scores[plan.shape]
        stages = plan.local
        ranker, shape, touched = self._ranker, plan.shape, state.touched
        chosen = 0
        for k in range(count):
            if k:
                # Only the node placed on last changed its resources, ports and score...
                ok = True
                for stage in stages:
                    if not stage.admits(state, chosen):
                        ok = False
                        break
                local[chosen] = ok
                plan.seen = len(touched)
                score = ranker.score_of(state, shape, chosen)
                entry.values[chosen] = score
                entry.seen = len(touched)
                # ... and a counting constraint may have filled that node's value.
                for limit, name, fi in counted:
                    code = int(fi.codes[chosen])
                    if state.value_counts(app_id, name)[code] >= limit:
                        full = fi.nodes_with(code)
                        feasible[full] = False
                        ranked[full] = -1.0
                        ok = False
                feasible[chosen] = ok
                ranked[chosen] = score if ok else -1.0
            chosen = int(ranked.argmax()) if state.n else 0
            if state.n == 0 or not feasible[chosen]:
                return placed, self._summary(plan)
            placed.append(self._commit(plan, chosen))
        return placed, None

    def _feasible(self, plan: _Plan) -> BoolArray:
        """Nodes passing every stage (a new array, or the plan's own local mask: read only).

        Masks from checkers may be cached or live, so they are combined into new arrays,
        never modified in place.
        """
        state = self._state
        app_id = plan.request.app_id
        ok = self._local_mask(plan)
        for stage in plan.shared:
            ok = ok & stage.mask(state, app_id, None)
        others = ok
        for stage in plan.group_by:
            ok = ok & stage.mask(state, app_id, others)
        return ok

    def _local_mask(self, plan: _Plan) -> BoolArray:
        """The AND of the plan's node-local stages, refreshed only where nodes changed since
        the plan last ran (a burst of place_many touches one node per placement)."""
        state = self._state
        touched = state.touched
        mask = plan.local_mask
        new = len(touched) - plan.seen
        if mask is not None and new == 1:
            # The common case inside place_many: only the node just placed on changed.
            i = touched[-1]
            mask[i] = all(stage.admits(state, i) for stage in plan.local)
        elif mask is not None and new <= _MASK_PATCH_LIMIT:
            for i in set(touched[plan.seen :]):
                mask[i] = all(stage.admits(state, i) for stage in plan.local)
        elif mask is None or new:
            mask = np.ones(state.n, dtype=np.bool_)
            for stage in plan.local:
                mask &= stage.mask(state, plan.request.app_id, None)
            plan.local_mask = mask
        plan.seen = len(touched)
        return mask

    def _node_scores(self, plan: _Plan) -> FloatArray:
        """The ranker's scores of every node for this request's shape (read only).

        Scores depend on a node's own state and the request's resources only, so a cached
        array stays exact if the nodes touched since are rescored (``Ranker.score_of`` is
        bit-identical to the vector computation).
        """
        state = self._state
        touched = state.touched
        key = plan.shape
        ranker = self._ranker
        entry = self._scores.get(key)
        if entry is None:
            if len(self._scores) >= _SCORE_CACHE_SIZE:
                self._scores.clear()
            entry = _Scores(ranker.scores(state, key), len(touched))
            self._scores[key] = entry
            return entry.values
        new = len(touched) - entry.seen
        values = entry.values
        if new == 1:
            i = touched[-1]
            values[i] = ranker.score_of(state, key, i)
        elif new:
            changed = set(touched[entry.seen :])
            if len(changed) <= _SCORE_PATCH_LIMIT:
                for i in changed:
                    values[i] = ranker.score_of(state, key, i)
            elif len(changed) * _SCORE_FULL_DIVISOR <= state.n:
                idx = np.fromiter(changed, dtype=np.intp, count=len(changed))
                values[idx] = ranker.scores_at(state, key, idx)
            else:
                entry.values = values = ranker.scores(state, key)
        entry.seen = len(touched)
        return values

    def _stage_masks(self, plan: _Plan) -> list[BoolArray]:
        """Every stage's own mask, in funnel order (GROUP_BY sees the AND of the rest)."""
        state = self._state
        app_id = plan.request.app_id
        masks: list[BoolArray | None] = [None] * len(plan.stages)
        others = np.ones(state.n, dtype=np.bool_)
        for k, stage in enumerate(plan.stages):
            if not stage.needs_others:
                m = stage.mask(state, app_id, None)
                masks[k] = m
                others = others & m
        for k, stage in enumerate(plan.stages):
            if stage.needs_others:
                masks[k] = stage.mask(state, app_id, others)
        return [m for m in masks if m is not None]

    def _summary(self, plan: _Plan) -> RejectionSummary:
        """The funnel: each stage processes the nodes that passed all earlier ones."""
        alive = np.ones(self._state.n, dtype=np.bool_)
        counts: list[StageCount] = []
        for stage, m in zip(plan.stages, self._stage_masks(plan), strict=True):
            processed = int(np.count_nonzero(alive))
            alive &= m
            declined = processed - int(np.count_nonzero(alive))
            counts.append(StageCount(stage.reason, stage.detail, processed, declined))
        return RejectionSummary(nodes=self._state.n, stages=tuple(counts))
