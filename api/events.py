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
    * Send a ``: keep-alive`` comment after ``keepalive_seconds`` without a frame, so proxies
      keep the connection and clients can tell a quiet stream from a dead one.
    * End cleanly (response completed, no final event) on :func:`close_streams`, which the
      server calls when it begins to shut down: uvicorn's graceful shutdown waits for open
      responses, and an event stream never finishes by itself.
    * Each client has a bounded queue (``queue_size`` events). A client that falls further
      behind is dropped: its queue is discarded (it has missed events either way and must
      resynchronise), it gets a final ``event_stream_detached`` frame, and the response ends.
      If it does not even read that within ``detach_grace_seconds``, the connection is
      abandoned.

Threading contract: the bus publishes synchronously on the publisher's thread (usually the
control loop). The only work done there for a stream is a non-blocking ``put_nowait`` into
the client's queue and, at most once per wake-up, ``loop.call_soon_threadsafe``. Everything
else (serialisation, socket writes, waiting on slow clients) happens on the event loop.
A client disconnect is noticed through ASGI ``http.disconnect`` (uvicorn does not raise on
writes to a closed connection) and always unsubscribes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from api.limits import strict_dumps
from scheduler.events import DROMOS, MARATHON, Event, EventBus, Subscription
from scheduler.model.timefmt import iso
from scheduler.model.validation import SpecError
from scheduler.orchestrator import Orchestrator

log = logging.getLogger("dromos.events")

router = APIRouter(tags=["events"])

EVENT_STREAM = "text/event-stream"

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

_KEEPALIVE = b": keep-alive\n\n"
_BATCH = 256  # events per write: bounds a chunk's size and lets other clients run between


@dataclass(frozen=True)
class StreamSettings:
    """Tunables for every stream of one application (``app.state.event_stream_settings``)."""

    queue_size: int = 10_000
    """Events a client may fall behind before it is dropped. Events are shared objects, so
    a queue holds references only; the default absorbs the bursts of a large scale-up."""
    keepalive_seconds: float = 15.0
    detach_grace_seconds: float = 5.0


class EventHub:
    """The streams of one application: settings, live connections, and a cache of encoded
    frames (every client of a busy cluster would otherwise encode the same event again)."""

    def __init__(self, bus: EventBus, now: Callable[[], datetime],
                 settings: StreamSettings) -> None:
        self.bus = bus
        self.now = now
        self.settings = settings
        self.connections: set[EventStreamResponse] = set()
        self._frames: OrderedDict[int, bytes] = OrderedDict()
        self._warned: set[str] = set()
        self.closed = False

    def close(self) -> None:
        """End every stream, now and from now on. Thread-safe."""
        self.closed = True
        for c in list(self.connections):
            c.close()

    def frame(self, event: Event) -> bytes:
        """``event: …\\ndata: …\\n\\n`` for ``event``. Only called on the event loop thread,
        which is what makes the unlocked cache safe."""
        cached = self._frames.get(event.seq)
        if cached is not None:
            return cached
        data = strict_dumps(event.to_json(), default=_json_default)
        out = f"event: {event.event_type}\ndata: {data}\n\n".encode()
        self._frames[event.seq] = out
        if len(self._frames) > 4096:
            self._frames.popitem(last=False)
        return out

    def suppressed(self, event: Event) -> None:
        """Note a non-Marathon type published on the marathon stream (a Dromos bug): it is
        withheld from /v2/events; log once per type so it gets fixed."""
        if event.event_type not in self._warned:
            self._warned.add(event.event_type)
            log.warning("event type %r is on the marathon stream but is not a Marathon type; "
                        "withheld from /v2/events", event.event_type)

    def lags(self) -> list[int]:
        """Events waiting in each connected client's queue."""
        return [c.pending for c in list(self.connections)]


_hub_lock = threading.Lock()


def hub_of(app_state: Any, orchestrator: Orchestrator) -> EventHub:
    """The application's hub, created on first use (from ``event_stream_settings`` if set)."""
    with _hub_lock:
        hub: EventHub | None = getattr(app_state, "event_hub", None)
        if hub is None:
            settings = getattr(app_state, "event_stream_settings", None) or StreamSettings()
            hub = EventHub(orchestrator.bus, orchestrator.clock.now, settings)
            app_state.event_hub = hub
        return hub


def close_streams(app_state: Any) -> None:
    """End the application's event streams (if any were opened) so that a graceful server
    shutdown does not wait on them forever. Thread-safe; call it when shutdown begins."""
    hub: EventHub | None = getattr(app_state, "event_hub", None)
    if hub is not None:
        hub.close()


def _json_default(value: Any) -> Any:
    # Payloads are meant to be JSON already; never let one odd value kill every stream.
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


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


class EventStreamResponse(Response):
    """One client's stream, as a raw ASGI response (see the module docstring for behaviour).

    A plain StreamingResponse cannot do what is needed here: abandon a write that a stalled
    client blocks, and end with a final frame when the client is dropped.
    """

    media_type = EVENT_STREAM

    def __init__(self, hub: EventHub, streams: frozenset[str], types: frozenset[str] | None,
                 allowed: frozenset[str] | None, remote: str) -> None:
        # Not Response.__init__: it would render an empty body and send Content-Length: 0.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.hub = hub
        self.streams = streams
        self.types = types
        self.allowed = allowed
        self.remote = remote
        self._sub: Subscription | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._dropped = asyncio.Event()
        self._closing = asyncio.Event()
        self._signalled = False
        self._own_attach_seq = 0

    @property
    def pending(self) -> int:
        return self._sub.pending if self._sub is not None else 0

    # ---------------------------------------------------------------- filtering

    def wanted(self, event: Event) -> bool:
        if event.stream not in self.streams:
            return False
        if self.allowed is not None and event.event_type not in self.allowed:
            self.hub.suppressed(event)
            return False
        return self.types is None or event.event_type in self.types

    # ---------------------------------------------------------------- publisher side

    def _notify(self) -> None:
        """Called on the publisher's thread: never blocks. One wake-up is scheduled per
        batch; events queued before the wake-up runs are drained by it."""
        if self._signalled or self._loop is None:
            return
        self._signalled = True
        with contextlib.suppress(RuntimeError):  # loop closed: the server is gone
            self._loop.call_soon_threadsafe(self._wakeup)

    def _wakeup(self) -> None:
        # Cleared before the consumer runs, so an event queued from here on schedules anew.
        self._signalled = False
        self._wake.set()
        if self._sub is not None and self._sub.dropped:
            self._dropped.set()

    def close(self) -> None:
        """End this stream cleanly. Thread-safe."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # loop closed: already over
                self._loop.call_soon_threadsafe(self._closing.set)

    # ---------------------------------------------------------------- ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        hub = self.hub
        self._loop = asyncio.get_running_loop()
        # Subscribe before announcing, so nothing published after the attach is missed.
        self._sub = hub.bus.subscribe(self.streams, hub.settings.queue_size, self._notify)
        hub.connections.add(self)
        if hub.closed:
            self._closing.set()  # shutting down: answer, then end at once
        dropped = False
        tasks: list[asyncio.Future[Any]] = []
        try:
            attach = hub.bus.publish("event_stream_attached", hub.now(),
                                     remoteAddress=self.remote)
            self._own_attach_seq = attach.seq
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            pump = asyncio.ensure_future(self._pump(send, attach))
            gone = asyncio.ensure_future(_until_disconnect(receive))
            behind = asyncio.ensure_future(self._dropped.wait())
            ending = asyncio.ensure_future(self._closing.wait())
            tasks = [pump, gone, behind, ending]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            # The pump may have noticed the drop first; the flag is the truth either way.
            dropped = self._sub.dropped and not gone.done()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            error = pump.exception() if pump.done() and not pump.cancelled() else None
            if error is not None and not isinstance(error, OSError):
                # OSError: a server that raises on writes to a closed connection.
                raise error
            if dropped:
                await self._end_dropped(send)
            elif self._closing.is_set() and not gone.done():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(hub.settings.detach_grace_seconds):
                        await send({"type": "http.response.body", "body": b"",
                                    "more_body": False})
        finally:
            for t in tasks:
                t.cancel()
            self._sub.close()
            hub.connections.discard(self)
            # Marathon announces every detach on the bus; the dropped client's own frame
            # was written above, straight to it.
            hub.bus.publish("event_stream_detached", hub.now(), remoteAddress=self.remote)

    async def _pump(self, send: Send, attach: Event) -> None:
        """Write queued events as they come, and keep-alives when there are none."""
        sub = self._sub
        assert sub is not None
        keepalive = self.hub.settings.keepalive_seconds
        if self.wanted(attach):
            await _body(send, self.hub.frame(attach))
        while True:
            self._wake.clear()
            batch: list[bytes] = []
            while len(batch) < _BATCH and (e := sub.get(timeout=0)) is not None:
                if e.seq != self._own_attach_seq and self.wanted(e):
                    batch.append(self.hub.frame(e))
            if sub.dropped:
                self._dropped.set()
                return
            if batch:
                await _body(send, b"".join(batch))
                continue
            try:
                # Not asyncio.wait_for: on 3.11 it can swallow a cancellation that races the
                # wake-up, and this task would then outlive its client.
                async with asyncio.timeout(keepalive):
                    await self._wake.wait()
            except TimeoutError:
                await _body(send, _KEEPALIVE)

    async def _end_dropped(self, send: Send) -> None:
        """Final ``event_stream_detached`` frame and end of response, within the grace."""
        assert self._sub is not None
        while self._sub.get(timeout=0) is not None:
            pass  # discard the backlog: the client must resynchronise anyway
        detached = Event("event_stream_detached", self.hub.now(),
                         {"remoteAddress": self.remote}, MARATHON)
        log.warning("event stream client %s fell more than %d events behind: dropped",
                    self.remote, self.hub.settings.queue_size)
        try:
            async with asyncio.timeout(self.hub.settings.detach_grace_seconds):
                if self.wanted(detached):
                    # Not cached: this instance has no bus sequence number.
                    await _body(send, _encode(detached))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            # The client does not read at all; the server closes the connection.
            log.warning("event stream client %s did not read its detach frame; abandoned",
                        self.remote)


def _encode(event: Event) -> bytes:
    data = strict_dumps(event.to_json(), default=_json_default)
    return f"event: {event.event_type}\ndata: {data}\n\n".encode()


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _until_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


def _remote(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _orch(request: Request) -> Orchestrator:
    o: Orchestrator = request.app.state.orchestrator
    return o


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
    return EventStreamResponse(hub_of(request.app.state, _orch(request)), frozenset({MARATHON}),
                               _split(event_type), MARATHON_EVENT_TYPES, _remote(request))


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
    return EventStreamResponse(hub_of(request.app.state, _orch(request)), streams,
                               _split(event_type), None, _remote(request))
