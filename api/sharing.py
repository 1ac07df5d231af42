"""Dromos-only sharing routes (issue 15): team quotas, and why sharing keeps things waiting.

- ``GET /dromos/quotas`` → ``{"quotas": [quota, ...]}``
- ``GET /dromos/quotas/{team}`` → the quota, or 404
- ``PUT /dromos/quotas/{team}`` with ``{"guaranteed": {"cpus", "mem", "gpus"},
  "borrowingLimit": {...}}`` (``team`` in the body is optional and must match the path) →
  the stored quota; 422 with JSON-pointer paths on bad input, nothing stored
- ``DELETE /dromos/quotas/{team}`` → 204, or 404
- ``POST /dromos/jobs/{name}/backfill`` ``{"from", "to", "concurrency"}`` → 202 and the
  progress; ``GET`` the same → the progress (:mod:`scheduler.batch.backfill`)
- ``GET /dromos/sharing`` → per team usage vs guarantee vs borrowed, every request sharing
  keeps waiting and why (quota, capacity, preempting), and the recent preemptions (who
  preempted whom and why; also on ``/dromos/events`` as ``task_preempted``).

Dromos routes, not Marathon ones: ``/v2/queue`` keeps the documented keys strict clients
accept (``/work/shared/reference/marathon.md``, compatibility notes).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request, Response

from api.presentation import orch
from scheduler.model.quota import parse_quota
from scheduler.model.validation import SpecError
from scheduler.orchestrator.core import NotFound

router = APIRouter()

QuotaBody = Body(..., description="A team quota: guaranteed and borrowingLimit amounts")


@router.get("/dromos/quotas")
def list_quotas(request: Request) -> dict[str, Any]:
    quotas = orch(request).quotas()
    return {"quotas": [quotas[t].to_json() for t in sorted(quotas)]}


@router.get("/dromos/quotas/{team}")
def get_quota(request: Request, team: str) -> dict[str, Any]:
    quota = orch(request).quotas().get(team)
    if quota is None:
        raise NotFound(f"Team '{team}' has no quota")
    return quota.to_json()


@router.put("/dromos/quotas/{team}")
def put_quota(request: Request, team: str, body: Any = QuotaBody) -> dict[str, Any]:
    if isinstance(body, dict):
        if "team" in body and body["team"] != team:
            raise SpecError("Quota is not valid",
                            [("/team", [f"must match the team in the path ({team!r})"])])
        body = {**body, "team": team}
    quota = parse_quota(body)
    orch(request).put_quota(quota)
    return quota.to_json()


@router.delete("/dromos/quotas/{team}", status_code=204)
def delete_quota(request: Request, team: str) -> Response:
    if not orch(request).delete_quota(team):
        raise NotFound(f"Team '{team}' has no quota")
    return Response(status_code=204)


@router.get("/dromos/sharing")
def sharing(request: Request) -> dict[str, Any]:
    o = orch(request)
    waits = o.sharing_waits()
    return {
        "teams": o.team_usage(),
        "waiting": [{"id": w.request_id, "kind": w.kind.value, "reason": w.reason}
                    for _, w in sorted(waits.items())],
        "preemptions": o.preemptions(),
    }


BackfillBody = Body(..., description='{"from": ISO, "to": ISO, "concurrency": n}')


@router.post("/dromos/jobs/{name}/backfill", status_code=202)
def start_backfill(request: Request, name: str, body: Any = BackfillBody) -> dict[str, Any]:
    """Run job ``name`` over a past range: every occurrence in ``[from, to]`` under the run id
    it would have had (one that already ran is skipped), at most ``concurrency`` at once."""
    return orch(request).start_backfill(name, body)


@router.get("/dromos/jobs/{name}/backfill")
def backfill_progress(request: Request, name: str) -> dict[str, Any]:
    """``total``, ``done`` (= ``succeeded`` + ``failed`` + ``skipped``), ``active``,
    ``pending`` and ``status`` (running / finished) of the job's latest backfill."""
    return orch(request).backfill_progress(name)
