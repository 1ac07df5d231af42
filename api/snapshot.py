"""The status page's snapshot: one JSON document of everything the page shows (nodes with
usage, apps with counts and *why* instances wait, jobs with schedule in words, next run, run
timeline and duration percentiles, the laid-out job graph), and the cache every open page
shares. See :func:`build_state`; served by :mod:`api.ui` (``/ui/state``, ``/ui/events``)."""

from __future__ import annotations

import json
import math
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import networkx as nx  # type: ignore[import-untyped]

from api.limits import strict_dumps
from api.presentation import job_status, reads, runtime_summary, schedule_info
from scheduler import __version__
from scheduler.batch import dag, stats
from scheduler.model.app import AppSpec
from scheduler.model.deployment import Deployment
from scheduler.model.job import JobRun, JobSpec, RunStatus
from scheduler.model.resources import Resources, format_port_ranges
from scheduler.model.task import Task, TaskState
from scheduler.model.timefmt import iso
from scheduler.orchestrator import Orchestrator, QueueInfo

RUN_HISTORY = 24
"""Runs per job on the page's timeline (newest last)."""
STATS_RUNS = 200
"""Newest runs per job that feed the duration percentiles on the page (Chronos's
``/job/stat`` covers all runs; the page trades completeness for a bounded cost per refresh)."""

# ------------------------------------------------------------------ the snapshot


def _resources_json(r: Resources) -> dict[str, float]:
    return {"cpus": round(r.cpus, 4), "mem": round(r.mem, 3), "disk": round(r.disk, 3),
            "gpus": round(r.gpus, 4)}


def _ts(value: Any) -> str | None:
    return iso(value) if value is not None else None


def run_json(run: JobRun) -> dict[str, Any]:
    return {
        "id": run.id, "status": run.status.value, "trigger": run.trigger.value,
        "createdAt": _ts(run.created_at), "scheduledFor": _ts(run.scheduled_for),
        "startedAt": _ts(run.started_at), "finishedAt": _ts(run.finished_at),
        "duration": run.duration_seconds, "exitCode": run.exit_code, "message": run.message,
        "attempt": run.attempt, "taskId": run.task_id, "host": run.host,
    }


def _durations_json(runs: Sequence[JobRun]) -> dict[str, float | int]:
    """Success durations in **seconds** (the histogram's ms / 1000), for the page."""
    h = stats.histogram(stats.success_durations(runs))
    return {
        "count": int(h["count"]),
        "median": float(h["median"]) / 1000.0,
        "p75": float(h["75thPercentile"]) / 1000.0,
        "p95": float(h["95thPercentile"]) / 1000.0,
        "p99": float(h["99thPercentile"]) / 1000.0,
        "mean": float(h["mean"]) / 1000.0,
    }


def _waiting_json(q: QueueInfo, now: datetime) -> dict[str, Any]:
    """Why an app's instances wait: ``count``, ``since``, ``reason`` (the backoff, the
    placement rejection summary, or "waiting for a pass"), ``delayedUntil``, ``rejection``."""
    delayed = q.delayed_until is not None and q.delayed_until > now
    return {
        "count": q.count,
        "since": _ts(q.since),
        "reason": (f"launch delayed (backoff) until {iso(q.delayed_until)}"
                   if delayed and q.delayed_until is not None
                   else q.rejection.describe() if q.rejection else "waiting for a pass"),
        "delayedUntil": _ts(q.delayed_until) if delayed else None,
        "rejection": q.rejection.describe() if q.rejection else None,
    }


def deployment_rows(deployments: Sequence[Deployment], specs: Mapping[str, AppSpec],
                    running: Mapping[str, int],
                    waiting: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The deployments as the page shows them, pure.

    Marathon's ``currentStep`` is the step in progress (1-based), so "step 1 of 1" is a
    deployment that has done nothing yet; ``progress`` (0 to 1) counts the steps done plus,
    of the step in progress, the share of wanted instances running. ``state`` is
    ``waiting`` when an app of the step in progress has instances that cannot be placed (or
    wait out a backoff) and ``waiting[]`` says which and why; otherwise ``in progress``.
    ``running`` maps app ids to running task counts; ``waiting`` app ids to
    :func:`_waiting_json` rows.
    """
    rows = []
    for d in deployments:
        total = len(d.steps)
        index = min(d.current_step, total - 1) if total else 0
        step = d.steps[index] if total else ()
        wanted = have = 0
        for _, app in step:
            spec = specs.get(app)
            if spec is not None and spec.instances > 0:
                wanted += spec.instances
                have += min(spec.instances, running.get(app, 0))
        share = have / wanted if wanted else 0.0
        stuck = [{"app": app, "count": w["count"], "reason": w["reason"]}
                 for _, app in step
                 if (w := waiting.get(app)) is not None and
                 (w["rejection"] is not None or w["delayedUntil"] is not None)]
        rows.append({
            "id": d.id, "version": d.version, "affectedApps": d.affected_apps,
            "currentStep": min(d.current_step + 1, total), "totalSteps": total,
            "currentActions": [{"action": a.value, "app": app} for a, app in step],
            "progress": round((min(d.current_step, total) + share) / total, 4) if total else 1.0,
            "state": "waiting" if stuck else "in progress",
            "waiting": stuck,
        })
    return rows


def build_state(o: Orchestrator) -> dict[str, Any]:
    """Everything the status page shows, as of now: ``runtime``, ``nodes``, ``apps``,
    ``deployments``, ``jobs`` and ``dag``. Read-only; safe to call from any thread (the store
    and the orchestrator's queries are thread-safe). Strings are raw user data: the page must
    escape them.

    - ``nodes[]``: ``hostname``, ``attributes``, ``ports``, ``capacity`` and ``used``
      (cpus/mem/disk/gpus held by active app tasks, by the resources of the version they run,
      and by running job runs), ``tasks[]`` on it (``kind`` task or run).
    - ``apps[]``: definition highlights, ``counts`` (Marathon's tasksRunning/Healthy/
      Unhealthy/Staged plus ``killing``), ``tasks[]`` with ``health`` (``null`` = no checks or
      no result yet), ``waiting`` (``null``, or ``count`` + ``reason``: the placement rejection
      summary, or the backoff), ``lastTaskFailure``.
    - ``deployments[]``: :func:`deployment_rows` (step, progress, and what waits, why).
    - ``jobs[]``: ``scheduleText`` (the schedule in words, or "after a, b"), ``zone`` (the
      IANA zone the schedule is read in, ``null`` for a dependent job: the page shows ``next``
      in it, as the words are), ``next`` (ISO time or ``null`` when disabled/exhausted/
      dependent), ``status``/``state`` as Chronos names them, ``runs[]`` (newest last, at
      most :data:`RUN_HISTORY`), ``durations`` (success durations in seconds over the newest
      :data:`STATS_RUNS` runs), ``waiting`` (why a run cannot be placed, or ``null``).
    - ``dag``: :func:`layout_dag` of the job graph.
    """
    nodes = o.nodes()
    apps = o.apps()
    specs = {a.id: a for a in apps}
    tasks = o.tasks()
    queue = o.queue()
    sharing_waits = o.sharing_waits()
    jobs = o.list_jobs()
    jobs_by_name = {j.name: j for j in jobs}

    used: dict[str, Resources] = {}
    on_node: dict[str, list[dict[str, Any]]] = {}
    version_specs: dict[tuple[str, str], AppSpec | None] = {}
    for t in tasks:
        key = (t.app_id, t.version)
        if key not in version_specs:
            version_specs[key] = reads(o).stored_app_version(t.app_id, t.version)
        spec = version_specs[key] or specs.get(t.app_id)
        # Every non-terminal task holds its resources, a KILLING one too (as the placer sees).
        if spec is not None:
            used[t.host] = used.get(t.host, Resources()) + spec.resources
        on_node.setdefault(t.host, []).append(
            {"kind": "task", "id": t.id, "appId": t.app_id, "state": t.state.value})
    running = reads(o).runs(frozenset({RunStatus.RUNNING}))
    for r in running:
        job = jobs_by_name.get(r.job)
        if r.host is None:
            continue
        if job is not None:
            used[r.host] = used.get(r.host, Resources()) + job.resources
        on_node.setdefault(r.host, []).append(
            {"kind": "run", "id": r.task_id or r.id, "runId": r.id, "job": r.job,
             "state": "running"})

    node_rows = [{
        "hostname": n.hostname,
        "attributes": dict(sorted(n.attributes.items())),
        "ports": format_port_ranges(n.ports),
        "capacity": _resources_json(n.resources),
        "used": _resources_json(used.get(n.hostname, Resources())),
        "tasks": on_node.get(n.hostname, []),
    } for n in nodes]

    app_rows = []
    by_app: dict[str, list[Task]] = {}
    for t in tasks:
        by_app.setdefault(t.app_id, []).append(t)
    now = o.clock.now()
    running_of: dict[str, int] = {}
    waiting_of: dict[str, dict[str, Any]] = {}
    for spec in apps:
        ts = by_app.get(spec.id, [])
        task_rows = []
        for t in ts:
            task_rows.append({
                "id": t.id, "host": t.host, "ports": list(t.ports), "state": t.state.value,
                "health": o.is_healthy(t, spec), "version": t.version,
                "stagedAt": _ts(t.staged_at), "startedAt": _ts(t.started_at),
                "message": t.message,
            })
        q = queue.get(spec.id)
        waiting = _waiting_json(q, now) if q is not None else None
        shared = sharing_waits.get(f"app:{spec.id}#0") or \
            sharing_waits.get(f"app:{spec.id}#gang0")
        # Sharing's word where it says more than the rejection: waiting for quota, or for
        # preempted tasks to exit (a capacity wait keeps the rejection's own words).
        if waiting is not None and shared is not None and shared.kind.value != "capacity":
            waiting["reason"] = shared.reason
        if waiting is not None:
            waiting_of[spec.id] = waiting
        running_of[spec.id] = sum(t.state is TaskState.RUNNING for t in ts)
        image = spec.container.docker.image if spec.container and spec.container.docker else None
        info = o.version_info(spec.id)
        app_rows.append({
            "id": spec.id,
            "cmd": spec.cmd if spec.cmd is not None else
            (" ".join(spec.args) if spec.args else None),
            "image": image,
            "instances": spec.instances,
            "version": spec.version,
            "lastConfigChangeAt": info.get("lastConfigChangeAt", spec.version),
            "labels": dict(spec.labels),
            "resources": _resources_json(spec.resources),
            "constraints": [c.to_json() for c in spec.constraints],
            "healthChecks": len(spec.healthChecks),
            "counts": {
                "running": running_of[spec.id],
                "staged": sum(t.state in (TaskState.STAGING, TaskState.STARTING) for t in ts),
                "healthy": sum(r["health"] is True for r in task_rows),
                "unhealthy": sum(r["health"] is False for r in task_rows),
                "killing": sum(t.state is TaskState.KILLING for t in ts),
            },
            "tasks": task_rows,
            "waiting": waiting,
            "lastTaskFailure": o.last_task_failure(spec.id),
        })
    deployments = deployment_rows(o.deployments(), specs, running_of, waiting_of)

    job_rows = []
    states: dict[str, str] = {}
    statuses: dict[str, str] = {}
    for j in jobs:
        runs = o.job_runs(j.name, limit=STATS_RUNS)
        status, state = job_status(runs[:50])
        states[j.name], statuses[j.name] = state, status
        info_ = schedule_info(o, j)
        waiting_for = reads(o).job_waiting(j.name)
        counters = reads(o).job_counters(j.name)
        job_rows.append({
            "name": j.name,
            "description": j.description,
            "owner": j.owner,
            "command": j.command if j.command else " ".join(j.arguments),
            "image": j.container.image if j.container else None,
            "schedule": j.schedule or "",
            "scheduleTimeZone": j.time_zone if j.schedule else "",
            "scheduleText": info_["describe"],
            "zone": info_["zone"],
            "next": None if j.disabled or not j.schedule else info_["next"],
            "parents": list(j.parents or []),
            "disabled": j.disabled,
            "status": status,
            "state": state,
            "successCount": int(counters.get("successCount", 0)),
            "errorCount": int(counters.get("errorCount", 0)),
            "runs": [run_json(r) for r in reversed(runs[:RUN_HISTORY])],
            "durations": _durations_json(runs),
            "waiting": waiting_for.describe() if waiting_for else None,
        })

    return {
        "version": __version__,
        "runtime": {"name": reads(o).runtime_name, "available": o.runtime_available,
                    "error": o.runtime_error, "summary": runtime_summary(o)},
        "nodes": node_rows,
        "apps": app_rows,
        "deployments": deployments,
        "jobs": job_rows,
        "dag": layout_dag(jobs, states, statuses),
        "sharing": sharing_json(o),
    }


def sharing_json(o: Orchestrator) -> dict[str, Any]:
    """Issue 15 on the page: per team ``used``/``guaranteed``/``borrowed`` (and
    ``borrowingLimit``), what sharing keeps ``waiting`` and why (kind quota / capacity /
    preempting), and the newest ``preemptions`` (who preempted whom and why)."""
    waits = o.sharing_waits()
    return {
        "teams": o.team_usage(),
        "waiting": [{"id": w.request_id, "kind": w.kind.value, "reason": w.reason}
                    for _, w in sorted(waits.items())],
        "preemptions": o.preemptions()[-20:],
        "backfills": o.backfills(),
    }


# ------------------------------------------------------------------ the job graph's picture

NODE_H = 34
NODE_GAP_Y = 16
LAYER_GAP_X = 56
MARGIN = 16
CHAR_W = 7.4  # average glyph width of the page's 13px sans-serif label font, in px
LABEL_MAX = 30


def _label(name: str) -> str:
    return name if len(name) <= LABEL_MAX else name[: LABEL_MAX - 1] + "…"


def _width(label: str) -> float:
    return max(96.0, math.ceil(len(label) * CHAR_W) + 30.0)


def layout_dag(jobs: Sequence[JobSpec], states: Mapping[str, str],
               statuses: Mapping[str, str]) -> dict[str, Any]:
    """Coordinates for drawing the dependency graph as SVG, left (parents) to right.

    Layered drawing: a job's layer is the longest path from a root (so every edge points
    right), the order within a layer comes from a few barycenter sweeps (fewer crossings),
    layers are centred vertically. Jobs with no parent and no child are laid out in a row
    below the graph (``isolated``), so a big set of independent jobs does not stretch the
    first column. Returns ``{"width", "height", "nodes": [{"name", "label", "x", "y", "w",
    "h", "state", "status", "disabled", "isolated"}], "edges": [{"from", "to", "x1", "y1",
    "x2", "y2"}]}`` in px; ``label`` is the name shortened to :data:`LABEL_MAX` characters.
    """
    graph = dag.build_graph(jobs)
    if not graph.nodes:
        return {"width": 0.0, "height": 0.0, "nodes": [], "edges": []}
    connected = [n for n in graph.nodes if graph.degree(n) > 0]
    isolated = sorted(str(n) for n in graph.nodes if graph.degree(n) == 0)
    sub = graph.subgraph(connected)
    layer: dict[str, int] = {}
    try:
        order = list(nx.topological_sort(sub))
    except nx.NetworkXUnfeasible:  # a cycle cannot be stored; draw something regardless
        order = sorted(sub.nodes)
    for n in order:
        preds = [p for p in sub.predecessors(n) if p in layer]
        layer[n] = 1 + max(layer[p] for p in preds) if preds else 0
    layers: list[list[str]] = [[] for _ in range(max(layer.values(), default=-1) + 1)]
    for n in sorted(layer):
        layers[layer[n]].append(n)

    def pos_of() -> dict[str, float]:
        return {n: float(i) for lay in layers for i, n in enumerate(lay)}

    # Barycenter sweeps: order each layer by the mean position of its neighbours in the
    # layers already placed (down), then the other way (up); nodes without neighbours there
    # keep their place.
    for _ in range(4):
        for rng, neighbours in ((range(1, len(layers)), sub.predecessors),
                                (range(len(layers) - 2, -1, -1), sub.successors)):
            for i in rng:
                pos = pos_of()
                keyed = []
                for idx, n in enumerate(layers[i]):
                    near = [pos[m] for m in neighbours(n)]
                    keyed.append((sum(near) / len(near) if near else float(idx), idx, n))
                layers[i] = [n for _, _, n in sorted(keyed)]

    boxes: dict[str, tuple[float, float, float]] = {}  # name -> x, y, w
    tallest = max((len(lay) for lay in layers), default=0)
    x = float(MARGIN)
    for lay in layers:
        col_w = max(_width(_label(n)) for n in lay)
        offset = (tallest - len(lay)) * (NODE_H + NODE_GAP_Y) / 2
        for i, n in enumerate(lay):
            boxes[n] = (x, MARGIN + offset + i * (NODE_H + NODE_GAP_Y), col_w)
        x += col_w + LAYER_GAP_X
    width = x - LAYER_GAP_X + MARGIN if layers else 0.0
    height = float(MARGIN * 2 + tallest * (NODE_H + NODE_GAP_Y) - (NODE_GAP_Y if tallest else 0))
    # The isolated jobs: rows as wide as the graph (or a sensible minimum).
    if isolated:
        row_w = max(width, 640.0)
        y = height + (8.0 if layers else MARGIN)
        cx = float(MARGIN)
        for n in isolated:
            w = _width(_label(n))
            if cx + w > row_w - MARGIN and cx > MARGIN:
                cx, y = float(MARGIN), y + NODE_H + NODE_GAP_Y
            boxes[n] = (cx, y, w)
            cx += w + 12
            width = max(width, cx - 12 + MARGIN)
        height = y + NODE_H + MARGIN
    node_rows = []
    for n in sorted(boxes):
        bx, by, bw = boxes[n]
        node_rows.append({
            "name": n, "label": _label(n), "x": round(bx, 1), "y": round(by, 1),
            "w": round(bw, 1), "h": NODE_H, "state": states.get(n, "fresh"),
            "status": statuses.get(n, "idle"),
            "disabled": bool(graph.nodes[n].get("disabled")), "isolated": n in isolated,
        })
    edge_rows = []
    for a, b in sorted((str(a), str(b)) for a, b in graph.edges):
        ax, ay, aw = boxes[a]
        bx, by, _ = boxes[b]
        edge_rows.append({"from": a, "to": b, "x1": round(ax + aw, 1),
                          "y1": round(ay + NODE_H / 2, 1), "x2": round(bx, 1),
                          "y2": round(by + NODE_H / 2, 1)})
    return {"width": round(width, 1), "height": round(height, 1), "nodes": node_rows,
            "edges": edge_rows}


class StateCache:
    """One snapshot shared by every open page for ``max_age`` seconds: N pages cost one
    computation, not N."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -math.inf
        self._text = ""

    def get(self, o: Orchestrator, max_age: float = 0.3) -> str:
        with self._lock:
            if time.monotonic() - self._at > max_age:
                self._text = strict_dumps(build_state(o))
                self._at = time.monotonic()
            return self._text


_caches: weakref.WeakKeyDictionary[Orchestrator, StateCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def state_cache(o: Orchestrator) -> StateCache:
    """The snapshot cache of ``o`` (one per orchestrator)."""
    with _caches_lock:
        cache = _caches.get(o)
        if cache is None:
            cache = _caches[o] = StateCache()
        return cache


def with_time(o: Orchestrator, state_text: str) -> str:
    """A cached snapshot's text with ``serverTime`` added."""
    # The server's clock travels with every snapshot so countdowns are right even when the
    # browser's clock is off; it is kept out of the cached text so "unchanged" stays cheap.
    return '{"serverTime":' + json.dumps(iso(o.clock.now())) + "," + state_text[1:]
