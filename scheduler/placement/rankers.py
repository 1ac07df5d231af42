"""Ranking: score every feasible node 0..100 and pick the best.

Both rankers look at a node's *dominant utilisation after placement*: for each dimension the
fraction of the node's capacity that would be in use if the task landed there, and the
maximum over dimensions (dominant-resource style: a node whose memory is full is full, however
many cpus it has idle). Dimensions a node does not have count as 0.

Selection is the highest score; among equal scores the node that comes first in
:class:`ClusterState` order wins, which is hostname order — deterministic, no randomness.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from .checkers import BoolArray, ClusterState, FloatArray
from .plan import Strategy


def dominant_after(state: ClusterState, need: FloatArray) -> FloatArray:
    """Per node: max over dimensions of (used + need) / capacity, clipped to 0..1.

    Only dimensions the request asks for can change; the others are already summarised in
    ``state.dominant_used``, so the cost is two vector operations per requested dimension.
    """
    u = state.dominant_used.copy()
    for d in range(4):
        amount = float(need[d])
        if amount > 0:
            after = state.inv_capacity[d] * amount
            after += state.used_fraction[d]
            np.maximum(u, after, out=u)
    np.clip(u, 0.0, 1.0, out=u)
    return u


class Ranker(ABC):
    """Scores nodes for one request; higher is better."""

    name: str

    @abstractmethod
    def scores(self, state: ClusterState, need: FloatArray) -> FloatArray:
        """Score of every node (hostname order), 0..100, for a task needing ``need``
        (a length-4 vector in ``DIMENSIONS`` order). Infeasible nodes get a score too; it
        means nothing and :meth:`select` ignores it."""

    def select(self, state: ClusterState, need: FloatArray, feasible: BoolArray) -> int | None:
        """Index of the best-scored feasible node (first in hostname order among equals);
        ``None`` when no node is feasible."""
        if state.n == 0:
            return None
        ranked = np.where(feasible, self.scores(state, need), -1.0)
        best = int(ranked.argmax())
        return best if feasible[best] else None


class BinPack(Ranker):
    """Fill the fullest node first, so whole nodes stay empty for big tasks (or scale-down).

    Occupied nodes (hosting at least one task) score 50..100: 50 + 50 * dominant utilisation
    after placement — the node left fullest wins, best-fit style. Empty nodes score 0..50:
    50 * (1 - dominant utilisation after placement), so an empty node is only opened when no
    occupied node fits, and then the *largest* one (relative to this task) is opened. Opening
    small nodes first would strand capacity on a heterogeneous cluster: a fleet packed into
    its largest nodes needs the fewest nodes.
    """

    name = "binpack"

    def scores(self, state: ClusterState, need: FloatArray) -> FloatArray:
        u = dominant_after(state, need)
        u *= 50.0
        return np.where(state.occupied, 50.0 + u, 50.0 - u)


class Spread(Ranker):
    """Prefer the emptiest node: 100 * (1 - dominant utilisation after placement)."""

    name = "spread"

    def scores(self, state: ClusterState, need: FloatArray) -> FloatArray:
        u = dominant_after(state, need)
        u *= -100.0
        u += 100.0
        return u


def ranker_for(strategy: Strategy) -> Ranker:
    """The ranker implementing ``strategy``."""
    return BinPack() if strategy is Strategy.BINPACK else Spread()
