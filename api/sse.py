"""Server-sent event streams of the event bus, on sse-starlette: the one implementation behind
``/v2/events``, ``/dromos/events`` (:mod:`api.events`) and the status page's ``/ui/events``
(:mod:`api.ui`).

A stream is an async generator of ready-encoded frames (``bytes``, which sse-starlette writes
as they are) fed by a :class:`Connection`: one bus subscription with a bounded queue, woken
from the publisher's thread. sse-starlette does the ASGI side: the response head, noticing a
client disconnect (ASGI ``http.disconnect``; uvicorn does not raise on writes to a closed
connection), cancelling the generator (its ``finally`` always unsubscribes), per-write
timeouts and ending the response cleanly. The generators write the keep-alive comment
themselves (:data:`KEEPALIVE`, after a quiet spell): sse-starlette's timer runs beside the
generator and could put one between a stream's last frame and its end.

Threading contract: the bus publishes synchronously on the publisher's thread (usually the
control loop). The only work done there for a stream is the subscription's non-blocking
``put_nowait`` and, at most once per wake-up, ``loop.call_soon_threadsafe``. Serialisation,
socket writes and waiting on slow clients happen on the event loop.

Shutdown: :func:`close_streams` ends every stream of an application (thread-safe), which the
server calls when shutdown begins: uvicorn's graceful shutdown waits for open responses, and
an event stream never ends by itself. sse-starlette's own shutdown detection (a patch of
uvicorn's signal handler, process-global) is switched off so that this is the one way streams
end at shutdown, and one server's exit never ends another's streams in the same process.

Slow clients: a client whose queue overflows is dropped by the bus (see
:class:`~scheduler.events.Subscription`); its generator then ends the stream. A write that a
client does not accept within ``detach_grace_seconds`` (its socket buffers are full) abandons
the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sse_starlette.sse import AppStatus, EventSourceResponse, SendTimeoutError
from starlette.types import Receive, Scope, Send

from api.limits import strict_dumps
from scheduler.events import Event, EventBus, Subscription
from scheduler.model.timefmt import iso
from scheduler.orchestrator import Orchestrator

log = logging.getLogger("dromos.events")

# Streams end through close_streams (see the module docstring), not a process-global flag.
AppStatus.enable_automatic_graceful_drain = False  # what disable_automatic_graceful_drain() does

EVENT_STREAM = "text/event-stream"
KEEPALIVE = b": keep-alive\n\n"


@dataclass(frozen=True)
class StreamSettings:
    """Tunables for every stream of one application (``app.state.event_stream_settings``)."""

    queue_size: int = 10_000
    """Events a client may fall behind before it is dropped. Events are shared objects, so
    a queue holds references only; the default absorbs the bursts of a large scale-up."""
    keepalive_seconds: float = 15.0
    detach_grace_seconds: float = 5.0
    """How long one write may wait on a client that reads nothing before it is abandoned."""


def _json_default(value: Any) -> Any:
    # Payloads are meant to be JSON already; never let one odd value kill every stream.
    if isinstance(value, datetime):
        return iso(value)
    return str(value)


def encode(event: Event) -> bytes:
    """``event: <eventType>\\ndata: <one line of JSON>\\n\\n`` (Marathon's framing)."""
    data = strict_dumps(event.to_json(), default=_json_default)
    return f"event: {event.event_type}\ndata: {data}\n\n".encode()


class Connection:
    """One stream's bus subscription, and the asyncio side of waiting on it.

    Create it on the event loop that serves the stream; :meth:`close` and the subscription's
    notifications may come from any thread."""

    def __init__(self, hub: EventHub, streams: frozenset[str], maxsize: int,
                 counted: bool = True) -> None:
        self.hub = hub
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self.closing = asyncio.Event()
        self._signalled = False
        self._counted = counted
        self.sub: Subscription = hub.bus.subscribe(streams, maxsize, self._notify)
        hub.attach(self, counted)
        if hub.closed:
            self.closing.set()  # shutting down: answer, then end at once

    @property
    def pending(self) -> int:
        return self.sub.pending

    def _notify(self) -> None:
        """On the publisher's thread: never blocks. One wake-up is scheduled per batch;
        events queued before it runs are drained by the consumer it wakes."""
        if self._signalled:
            return
        self._signalled = True
        with contextlib.suppress(RuntimeError):  # loop closed: the server is gone
            self._loop.call_soon_threadsafe(self._wakeup)

    def _wakeup(self) -> None:
        # Cleared before the consumer runs, so an event queued from here on schedules anew.
        self._signalled = False
        self._wake.set()

    def close(self) -> None:
        """End this stream cleanly. Thread-safe."""
        with contextlib.suppress(RuntimeError):  # loop closed: already over
            self._loop.call_soon_threadsafe(self.closing.set)

    async def wait(self, timeout: float | None = None) -> bool:
        """Until an event is queued, the subscription is dropped, the stream is closed, or
        ``timeout`` seconds pass (whichever first). False when the time ran out."""
        if self.closing.is_set():
            return True
        self._wake.clear()
        if self.sub.pending or self.sub.dropped:
            return True
        waiters = [asyncio.ensure_future(self._wake.wait()),
                   asyncio.ensure_future(self.closing.wait())]
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        return bool(done)

    def detach(self) -> None:
        """Unsubscribe and forget this connection (idempotent)."""
        self.sub.close()
        self.hub.detach(self)


class EventHub:
    """The streams of one application: settings, live connections, and a cache of encoded
    frames (every client of a busy cluster would otherwise encode the same event again)."""

    def __init__(self, bus: EventBus, now: Callable[[], datetime],
                 settings: StreamSettings) -> None:
        self.bus = bus
        self.now = now
        self.settings = settings
        self.connections: set[Connection] = set()
        """The event streams (``/v2/events``, ``/dromos/events``), as /metrics counts them."""
        self._pages: set[Connection] = set()
        self._frames: OrderedDict[int, bytes] = OrderedDict()
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self.closed = False

    def attach(self, c: Connection, counted: bool) -> None:
        with self._lock:
            (self.connections if counted else self._pages).add(c)

    def detach(self, c: Connection) -> None:
        with self._lock:
            self.connections.discard(c)
            self._pages.discard(c)

    def close(self) -> None:
        """End every stream, now and from now on. Thread-safe."""
        self.closed = True
        with self._lock:
            every = list(self.connections | self._pages)
        for c in every:
            c.close()

    def frame(self, event: Event) -> bytes:
        """:func:`encode` of a bus event, cached by sequence number. Only called on the event
        loop thread, which is what makes the unlocked cache safe."""
        cached = self._frames.get(event.seq)
        if cached is not None:
            return cached
        out = self._frames[event.seq] = encode(event)
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
        """Events waiting in each connected event-stream client's queue."""
        with self._lock:
            return [c.pending for c in self.connections]


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


class EventStream(EventSourceResponse):
    """An SSE response of ready-encoded frames (keep-alives included: sse-starlette's own
    are off), and a client that accepts nothing for ``send_timeout`` seconds abandoned."""

    def __init__(self, frames: AsyncIterator[bytes], send_timeout: float) -> None:
        super().__init__(frames, headers={"Cache-Control": "no-cache"}, sep="\n", ping=0,
                         send_timeout=send_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            # Its socket buffers are full and it does not read: the server closes the
            # connection. The generator has already run its cleanup.
            client = scope.get("client")
            log.warning("event stream client %s did not read for %s s; abandoned",
                        client[0] if client else "unknown", self.send_timeout)
