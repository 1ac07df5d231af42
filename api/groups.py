"""Marathon's ``/v2/groups`` endpoints (shapes and codes per the reference).

Group JSON has exactly the keys strict clients accept (marathon 0.13.0's ``MarathonGroup``:
``id, apps, groups, pods, dependencies, version``); Marathon 1.9's ``enforceRole`` is left
out for that reason. Writes answer with Marathon's deployment result
``{"deploymentId", "version"}`` and a ``Marathon-Deployment-Id`` header (see
:mod:`scheduler.orchestrator.group_commands` for which deployment that is). ``?force=true``
overrides deployment locks (409 otherwise).

Routes, besides Marathon's: ``PUT /v2/groups/{id}/versions/{v}`` rolls back, because the
common Python client's ``rollback_group`` uses that path.
"""

from __future__ import annotations

import threading
from typing import Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from api.presentation import app_json, orch, qbool
from scheduler.model.app import AppSpec
from scheduler.model.group import ROOT, Group, resolve_path
from scheduler.model.validation import SpecError
from scheduler.orchestrator import Orchestrator
from scheduler.orchestrator.group_commands import GroupChange, GroupManager

router = APIRouter()

GroupBody = Body(..., description="A Marathon group definition, or {scaleBy} / {version}")
_manager_lock = threading.Lock()


def manager(request: Request) -> GroupManager:
    """The application's one GroupManager (created on first use: its creation finishes a
    group change a crash interrupted, and its lock serialises group changes)."""
    state = request.app.state
    with _manager_lock:
        existing: GroupManager | None = getattr(state, "group_manager", None)
        if existing is None:
            existing = GroupManager(orch(request))
            state.group_manager = existing
        return existing


def group_id_from_path(raw: str) -> str:
    """The group a URL names. Unlike ids in a body, no ``.``/``..``: a URL such as
    ``/v2/groups/a/..`` must not quietly address (and ``DELETE``) the root."""
    if any(seg in (".", "..") for seg in raw.split("/")):
        raise SpecError("Object is not valid", [("/id", ["'.' and '..' are not allowed here"])])
    try:
        return resolve_path(raw, ROOT, allow_root=True)
    except ValueError as e:
        raise SpecError("Object is not valid", [("/id", [str(e)])]) from None


def group_json(o: Orchestrator, group: Group, current: bool = True) -> dict[str, Any]:
    """The group as Marathon shows it. ``current``: apps rendered like ``GET /v2/apps``
    (with versionInfo); otherwise (a recorded version) as the definitions that were stored."""

    def app(spec: AppSpec) -> dict[str, Any]:
        if current:
            return app_json(o, spec, set())
        # A recorded definition has no app version of its own: leave the key out.
        return {k: v for k, v in spec.to_marathon().items() if k != "version" or v}

    return {
        "id": group.id,
        "apps": [app(a) for a in group.apps],
        "groups": [group_json(o, g, current) for g in group.groups],
        "pods": [],
        "dependencies": list(group.dependencies),
        "version": group.version,
    }


def _result(change: GroupChange, status: int = 200) -> JSONResponse:
    headers = {"Marathon-Deployment-Id": change.deployment_id}
    if status == 201:
        headers["Location"] = f"/v2/groups{change.group_id}"
    return JSONResponse(change.to_marathon(), status_code=status, headers=headers)


# ------------------------------------------------------------------ reads
# Specific paths first: ``{group_id:path}`` would swallow ``.../versions``.


@router.get("/v2/groups")
def get_root(request: Request) -> dict[str, Any]:
    return group_json(orch(request), manager(request).group(ROOT))


@router.get("/v2/groups/versions")
def root_versions(request: Request) -> list[str]:
    return manager(request).versions(ROOT)


@router.get("/v2/groups/versions/{version}")
def root_at_version(request: Request, version: str) -> dict[str, Any]:
    return group_json(orch(request), manager(request).group_version(ROOT, version), False)


@router.get("/v2/groups/{group_id:path}/versions/{version}")
def group_at_version(request: Request, group_id: str, version: str) -> dict[str, Any]:
    gid = group_id_from_path(group_id)
    return group_json(orch(request), manager(request).group_version(gid, version), False)


@router.get("/v2/groups/{group_id:path}/versions")
def group_versions(request: Request, group_id: str) -> list[str]:
    """Marathon answers a bare JSON array of version timestamps, newest first."""
    return manager(request).versions(group_id_from_path(group_id))


@router.get("/v2/groups/{group_id:path}")
def get_group(request: Request, group_id: str) -> dict[str, Any]:
    return group_json(orch(request), manager(request).group(group_id_from_path(group_id)))


# ------------------------------------------------------------------ writes


@router.post("/v2/groups", status_code=201)
def create_group(request: Request, body: dict[str, Any] = GroupBody,
                 force: str | None = None) -> JSONResponse:
    return _result(manager(request).create(body, ROOT, qbool(force)), 201)


@router.post("/v2/groups/{group_id:path}", status_code=201)
def create_group_at(request: Request, group_id: str, body: dict[str, Any] = GroupBody,
                    force: str | None = None) -> JSONResponse:
    """Marathon's ``createWithPath``: the body's id (optional) is relative to the path."""
    base = group_id_from_path(group_id)
    return _result(manager(request).create(body, base, qbool(force)), 201)


@router.put("/v2/groups")
def update_root(request: Request, body: dict[str, Any] = GroupBody,
                force: str | None = None) -> JSONResponse:
    change = manager(request).update(ROOT, body, qbool(force))
    return _result(change)


@router.put("/v2/groups/{group_id:path}/versions/{version}")
def rollback_group(request: Request, group_id: str, version: str,
                   force: str | None = None) -> JSONResponse:
    gid = group_id_from_path(group_id)
    return _result(manager(request).rollback(gid, version, qbool(force)))


@router.put("/v2/groups/{group_id:path}")
def update_group(request: Request, group_id: str, body: dict[str, Any] = GroupBody,
                 force: str | None = None) -> JSONResponse:
    """Scale (``{"scaleBy": f}``), roll back (``{"version": v}``) or create/replace; 201
    when it created the group, like ``PUT /v2/apps/{id}``."""
    change = manager(request).update(group_id_from_path(group_id), body, qbool(force))
    return _result(change, 201 if change.created else 200)


@router.patch("/v2/groups/{group_id:path}")
def patch_group(request: Request, group_id: str, body: dict[str, Any] = GroupBody,
                force: str | None = None) -> JSONResponse:
    return _result(manager(request).patch(group_id_from_path(group_id), body, qbool(force)))


@router.delete("/v2/groups")
def delete_root(request: Request, force: str | None = None) -> JSONResponse:
    return _result(manager(request).delete(ROOT, qbool(force)))


@router.delete("/v2/groups/{group_id:path}")
def delete_group(request: Request, group_id: str, force: str | None = None) -> JSONResponse:
    return _result(manager(request).delete(group_id_from_path(group_id), qbool(force)))
