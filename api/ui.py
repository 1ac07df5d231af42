"""The endpoints behind the status page and the ``dromos`` CLI, under ``/ui``.

They sit outside Marathon's ``/v2`` and Chronos's ``/scheduler`` paths on purpose: strict
clients of those APIs never see a shape they do not know, and this surface can follow what the
page needs.

- ``GET /ui/state``: one JSON snapshot of everything the page shows (nodes with usage, apps
  with counts and *why* instances wait, jobs with schedule in words, next run, run timeline and
  duration percentiles, the laid-out job graph). See :func:`build_state`.
- ``GET /ui/events``: server-sent events. ``event: state`` carries a snapshot (sent on connect,
  after bus events, and every :data:`STATE_INTERVAL` seconds when it changed); ``event: bus``
  carries one event of the Marathon or Dromos stream, with ``id: <epoch>-<seq>`` so a
  reconnecting ``EventSource`` resumes from ``Last-Event-ID`` (the epoch names this server's
  bus: after a restart sequence numbers start again, and the old id means nothing).
- ``GET /ui/logs/{id}``: a task's or a job run's output, tail and follow (cursor), see
  :meth:`scheduler.runtimes.base.Runtime.read_output`.
- ``GET /ui/runs/{run_id}``, ``POST /ui/jobs/{name}/run``, ``POST /ui/jobs/{name}/disabled``:
  what the page's buttons and ``dromos jobs run --follow`` need (Chronos's ``PUT /job/{name}``
  answers 204 without saying which run it created).
- ``GET /ui/static/{name}``: the page's own JS and CSS (no CDN: the page works offline).

POSTs require ``Content-Type: application/json``: a cross-site form cannot send that without
a CORS preflight, which Dromos does not answer, so another web page cannot press the buttons.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import networkx as nx  # type: ignore[import-untyped]
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict

from api.chronos import job_status, schedule_info
from api.events import hub_of
from api.marathon import runtime_summary
from scheduler import __version__
from scheduler.batch import dag, stats
from scheduler.batch.runner import run_task
from scheduler.events import DROMOS, MARATHON, Event, EventBus
from scheduler.model.app import AppSpec
from scheduler.model.job import JobRun, JobSpec, RunStatus, attempt_task_id
from scheduler.model.resources import Resources, format_port_ranges
from scheduler.model.task import Task, TaskState
from scheduler.model.timefmt import iso
from scheduler.orchestrator import NotFound, Orchestrator
from scheduler.runtimes.base import Output, RuntimeUnavailable

router = APIRouter(prefix="/ui", tags=["status page"])

WEB_DIR = Path(__file__).parent / "web"
STATIC_FILES: Mapping[str, str] = {
    "dromos.js": "text/javascript; charset=utf-8",
    "dromos.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The files ``/ui/static/`` serves (a fixed list: nothing else in the package is exposed)."""

RUN_HISTORY = 24
"""Runs per job on the page's timeline (newest last)."""
STATS_RUNS = 200
"""Newest runs per job that feed the duration percentiles on the page (Chronos's
``/job/stat`` covers all runs; the page trades completeness for a bounded cost per refresh)."""

STATE_INTERVAL = 2.0
"""Seconds between snapshots an SSE client gets when no event arrived (if anything changed):
the backstop for changes that publish no event, such as a new job definition."""
STATE_MIN_GAP = 0.4
"""Least seconds between two snapshots to one client: a burst of events costs one snapshot."""
STREAM_SECONDS = 60.0
"""An SSE response ends after this long and the browser reconnects at once (``retry:``),
resuming from ``Last-Event-ID``: no response lives forever, whoever serves the app. Under
``dromos serve`` streams end sooner, as soon as shutdown begins (see :func:`events`)."""
POLL_SECONDS = 0.25
"""How often an SSE response looks for new events. The bus's queues are thread queues; polling
them from the event loop costs no worker thread per open page (sync API routes share that
thread pool)."""
KEEPALIVE_SECONDS = 10.0

LOG_TAIL_DEFAULT = 200


def orch(request: Request) -> Orchestrator:
    o: Orchestrator = request.app.state.orchestrator
    return o


# ------------------------------------------------------------------ the snapshot


def _resources_json(r: Resources) -> dict[str, float]:
    return {"cpus": round(r.cpus, 4), "mem": round(r.mem, 3), "disk": round(r.disk, 3),
            "gpus": round(r.gpus, 4)}


def _ts(value: Any) -> str | None:
    return iso(value) if value is not None else None


def _run_json(run: JobRun) -> dict[str, Any]:
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


def build_state(o: Orchestrator) -> dict[str, Any]:
    """Everything the status page shows, as of now: ``runtime``, ``nodes``, ``apps``, ``jobs``
    and ``dag``. Read-only; safe to call from any thread (the store and the orchestrator's
    queries are thread-safe). Strings are raw user data: the page must escape them.

    - ``nodes[]``: ``hostname``, ``attributes``, ``ports``, ``capacity`` and ``used``
      (cpus/mem/disk/gpus held by active app tasks, by the resources of the version they run,
      and by running job runs), ``tasks[]`` on it (``kind`` task or run).
    - ``apps[]``: definition highlights, ``counts`` (Marathon's tasksRunning/Healthy/
      Unhealthy/Staged plus ``killing``), ``tasks[]`` with ``health`` (``null`` = no checks or
      no result yet), ``waiting`` (``null``, or ``count`` + ``reason``: the placement rejection
      summary, or the backoff), ``lastTaskFailure``.
    - ``jobs[]``: ``scheduleText`` (the schedule in words, or "after a, b"), ``next`` (ISO
      time or ``null`` when disabled/exhausted/dependent), ``status``/``state`` as Chronos
      names them, ``runs[]`` (newest last, at most :data:`RUN_HISTORY`), ``durations`` (success
      durations in seconds over the newest :data:`STATS_RUNS` runs), ``waiting`` (why a run
      cannot be placed, or ``null``).
    - ``dag``: :func:`layout_dag` of the job graph.
    """
    nodes = o.nodes()
    apps = o.apps()
    specs = {a.id: a for a in apps}
    tasks = o.tasks()
    queue = o.queue()
    jobs = o.list_jobs()
    jobs_by_name = {j.name: j for j in jobs}

    used: dict[str, Resources] = {}
    on_node: dict[str, list[dict[str, Any]]] = {}
    version_specs: dict[tuple[str, str], AppSpec | None] = {}
    for t in tasks:
        key = (t.app_id, t.version)
        if key not in version_specs:
            version_specs[key] = o.store.get_app_version(t.app_id, t.version)
        spec = version_specs[key] or specs.get(t.app_id)
        # Every non-terminal task holds its resources, a KILLING one too (as the placer sees).
        if spec is not None:
            used[t.host] = used.get(t.host, Resources()) + spec.resources
        on_node.setdefault(t.host, []).append(
            {"kind": "task", "id": t.id, "appId": t.app_id, "state": t.state.value})
    running = o.store.list_runs(statuses=frozenset({RunStatus.RUNNING}))
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
        waiting = None
        if q is not None:
            delayed = q.delayed_until is not None and q.delayed_until > now
            waiting = {
                "count": q.count,
                "since": _ts(q.since),
                "reason": (f"launch delayed (backoff) until {iso(q.delayed_until)}"
                           if delayed and q.delayed_until is not None
                           else q.rejection.describe() if q.rejection else "waiting for a pass"),
                "delayedUntil": _ts(q.delayed_until) if delayed else None,
                "rejection": q.rejection.describe() if q.rejection else None,
            }
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
                "running": sum(t.state is TaskState.RUNNING for t in ts),
                "staged": sum(t.state in (TaskState.STAGING, TaskState.STARTING) for t in ts),
                "healthy": sum(r["health"] is True for r in task_rows),
                "unhealthy": sum(r["health"] is False for r in task_rows),
                "killing": sum(t.state is TaskState.KILLING for t in ts),
            },
            "tasks": task_rows,
            "waiting": waiting,
            "lastTaskFailure": o.last_task_failure(spec.id),
        })

    job_rows = []
    states: dict[str, str] = {}
    statuses: dict[str, str] = {}
    for j in jobs:
        runs = o.job_runs(j.name, limit=STATS_RUNS)
        status, state = job_status(runs[:50])
        states[j.name], statuses[j.name] = state, status
        info_ = schedule_info(o, j)
        waiting_for = o.jobs.waiting.get(j.name)
        counters = o.jobs.counters(j.name)
        job_rows.append({
            "name": j.name,
            "description": j.description,
            "owner": j.owner,
            "command": j.command if j.command else " ".join(j.arguments),
            "image": j.container.image if j.container else None,
            "schedule": j.schedule or "",
            "scheduleTimeZone": j.time_zone if j.schedule else "",
            "scheduleText": info_["describe"],
            "next": None if j.disabled or not j.schedule else info_["next"],
            "parents": list(j.parents or []),
            "disabled": j.disabled,
            "status": status,
            "state": state,
            "successCount": int(counters.get("successCount", 0)),
            "errorCount": int(counters.get("errorCount", 0)),
            "runs": [_run_json(r) for r in reversed(runs[:RUN_HISTORY])],
            "durations": _durations_json(runs),
            "waiting": waiting_for.describe() if waiting_for else None,
        })

    return {
        "version": __version__,
        "runtime": {"name": o.runtime.name, "available": o.runtime_available,
                    "error": o.runtime_error, "summary": runtime_summary(o)},
        "nodes": node_rows,
        "apps": app_rows,
        "jobs": job_rows,
        "dag": layout_dag(jobs, states, statuses),
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


class _StateCache:
    """One snapshot shared by every open page for ``max_age`` seconds: N pages cost one
    computation, not N."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at = -math.inf
        self._text = ""

    def get(self, o: Orchestrator, max_age: float = 0.3) -> str:
        with self._lock:
            if time.monotonic() - self._at > max_age:
                self._text = json.dumps(build_state(o), separators=(",", ":"))
                self._at = time.monotonic()
            return self._text


_caches: weakref.WeakKeyDictionary[Orchestrator, _StateCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def _cache(o: Orchestrator) -> _StateCache:
    with _caches_lock:
        cache = _caches.get(o)
        if cache is None:
            cache = _caches[o] = _StateCache()
        return cache


def _with_time(o: Orchestrator, state_text: str) -> str:
    # The server's clock travels with every snapshot so countdowns are right even when the
    # browser's clock is off; it is kept out of the cached text so "unchanged" stays cheap.
    return '{"serverTime":' + json.dumps(iso(o.clock.now())) + "," + state_text[1:]


@router.get("/state")
async def state(request: Request) -> JSONResponse:
    """The page's snapshot (see :func:`build_state`), plus ``serverTime``."""
    o = orch(request)
    text = await anyio.to_thread.run_sync(_cache(o).get, o)
    return JSONResponse(json.loads(_with_time(o, text)))


# ------------------------------------------------------------------ server-sent events


_epochs: weakref.WeakKeyDictionary[EventBus, str] = weakref.WeakKeyDictionary()


def _epoch(bus: EventBus) -> str:
    with _caches_lock:
        epoch = _epochs.get(bus)
        if epoch is None:
            epoch = _epochs[bus] = uuid.uuid4().hex[:8]
        return epoch


def resume_after(last_event_id: str, epoch: str) -> int:
    """The sequence number a reconnecting client saw last; 0 (replay the backlog) when its
    ``Last-Event-ID`` is absent, malformed, or from another bus (Dromos restarted)."""
    last_epoch, _, seq = last_event_id.partition("-")
    return int(seq) if last_epoch == epoch and seq.isdigit() else 0


def event_json(e: Event, epoch: str) -> dict[str, Any]:
    """A bus event as the page's feed shows it: Marathon's JSON plus ``stream``, ``seq`` and
    ``epoch`` (the bus's; ``epoch`` + ``seq`` identify an event across server restarts)."""
    return {**e.to_json(), "stream": e.stream, "seq": e.seq, "epoch": epoch}


def _bus_frame(e: Event, epoch: str) -> str:
    return _sse("bus", json.dumps(event_json(e, epoch), default=str), f"{epoch}-{e.seq}")


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    # data is one line of JSON (json.dumps never emits a raw newline).
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


@router.get("/events", include_in_schema=False)
async def events(request: Request) -> StreamingResponse:
    """The page's live feed (see the module docstring). ``?backlog=N`` (default 100) recent
    events are replayed first; with ``Last-Event-ID`` only those after it."""
    o = orch(request)
    try:
        backlog_n = max(0, min(500, int(request.query_params.get("backlog", "100"))))
    except ValueError:
        backlog_n = 100
    epoch = _epoch(o.bus)
    last_seq = resume_after(request.headers.get("last-event-id", ""), epoch)
    # The application's event hub is closed when the server begins to shut down (api.server);
    # watching it ends this stream too, so an open page never holds up a shutdown.
    hub = hub_of(request.app.state, o)
    sub = o.bus.subscribe(frozenset({MARATHON, DROMOS}), maxsize=2000)
    # After subscribing: an event published in between is in both; seq filters the twin.
    backlog = o.bus.recent(backlog_n if not last_seq else 500)
    return StreamingResponse(
        _stream(request, o, sub.get, sub.close, lambda: sub.dropped or hub.closed, backlog,
                last_seq, epoch),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(request: Request, o: Orchestrator, get: Any, close: Any, dropped: Any,
                  backlog: list[Event], last_seq: int, epoch: str) -> AsyncIterator[str]:
    cache = _cache(o)
    started = time.monotonic()
    try:
        yield "retry: 1000\n\n"
        sent = last_seq
        for e in backlog:
            if e.seq > sent:
                yield _bus_frame(e, epoch)
                sent = e.seq
        last_state = ""
        last_state_at = -math.inf
        pending = True
        last_write = time.monotonic()
        while time.monotonic() - started < STREAM_SECONDS:
            if await request.is_disconnected():
                return
            while (e := get(timeout=0)) is not None:
                if e.seq > sent:
                    yield _bus_frame(e, epoch)
                    sent = e.seq
                    pending = True
                    last_write = time.monotonic()
            if dropped():
                # Fell too far behind (the browser reconnects and resumes from Last-Event-ID),
                # or the server is shutting down.
                return
            now = time.monotonic()
            if (pending and now - last_state_at >= STATE_MIN_GAP) or \
                    now - last_state_at >= STATE_INTERVAL:
                text = await anyio.to_thread.run_sync(cache.get, o)
                last_state_at, pending = now, False
                if text != last_state:
                    yield _sse("state", _with_time(o, text))
                    last_state, last_write = text, now
            if now - last_write >= KEEPALIVE_SECONDS:
                yield ": keep-alive\n\n"
                last_write = now
            await asyncio.sleep(POLL_SECONDS)
    finally:
        close()


# ------------------------------------------------------------------ logs


def _resolve(o: Orchestrator, ident: str, attempt: int | None) -> tuple[Task, JobRun | None,
                                                                        bool]:
    """(the runtime's task, the job run if ``ident`` names one, whether it is still active)
    for an app task id, a job run id, or a job run's attempt task id."""
    run = o.store.get_run(ident)
    if run is None and ".retry" in ident:
        run = o.store.get_run(ident.rsplit(".retry", 1)[0])
    if run is not None:
        task_id = (attempt_task_id(run.id, attempt) if attempt is not None else
                   ident if ident != run.id else run.task_id or attempt_task_id(run.id, 0))
        task = run_task(run).with_(id=task_id)
        return task, run, run.status in (RunStatus.QUEUED, RunStatus.RUNNING)
    stored = o.store.get_task(ident)
    if stored is not None:
        return stored, None, not stored.state.terminal
    # Ended app tasks are expunged from the store; their output may well still exist.
    return Task(id=ident, app_id="", host="", version="", state=TaskState.FINISHED,
                staged_at=o.clock.now()), None, False


@router.get("/logs/{task_id}")
async def logs(request: Request, task_id: str,
               tail: int = Query(LOG_TAIL_DEFAULT, ge=-1, le=1_000_000,
                                 description="last N lines; -1 for all"),
               cursor: str | None = Query(None, max_length=100,
                                          description="from a previous answer: only newer"),
               attempt: int | None = Query(None, ge=0, le=1000,
                                           description="a job run's attempt (default: last)"),
               ) -> JSONResponse:
    """A task's or job run's output, as ``kubectl logs`` shows it.

    ``task_id`` is an app task id or a job run id (its last attempt unless ``attempt``).
    Answer: ``{"id", "taskId", "runId", "source", "running", "cursor", "chunks": [{"stream",
    "text"}]}``. To follow, call again with ``cursor`` until ``running`` is false and no text
    comes. 404 when nothing is known of the id, 503 when the runtime's backend is down.
    """
    o = orch(request)
    task, run, active = _resolve(o, task_id, attempt)

    def read() -> tuple[Output, bool]:
        output = o.runtime.read_output(task, None if tail < 0 else tail, cursor)
        return output, bool(o.runtime.sandbox_files(task))

    try:
        result, kept = await anyio.to_thread.run_sync(read)
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    except RuntimeUnavailable as e:
        raise HTTPException(503, f"the {o.runtime.name} runtime is unavailable: {e}") from None
    known = active or run is not None or any(c.text for c in result.chunks) or kept
    if not known:
        raise HTTPException(404, f"no task or job run '{task_id}' is known")
    return JSONResponse({
        "id": task_id, "taskId": task.id, "runId": run.id if run else None,
        "source": result.source, "running": active, "cursor": result.cursor,
        "chunks": [{"stream": c.stream, "text": c.text} for c in result.chunks],
    })


# ------------------------------------------------------------------ job actions


def _require_json(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    if not ctype.split(";")[0].strip().lower() == "application/json":
        raise HTTPException(415, "send Content-Type: application/json")


@router.get("/runs/{run_id}")
def get_run(request: Request, run_id: str) -> dict[str, Any]:
    """One job run: ``{"run": {...}}`` (the page's run shape), 404 if unknown."""
    run = orch(request).store.get_run(run_id)
    if run is None:
        raise HTTPException(404, f"Job run '{run_id}' does not exist")
    return {"run": {"job": run.job, **_run_json(run)}}


@router.post("/jobs/{name}/run", status_code=202)
def run_job(request: Request, name: str) -> dict[str, Any]:
    """Start a manual run now (Chronos's ``PUT /scheduler/job/{name}``) and say which:
    ``{"run": {...}}``. 404 for an unknown job."""
    _require_json(request)
    run = orch(request).run_job(name)
    return {"run": {"job": run.job, **_run_json(run)}}


class DisabledBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    disabled: bool


@router.post("/jobs/{name}/disabled")
def set_disabled(request: Request, name: str, body: DisabledBody) -> dict[str, Any]:
    """Disable or enable a job: the same as a Chronos ``PUT`` of the job with ``disabled``
    changed (a disabled job is never started by its schedule or its parents; manual runs
    still work). Answers ``{"name", "disabled"}``; 404 for an unknown job."""
    _require_json(request)
    o = orch(request)
    job = o.job(name)
    if job.disabled != body.disabled:
        o.put_job(job.model_copy(update={"disabled": body.disabled}))
    return {"name": name, "disabled": body.disabled}


# ------------------------------------------------------------------ static files


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> FileResponse:
    ctype = STATIC_FILES.get(name)
    if ctype is None:
        raise NotFound(f"no static file '{name}'")
    return FileResponse(WEB_DIR / name, media_type=ctype,
                        headers={"Cache-Control": "no-cache"})
