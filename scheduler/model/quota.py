"""Team quotas: a guaranteed share of the cluster and how much more a team may borrow.

The model is Kueue's cohort: every team (top-level group) belongs to the one cohort that is
the cluster. ``guaranteed`` is the team's nominal quota, always available to it (borrowers
are preempted to give it back); ``borrowing_limit`` caps what it may use above that from
capacity other teams leave idle (``None``: no cap beyond the cluster itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scheduler.model.resources import Resources
from scheduler.model.validation import SpecError, errors_from_pydantic

_TEAM = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"


class _Amounts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    cpus: float = Field(default=0.0, ge=0)
    mem: float = Field(default=0.0, ge=0)
    gpus: float = Field(default=0.0, ge=0)

    def resources(self) -> Resources:
        return Resources(cpus=self.cpus, mem=self.mem, gpus=self.gpus)


class _QuotaDoc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    team: str = Field(pattern=_TEAM, max_length=63)
    guaranteed: _Amounts = Field(default_factory=_Amounts)
    borrowingLimit: _Amounts | None = None


@dataclass(frozen=True)
class TeamQuota:
    """One team's quota. Disk is not shared out (it is per node, never scarce cluster-wide)."""

    team: str
    guaranteed: Resources
    borrowing_limit: Resources | None = None

    def to_json(self) -> dict[str, Any]:
        def amounts(r: Resources) -> dict[str, float]:
            return {"cpus": r.cpus, "mem": r.mem, "gpus": r.gpus}

        out: dict[str, Any] = {"team": self.team, "guaranteed": amounts(self.guaranteed)}
        if self.borrowing_limit is not None:
            out["borrowingLimit"] = amounts(self.borrowing_limit)
        return out


def parse_quota(data: Any) -> TeamQuota:
    """Validate ``{"team": "ml", "guaranteed": {"cpus": 64, "mem": 262144, "gpus": 8},
    "borrowingLimit": {"cpus": 32, ...}}``. Raises :class:`SpecError` with JSON pointers."""
    if not isinstance(data, dict):
        raise SpecError("Quota is not valid", [("", ["must be a JSON object"])])
    try:
        doc = _QuotaDoc.model_validate(data)
    except ValidationError as e:
        raise SpecError("Quota is not valid", errors_from_pydantic(e)) from None
    limit = doc.borrowingLimit.resources() if doc.borrowingLimit is not None else None
    return TeamQuota(team=doc.team, guaranteed=doc.guaranteed.resources(), borrowing_limit=limit)


def oversubscribed(quotas: list[TeamQuota], capacity: Resources) -> list[str]:
    """Dimensions (``cpus``, ``mem``, ``gpus``) where the guarantees add up to more than the
    cluster holds: such guarantees cannot all be honoured at once, so a write that makes
    them so should be refused (the caller decides; empty means consistent)."""
    total = Resources()
    for q in quotas:
        total = total + q.guaranteed
    return [
        name
        for name, want, have in (
            ("cpus", total.cpus, capacity.cpus),
            ("mem", total.mem, capacity.mem),
            ("gpus", total.gpus, capacity.gpus),
        )
        if want > have + 1e-9
    ]
