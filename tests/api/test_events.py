"""Event streams (``/v2/events``, ``/dromos/events``) through a real uvicorn server.

TestClient buffers responses, so streaming is tested over real sockets: uvicorn runs in a
thread of this process (the bus stays inspectable), and clients are raw sockets that parse
HTTP chunked encoding and SSE frames themselves, which also lets a test *not* read.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api.app import create_app
from api.events import MARATHON_EVENT_TYPES, accepts_event_stream
from api.sse import StreamSettings, close_streams
from scheduler.clock import FakeClock
from scheduler.config import Credentials
from scheduler.events import DROMOS, MARATHON, EventBus
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.local import LocalRuntime
from scheduler.store.memory import MemoryStore
from tests.api.conftest import NODES
from tests.runtimes.conftest import cleanup_local_state

ACCEPT = {"Accept": "text/event-stream"}
FAST = StreamSettings(queue_size=10_000, keepalive_seconds=0.3, detach_grace_seconds=3.0)


# ------------------------------------------------------------------ harness


class LiveServer:
    """uvicorn serving ``app`` on a free port, in a background thread."""

    def __init__(self, app: FastAPI, sndbuf: int | None = None,
                 server_cls: type[uvicorn.Server] = uvicorn.Server) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sndbuf is not None:
            # Accepted connections inherit it: a small, fixed send buffer makes a client that
            # does not read block the server's writes after a few KiB, not several MiB.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        sock.bind(("127.0.0.1", 0))
        self.port: int = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=10)
        self.server = server_cls(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class SSE:
    """A raw-socket SSE client: sends the request, then reads only when asked."""

    def __init__(self, port: int, path: str, headers: dict[str, str] | None = None,
                 rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{k}: {v}" for k, v in (ACCEPT if headers is None else headers).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self._raw = b""
        self._body = b""
        self.eof = False
        self.status = 0
        self.headers: dict[str, str] = {}

    def _recv(self, deadline: float) -> None:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
        self._raw += data

    def read_head(self, timeout: float = 5) -> int:
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self._raw:
            self._recv(deadline)
            assert not self.eof, "connection closed before the response head"
        head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode().split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {k.strip().lower(): v.strip()
                        for k, v in (h.split(":", 1) for h in header_lines)}
        return self.status

    def _dechunk(self) -> None:
        while b"\r\n" in self._raw:
            size_line, rest = self._raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            if size == 0:
                self.eof = True
                self._raw = b""
                return
            self._body += rest[:size]
            self._raw = rest[size + 2:]

    def next_frame(self, timeout: float = 5) -> tuple[str, Any] | None:
        """The next frame: ``(event type, data dict)``, or ``("", comment)`` for a comment;
        ``None`` at the end of the response."""
        if not self.status:
            self.read_head(timeout)
        deadline = time.monotonic() + timeout
        self._dechunk()  # the head's read may have brought body bytes along
        while b"\n\n" not in self._body:
            if self.eof:
                return None
            self._recv(deadline)
            self._dechunk()
        frame, self._body = self._body.split(b"\n\n", 1)
        event, data = "", None
        for line in frame.decode().split("\n"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data = json.loads(value)
            elif field == "":
                return "", value
        assert data is not None and data["eventType"] == event, frame
        return event, data

    def next_event(self, timeout: float = 5) -> tuple[str, dict[str, Any]]:
        """The next event, skipping keep-alive comments."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.next_frame(max(0.01, deadline - time.monotonic()))
            assert frame is not None, "stream ended"
            if frame[0]:
                return frame[0], frame[1]

    def events_until(self, event_type: str, timeout: float = 5) -> list[tuple[str, Any]]:
        """Events up to and including the first of ``event_type``."""
        out = []
        deadline = time.monotonic() + timeout
        while True:
            e = self.next_event(max(0.01, deadline - time.monotonic()))
            out.append(e)
            if e[0] == event_type:
                return out

    def close(self) -> None:
        self.sock.close()


def wait_until(check: Any, timeout: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Orchestrator]:
    runtime = LocalRuntime(tmp_path, NODES)
    o = Orchestrator(MemoryStore(), runtime, EventBus(), FakeClock())
    yield o
    runtime.close()
    cleanup_local_state(tmp_path)


def _serve(o: Orchestrator, settings: StreamSettings = FAST, sndbuf: int | None = None,
           credentials: Credentials | None = None) -> LiveServer:
    app = create_app(o, credentials or Credentials())
    app.state.event_stream_settings = settings
    return LiveServer(app, sndbuf)


@pytest.fixture
def live(orchestrator: Orchestrator) -> Iterator[LiveServer]:
    srv = _serve(orchestrator)
    yield srv
    srv.stop()


# ------------------------------------------------------------------ content negotiation


@pytest.mark.parametrize(("accept", "ok"), [
    (["text/event-stream"], True),
    (["application/json, text/event-stream;q=0.5"], True),
    (["TEXT/Event-Stream; charset=utf-8"], True),
    (["text/event-stream;q=0"], False),
    (["*/*"], False),
    (["application/json"], False),
    ([], False),
])
def test_accepts_event_stream(accept: list[str], ok: bool) -> None:
    assert accepts_event_stream(accept) is ok


def test_v2_events_answers_406_without_the_event_stream_accept(client: TestClient) -> None:
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
        r = client.get("/v2/events", headers=headers)
        assert r.status_code == 406, headers
        assert "text/event-stream" in r.json()["message"]


def test_dromos_events_rejects_unknown_streams(client: TestClient) -> None:
    r = client.get("/dromos/events?stream=nope", headers=ACCEPT)
    assert r.status_code == 422
    assert r.json()["details"][0]["path"] == "/stream"


def test_streams_stay_out_of_the_openapi_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/v2/events" not in paths and "/dromos/events" not in paths
    assert "/metrics" in paths


# ------------------------------------------------------------------ live streams


def test_attach_then_events_from_api_calls(live: LiveServer, orchestrator: Orchestrator) -> None:
    c = SSE(live.port, "/v2/events")
    assert c.read_head() == 200
    assert c.headers["content-type"].startswith("text/event-stream")
    assert c.headers["cache-control"] == "no-cache"
    event, data = c.next_event()
    assert event == "event_stream_attached"
    assert data["remoteAddress"] == "127.0.0.1"
    assert data["timestamp"].endswith("Z")

    r = httpx.post(live.url + "/v2/apps", json={"id": "/ev", "cmd": "sleep 600",
                                                "cpus": 0.1, "mem": 16})
    assert r.status_code == 201
    got = c.events_until("api_post_event")
    assert got[-1][1]["appDefinition"]["id"] == "/ev"
    assert got[-1][1]["uri"] == "/v2/apps/ev"
    assert httpx.delete(live.url + "/v2/apps/ev?force=true").status_code == 200
    got += c.events_until("app_terminated_event")
    assert got[-1][1]["appId"] == "/ev"
    for event, data in got:
        assert event in MARATHON_EVENT_TYPES
        assert {"eventType", "timestamp"} <= data.keys()
    c.close()


def test_event_type_filter_is_repeatable_and_applies_to_attach(live: LiveServer) -> None:
    c = SSE(live.port, "/v2/events?event_type=app_terminated_event&event_type=api_post_event")
    assert c.read_head() == 200
    httpx.post(live.url + "/v2/apps", json={"id": "/f", "cmd": "sleep 600", "cpus": 0.1,
                                            "mem": 16}).raise_for_status()
    httpx.delete(live.url + "/v2/apps/f?force=true").raise_for_status()
    # No attach (filtered out), no deployment_info: exactly the two asked for, in order.
    assert [e for e, _ in (c.next_event(), c.next_event())] == [
        "api_post_event", "app_terminated_event"]
    c.close()
    comma = SSE(live.port, "/v2/events?event_type=event_stream_attached,app_terminated_event")
    assert comma.next_event()[0] == "event_stream_attached"
    comma.close()


def test_dromos_events_never_reach_v2_events(live: LiveServer,
                                             orchestrator: Orchestrator) -> None:
    bus, now = orchestrator.bus, orchestrator.clock.now()
    v2 = SSE(live.port, "/v2/events")
    # Asking for a Dromos type by name does not opt in on the Marathon endpoint.
    v2_asking = SSE(live.port, "/v2/events?event_type=placement_rejected,app_terminated_event")
    everything = SSE(live.port, "/dromos/events", headers={})  # no Accept needed here
    dromos_only = SSE(live.port, "/dromos/events?stream=dromos")
    assert v2.next_event()[0] == "event_stream_attached"
    for c in (v2_asking, dromos_only):
        c.read_head()
    assert everything.next_event()[0] == "event_stream_attached"
    wait_until(lambda: bus.subscriber_count == 4, what="four subscribers")

    bus.publish("placement_rejected", now, stream=DROMOS, appId="/x", waiting=1, reason="r")
    bus.publish("job_run_started", now, stream=DROMOS, job="etl", runId="1")
    # A non-Marathon type wrongly put on the marathon stream is withheld too.
    bus.publish("job_run_finished", now, stream=MARATHON, job="etl", runId="1")
    bus.publish("app_terminated_event", now, appId="/marker")

    for c in (v2, v2_asking):
        e = c.events_until("app_terminated_event")
        assert [t for t, _ in e if t != "event_stream_attached"] == ["app_terminated_event"]
    seen = [t for t, _ in everything.events_until("app_terminated_event")]
    assert seen[-4:] == ["placement_rejected", "job_run_started", "job_run_finished",
                         "app_terminated_event"]
    assert dromos_only.next_event()[0] == "placement_rejected"
    assert dromos_only.next_event()[0] == "job_run_started"
    for c in (v2, v2_asking, everything, dromos_only):
        c.close()


def test_quiet_stream_sends_keepalive_comments(live: LiveServer) -> None:
    c = SSE(live.port, "/v2/events")
    assert c.next_event()[0] == "event_stream_attached"
    assert c.next_frame(timeout=3) == ("", "keep-alive")
    c.close()


def test_disconnect_unsubscribes_and_announces_detach(live: LiveServer,
                                                      orchestrator: Orchestrator) -> None:
    bus = orchestrator.bus
    baseline = bus.subscriber_count
    clients = [SSE(live.port, p) for p in ("/v2/events", "/v2/events", "/dromos/events")]
    for c in clients:
        assert c.next_event()[0] == "event_stream_attached"
    assert bus.subscriber_count == baseline + 3
    for c in clients:
        c.close()
    wait_until(lambda: bus.subscriber_count == baseline, what="unsubscribe after disconnect")
    detached = [e for e in bus.recent(50) if e.event_type == "event_stream_detached"]
    assert len(detached) == 3
    assert detached[0].to_json()["remoteAddress"] == "127.0.0.1"
    assert orchestrator.bus.stats().dropped_subscribers == 0


def test_disconnects_during_a_flood_of_events_all_unsubscribe(
        live: LiveServer, orchestrator: Orchestrator) -> None:
    # A disconnect that races a wake-up must still end the stream (on Python 3.11,
    # asyncio.wait_for could swallow that cancellation and keep the stream alive forever).
    bus = orchestrator.bus
    baseline = bus.subscriber_count
    clients = [SSE(live.port, "/v2/events") for _ in range(12)]
    for c in clients:
        assert c.next_event()[0] == "event_stream_attached"
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            bus.publish("app_terminated_event", orchestrator.clock.now(), appId="/flood")
            time.sleep(0.0005)

    publisher = threading.Thread(target=flood, daemon=True)
    publisher.start()
    try:
        for c in clients:
            c.close()
            time.sleep(0.01)
        wait_until(lambda: bus.subscriber_count == baseline, timeout=5,
                   what="every stream to end after its client left")
        wait_until(lambda: not live.server.server_state.tasks, timeout=5,
                   what="no request task left running")
    finally:
        stop.set()
        publisher.join(5)


class ClosingServer(uvicorn.Server):
    """What ``dromos serve`` needs: end the event streams when shutdown begins."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        close_streams(self.config.app.state)
        await super().shutdown(sockets)


def test_shutdown_ends_streams_instead_of_waiting_on_them(orchestrator: Orchestrator) -> None:
    app = create_app(orchestrator, Credentials())
    app.state.event_stream_settings = FAST
    srv = LiveServer(app, server_cls=ClosingServer)
    clients = [SSE(srv.port, "/v2/events"), SSE(srv.port, "/dromos/events")]
    for c in clients:
        assert c.next_event()[0] == "event_stream_attached"
    start = time.monotonic()
    srv.stop()
    # Well under the 10 s graceful-shutdown timeout, which is what an open stream would
    # otherwise hold shutdown for (uvicorn waits for open responses).
    assert time.monotonic() - start < 5
    assert not srv.thread.is_alive()
    for c in clients:
        while (frame := c.next_frame(timeout=2)) is not None:
            assert frame[0] in ("", "event_stream_attached", "event_stream_detached")
        assert c.eof
        c.close()
    assert orchestrator.bus.subscriber_count == 0


def test_streams_work_behind_authentication(orchestrator: Orchestrator) -> None:
    # BaseHTTPMiddleware wraps send/receive: streaming and disconnects must survive it.
    srv = _serve(orchestrator, credentials=Credentials(token="s3cret"))
    try:
        assert SSE(srv.port, "/v2/events").read_head() == 401
        c = SSE(srv.port, "/v2/events", headers={**ACCEPT, "Authorization": "token=s3cret"})
        assert c.next_event()[0] == "event_stream_attached"
        orchestrator.bus.publish("app_terminated_event", orchestrator.clock.now(), appId="/a")
        assert c.next_event()[0] == "app_terminated_event"
        c.close()
        wait_until(lambda: orchestrator.bus.subscriber_count == 0, what="unsubscribe")
    finally:
        srv.stop()


def test_slow_consumer_is_dropped_without_stalling_the_publisher(
        orchestrator: Orchestrator) -> None:
    bus, now = orchestrator.bus, orchestrator.clock.now()
    settings = StreamSettings(queue_size=1000, keepalive_seconds=0.3, detach_grace_seconds=5)
    srv = _serve(orchestrator, settings, sndbuf=16 * 1024)
    try:
        baseline = bus.subscriber_count
        slow = SSE(srv.port, "/v2/events", rcvbuf=4096)  # reads nothing until dropped
        fast = SSE(srv.port, "/v2/events")
        assert fast.next_event()[0] == "event_stream_attached"
        wait_until(lambda: bus.subscriber_count == baseline + 2, what="both attached")
        received: list[str] = []

        def read_fast() -> None:
            for event, data in fast.events_until("app_terminated_event", timeout=30):
                if event == "status_update_event":
                    received.append(data["taskId"])

        reader = threading.Thread(target=read_fast, daemon=True)
        reader.start()
        padding = "x" * 400  # ~550-byte frames: the slow client's buffers fill after ~200
        n = 5000
        # The publisher (the control loop in production) never waits on any client: all
        # 5,000 publishes complete while one client reads nothing and its socket buffers are
        # full. (If a publish waited on that client, this loop would never finish.) No timing
        # is asserted: speed is for bench/, behaviour is for tests.
        publisher = threading.Thread(target=lambda: [
            (bus.publish("status_update_event", now, taskId=f"t{i}",
                         taskStatus="TASK_RUNNING", appId="/busy", message=padding),
             time.sleep(0.02) if i % 100 == 99 else None)  # a busy loop, not a tight one
            for i in range(n)
        ], daemon=True)
        publisher.start()
        publisher.join(120)
        assert not publisher.is_alive(), "publishing stalled behind a client that never reads"
        bus.publish("app_terminated_event", now, appId="/busy")
        reader.join(30)
        assert received == [f"t{i}" for i in range(n)], "the reading client missed events"
        # Only the client that did not read was dropped, and it no longer holds a queue.
        assert bus.stats().dropped_subscribers == 1
        assert bus.subscriber_count == baseline + 1

        # The slow client reads at last: what was in flight, then the detach, then the end.
        frames = []
        while (f := slow.next_frame(timeout=10)) is not None:
            frames.append(f)
        events = [e for e, _ in frames if e]
        assert events[0] == "event_stream_attached"
        assert events[-1] == "event_stream_detached"
        assert frames[-1][1]["remoteAddress"] == "127.0.0.1"
        # It got what the socket buffers held when it stalled, then was cut off.
        assert 1 < events.count("status_update_event") < n - settings.queue_size
        fast.close()

        # Everyone else carries on.
        fresh = SSE(srv.port, "/v2/events")
        assert fresh.next_event()[0] == "event_stream_attached"
        bus.publish("app_terminated_event", now, appId="/after")
        assert fresh.events_until("app_terminated_event")[-1][1]["appId"] == "/after"
        fresh.close()
    finally:
        srv.stop()
