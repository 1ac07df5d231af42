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

import json
import math
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from api.limits import strict_dumps
from api.presentation import WEB_DIR, orch, reads
from api.snapshot import run_json, state_cache, with_time
from api.sse import KEEPALIVE, Connection, EventHub, EventStream, hub_of
from scheduler.events import DROMOS, MARATHON, Event, EventBus
from scheduler.model.job import JobRun, RunStatus, attempt_task_id
from scheduler.model.task import Task, TaskState, task_of_run
from scheduler.orchestrator import NotFound, Orchestrator
from scheduler.runtimes.base import Output, RuntimeUnavailable

router = APIRouter(prefix="/ui", tags=["status page"])

STATIC_FILES: Mapping[str, str] = {
    "dromos.js": "text/javascript; charset=utf-8",
    "dromos.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
"""The files ``/ui/static/`` serves (a fixed list: nothing else in the package is exposed)."""

STATE_INTERVAL = 2.0
"""Seconds between snapshots an SSE client gets when no event arrived (if anything changed):
the backstop for changes that publish no event, such as a new job definition."""
STATE_MIN_GAP = 0.4
"""Least seconds between two snapshots to one client: a burst of events costs one snapshot."""
STREAM_SECONDS = 60.0
"""An SSE response ends after this long and the browser reconnects at once (``retry:``),
resuming from ``Last-Event-ID``: no response lives forever, whoever serves the app. Under
``dromos serve`` streams end sooner, as soon as shutdown begins (see :func:`events`)."""
KEEPALIVE_SECONDS = 10.0

LOG_TAIL_DEFAULT = 200


@router.get("/state")
async def state(request: Request) -> JSONResponse:
    """The page's snapshot (see :func:`build_state`), plus ``serverTime``."""
    o = orch(request)
    text = await anyio.to_thread.run_sync(state_cache(o).get, o)
    return JSONResponse(json.loads(with_time(o, text)))


# ------------------------------------------------------------------ server-sent events


_epochs: weakref.WeakKeyDictionary[EventBus, str] = weakref.WeakKeyDictionary()
_epochs_lock = threading.Lock()


def _epoch(bus: EventBus) -> str:
    with _epochs_lock:
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
    return _sse("bus", strict_dumps(event_json(e, epoch), default=str), f"{epoch}-{e.seq}")


def _sse(event: str, data: str, event_id: str | None = None) -> str:
    # data is one line of JSON (json.dumps never emits a raw newline).
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"


@router.get("/events", include_in_schema=False)
async def events(request: Request) -> Response:
    """The page's live feed (see the module docstring). ``?backlog=N`` (default 100) recent
    events are replayed first; with ``Last-Event-ID`` only those after it."""
    o = orch(request)
    try:
        backlog_n = max(0, min(500, int(request.query_params.get("backlog", "100"))))
    except ValueError:
        backlog_n = 100
    epoch = _epoch(o.bus)
    last_seq = resume_after(request.headers.get("last-event-id", ""), epoch)
    hub = hub_of(request.app.state, o)
    return EventStream(_feed(o, hub, backlog_n, last_seq, epoch),
                       hub.settings.detach_grace_seconds)


async def _feed(o: Orchestrator, hub: EventHub, backlog_n: int, last_seq: int,
                epoch: str) -> AsyncIterator[bytes]:
    # The hub ends this stream when the server begins to shut down (api.server), so an open
    # page never holds up a shutdown.
    conn = Connection(hub, frozenset({MARATHON, DROMOS}), 2000, counted=False)
    # After subscribing: an event published in between is in both; seq filters the twin.
    backlog = o.bus.recent(backlog_n if not last_seq else 500)
    async for frame in _stream(o, conn, backlog, last_seq, epoch):
        yield frame.encode()


async def _stream(o: Orchestrator, conn: Connection, backlog: list[Event], last_seq: int,
                  epoch: str) -> AsyncIterator[str]:
    """The feed's frames: ``retry``, the backlog after ``last_seq``, then bus events as they
    come and snapshots when due. Ends after :data:`STREAM_SECONDS`, when the client fell too
    far behind (the browser reconnects and resumes from ``Last-Event-ID``) or when the
    connection is closed; always unsubscribes."""
    cache = state_cache(o)
    started = time.monotonic()
    sub = conn.sub
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
        while not conn.closing.is_set() and time.monotonic() - started < STREAM_SECONDS:
            while (got := sub.get(timeout=0)) is not None:
                if got.seq > sent:
                    yield _bus_frame(got, epoch)
                    sent = got.seq
                    pending = True
                    last_write = time.monotonic()
            if sub.dropped:
                return
            now = time.monotonic()
            if (pending and now - last_state_at >= STATE_MIN_GAP) or \
                    now - last_state_at >= STATE_INTERVAL:
                text = await anyio.to_thread.run_sync(cache.get, o)
                last_state_at, pending = now, False
                if text != last_state:
                    yield _sse("state", with_time(o, text))
                    last_state, last_write = text, now
            if now - last_write >= KEEPALIVE_SECONDS:
                yield KEEPALIVE.decode()
                last_write = now
            # Until the next event, or until a snapshot, a keep-alive or the end is due.
            due = min(last_state_at + (STATE_MIN_GAP if pending else STATE_INTERVAL),
                      last_write + KEEPALIVE_SECONDS, started + STREAM_SECONDS)
            await conn.wait(max(0.0, due - time.monotonic()))
    finally:
        conn.detach()


# ------------------------------------------------------------------ logs


def _resolve(o: Orchestrator, ident: str, attempt: int | None) -> tuple[Task, JobRun | None,
                                                                        bool]:
    """(the runtime's task, the job run if ``ident`` names one, whether it is still active)
    for an app task id, a job run id, or a job run's attempt task id."""
    q = reads(o)
    run = q.run(ident)
    if run is None and ".retry" in ident:
        run = q.run(ident.rsplit(".retry", 1)[0])
    if run is not None:
        task_id = (attempt_task_id(run.id, attempt) if attempt is not None else
                   ident if ident != run.id else run.task_id or attempt_task_id(run.id, 0))
        task = task_of_run(run).with_(id=task_id)
        return task, run, run.status in (RunStatus.QUEUED, RunStatus.RUNNING)
    stored = q.task(ident)
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
        runtime = reads(o).runtime
        output = runtime.read_output(task, None if tail < 0 else tail, cursor)
        return output, bool(runtime.sandbox_files(task))

    try:
        result, kept = await anyio.to_thread.run_sync(read)
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    except RuntimeUnavailable as e:
        raise HTTPException(
            503, f"the {reads(o).runtime_name} runtime is unavailable: {e}") from None
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
    run = reads(orch(request)).run(run_id)
    if run is None:
        raise HTTPException(404, f"Job run '{run_id}' does not exist")
    return {"run": {"job": run.job, **run_json(run)}}


@router.post("/jobs/{name}/run", status_code=202)
def run_job(request: Request, name: str) -> dict[str, Any]:
    """Start a manual run now (Chronos's ``PUT /scheduler/job/{name}``) and say which:
    ``{"run": {...}}``. 404 for an unknown job."""
    _require_json(request)
    run = orch(request).run_job(name)
    return {"run": {"job": run.job, **run_json(run)}}


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
