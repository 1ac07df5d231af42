"""Server-sent event streams: Marathon's ``GET /v2/events`` and Dromos's ``GET /dromos/events``.

``GET /v2/events[?event_type=T...]`` (Marathon)
    Requires ``Accept: text/event-stream`` (a media range naming it with q > 0); anything else
    gets **406** with a JSON hint. Marathon 1.x answered 405 there (its servlet fell through
    to "GET not supported"), which its tracker accepted as a bug (d2iq-archive/marathon#1801):
    406 is the status HTTP defines for "cannot produce what you accept". ``*/*`` alone is not
    enough, as in Marathon: a plain ``curl`` should get the hint, not an endless response.

    Frames are ``event: <eventType>\\ndata: <one line of JSON>\\n\\n``; every event carries
    ``eventType`` and ``timestamp``. Only the event types a strict Marathon client knows
    (:data:`MARATHON_EVENT_TYPES`) are ever written here, whatever ``event_type`` asks for:
    the marathon 0.13.0 client raises on any other type. Dromos-only events (placement, job
    runs) are on ``/dromos/events``.

``GET /dromos/events[?stream=marathon|dromos...][&event_type=T...]`` (Dromos)
    Every stream by default, same framing, no Accept requirement (``curl -N`` works).

Both endpoints
    * Are left out of the OpenAPI document: an endless response cannot be described there,
      and the schema-driven fuzzer (which buffers whole responses) would wait on it forever.
    * Start with ``event_stream_attached`` (``remoteAddress``), unless ``event_type`` filters
      it out. Attach and detach are published on the bus like any event, so other clients
      see them, as in Marathon.
    * ``event_type`` is repeatable (and may be comma-separated); without it every event is
      sent. The filter applies to every frame, attach and detach included, because a strict
      client that asked for some types may assume it only ever receives those.
    * Send a ``: keep-alive`` comment every ``keepalive_seconds``, so proxies
      keep the connection and clients can tell a quiet stream from a dead one.
    * End cleanly (response completed, no final event) on :func:`close_streams`, which the
      server calls when it begins to shut down: uvicorn's graceful shutdown waits for open
      responses, and an event stream never finishes by itself.
    * Each client has a bounded queue (``queue_size`` events). A client that falls further
      behind is dropped: its queue is discarded (it has missed events either way and must
      resynchronise), it gets a final ``event_stream_detached`` frame, and the response ends.
      A write the client does not accept within ``detach_grace_seconds`` abandons the
      connection.

The streaming itself (subscription, wake-ups, keep-alives, disconnects, shutdown) is
:mod:`api.sse`, shared with the status page's feed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from api.presentation import orch
from api.sse import EVENT_STREAM, KEEPALIVE, Connection, EventHub, EventStream, encode, hub_of
from scheduler.events import DROMOS, MARATHON, Event
from scheduler.model.validation import SpecError

log = logging.getLogger("dromos.events")

router = APIRouter(tags=["events"])

#: Every eventType the marathon 0.13.0 client (and Marathon 1.x) knows; see the reference.
MARATHON_EVENT_TYPES: frozenset[str] = frozenset({
    "add_health_check_event", "api_post_event", "app_terminated_event", "deployment_failed",
    "deployment_info", "deployment_step_failure", "deployment_step_success",
    "deployment_success", "event_stream_attached", "event_stream_detached",
    "failed_health_check_event", "framework_message_event", "group_change_failed",
    "group_change_success", "health_status_changed_event", "instance_changed_event",
    "instance_health_changed_event", "pod_created_event", "pod_deleted_event",
    "pod_updated_event", "remove_health_check_event", "status_update_event", "subscribe_event",
    "unhealthy_instance_kill_event", "unhealthy_task_kill_event",
    "unknown_instance_terminated_event", "unsubscribe_event",
})
STREAMS: frozenset[str] = frozenset({MARATHON, DROMOS})

_BATCH = 256  # events per write: bounds a chunk's size and lets other clients run between


def accepts_event_stream(accept_headers: Iterable[str]) -> bool:
    """Whether an ``Accept`` header names ``text/event-stream`` with a non-zero quality."""
    for header in accept_headers:
        for item in header.split(","):
            media, *params = (p.strip() for p in item.split(";"))
            if media.lower() != EVENT_STREAM:
                continue
            q = 1.0
            for param in params:
                key, _, value = param.partition("=")
                if key.strip().lower() == "q":
                    try:
                        q = float(value)
                    except ValueError:
                        q = 0.0
            if q > 0:
                return True
    return False


def _split(values: list[str] | None) -> frozenset[str] | None:
    """Repeatable, comma-separable query values; ``None`` when none were given."""
    items = {v.strip() for raw in values or [] for v in raw.split(",") if v.strip()}
    return frozenset(items) or None


class _Filter:
    """Which events one client gets: its streams, the ``event_type`` it asked for, and (on
    ``/v2/events``) only the types a strict Marathon client knows."""

    def __init__(self, hub: EventHub, streams: frozenset[str], types: frozenset[str] | None,
                 allowed: frozenset[str] | None) -> None:
        self.hub, self.streams, self.types, self.allowed = hub, streams, types, allowed

    def wanted(self, event: Event) -> bool:
        if event.stream not in self.streams:
            return False
        if self.allowed is not None and event.event_type not in self.allowed:
            self.hub.suppressed(event)
            return False
        return self.types is None or event.event_type in self.types


async def _frames(hub: EventHub, want: _Filter, remote: str) -> AsyncIterator[bytes]:
    """One client's frames (see the module docstring for what and in which order)."""
    # Subscribe before announcing, so nothing published after the attach is missed.
    conn = Connection(hub, want.streams, hub.settings.queue_size)
    sub = conn.sub
    try:
        attach = hub.bus.publish("event_stream_attached", hub.now(), remoteAddress=remote)
        if want.wanted(attach):
            yield hub.frame(attach)
        while not conn.closing.is_set():
            if sub.dropped:
                async for frame in _dropped(hub, conn, want, remote):
                    yield frame
                return
            batch: list[bytes] = []
            while len(batch) < _BATCH and (e := sub.get(timeout=0)) is not None:
                if e.seq != attach.seq and want.wanted(e):
                    batch.append(hub.frame(e))
            if batch:
                yield b"".join(batch)
            elif not sub.dropped and not await conn.wait(hub.settings.keepalive_seconds):
                yield KEEPALIVE
    finally:
        conn.detach()
        # Marathon announces every detach on the bus; a dropped client's own frame was
        # written straight to it.
        hub.bus.publish("event_stream_detached", hub.now(), remoteAddress=remote)


async def _dropped(hub: EventHub, conn: Connection, want: _Filter,
                   remote: str) -> AsyncIterator[bytes]:
    """A client that fell behind: its backlog discarded, a final detach frame."""
    while conn.sub.get(timeout=0) is not None:
        pass  # discard the backlog: the client must resynchronise anyway
    log.warning("event stream client %s fell more than %d events behind: dropped",
                remote, hub.settings.queue_size)
    detached = Event("event_stream_detached", hub.now(), {"remoteAddress": remote}, MARATHON)
    if want.wanted(detached):
        yield encode(detached)  # not hub.frame: this event has no bus sequence number


def _response(request: Request, streams: frozenset[str], types: frozenset[str] | None,
              allowed: frozenset[str] | None) -> Response:
    hub = hub_of(request.app.state, orch(request))
    remote = request.client.host if request.client else "unknown"
    return EventStream(_frames(hub, _Filter(hub, streams, types, allowed), remote),
                       hub.settings.detach_grace_seconds)


_NOT_ACCEPTABLE = {
    "message": "The event stream is served as text/event-stream only: "
               "send 'Accept: text/event-stream'.",
}
EventTypes = Annotated[
    list[str] | None,
    Query(description="Only these event types (repeatable, or comma-separated)"),
]


@router.get("/v2/events", include_in_schema=False)
async def marathon_events(request: Request, event_type: EventTypes = None) -> Response:
    """Marathon's event stream: Marathon event types only (see the module docstring)."""
    if not accepts_event_stream(request.headers.getlist("accept")):
        return JSONResponse(_NOT_ACCEPTABLE, status_code=406)
    return _response(request, frozenset({MARATHON}), _split(event_type), MARATHON_EVENT_TYPES)


@router.get("/dromos/events", include_in_schema=False)
async def dromos_events(
    request: Request,
    stream: Annotated[list[str] | None, Query(
        description="Only these streams: marathon, dromos (repeatable); default all")] = None,
    event_type: EventTypes = None,
) -> Response:
    """Every stream, Dromos-only events (job runs, placement) included."""
    streams = _split(stream) or STREAMS
    unknown = sorted(streams - STREAMS)
    if unknown:
        raise SpecError("Object is not valid", [
            ("/stream", [f"unknown stream {s!r}; one of {sorted(STREAMS)}" for s in unknown])])
    return _response(request, streams, _split(event_type), None)
