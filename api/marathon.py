"""The Marathon-compatible ``/v2`` REST surface (field names and codes per the reference)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from api.fragments import AppFragments
from api.presentation import app_json, orch, qbool, reads, runtime_summary, task_json
from scheduler import __version__
from scheduler.ha.elector import LeaderState
from scheduler.model.app import AppSpec, normalize_app_id, parse_app
from scheduler.model.task import Task
from scheduler.model.timefmt import iso
from scheduler.model.validation import SpecError
from scheduler.orchestrator import Orchestrator, QueueInfo
from scheduler.services.service_ports import endpoints_text

router = APIRouter()

EMBED_ALL = {"tasks", "counts", "deployments", "readiness", "lasttaskfailure", "taskstats",
             "healthsource"}
AppBody = Body(..., description="A Marathon app definition (see /v2 reference)")


def fragments(request: Request) -> AppFragments:
    """The application's per-app fragment cache (made in :func:`api.app.create_app`)."""
    frags: AppFragments = request.app.state.fragments
    return frags


def app_id_from_path(raw: str) -> str:
    try:
        return normalize_app_id(raw)
    except ValueError as e:
        raise SpecError("Object is not valid", [("/id", [str(e)])]) from None


# ------------------------------------------------------------------ rendering


def parse_embed(values: Iterable[str]) -> set[str]:
    """``apps.tasks``/``app.counts``/``tasks`` → {"tasks", "counts"}; unknown values ignored."""
    out = set()
    for v in values:
        key = v.lower().removeprefix("apps.").removeprefix("app.")
        if key in EMBED_ALL:
            out.add(key)
    return out


# ------------------------------------------------------------------ label selectors

_SELECTOR = re.compile(
    r"\s*(?P<key>[^\s,=!()]+)\s*"
    r"(?:(?P<op>==|!=|\s+in\s+|\s+notin\s+)\s*"
    r"(?:\((?P<set>[^)]*)\)|(?P<val>[^\s,()]*)))?\s*(?:,|$)"
)


def parse_label_selector(text: str) -> list[tuple[str, str, set[str]]]:
    """``k``, ``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, comma-separated."""
    out: list[tuple[str, str, set[str]]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _SELECTOR.match(text, pos)
        if not m or m.end() == pos:
            raise SpecError("Invalid label selector", [("", [f"cannot parse {text!r}"])])
        op = (m.group("op") or "exists").strip()
        values = m.group("set")
        vals = {s.strip() for s in values.split(",")} if values is not None else {
            m.group("val") or ""}
        out.append((m.group("key"), op, vals))
        pos = m.end()
    return out


def labels_match(labels: dict[str, str], selector: list[tuple[str, str, set[str]]]) -> bool:
    for key, op, vals in selector:
        v = labels.get(key)
        ok = {
            "exists": v is not None,
            "==": v in vals,
            "in": v in vals,
            "!=": v not in vals,
            "notin": v not in vals,
        }[op]
        if not ok:
            return False
    return True


# ------------------------------------------------------------------ apps


@router.get("/v2/apps")
async def list_apps(request: Request, cmd: str | None = None, id: str | None = None,
                    label: str | None = None,
                    embed: list[str] = Query(default=[])) -> Response:  # noqa: B008
    """From the apps' cached fragments (:mod:`api.fragments`); the joined body is served again
    while no app changed, without waiting for the control loop."""
    selector = parse_label_selector(label) if label else None
    key = (cmd, id, label, frozenset(parse_embed(embed) | {"counts", "deployments"}))
    frags = fragments(request)
    body = frags.cached_list(key)
    if body is None:
        def select(spec: AppSpec) -> bool:
            return not ((cmd and (spec.cmd is None or cmd not in spec.cmd))
                        or (id and id.lower() not in spec.id)
                        or (selector and not labels_match(spec.labels, selector)))

        body = await run_in_threadpool(frags.listing, key, select)
    return Response(body, media_type="application/json")


@router.post("/v2/apps", status_code=201)
def create_app(request: Request, body: dict[str, Any] = AppBody) -> JSONResponse:
    o = orch(request)
    spec = parse_app(body)
    spec = o.create_app(spec)
    return JSONResponse(
        app_json(o, spec, {"counts", "deployments", "tasks"}),
        status_code=201,
        headers={"Location": f"/v2/apps{spec.id}"},
    )


def _deployment_response(version: str, deployment_id: str, status: int = 200) -> JSONResponse:
    return JSONResponse(
        {"deploymentId": deployment_id, "version": version},
        status_code=status,
        headers={"Marathon-Deployment-Id": deployment_id},
    )


@router.get("/v2/apps/{app_id:path}/tasks")
def app_tasks(request: Request, app_id: str) -> dict[str, Any]:
    o = orch(request)
    spec = o.app(app_id_from_path(app_id))
    return {"tasks": [task_json(o, t, spec) for t in o.tasks(spec.id)]}


@router.delete("/v2/apps/{app_id:path}/tasks/{task_id}")
def kill_app_task(request: Request, app_id: str, task_id: str, scale: str | None = None,
                  wipe: str | None = None, force: str | None = None) -> Response:
    o = orch(request)
    aid = app_id_from_path(app_id)
    do_scale = qbool(scale)
    qbool(wipe), qbool(force)
    killed = o.kill_tasks(aid, [task_id], scale=do_scale)
    if do_scale:
        spec = o.app(aid)
        return _deployment_response(spec.version or "", "scale-" + (spec.version or ""))
    spec = o.app(aid)
    return JSONResponse({"task": task_json(o, killed[0], spec)})


@router.delete("/v2/apps/{app_id:path}/tasks")
def kill_app_tasks(request: Request, app_id: str, host: str | None = None,
                   scale: str | None = None, wipe: str | None = None,
                   force: str | None = None) -> Response:
    o = orch(request)
    aid = app_id_from_path(app_id)
    do_scale = qbool(scale)
    qbool(wipe), qbool(force)
    killed = o.kill_tasks(aid, None, host=host, scale=do_scale)
    spec = o.app(aid)
    if do_scale:
        return _deployment_response(spec.version or "", "scale-" + (spec.version or ""))
    return JSONResponse({"tasks": [task_json(o, t, spec) for t in killed]})


@router.get("/v2/apps/{app_id:path}/versions/{version}")
def app_version(request: Request, app_id: str, version: str) -> dict[str, Any]:
    o = orch(request)
    return o.app_version(app_id_from_path(app_id), version).to_marathon()


@router.get("/v2/apps/{app_id:path}/versions")
def app_versions(request: Request, app_id: str) -> dict[str, Any]:
    return {"versions": orch(request).app_versions(app_id_from_path(app_id))}


@router.get("/v2/apps/{app_id:path}")
async def get_app(request: Request, app_id: str,
                  embed: list[str] = Query(default=[])) -> Response:  # noqa: B008
    """From the app's cached fragment (:mod:`api.fragments`), built on a miss."""
    aid = app_id_from_path(app_id)
    view = frozenset(parse_embed(embed) | {"tasks", "counts", "deployments", "lasttaskfailure"})
    frags = fragments(request)
    body = frags.cached_app(aid, view)
    if body is None:
        body = await run_in_threadpool(frags.app, aid, view)
    return Response(body, media_type="application/json")


def _updated_spec(o: Orchestrator, aid: str, body: dict[str, Any], partial: bool) -> AppSpec:
    """Apply a PUT/PATCH body: rollback ({"version"}), merge (default) or replace."""
    current = reads(o).stored_app(aid)
    if set(body) - {"id"} == {"version"} and current is not None:
        return o.app_version(aid, str(body["version"])).model_copy(update={"version": None})
    if partial and current is not None:
        merged = current.model_dump(mode="json", exclude={"version"})
        merged.update(body)
    else:
        merged = dict(body)
    merged["id"] = aid
    return parse_app(merged)


@router.put("/v2/apps/{app_id:path}")
def put_app(request: Request, app_id: str, body: dict[str, Any] = AppBody,
            force: str | None = None, partialUpdate: str | None = None) -> JSONResponse:
    o = orch(request)
    aid = app_id_from_path(app_id)
    spec = _updated_spec(o, aid, body, qbool(partialUpdate, default=True))
    stored, deployment_id, created = o.update_app(spec, force=qbool(force))
    if created:
        return JSONResponse(app_json(o, stored, {"counts", "deployments", "tasks"}),
                            status_code=201, headers={"Location": f"/v2/apps{stored.id}",
                                                      "Marathon-Deployment-Id": deployment_id})
    return _deployment_response(stored.version or "", deployment_id)


@router.patch("/v2/apps/{app_id:path}")
def patch_app(request: Request, app_id: str, body: dict[str, Any] = AppBody,
              force: str | None = None) -> JSONResponse:
    o = orch(request)
    aid = app_id_from_path(app_id)
    o.app(aid)
    stored, deployment_id, _ = o.update_app(_updated_spec(o, aid, body, True),
                                            force=qbool(force))
    return _deployment_response(stored.version or "", deployment_id)


@router.delete("/v2/apps/{app_id:path}")
def delete_app(request: Request, app_id: str, force: str | None = None) -> JSONResponse:
    o = orch(request)
    deployment_id = o.delete_app(app_id_from_path(app_id), force=qbool(force))
    return _deployment_response(iso(o.clock.now()), deployment_id)


@router.post("/v2/apps/{app_id:path}/restart")
def restart_app(request: Request, app_id: str, force: str | None = None) -> JSONResponse:
    """Replace every task by a rolling restart (honouring upgradeStrategy)."""
    o = orch(request)
    stored, deployment_id = o.restart_app(app_id_from_path(app_id), force=qbool(force))
    return _deployment_response(stored.version or "", deployment_id)


@router.get("/v2/deployments")
def list_deployments(request: Request) -> list[dict[str, Any]]:
    return [d.to_marathon() for d in orch(request).deployments()]


@router.delete("/v2/deployments/{deployment_id}")
def cancel_deployment(request: Request, deployment_id: str,
                      force: str | None = None) -> Response:
    """Cancel: roll back (200 + the rollback deployment), or with force stop in place (202)."""
    o = orch(request)
    rollback = o.cancel_deployment(deployment_id, force=qbool(force))
    if qbool(force):
        return Response(status_code=202)
    if rollback is None:
        return _deployment_response(iso(o.clock.now()), str(uuid.uuid4()))
    return _deployment_response(rollback.version, rollback.id)


# ------------------------------------------------------------------ tasks, queue, info


def prefers_text(accept: str) -> bool:
    """Whether an ``Accept`` header ranks ``text/plain`` above JSON (JSON wins ties and
    ``*/*``, so clients that send nothing specific keep getting JSON)."""
    text = json_q = 0.0
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if media.lower() == "text/plain":
            text = max(text, q)
        elif media.lower() in ("application/json", "application/*", "*/*"):
            json_q = max(json_q, q)
    return text > json_q


class TaskIds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str]


@router.post("/v2/tasks/delete")
def delete_tasks(request: Request, body: TaskIds, scale: str | None = None,
                 wipe: str | None = None, force: str | None = None) -> Response:
    """Kill the given tasks (of any apps). Unknown ids: 400 and nothing is killed. With
    ``scale`` each app's instances drop by its killed tasks (a deployment per app)."""
    o = orch(request)
    do_scale = qbool(scale)
    qbool(wipe), qbool(force)
    known = {t.id: t for t in o.tasks()}
    unknown = [i for i in body.ids if i not in known]
    if unknown:
        return JSONResponse({"message": f"Task '{unknown[0]}' does not exist"},
                            status_code=400)
    by_app: dict[str, list[str]] = {}
    for task_id in dict.fromkeys(body.ids):
        by_app.setdefault(known[task_id].app_id, []).append(task_id)
    killed: list[Task] = []
    for app_id, ids in sorted(by_app.items()):
        killed.extend(o.kill_tasks(app_id, ids, scale=do_scale))
    if do_scale:
        deps = [d for app_id in by_app for d in o.deployments_of(app_id)]
        dep = deps[-1] if deps else None
        return _deployment_response(dep.version if dep else iso(o.clock.now()),
                                    dep.id if dep else str(uuid.uuid4()))
    specs = {a.id: a for a in o.apps()}
    return JSONResponse({"tasks": [task_json(o, t, specs.get(t.app_id)) for t in killed]})


@router.get("/v2/tasks", response_model=None)
def list_tasks(request: Request, status: str | None = None) -> dict[str, Any] | Response:
    o = orch(request)
    specs = {a.id: a for a in o.apps()}
    tasks = o.tasks()
    if prefers_text(request.headers.get("accept", "")):
        # Marathon's load-balancer lines (see endpoints_text); ``status`` does not apply.
        text = endpoints_text(specs.values(), tasks,
                              lambda t, spec: not spec.healthChecks or
                              o.is_healthy(t, spec) is True, reads(o).probe_host)
        return Response(text, media_type="text/plain")
    if status:
        wanted = "TASK_" + status.upper().removeprefix("TASK_")
        tasks = [t for t in tasks if t.state.value == wanted]
    return {"tasks": [task_json(o, t, specs.get(t.app_id)) for t in tasks]}


def _queue_item(o: Orchestrator, spec: AppSpec, q: QueueInfo, now: datetime) -> dict[str, Any]:
    left = max(0.0, (q.delayed_until - now).total_seconds()) if q.delayed_until else 0.0
    overdue = q.delayed_until is None or left <= 0
    summary = q.rejection
    nodes = summary.nodes if summary else 0
    return {
        "app": app_json(o, spec, {"counts", "deployments"}),
        "count": q.count,
        "delay": {"timeLeftSeconds": round(left, 3), "overdue": overdue},
        "overdue": overdue,
        "since": iso(q.since),
        "processedOffersSummary": {
            "processedOffersCount": nodes,
            "unusedOffersCount": nodes if summary else 0,
            "lastUnusedOfferAt": iso(q.last_attempt_at) if q.last_attempt_at else None,
            "lastUsedOfferAt": iso(q.last_placed_at) if q.last_placed_at else None,
            "rejectSummaryLastOffers": summary.to_marathon() if summary else [],
            "rejectSummaryLaunchAttempt": summary.to_marathon() if summary else [],
        },
        "lastUnusedOffers": [],
    }


@router.get("/v2/queue")
def get_queue(request: Request) -> dict[str, Any]:
    o = orch(request)
    now = o.clock.now()
    items = []
    for app_id, q in sorted(o.queue().items()):
        spec = reads(o).stored_app(app_id)
        if spec is not None:
            items.append(_queue_item(o, spec, q, now))
    return {"queue": items}


@router.delete("/v2/queue/{app_id:path}/delay", status_code=204)
def reset_delay(request: Request, app_id: str) -> Response:
    orch(request).reset_delay(app_id_from_path(app_id))
    return Response(status_code=204)


def leadership(request: Request) -> LeaderState:
    """Who leads: the replica's view, or this process (no replicas: always the leader)."""
    replica = request.app.state.replica
    if replica is None:
        me = request.app.state.leader
        return LeaderState(me, True, me)
    state: LeaderState = replica.leadership()
    return state


@router.get("/v2/info")
def info(request: Request) -> dict[str, Any]:
    o = orch(request)
    leader = request.app.state.leader
    state = leadership(request)
    return {
        "name": "dromos",
        "version": __version__,
        "buildref": "dromos-" + __version__,
        "elected": state.leading,
        "leader": state.leader,
        "frameworkId": "dromos",
        "event_subscriber": None,
        # Strict clients build marathon_config from a fixed keyword set: Dromos's own state
        # goes into the free-text "master" field (Mesos's master URL in Marathon) and, in
        # structured form, into GET /dromos/info.
        "marathon_config": {
            "master": runtime_summary(o),
            "framework_name": "dromos",
            "hostname": leader.split(":")[0],
            "task_launch_timeout": 300000,
        },
        "http_config": {"http_port": request.app.state.port, "https_port": None},
        "zookeeper_config": {},
    }


@router.get("/dromos/info")
def dromos_info(request: Request) -> dict[str, Any]:
    """Dromos-only details (outside Marathon's paths, so no strict client parses them)."""
    o = orch(request)
    return {
        "version": __version__,
        "runtime": {"name": reads(o).runtime_name, "available": o.runtime_available,
                    "error": o.runtime_error},
        "placementStrategy": o.strategy.value,
        "nodes": len(o.nodes()) if o.runtime_available else None,
        "healthSource": o.health.source if o.health is not None else None,
    }


@router.get("/v2/leader")
def leader(request: Request) -> Any:
    state = leadership(request)
    if state.leader is None:
        return JSONResponse({"message": "There is no leader"}, status_code=404)
    return {"leader": state.leader}


@router.delete("/v2/leader")
def abdicate(request: Request) -> Any:
    """Marathon's abdication: the leader steps down and a standby takes over. (A standby
    forwards this to the leader, so it always reaches the one that leads.)"""
    replica = request.app.state.replica
    if replica is None:
        return JSONResponse({"message": "This Dromos runs without replicas (--store "
                             "kubernetes starts several): there is no one to hand over to"},
                            status_code=400)
    if not replica.abdicate():
        return JSONResponse({"message": "There is no leader"}, status_code=404)
    return {"message": "Leadership abdicated"}


@router.get("/dromos/role")
def role(request: Request) -> dict[str, Any]:
    """Readiness of a replica: ready as leader or as standby, and which it is."""
    state = leadership(request)
    return {"role": "leader" if state.leading else "standby", "leader": state.leader,
            "epoch": state.epoch}
