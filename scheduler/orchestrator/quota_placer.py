"""The ordinary placement path under team quotas: a :class:`Placer` that refuses, before any
node is tried, a task that would take its team above ``guaranteed + borrowingLimit``.

Without it a team could run past its borrowing limit whenever idle room exists, since the
sharing step only sees what the ordinary path could not place. The refusal is a
:class:`RejectionSummary` with one stage, reason :data:`QUOTA_REASON`, so the reconciler's
queue entry, ``/v2/queue``'s ``rejectSummaryLastOffers`` (a value, not a new key: strict
clients tolerate it) and a queued run's "waiting: ..." message all say "waiting for quota".
The same pure :func:`scheduler.sharing.quota.admit` decides as in the sharing step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from scheduler.model.quota import TeamQuota
from scheduler.model.resources import Resources
from scheduler.placement.pipeline import Placer
from scheduler.placement.results import (
    ClusterSnapshot,
    Placement,
    PlacementRequest,
    RejectionSummary,
    StageCount,
    Strategy,
)
from scheduler.sharing.quota import admit

QUOTA_REASON = "InsufficientQuota"
"""The Dromos reason code of a quota refusal in a rejection summary."""

SHARING_REASON = "PlacedBySharing"
"""The Dromos reason code for a request the ordinary path leaves to the sharing step (a gang,
placed all or none, or a task given GPU devices): it is placed on the next pass."""


class QuotaPlacer(Placer):
    """A :class:`Placer` that admits each task against its team's quota first, and leaves
    the requests ``held`` names a reason for (gangs, GPU tasks) to the sharing step.

    ``team_of`` maps a request's ``app_id`` (an app id, or a job run's placement group) to
    its team; ``usage`` is what every team's live tasks hold at the start of the pass and is
    updated as this placer places. Teams without a borrowing limit are never refused here.
    """

    def __init__(self, snapshot: ClusterSnapshot, strategy: Strategy, *,
                 quotas: Mapping[str, TeamQuota], usage: Mapping[str, Resources],
                 team_of: Callable[[str], str],
                 held: Callable[[str], str | None] = lambda _: None) -> None:
        super().__init__(snapshot, strategy)
        self._held = held
        self._quotas = quotas
        self._usage = dict(usage)
        self._team_of = team_of
        self._nodes = len(snapshot.nodes)

    def _refusal(self, request: PlacementRequest) -> RejectionSummary | None:
        why = self._held(request.app_id)
        if why is not None:
            return RejectionSummary(self._nodes, (StageCount(SHARING_REASON, why, self._nodes,
                                                             self._nodes),))
        team = self._team_of(request.app_id)
        answer = admit(team, request.resources, self._usage, self._quotas)
        if answer.admitted:
            return None
        detail = answer.reason or f"team {team} is at its quota"
        return RejectionSummary(self._nodes, (StageCount(QUOTA_REASON, detail, self._nodes,
                                                         self._nodes),))

    def _took(self, request: PlacementRequest, n: int) -> None:
        team = self._team_of(request.app_id)
        r = request.resources
        self._usage[team] = self._usage.get(team, Resources()) + Resources(
            r.cpus * n, r.mem * n, r.disk * n, r.gpus * n)

    def place(self, request: PlacementRequest) -> Placement | RejectionSummary:
        refused = self._refusal(request)
        if refused is not None:
            return refused
        placed = super().place(request)
        if isinstance(placed, Placement):
            self._took(request, 1)
        return placed

    def place_many(self, request: PlacementRequest,
                   count: int) -> tuple[list[Placement], RejectionSummary | None]:
        # How many the quota admits, then the pipeline's own (burst) placement of those.
        if self._held(request.app_id) is not None:
            return [], self._refusal(request)
        team = self._team_of(request.app_id)
        r = request.resources
        allowed = 0
        while allowed < count and admit(team, Resources(
                r.cpus * (allowed + 1), r.mem * (allowed + 1), r.disk * (allowed + 1),
                r.gpus * (allowed + 1)), self._usage, self._quotas).admitted:
            allowed += 1
        placed, summary = super().place_many(request, allowed)
        self._took(request, len(placed))
        if summary is None and allowed < count:
            summary = self._refusal(request)
        return placed, summary
