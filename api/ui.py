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
  :func:`read_logs`.
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
import os
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
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
from scheduler.runtimes.base import RuntimeUnavailable
from scheduler.runtimes.executor import STDERR_FILE, STDOUT_FILE

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
LOG_READ_MAX_BYTES = 1 << 20
"""At most this much output per ``/ui/logs`` answer; a follower gets the rest next time."""
LOG_TAIL_MAX_BYTES = 4 << 20
"""A tail never reads further back than this from the end of a file."""


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


class LogsUnsupported(LookupError):
    """The runtime has no way to show task output."""


@dataclass(frozen=True)
class LogChunk:
    """Output of one stream: ``stdout``, ``stderr``, or ``output`` (both, interleaved, as
    Docker and Kubernetes keep them)."""

    stream: str
    text: str


@dataclass(frozen=True)
class LogRead:
    chunks: list[LogChunk]
    cursor: str
    source: str


def _complete_utf8(data: bytes) -> int:
    """The length of the longest prefix of ``data`` that does not end inside a UTF-8
    sequence (so a follower never sees half a character)."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b & 0xC0 == 0x80:
            continue  # a continuation byte: look further back for the lead byte
        if b >= 0xC0:
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return len(data) - back if need > back else len(data)
        return len(data)
    return len(data)


def _tail_bytes(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The last ``lines`` lines of a file (all when ``None``, at most
    :data:`LOG_TAIL_MAX_BYTES` either way) and the file's size (where a follower goes on)."""
    try:
        f = open(path, "rb")  # noqa: SIM115 -- closed below; a missing file is "no output"
    except FileNotFoundError:
        return b"", 0
    with f:
        size = f.seek(0, os.SEEK_END)
        floor = max(0, size - LOG_TAIL_MAX_BYTES)
        if lines is None:
            start = floor
        else:
            start = size
            newlines = 0
            while start > floor and newlines <= lines:
                step = min(65536, start - floor)
                start -= step
                f.seek(start)
                block = f.read(step)
                # A final newline ends the last line; it does not start another one.
                newlines += block.count(b"\n") - (1 if start + step == size and
                                                  block.endswith(b"\n") else 0)
        f.seek(start)
        data = f.read(size - start)
    if lines is not None:
        data = b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""
    return data, size


def _read_from(path: Path, offset: int) -> tuple[bytes, int]:
    """Bytes after ``offset`` (at most :data:`LOG_READ_MAX_BYTES`, whole characters) and the
    new offset. A file shorter than ``offset`` was truncated: read it from the start."""
    try:
        f = open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:
        return b"", 0
    with f:
        size = f.seek(0, os.SEEK_END)
        if size < offset:
            offset = 0
        f.seek(offset)
        data = f.read(min(LOG_READ_MAX_BYTES, size - offset))
    data = data[: _complete_utf8(data)]
    return data, offset + len(data)


def _parse_cursor(cursor: str | None, kind: str, parts: int) -> list[int] | None:
    if not cursor or not cursor.startswith(kind + ":"):
        return None
    try:
        values = [int(v) for v in cursor[len(kind) + 1:].split(",")]
    except ValueError:
        return None
    return values if len(values) == parts and all(v >= 0 for v in values) else None


def _read_sandbox(sandbox: Path, tail: int | None, cursor: str | None) -> LogRead:
    offsets = _parse_cursor(cursor, "f", 2)
    chunks: list[LogChunk] = []
    new: list[int] = []
    for i, name in enumerate((STDOUT_FILE, STDERR_FILE)):
        path = sandbox / name
        if offsets is None:
            data, pos = _tail_bytes(path, tail)
        else:
            data, pos = _read_from(path, offsets[i])
        new.append(pos)
        chunks.append(LogChunk(name, data.decode("utf-8", "replace")))
    return LogRead(chunks, f"f:{new[0]},{new[1]}", "sandbox files")


def _read_runtime_logs(logs: Any, task: Task, tail: int | None, cursor: str | None,
                       source: str) -> LogRead:
    # The runtime only offers "the last N lines": a follower's cursor counts the complete
    # lines it has seen, and each follow-up reads everything to find the new ones. That costs
    # the whole log per poll, fine for a page or a terminal, not for a firehose.
    seen = _parse_cursor(cursor, "l", 1)
    text = str(logs(task, None))
    lines = text.splitlines(keepends=True)
    complete = len(lines) - (1 if lines and not lines[-1].endswith("\n") else 0)
    if seen is None:
        shown = lines[:complete] if tail is None else \
            (lines[:complete][-tail:] if tail > 0 else [])
    else:
        start = seen[0] if seen[0] <= complete else 0  # fewer lines: the log was reset
        shown = lines[start:complete]
    return LogRead([LogChunk("output", "".join(shown))], f"l:{complete}", source)


def read_logs(runtime: Any, task: Task, tail: int | None, cursor: str | None) -> LogRead:
    """A task's output: the last ``tail`` lines (all when ``None``), or with ``cursor`` (from
    a previous answer) what was written since. Raises :class:`LogsUnsupported` when the runtime
    cannot show output, ``LookupError`` when it cannot for this task (a bad id, a Kubernetes
    node that does not answer), :class:`RuntimeUnavailable` when its backend is down.

    An adapter, not part of the Runtime protocol: runtimes that keep a sandbox directory per
    task (``runtime.sandbox(task_id)``, the local runtime) are read from their ``stdout`` and
    ``stderr`` files, two streams with byte-offset cursors; others must have
    ``runtime.logs(task, tail)`` returning the combined output (Docker, Kubernetes).
    """
    sandbox = getattr(runtime, "sandbox", None)
    if callable(sandbox):
        try:
            path = Path(sandbox(task.id))
        except ValueError as e:
            raise LookupError(str(e)) from None
        return _read_sandbox(path, tail, cursor)
    name = str(getattr(runtime, "name", type(runtime).__name__))
    logs = getattr(runtime, "logs", None)
    if callable(logs):
        return _read_runtime_logs(logs, task, tail, cursor, name)
    raise LogsUnsupported(f"the {name} runtime cannot show task output")


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
    comes. 404 when nothing is known of the id, 501 when the runtime cannot show output,
    503 when its backend is down.
    """
    o = orch(request)
    task, run, active = _resolve(o, task_id, attempt)

    def read() -> LogRead:
        return read_logs(reads(o).runtime, task, None if tail < 0 else tail, cursor)

    try:
        result = await anyio.to_thread.run_sync(read)
    except LogsUnsupported as e:
        raise HTTPException(501, str(e)) from None
    except LookupError as e:
        raise HTTPException(404, str(e)) from None
    except RuntimeUnavailable as e:
        raise HTTPException(
            503, f"the {reads(o).runtime_name} runtime is unavailable: {e}") from None
    known = active or run is not None or any(c.text for c in result.chunks) or (
        callable(getattr(reads(o).runtime, "sandbox", None)) and _sandbox_exists(o, task.id))
    if not known:
        raise HTTPException(404, f"no task or job run '{task_id}' is known")
    return JSONResponse({
        "id": task_id, "taskId": task.id, "runId": run.id if run else None,
        "source": result.source, "running": active, "cursor": result.cursor,
        "chunks": [{"stream": c.stream, "text": c.text} for c in result.chunks],
    })


def _sandbox_exists(o: Orchestrator, task_id: str) -> bool:
    try:
        return Path(reads(o).runtime.sandbox(task_id)).is_dir()  # type: ignore[attr-defined]
    except ValueError:
        return False


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
