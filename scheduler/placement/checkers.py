"""Feasibility: one checker per pipeline stage.

Every checker answers one question for *all* nodes at once: it returns a boolean numpy array
with one entry per node (``True`` = the node passes this stage). The pipeline ANDs those
arrays in order, so the hot path costs a handful of vector operations per request instead of
a Python loop over nodes. The state they read (:class:`ClusterState`: free resources, free
ports, per-app counts per value) lives in :mod:`.state` and is re-exported here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from scheduler.model.constraints import Constraint, Operator
from scheduler.model.resources import EPSILON

from .results import PlacementRequest
from .state import (
    DIMENSIONS,
    AppTasks,
    BoolArray,
    ClusterState,
    FieldIndex,
    FloatArray,
    IntArray,
    resource_vector,
)

__all__ = [
    "DIMENSIONS",
    "AppTasks",
    "BoolArray",
    "Checker",
    "ClusterState",
    "ConstraintChecker",
    "FieldIndex",
    "FloatArray",
    "IntArray",
    "checkers_for",
    "constraint_checker",
    "resource_vector",
]

PORTS_REASON = "InsufficientPorts"
PORTS_DETAIL = "insufficient ports"
CONSTRAINT_REASON = "UnfulfilledConstraint"


# --------------------------------------------------------------------------------------------
# Checkers
# --------------------------------------------------------------------------------------------


class Checker(ABC):
    """One stage of the feasibility funnel.

    ``reason`` is a Marathon reject code, ``detail`` the text a person reads. :meth:`mask`
    returns one boolean per node (hostname order), ``True`` = passes. The returned array may
    be cached or live state: callers combine it into new arrays and never mutate it.

    ``others`` is the mask of nodes passing every stage of the request that is *not* a
    GROUP_BY; only :class:`GroupByChecker` reads it (it balances over values that can still
    take the task), so the pipeline passes ``None`` to the rest.
    """

    reason: str
    detail: str
    needs_others: bool = False
    # Node-local stages depend on nothing but the node's own free resources and ports, so a
    # reservation on node i can only change entry i: they implement admits() as well.
    local: bool = False

    @abstractmethod
    def mask(self, state: ClusterState, app_id: str, others: BoolArray | None) -> BoolArray:
        ...

    def admits(self, state: ClusterState, i: int) -> bool:
        """``mask(...)[i]`` for node-local stages, without touching the other nodes."""
        raise NotImplementedError(f"{type(self).__name__} is not node-local")

    def trivial(self, state: ClusterState) -> bool:
        """True when this stage passes every node whatever the state; the fast path skips it
        (the funnel still evaluates it, so counts stay exact)."""
        return False


class ResourceFit(Checker):
    """One scalar dimension: free amount + EPSILON >= requested amount."""

    local = True

    def __init__(self, dimension: int, amount: float) -> None:
        _, self.reason, self.detail = DIMENSIONS[dimension]
        self.dimension = dimension
        self.amount = amount
        self._threshold = amount - EPSILON

    def mask(self, state: ClusterState, app_id: str, others: BoolArray | None) -> BoolArray:
        fits: BoolArray = state.free[self.dimension] >= self._threshold
        return fits

    def admits(self, state: ClusterState, i: int) -> bool:
        return state.free_of[i][self.dimension] >= self._threshold

    def trivial(self, state: ClusterState) -> bool:
        return self.amount <= 0 and not state.overcommitted[self.dimension]


class PortFit(Checker):
    """Every fixed port inside the node's ranges and free, and enough free ports in total
    for all slots (fixed ones included: they come out of the same ranges).

    A request naming the same fixed port twice can never be satisfied (one port, two
    slots): every node fails this stage.
    """

    reason = PORTS_REASON
    detail = PORTS_DETAIL
    local = True

    def __init__(self, slots: tuple[int, ...]) -> None:
        self.total = len(slots)
        self.fixed = tuple(p for p in slots if p != 0)
        self.impossible = len(set(self.fixed)) != len(self.fixed)

    def mask(self, state: ClusterState, app_id: str, others: BoolArray | None) -> BoolArray:
        if self.impossible:
            return np.zeros(state.n, dtype=np.bool_)
        m = state.port_free >= self.total
        for p in self.fixed:
            m = m & state.port_available(p)
        return m

    def admits(self, state: ClusterState, i: int) -> bool:
        if self.impossible or state.port_free[i] < self.total:
            return False
        return all(state.port_available(p)[i] for p in self.fixed)

    def trivial(self, state: ClusterState) -> bool:
        return self.total == 0


class ConstraintChecker(Checker):
    """Base of the seven operator checkers: reason UnfulfilledConstraint, detail
    ``Constraint.describe()``, and the field encoding looked up per call (it is cached)."""

    reason = CONSTRAINT_REASON
    # What placing a task can do to this stage's mask, for Placer.place_many's patching:
    # ``static`` stages never change (they read node attributes only); ``limit`` stages
    # (UNIQUE, MAX_PER) reject every node of a value once the app holds ``limit`` tasks
    # there, and change nothing else. Neither: the mask may change anywhere.
    static: bool = False
    limit: int | None = None

    def __init__(self, constraint: Constraint) -> None:
        self.constraint = constraint
        self.field = constraint.field
        self.detail = constraint.describe()


class UniqueChecker(ConstraintChecker):
    """UNIQUE: the node's value holds no task of the app yet."""

    limit = 1

    def mask(self, state: ClusterState, app_id: str, others: BoolArray | None) -> BoolArray:
        return _per_value_limit(state, app_id, self.field, 1)


class MaxPerChecker(ConstraintChecker):
    """MAX_PER n: the node's value holds fewer than n tasks of the app."""

    limit: int

    def __init__(self, constraint: Constraint) -> None:
        super().__init__(constraint)
        self.limit = constraint.int_value

    def mask(self, state: ClusterState, app_id: str, others: BoolArray | None) -> BoolArray:
        return _per_value_limit(state, app_id, self.field, self.limit)


class ClusterChecker(ConstraintChecker):
    """CLUSTER value: the field equals value.

    CLUSTER without a value: every task on one value. The value is the one of the app's
    oldest task (snapshot order, then placement order) whose node has the field; while the
    app has no such task, any node that has the field passes — the first placement picks the
    value. Releasing tasks can move the pin to the next-oldest task's value, and releasing
    them all frees it.
    """

    def __init__(self, constraint: Constraint) -> None:
        super().__init__(constraint)
        # With a value it is a fixed attribute test; without, the first task pins the value.
        self.static = bool(constraint.value)

    def mask(self, state: ClusterState, app_id: str, others: BoolArray | None) -> BoolArray:
        fi = state.field_index(self.field)
        if self.constraint.value:
            return fi.equals(self.constraint.value)
        for i in state.app(app_id).order:
            code = int(fi.codes[i])
            if code != fi.missing:
                return fi.equals(fi.values[code])
        return fi.has_field()


class GroupByChecker(ConstraintChecker):
    """GROUP_BY [n]: spread the app evenly over the field's values.

    A node passes when its value holds the fewest tasks of the app among the values that
    can still take this task — values with at least one node passing every non-GROUP_BY
    stage (``others``). So while every value has room, counts per value never differ by
    more than one. When the least-loaded value has no room left, the task goes to the
    least-loaded value that has room (water-filling) instead of waiting; the starved value
    becomes first choice again as soon as it has room.

    Values are the field's values on the snapshot's nodes: Dromos sees every node, so it
    does not need Marathon's ``n`` (the number of values to expect before values are known
    from offers). ``n`` is validated and kept for compatibility but does not change
    placement — in particular, a value with no node in the snapshot (a zone that is down)
    never blocks placement on the values that exist. With several GROUP_BY constraints each
    one balances against ``others``, which excludes the other GROUP_BYs.
    """

    needs_others = True

    def mask(self, state: ClusterState, app_id: str, others: BoolArray | None) -> BoolArray:
        fi = state.field_index(self.field)
        counts = state.value_counts(app_id, self.field)
        if others is None:
            raise ValueError("GROUP_BY needs the mask of the other stages")
        nv = len(fi.values)
        # Values with at least one node that passes everything else.
        roomy = others if fi.identity else fi.any_per_value(others)
        if not roomy.any():
            return np.zeros(state.n, dtype=np.bool_)
        least = counts[:nv][roomy].min()
        table = np.empty(nv + 1, dtype=np.bool_)
        np.equal(counts[:nv], least, out=table[:nv])
        table[nv] = False
        return fi.gather(table)


class LikeChecker(ConstraintChecker):
    """LIKE regex: the field fully matches; a node lacking the field fails."""

    static = True

    def __init__(self, constraint: Constraint) -> None:
        super().__init__(constraint)
        self.pattern = constraint.pattern

    def mask(self, state: ClusterState, app_id: str, others: BoolArray | None) -> BoolArray:
        return state.field_index(self.field).full_match(self.pattern, negate=False)


class UnlikeChecker(LikeChecker):
    """UNLIKE regex: the field does not fully match; a node lacking the field passes."""

    def mask(self, state: ClusterState, app_id: str, others: BoolArray | None) -> BoolArray:
        return state.field_index(self.field).full_match(self.pattern, negate=True)


class IsChecker(ConstraintChecker):
    """IS value: the field is exactly value."""

    static = True

    def mask(self, state: ClusterState, app_id: str, others: BoolArray | None) -> BoolArray:
        return state.field_index(self.field).equals(self.constraint.value or "")


def _per_value_limit(state: ClusterState, app_id: str, field_name: str, limit: int) -> BoolArray:
    """Nodes whose value holds fewer than ``limit`` tasks of the app; lacking the field fails."""
    fi = state.field_index(field_name)
    table = state.value_counts(app_id, field_name) < limit
    table[fi.missing] = False
    return fi.gather(table)


_OPERATORS: dict[Operator, type[ConstraintChecker]] = {
    Operator.UNIQUE: UniqueChecker,
    Operator.CLUSTER: ClusterChecker,
    Operator.GROUP_BY: GroupByChecker,
    Operator.LIKE: LikeChecker,
    Operator.UNLIKE: UnlikeChecker,
    Operator.MAX_PER: MaxPerChecker,
    Operator.IS: IsChecker,
}


def constraint_checker(constraint: Constraint) -> ConstraintChecker:
    """The checker for one constraint."""
    return _OPERATORS[constraint.operator](constraint)


def checkers_for(request: PlacementRequest) -> tuple[Checker, ...]:
    """The funnel of ``request``, in pipeline order, cheapest first. Every stage is present
    even when it cannot reject anything (a zero request), so the funnel has the same shape
    for every request and ``processed`` always means "nodes that reached this stage"."""
    cpus, mem, disk, gpus = resource_vector(request.resources).tolist()
    return (
        # 1. cpus: one vector comparison of free cpus (+ EPSILON) against the request.
        ResourceFit(0, cpus),
        # 2. mem: the same for memory, the dimension most often exhausted in practice.
        ResourceFit(1, mem),
        # 3. disk.
        ResourceFit(2, disk),
        # 4. gpus: a zero request passes nodes without gpus.
        ResourceFit(3, gpus),
        # 5. ports: free-port count per node, then one live mask per fixed port.
        PortFit(request.ports),
        # 6+. one stage per constraint, in the order the app lists them; these read per-app
        #     per-value counts, so they come after the cheap node-local stages.
        *(constraint_checker(c) for c in request.constraints),
    )
