"""The Chronos-compatible job API, served under both ``/scheduler`` (2.x) and
``/v1/scheduler`` (3.x). Empty successes are 204 (clients treat only 204 as a valid empty
body); errors are JSON ``{"message": ...}`` with 400/404/422."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Body, Request
from fastapi.responses import PlainTextResponse, Response

from api.presentation import job_status, orch, reads
from scheduler.batch import dag, stats
from scheduler.model.job import JobSpec, parse_job
from scheduler.model.timefmt import iso
from scheduler.model.validation import SpecError
from scheduler.orchestrator import Orchestrator

PREFIXES = ("/scheduler", "/v1/scheduler")
JobBody = Body(..., description="A Chronos job definition")
_EMPTY_START = re.compile(r"^(R\d*)//")


def _parse(o: Orchestrator, body: dict[str, Any]) -> JobSpec:
    """Validate, filling an empty ISO start with now (Chronos: empty start = now), so the
    stored schedule is stable across restarts."""
    schedule = body.get("schedule")
    if isinstance(schedule, str) and _EMPTY_START.match(schedule):
        body = {**body, "schedule": _EMPTY_START.sub(
            lambda m: f"{m.group(1)}/{iso(o.clock.now())}/", schedule)}
    return parse_job(body)


def _save(o: Orchestrator, job: JobSpec) -> Response:
    try:
        o.put_job(job)
    except dag.DependencyError as e:
        raise SpecError("Job is not valid", [(e.path, [str(e)])]) from None
    return Response(status_code=204)


def job_json(o: Orchestrator, job: JobSpec) -> dict[str, Any]:
    out = job.to_chronos()
    c = reads(o).job_counters(job.name)
    out.update({
        "successCount": int(c.get("successCount", 0)),
        "errorCount": int(c.get("errorCount", 0)),
        "lastSuccess": c.get("lastSuccess", ""),
        "lastError": c.get("lastError", ""),
        "errorsSinceLastSuccess": int(c.get("errorsSinceLastSuccess", 0)),
        "softErrorCount": int(c.get("softErrorCount", 0)),
    })
    return out


def _name(raw: str) -> str:
    return unquote(raw)


def build_router(prefix: str) -> APIRouter:
    r = APIRouter(prefix=prefix, tags=[f"chronos {prefix}"])

    @r.get("/jobs")
    def list_jobs(request: Request) -> list[dict[str, Any]]:
        o = orch(request)
        return [job_json(o, j) for j in o.list_jobs()]

    @r.get("/jobs/search")
    def search(request: Request, name: str | None = None, command: str | None = None,
               any: str | None = None, limit: int | None = None,
               offset: int = 0) -> list[dict[str, Any]]:
        o = orch(request)
        out = []
        for j in o.list_jobs():
            if name and name.lower() not in j.name.lower():
                continue
            if command and command.lower() not in j.command.lower():
                continue
            if any and not (any.lower() in j.name.lower() or any.lower() in j.command.lower()
                            or any.lower() in j.description.lower()):
                continue
            out.append(job_json(o, j))
        out = out[max(0, offset):]
        return out[:limit] if limit is not None and limit >= 0 else out

    @r.get("/jobs/summary")
    def summary(request: Request) -> dict[str, Any]:
        o = orch(request)
        items = []
        for j in o.list_jobs():
            status, state = job_status(o.job_runs(j.name, limit=50))
            items.append({"name": j.name, "status": status, "state": state,
                          "schedule": j.schedule or "", "parents": j.parents or [],
                          "disabled": j.disabled})
        return {"jobs": items}

    @r.get("/job/stat/{name}")
    def job_stat(request: Request, name: str) -> dict[str, Any]:
        o = orch(request)
        o.job(_name(name))
        return stats.job_stat(o.job_runs(_name(name)))

    @r.put("/job/success/{name}", status_code=204)
    def mark_success(request: Request, name: str) -> Response:
        orch(request).mark_job_success(_name(name))
        return Response(status_code=204)

    @r.get("/job/{name}")
    def get_job(request: Request, name: str) -> dict[str, Any]:
        o = orch(request)
        return job_json(o, o.job(_name(name)))

    @r.put("/job/{name}", status_code=204)
    def run_job(request: Request, name: str) -> Response:
        orch(request).run_job(_name(name))
        return Response(status_code=204)

    @r.delete("/job/{name}", status_code=204)
    def delete_job(request: Request, name: str) -> Response:
        orch(request).delete_job(_name(name))
        return Response(status_code=204)

    @r.get("/stats/{metric}")
    def ranking(request: Request, metric: str) -> list[dict[str, Any]]:
        o = orch(request)
        durations: dict[str, list[float]] = {}
        for j in o.list_jobs():
            durations[j.name] = stats.success_durations(o.job_runs(j.name, limit=1000))
        try:
            return stats.ranking(durations, metric)
        except ValueError as e:
            raise SpecError("Unknown metric", [("/metric", [str(e)])]) from None

    def _post_scheduled(request: Request, body: dict[str, Any]) -> Response:
        o = orch(request)
        job = _parse(o, body)
        if not job.schedule:
            raise SpecError("Job is not valid",
                            [("/schedule", ["a scheduled job needs a schedule"])])
        return _save(o, job)

    def _post_dependent(request: Request, body: dict[str, Any]) -> Response:
        o = orch(request)
        job = _parse(o, body)
        if not job.parents:
            raise SpecError("Job is not valid",
                            [("/parents", ["a dependent job needs parents"])])
        return _save(o, job)

    @r.post("/iso8601", status_code=204)
    def post_iso(request: Request, body: dict[str, Any] = JobBody) -> Response:
        return _post_scheduled(request, body)

    @r.put("/iso8601", status_code=204)
    def put_iso(request: Request, body: dict[str, Any] = JobBody) -> Response:
        return _post_scheduled(request, body)

    @r.post("/dependency", status_code=204)
    def post_dep(request: Request, body: dict[str, Any] = JobBody) -> Response:
        return _post_dependent(request, body)

    @r.put("/dependency", status_code=204)
    def put_dep(request: Request, body: dict[str, Any] = JobBody) -> Response:
        return _post_dependent(request, body)

    @r.delete("/task/kill/{name}", status_code=204)
    def kill(request: Request, name: str) -> Response:
        orch(request).kill_job(_name(name))
        return Response(status_code=204)

    @r.get("/graph/dot", response_class=PlainTextResponse)
    def graph_dot(request: Request) -> str:
        o = orch(request)
        states, statuses = _states(o)
        return dag.to_dot(dag.build_graph(o.list_jobs()), states, statuses)

    @r.get("/graph/csv", response_class=PlainTextResponse)
    def graph_csv(request: Request) -> str:
        o = orch(request)
        states, statuses = _states(o)
        return dag.to_csv(dag.build_graph(o.list_jobs()), states, statuses)

    return r


def _states(o: Orchestrator) -> tuple[dict[str, str], dict[str, str]]:
    """(last result per job: fresh/success/failure, status per job: idle/queued/running)."""
    states: dict[str, str] = {}
    statuses: dict[str, str] = {}
    for j in o.list_jobs():
        statuses[j.name], states[j.name] = job_status(o.job_runs(j.name, limit=50))
    return states, statuses


routers = [build_router(p) for p in PREFIXES]
