"""Ranking: score feasible nodes 0..100 and pick the best.

Every ranker starts from a node's *utilisation after placement*: per dimension, the fraction of
the node's capacity in use if the task landed there (dimensions a node does not have count as
0). The *dominant* utilisation is the maximum over dimensions, dominant-resource style: a node
whose memory is full is full, however many cpus sit idle.

Selection is the highest score; among equal scores the node that comes first in
:class:`ClusterState` order wins, which is hostname order — deterministic, no randomness.

Every ranker computes scores twice over: :meth:`Ranker.scores_at` for many nodes at once
(numpy), and :meth:`Ranker.score_of` for one node (Python floats, the same IEEE operations in
the same order, so bit-identical). The pipeline keeps a score array per request shape and
patches it with ``score_of`` for the few nodes a placement changed, instead of rescoring
thousands of nodes per placement. The tests hold the two to exact equality.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .checkers import BoolArray, ClusterState, FloatArray, IntArray
from .results import Strategy

# How much BinPack weighs keeping cpus and mem level against filling the node up. Vector bin
# packing loses most capacity to nodes that fill one dimension while the other idles (a node
# with no memory left cannot use its free cpus); measured on bench/placement.py, weights from
# 4 to 20 recover most of it and 8 sits in the flat middle of that range.
STRANDING_WEIGHT = 8.0

# Balanced's knobs, measured on bench/placement.py's mixed 2-6 GiB/cpu workload over seeds
# 7-9 at 1,000 and 5,000 nodes (nodes used / L1 bound, worst seed: 1.08, 1.06; BinPack: 1.15,
# 1.13); results move by a few thousandths between neighbouring values, not more.
# A node's free memory per free cpu, relative to its capacity's, must stay inside this band;
# ±20 % beat ±15 % (nodes opened too eagerly) and ±25-33 % (stranding creeps back).
SKEW_BAND = (0.8, 1.2)
# Slack on the band, in units of the task's mean share of the node: a small task may finish
# off a nearly full node even if the last crumbs end up lopsided.
SKEW_TOLERANCE = 0.5
# Balanced's weight of levelness against fullness (BinPack's STRANDING_WEIGHT, retuned: 8-16
# are within noise of each other once skewing is refused).
BALANCE_WEIGHT = 12.0


def gather(values: npt.NDArray[Any], idx: IntArray | None) -> npt.NDArray[Any]:
    """A fresh copy of ``values`` at ``idx``; ``None`` means every node (a plain copy, which
    costs a fraction of a ``take`` over ``arange(n)``)."""
    return values.copy() if idx is None else values.take(idx)


def utilisation_after(
    state: ClusterState, need: Sequence[float], idx: IntArray | None
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """For the nodes ``idx`` (``None``: every node): (cpus fraction, mem fraction, dominant
    fraction) after placing
    a task needing ``need`` (length 4, ``DIMENSIONS`` order). The dominant fraction is
    clipped to at most 1 (a fit within EPSILON may overshoot by a hair).

    Dimensions the request does not ask for cannot change, and their maximum is already kept
    in ``state.dominant_used``, so the cost is a few vector operations per requested
    dimension over ``len(idx)`` nodes. The arrays are fresh: callers may modify them.
    """
    dominant = gather(state.dominant_used, idx)
    rows: list[FloatArray] = []
    for d in range(4):
        amount = float(need[d])
        if amount <= 0 and d >= 2:
            continue
        row = gather(state.used_fraction[d], idx)
        if amount > 0:
            share = state.share(d, amount)
            row += share if idx is None else share.take(idx)
            np.maximum(dominant, row, out=dominant)
        rows.append(row)
    np.minimum(dominant, 1.0, out=dominant)
    return rows[0], rows[1], dominant


def utilisation_after_one(
    state: ClusterState, need: Sequence[float], i: int
) -> tuple[float, float, float]:
    """:func:`utilisation_after` for the single node ``i``, bit-identical."""
    used = state.used_of[i]
    dominant = max(0.0, used[0], used[1], used[2], used[3])  # == state.dominant_used[i]
    inverse = state.inverse_capacity_of[i]
    rows: list[float] = []
    for d in range(4):
        amount = float(need[d])
        if amount <= 0 and d >= 2:
            continue
        row = used[d]
        if amount > 0:
            row = row + inverse[d] * amount
            dominant = max(dominant, row)
        rows.append(row)
    return rows[0], rows[1], min(dominant, 1.0)


class Ranker(ABC):
    """Scores nodes for one request; higher is better."""

    name: str

    @abstractmethod
    def scores_at(
        self, state: ClusterState, need: Sequence[float], idx: IntArray | None
    ) -> FloatArray:
        """Scores (0..100) of the nodes ``idx`` (``None``: every node) for a task needing
        ``need`` (length 4, ``DIMENSIONS`` order)."""

    @abstractmethod
    def score_of(self, state: ClusterState, need: Sequence[float], i: int) -> float:
        """``scores_at(state, need, [i])[0]``, bit for bit, without numpy overhead."""

    def scores(self, state: ClusterState, need: Sequence[float]) -> FloatArray:
        """Score of every node, hostname order, 0..100. Infeasible nodes get a score too;
        it means nothing and :meth:`select` ignores it."""
        return self.scores_at(state, need, None)

    def select(
        self, state: ClusterState, need: Sequence[float], feasible: BoolArray
    ) -> int | None:
        """Index of the best-scored feasible node (first in hostname order among equals);
        ``None`` when no node is feasible."""
        idx = np.flatnonzero(feasible)
        if idx.size == 0:
            return None
        # idx is ascending and argmax returns the first maximum: lowest hostname wins ties.
        return int(idx[int(self.scores_at(state, need, idx).argmax())])


class BinPack(Ranker):
    """Fill nodes up, so whole nodes stay empty (for big tasks, or to be scaled away).

    Occupied nodes (hosting at least one task) score above 50::

        50 + 50 * (dominant + W * (1 - stranded)) / (1 + W)

    ``dominant`` is the dominant utilisation after placement (fuller is better, best-fit
    style); ``stranded`` = |cpus fraction - mem fraction| after placement, the share of the
    node that would sit idle once its fuller dimension runs out; W is
    :data:`STRANDING_WEIGHT`. Only cpus and mem count as stranded: every task asks for both,
    while disk and gpus are provisioned at ratios unrelated to tasks and would make every
    node look lopsided. Since stranded <= dominant, the fraction is > 0 and an occupied
    node always beats an empty one.

    Empty nodes score 50 * (1 - dominant after placement), at most 50: a node is only opened
    when no occupied node fits, and then the *largest* one relative to this task. Opening
    small nodes first would strand capacity on a heterogeneous cluster; a fleet packed into
    its largest nodes needs the fewest.
    """

    name = "binpack"
    _SCALE = 50.0 / (1.0 + STRANDING_WEIGHT)
    _STRANDED_FACTOR = -STRANDING_WEIGHT * _SCALE
    _OFFSET = 50.0 + STRANDING_WEIGHT * _SCALE

    def scores_at(
        self, state: ClusterState, need: Sequence[float], idx: IntArray | None
    ) -> FloatArray:
        cpus, mem, dominant = utilisation_after(state, need, idx)
        empty = 1.0 - dominant
        empty *= 50.0
        # In place, reusing the fresh arrays: stranded * F + dominant * S + O.
        score = np.subtract(cpus, mem, out=cpus)
        np.abs(score, out=score)
        score *= self._STRANDED_FACTOR
        dominant *= self._SCALE
        score += dominant
        score += self._OFFSET
        return np.where(gather(state.occupied, idx), score, empty)

    def score_of(self, state: ClusterState, need: Sequence[float], i: int) -> float:
        cpus, mem, dominant = utilisation_after_one(state, need, i)
        if not state.tasks_of[i]:
            return (1.0 - dominant) * 50.0
        return abs(cpus - mem) * self._STRANDED_FACTOR + dominant * self._SCALE + self._OFFSET


class Spread(Ranker):
    """Prefer the emptiest node: 100 * (1 - dominant utilisation after placement)."""

    name = "spread"

    def scores_at(
        self, state: ClusterState, need: Sequence[float], idx: IntArray | None
    ) -> FloatArray:
        _, _, dominant = utilisation_after(state, need, idx)
        score = np.subtract(1.0, dominant, out=dominant)
        score *= 100.0
        return score

    def score_of(self, state: ClusterState, need: Sequence[float], i: int) -> float:
        _, _, dominant = utilisation_after_one(state, need, i)
        return (1.0 - dominant) * 100.0


class Balanced(Ranker):
    """Bin packing that refuses to skew a node: the ranker behind ``Strategy.BINPACK``.

    :class:`BinPack` prefers the node left most level, but on mixed demand (tasks asking 2 to 6
    GiB per cpu on 4 GiB/cpu nodes) a burst of memory-heavy tasks still fills nodes that
    nothing can level again, and a node out of memory strands its free cpus for good. This
    ranker keeps every node's *free* capacity in a shape the demand can fill: with ``fc`` and
    ``fm`` the fractions of cpus and mem free after placement, a placement on an occupied node
    is *skewing* when it pushes the node out of the band::

        fm < LO * fc - tol   or   fm > HI * fc + tol        (LO, HI = SKEW_BAND)

    while making it less level (``stranded`` after > before, where stranded = |cpus fraction -
    mem fraction|, as in BinPack). ``tol`` is SKEW_TOLERANCE times the task's mean share of
    the node (cpus and mem), so small tasks may still finish off a nearly full node. A task
    that levels a lopsided node is never skewing. Scores, in three bands:

    * occupied, not skewing: ``50 + 50 * (dominant + W * (1 - stranded)) / (1 + W)`` — 50..100,
      BinPack's score with W = :data:`BALANCE_WEIGHT`;
    * empty: ``25 + 25 * (1 - dominant)`` — 25..50, the largest node relative to the task first;
    * occupied, skewing: ``25 * (1 - stranded)`` (at least 0) — 0..25, the least lopsided.

    So a skewing task opens a node instead (and falls back to the least lopsided occupied node
    only when no empty node fits). Unlike BinPack, an occupied node does *not* always beat an
    empty one. On demand at the fleet's own ratio nothing is ever skewing and the ranking is
    BinPack's. Disk and gpus are ignored for skew, as for stranding.
    """

    name = "balanced"
    _SCALE = 50.0 / (1.0 + BALANCE_WEIGHT)
    _LOW, _HIGH = SKEW_BAND
    _HALF_TOLERANCE = SKEW_TOLERANCE / 2.0

    def scores_at(
        self, state: ClusterState, need: Sequence[float], idx: IntArray | None
    ) -> FloatArray:
        cpus, mem, dominant = utilisation_after(state, need, idx)
        cpus0 = gather(state.used_fraction[0], idx)
        mem0 = gather(state.used_fraction[1], idx)
        # tol = ((cpus - cpus0) + (mem - mem0)) * HALF_TOLERANCE; the order of operations
        # matches score_of, so the two stay bit-identical.
        tol = cpus - cpus0
        tol += mem - mem0
        tol *= self._HALF_TOLERANCE
        before = np.subtract(cpus0, mem0, out=cpus0)
        np.abs(before, out=before)
        level = np.subtract(cpus, mem)
        np.abs(level, out=level)
        worse = level > before
        np.subtract(1.0, level, out=level)  # level = 1 - stranded after
        free_cpus = np.subtract(1.0, cpus, out=cpus)
        free_mem = np.subtract(1.0, mem, out=mem)
        skew = free_mem < free_cpus * self._LOW - tol
        skew |= free_mem > free_cpus * self._HIGH + tol
        skew &= worse
        occupied = gather(state.occupied, idx)
        skew &= occupied
        good = level * BALANCE_WEIGHT
        good += dominant
        good *= self._SCALE
        good += 50.0
        empty = np.subtract(1.0, dominant, out=dominant)
        empty *= 25.0
        empty += 25.0
        score = np.where(occupied, good, empty)
        if skew.any():
            np.maximum(level, 0.0, out=level)
            level *= 25.0
            np.copyto(score, level, where=skew)
        return score

    def score_of(self, state: ClusterState, need: Sequence[float], i: int) -> float:
        # utilisation_after_one inlined (this runs once per placement): the same operations.
        used = state.used_of[i]
        inverse = state.inverse_capacity_of[i]
        cpus0, mem0 = used[0], used[1]
        dominant = max(0.0, cpus0, mem0, used[2], used[3])
        cpus, mem = cpus0, mem0
        amount = need[0]
        if amount > 0:
            cpus = cpus0 + inverse[0] * amount
            dominant = max(dominant, cpus)
        amount = need[1]
        if amount > 0:
            mem = mem0 + inverse[1] * amount
            dominant = max(dominant, mem)
        for d in (2, 3):
            amount = need[d]
            if amount > 0:
                dominant = max(dominant, used[d] + inverse[d] * amount)
        dominant = min(dominant, 1.0)
        if not state.tasks_of[i]:
            return (1.0 - dominant) * 25.0 + 25.0
        tol = ((cpus - cpus0) + (mem - mem0)) * self._HALF_TOLERANCE
        stranded = abs(cpus - mem)
        level = 1.0 - stranded
        free_cpus, free_mem = 1.0 - cpus, 1.0 - mem
        if stranded > abs(cpus0 - mem0) and (
            free_mem < free_cpus * self._LOW - tol or free_mem > free_cpus * self._HIGH + tol
        ):
            return max(level, 0.0) * 25.0
        return (level * BALANCE_WEIGHT + dominant) * self._SCALE + 50.0


def ranker_for(strategy: Strategy) -> Ranker:
    """The ranker implementing ``strategy``; ``ValueError`` for anything else.

    ``Strategy.BINPACK`` is :class:`Balanced`: on demand at the fleet's ratio it ranks as
    :class:`BinPack` does, and on mixed demand it packs into fewer nodes.
    """
    if strategy == Strategy.BINPACK:
        return Balanced()
    if strategy == Strategy.SPREAD:
        return Spread()
    raise ValueError(f"unknown placement strategy {strategy!r}")
