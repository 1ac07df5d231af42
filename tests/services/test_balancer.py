"""The built-in balancer against real sockets: real TCP and HTTP backends, real listeners.

Backends answer with their name on connect (then echo), so each test can see where every
connection went."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from scheduler.model.app import AppSpec, parse_app
from scheduler.model.task import Task, TaskState
from scheduler.services import balancer as balancer_module
from scheduler.services.balancer import Balancer, Routes, routable, routes_from

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NamedServer(socketserver.ThreadingTCPServer):
    """Says its name on connect, then echoes until the client closes."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, name: str) -> None:
        self.name = name

        class Handler(socketserver.BaseRequestHandler):
            def handle(inner) -> None:
                inner.request.sendall(name.encode() + b"\n")
                while data := inner.request.recv(4096):
                    inner.request.sendall(data)

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = int(self.server_address[1])
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def backend(self) -> tuple[str, int, str]:
        return ("127.0.0.1", self.port, self.name)


@pytest.fixture
def named() -> Iterator[Callable[[str], NamedServer]]:
    servers: list[NamedServer] = []

    def make(name: str) -> NamedServer:
        servers.append(NamedServer(name))
        return servers[-1]

    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.fixture
def events() -> list[tuple[str, dict[str, Any]]]:
    return []


@pytest.fixture
def lb(events: list[tuple[str, dict[str, Any]]]) -> Iterator[Balancer]:
    b = Balancer(on_event=lambda kind, payload: events.append((kind, payload)),
                 wait_for_backend=1.0)
    b.start()
    yield b
    b.stop()


def sync(lb: Balancer, routes: dict[int, list[tuple[str, int, str]]]) -> None:
    lb.sync(routes).result(timeout=5)


def hello(port: int) -> tuple[socket.socket, str]:
    """Connect through the balancer; return the open socket and the backend's name."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    f = s.makefile("rb")
    line = f.readline().decode().strip()
    return s, line


def who(port: int) -> str:
    s, name = hello(port)
    s.close()
    return name


# ------------------------------------------------------------------ routing

def test_round_robin_over_backends(lb: Balancer, named: Callable[[str], NamedServer]) -> None:
    backends = [named(n).backend() for n in ("a", "b", "c")]
    port = free_port()
    sync(lb, {port: backends})
    assert lb.listening() == {port}
    assert [who(port) for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_data_flows_both_ways_and_half_close_is_passed_on(
        lb: Balancer, named: Callable[[str], NamedServer]) -> None:
    port = free_port()
    sync(lb, {port: [named("a").backend()]})
    s, name = hello(port)
    payload = bytes(range(256)) * 4096  # 1 MiB, more than any buffer
    got = bytearray()
    reader = threading.Thread(target=lambda: got.extend(_read_all(s)))
    reader.start()
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)  # the echo server sees EOF, closes, and we see EOF
    reader.join(10)
    s.close()
    assert name == "a" and bytes(got) == payload


def _read_all(s: socket.socket) -> bytes:
    chunks = []
    while data := s.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def test_least_connections_prefers_the_idlest(
        named: Callable[[str], NamedServer]) -> None:
    lb = Balancer(policy="least-connections")
    lb.start()
    try:
        port = free_port()
        sync(lb, {port: [named(n).backend() for n in ("a", "b", "c")]})
        held = [hello(port) for _ in range(3)]
        assert sorted(n for _, n in held) == ["a", "b", "c"]
        held[1][0].close()  # b is now the only idle one
        _wait(lambda: lb.active_connections(held[1][1]) == 0)
        for _ in range(3):
            assert who(port) == held[1][1]
            _wait(lambda: lb.active_connections(held[1][1]) == 0)
        for s, _ in held:
            s.close()
    finally:
        lb.stop()


def test_a_refusing_backend_is_skipped_transparently(
        lb: Balancer, named: Callable[[str], NamedServer]) -> None:
    dead = ("127.0.0.1", free_port(), "dead")  # nothing listens there
    port = free_port()
    sync(lb, {port: [dead, named("a").backend()]})
    assert [who(port) for _ in range(4)] == ["a"] * 4
    assert lb.active_connections("dead") == 0


def test_http_through_the_balancer(lb: Balancer) -> None:
    servers = []
    for name in ("x", "y"):
        class Handler(BaseHTTPRequestHandler):
            me = name
            protocol_version = "HTTP/1.1"  # keep-alive, so the Client below reuses one

            def do_GET(self) -> None:
                body = self.me.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(srv)
    try:
        port = free_port()
        sync(lb, {port: [("127.0.0.1", int(s.server_address[1]), f"t{i}")
                         for i, s in enumerate(servers)]})
        bodies = [httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text for _ in range(10)]
        assert bodies == ["x", "y"] * 5
        with httpx.Client(timeout=5) as client:  # keep-alive: one connection, one backend
            assert {client.get(f"http://127.0.0.1:{port}/").text for _ in range(5)} in (
                {"x"}, {"y"})
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


# ------------------------------------------------------------------ draining

def test_drained_task_gets_no_new_connections_while_open_ones_finish(
        lb: Balancer, named: Callable[[str], NamedServer]) -> None:
    a, b = named("a"), named("b")
    port = free_port()
    sync(lb, {port: [a.backend(), b.backend()]})
    s, name = hello(port)
    assert name == "a" and lb.active_connections("a") == 1

    lb.stop_routing(["a"])
    assert lb.backends(port) == [b.backend()]
    assert [who(port) for _ in range(4)] == ["b"] * 4
    # A later sync that still lists the task (its kill not yet recorded) keeps it out.
    sync(lb, {port: [a.backend(), b.backend()]})
    assert [who(port) for _ in range(2)] == ["b"] * 2

    s.sendall(b"still here")  # the open connection keeps working
    assert s.recv(100) == b"still here"
    assert lb.active_connections("a") == 1
    s.close()
    _wait(lambda: lb.active_connections("a") == 0)

    # Once the task left the table, its id is forgotten (no leak).
    sync(lb, {port: [b.backend()]})
    lb.resume_routing(["a"])
    sync(lb, {port: [a.backend(), b.backend()]})
    assert {who(port) for _ in range(2)} == {"a", "b"}


def test_a_client_waits_for_a_backend_to_appear(
        lb: Balancer, named: Callable[[str], NamedServer]) -> None:
    port = free_port()
    sync(lb, {port: []})
    a = named("a")
    threading.Timer(0.3, lambda: lb.sync({port: [a.backend()]})).start()
    assert who(port) == "a"  # the client was held, not refused


def test_without_backends_a_client_is_closed_after_the_wait(lb: Balancer) -> None:
    port = free_port()
    sync(lb, {port: []})
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert s.recv(10) == b""
    s.close()
    assert 0.9 <= time.monotonic() - t0 < 4


# ------------------------------------------------------------------ listeners

def test_listener_closes_when_the_app_goes_away(
        lb: Balancer, named: Callable[[str], NamedServer]) -> None:
    p1, p2 = free_port(), free_port()
    a = named("a")
    sync(lb, {p1: [a.backend()], p2: [a.backend()]})
    assert lb.listening() == {p1, p2} and who(p1) == "a"
    held, _ = hello(p2)
    sync(lb, {p1: [a.backend()]})
    assert lb.listening() == {p1}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p2), timeout=5)
    held.sendall(b"x")  # a connection already made is not cut
    assert held.recv(1) == b"x"
    held.close()
    # The port can be bound again straight away (an app re-created on it).
    sync(lb, {p2: [a.backend()]})
    assert who(p2) == "a"


def test_bind_failure_is_reported_not_fatal_and_retried(
        lb: Balancer, named: Callable[[str], NamedServer],
        events: list[tuple[str, dict[str, Any]]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(balancer_module, "BIND_RETRY_MIN", 0.2)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    busy = int(squatter.getsockname()[1])
    ok = free_port()
    a = named("a")
    lb.sync(Routes({busy: [a.backend()], ok: [a.backend()]},
                   owners={busy: "/web", ok: "/api"})).result(5)
    assert lb.listening() == {ok} and who(ok) == "a"  # the other port is unaffected
    assert busy in lb.unbound() and "cannot listen on 127.0.0.1:" in lb.unbound()[busy]
    assert events == [("service_port_unavailable",
                       {"servicePort": busy, "appId": "/web", "message": lb.unbound()[busy]})]
    sync(lb, {busy: [a.backend()], ok: [a.backend()]})
    assert len(events) == 1  # reported once per outage, not every pass

    squatter.close()
    time.sleep(0.3)
    lb.sync(Routes({busy: [a.backend()], ok: [a.backend()]},
                   owners={busy: "/web", ok: "/api"})).result(5)
    assert lb.listening() == {busy, ok} and lb.unbound() == {}
    assert events[-1][0] == "service_port_available" and who(busy) == "a"


def test_stop_closes_listeners_and_connections(named: Callable[[str], NamedServer]) -> None:
    lb = Balancer()
    lb.start()
    port = free_port()
    sync(lb, {port: [named("a").backend()]})
    s, _ = hello(port)
    lb.stop()
    assert s.recv(10) == b""
    s.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


# ------------------------------------------------------------------ the routing table

def app(app_id: str, **fields: Any) -> AppSpec:
    return parse_app({"id": app_id, "cmd": "x", **fields})


def task(app_id: str, n: int, state: TaskState = TaskState.RUNNING,
         ports: tuple[int, ...] = (31000,), killing: bool = False) -> Task:
    return Task(id=f"{app_id.strip('/')}.{n}", app_id=app_id, host="node-a", version="v",
                state=state, staged_at=T0, ports=ports,
                kill_requested_at=T0 if killing else None)


def test_routes_from_keeps_only_routable_tasks() -> None:
    web = app("/web", portDefinitions=[{"port": 10000}, {"port": 10001}],
              healthChecks=[{"protocol": "TCP"}])
    plain = app("/plain", portDefinitions=[{"port": 10002}])
    tasks = [
        task("/web", 1, ports=(31001, 31002)),                      # healthy
        task("/web", 2, ports=(31003, 31004)),                      # unhealthy
        task("/web", 3, ports=(31005, 31006)),                      # no result yet
        task("/web", 4, ports=(31007, 31008), killing=True),        # being killed
        task("/web", 5, TaskState.KILLING, ports=(31009, 31010)),
        task("/web", 6, TaskState.STARTING, ports=(31011, 31012)),
        task("/plain", 1, ports=(31013,)),                          # no checks: routable
        task("/plain", 2, ports=(31014,)),                          # not ready yet
    ]
    health = {"web.1": True, "web.2": False, "web.3": None, "web.4": True}
    ready = {"plain.2": False}
    routes = routes_from([web, plain], tasks, health, ready,
                         host_of=lambda t: "10.0.0.1")
    assert routes == {
        10000: [("10.0.0.1", 31001, "web.1")],
        10001: [("10.0.0.1", 31002, "web.1")],
        10002: [("10.0.0.1", 31013, "plain.1")],
    }
    assert routes.owners == {10000: "/web", 10001: "/web", 10002: "/plain"}
    assert not routable(tasks[1], health) and routable(tasks[6], health, ready)


def test_routes_from_skips_ports_a_task_owns_and_non_tcp() -> None:
    required = app("/req", requirePorts=True, portDefinitions=[{"port": 10000}])
    udp = app("/dns", portDefinitions=[{"port": 10001, "protocol": "udp"},
                                       {"port": 10002, "protocol": "udp,tcp"}])
    idle = app("/idle", instances=0, portDefinitions=[{"port": 10003}])
    routes = routes_from([required, udp, idle],
                         [task("/req", 1, ports=(10000,)), task("/dns", 1, ports=(1, 2))], {})
    # requirePorts: the task listens on the service port itself; UDP is not balanced; an app
    # without tasks has no listener (descriptors scale with tasks, not with apps).
    assert routes == {10002: [("127.0.0.1", 2, "dns.1")]}


def test_routes_from_listens_only_for_apps_with_tasks() -> None:
    apps = [app(f"/a{i}", portDefinitions=[{"port": 10000 + i}]) for i in range(2000)]
    starting = task("/a7", 1, TaskState.STAGING, ports=(31000,))
    routes = routes_from(apps, [starting, task("/a9", 1, ports=(31001,))], {})
    # A task that is not routable yet still keeps its app's listener up (clients wait for
    # it); apps without any task get none.
    assert routes == {10007: [], 10009: [("127.0.0.1", 31001, "a9.1")]}


def test_routes_from_tolerates_tasks_with_fewer_ports() -> None:
    grown = app("/web", portDefinitions=[{"port": 10000}, {"port": 10001}])
    routes = routes_from([grown], [task("/web", 1, ports=(31000,))], {})
    assert routes == {10000: [("127.0.0.1", 31000, "web.1")], 10001: []}


def _wait(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)
