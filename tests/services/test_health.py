"""Health checking: the pure state machine by table, probes against real servers and
processes, and the monitor end to end on a real event loop with short intervals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from scheduler.clock import FakeClock, SystemClock
from scheduler.model.health import HealthCheck, HealthResult
from scheduler.model.task import Task
from scheduler.services.health import (
    HealthMonitor,
    probe_command,
    probe_http,
    probe_port,
    probe_tcp,
    record_probe,
    should_kill,
    task_health,
)
from tests.factories import make_task

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_check(**kw: Any) -> HealthCheck:
    """A check tuned for tests: probes every second, no grace, killed after 2 failures."""
    base: dict[str, Any] = {
        "intervalSeconds": 1,
        "gracePeriodSeconds": 0,
        "timeoutSeconds": 1,
        "maxConsecutiveFailures": 2,
    }
    base.update(kw)
    return HealthCheck.model_validate(base)


def probed_task(task_id: str = "web.1", ports: tuple[int, ...] = (),
                started_at: datetime | None = None) -> Task:
    """A running task of /web probed on 127.0.0.1 (the shared factory's task)."""
    return make_task("/web", host="127.0.0.1", version="v1", ports=ports, task_id=task_id,
                     started_at=started_at)


def wait_for(pred: Callable[[], bool], timeout: float = 4.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


# ---------------------------------------------------------------------------------------------
# record_probe, should_kill, task_health: tables
# ---------------------------------------------------------------------------------------------

EMPTY = HealthResult(task_id="web.1")
ALIVE = HealthResult(task_id="web.1", alive=True, first_success=at(1), last_success=at(1))
FAILING = HealthResult(
    task_id="web.1", alive=False, consecutive_failures=2, first_success=at(1),
    last_success=at(1), last_failure=at(3), last_failure_cause="HTTP 503",
)
GRACE_60 = make_check(gracePeriodSeconds=60)

# (id, prev, check, started_at, now, ok, cause, expected)
RECORD_CASES: list[tuple[str, HealthResult, HealthCheck, datetime | None, datetime, bool,
                         str | None, HealthResult]] = [
    ("failure in grace ignored", EMPTY, GRACE_60, at(0), at(10), False, "connection refused",
     HealthResult(task_id="web.1", last_failure=at(10), last_failure_cause="connection refused")),
    ("failure at grace end counts", EMPTY, GRACE_60, at(0), at(60), False, "HTTP 503",
     HealthResult(task_id="web.1", consecutive_failures=1, last_failure=at(60),
                  last_failure_cause="HTTP 503")),
    ("failure after grace counts without prior success", EMPTY, GRACE_60, at(0), at(61), False,
     "timed out after 2s",
     HealthResult(task_id="web.1", consecutive_failures=1, last_failure=at(61),
                  last_failure_cause="timed out after 2s")),
    ("failure in grace after a success counts", ALIVE, GRACE_60, at(0), at(5), False, "HTTP 500",
     HealthResult(task_id="web.1", alive=False, consecutive_failures=1, first_success=at(1),
                  last_success=at(1), last_failure=at(5), last_failure_cause="HTTP 500")),
    ("unknown start: grace treated as over", EMPTY, GRACE_60, None, at(1), False, "HTTP 500",
     HealthResult(task_id="web.1", consecutive_failures=1, last_failure=at(1),
                  last_failure_cause="HTTP 500")),
    ("failures accumulate", FAILING, GRACE_60, at(0), at(100), False, "exit status 1",
     HealthResult(task_id="web.1", consecutive_failures=3, first_success=at(1),
                  last_success=at(1), last_failure=at(100), last_failure_cause="exit status 1")),
    ("first success sets alive", EMPTY, GRACE_60, at(0), at(2), True, None,
     HealthResult(task_id="web.1", alive=True, first_success=at(2), last_success=at(2))),
    ("success resets failures, keeps last failure", FAILING, GRACE_60, at(0), at(9), True, None,
     HealthResult(task_id="web.1", alive=True, first_success=at(1), last_success=at(9),
                  last_failure=at(3), last_failure_cause="HTTP 503")),
    ("first success kept", ALIVE, GRACE_60, at(0), at(7), True, None,
     HealthResult(task_id="web.1", alive=True, first_success=at(1), last_success=at(7))),
    ("cause recorded, missing cause named", ALIVE, GRACE_60, at(0), at(4), False, None,
     HealthResult(task_id="web.1", alive=False, consecutive_failures=1, first_success=at(1),
                  last_success=at(1), last_failure=at(4), last_failure_cause="failed")),
]


@pytest.mark.parametrize(
    ("prev", "check", "started", "now", "ok", "cause", "expected"),
    [c[1:] for c in RECORD_CASES],
    ids=[c[0] for c in RECORD_CASES],
)
def test_record_probe(
    prev: HealthResult, check: HealthCheck, started: datetime | None, now: datetime, ok: bool,
    cause: str | None, expected: HealthResult,
) -> None:
    assert record_probe(prev, check, started, now, ok, cause) == expected


@pytest.mark.parametrize(
    ("failures", "limit", "kill"),
    [(0, 3, False), (2, 3, False), (3, 3, True), (4, 3, True), (1, 1, True), (99, 0, False)],
    ids=["none", "below", "at limit", "above", "limit one", "zero means never"],
)
def test_should_kill(failures: int, limit: int, kill: bool) -> None:
    result = HealthResult(task_id="t", consecutive_failures=failures)
    assert should_kill(result, make_check(maxConsecutiveFailures=limit)) is kill


GRACE_FAILURE = HealthResult(task_id="t", last_failure=at(1), last_failure_cause="refused")
COUNTED_FAILURE = HealthResult(task_id="t", consecutive_failures=1, last_failure=at(1))


@pytest.mark.parametrize(
    ("results", "expected"),
    [
        ([], None),
        ([EMPTY], None),
        ([GRACE_FAILURE], None),
        ([ALIVE], True),
        ([ALIVE, ALIVE], True),
        ([ALIVE, EMPTY], None),
        ([FAILING], False),
        ([ALIVE, FAILING], False),
        ([EMPTY, COUNTED_FAILURE], False),
    ],
    ids=["no checks", "never probed", "only grace failures", "alive", "all alive",
         "one not probed yet", "failing", "one failing", "failing beats unknown"],
)
def test_task_health(results: list[HealthResult], expected: bool | None) -> None:
    assert task_health(results) is expected


@pytest.mark.parametrize(
    ("check", "ports", "expected"),
    [
        (make_check(), (31000, 31001), 31000),
        (make_check(portIndex=1), (31000, 31001), 31001),
        (make_check(port=8080), (31000,), 8080),
        (make_check(portIndex=2), (31000,), None),
    ],
    ids=["default index 0", "port index", "fixed port", "missing index"],
)
def test_probe_port(check: HealthCheck, ports: tuple[int, ...], expected: int | None) -> None:
    assert probe_port(probed_task(ports=ports), check) == expected


# ---------------------------------------------------------------------------------------------
# Real servers
# ---------------------------------------------------------------------------------------------


class StatusServer:
    """A threaded HTTP server on 127.0.0.1. ``/status/N`` answers N (a 1xx is sent alone and
    the connection closed), ``/slow/S`` answers 200 after S seconds, anything else answers
    ``self.status``. ``hits`` counts requests, ``paths`` records them."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.status = 200
        self.hits = 0
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.hits += 1
                outer.paths.append(self.path)
                status = outer.status
                if self.path.startswith("/status/"):
                    status = int(self.path.split("/")[2])
                elif self.path.startswith("/slow/"):
                    time.sleep(float(self.path.split("/")[2]))
                    status = 200
                if status < 200:
                    self.send_response_only(status)
                    self.end_headers()
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.end_headers()
                self.wfile.write(b"ok")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def server() -> Iterator[StatusServer]:
    s = StatusServer()
    yield s
    s.close()


@pytest.fixture
def closed_port() -> int:
    # Bind then close: nothing listens there any more, so connecting is refused.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("path", "ignore_1xx", "expected"),
    [
        ("/status/200", False, (True, None)),
        ("/status/204", False, (True, None)),
        ("/status/301", False, (True, None)),
        ("/status/399", False, (True, None)),
        ("/status/400", False, (False, "HTTP 400")),
        ("/status/503", False, (False, "HTTP 503")),
        ("/status/102", False, (False, "HTTP 102")),
        ("/status/102", True, (None, "HTTP 102")),
        ("/status/503", True, (False, "HTTP 503")),
    ],
    ids=["200", "204", "301 not followed", "399", "400", "503", "1xx fails",
         "1xx ignored", "ignore_1xx does not ignore 5xx"],
)
def test_probe_http_statuses(
    server: StatusServer, path: str, ignore_1xx: bool, expected: tuple[bool | None, str | None]
) -> None:
    got = asyncio.run(probe_http("127.0.0.1", server.port, path, 2, ignore_1xx=ignore_1xx))
    assert got == expected


def test_probe_http_sends_path_and_query(server: StatusServer) -> None:
    assert asyncio.run(probe_http("127.0.0.1", server.port, "/health?deep=1", 2)) == (True, None)
    assert asyncio.run(probe_http("127.0.0.1", server.port, "no slash", 2)) == (True, None)
    assert server.paths == ["/health?deep=1", "/no%20slash"]


def test_probe_http_timeout(server: StatusServer) -> None:
    started = time.monotonic()
    got = asyncio.run(probe_http("127.0.0.1", server.port, "/slow/3", 0.3))
    assert got == (False, "timed out after 0.3s")
    assert time.monotonic() - started < 2.9  # the server answers only after 3 s


def test_probe_http_refused(closed_port: int) -> None:
    assert asyncio.run(probe_http("127.0.0.1", closed_port, "/", 2)) == (
        False, "connection refused")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_probe_https_self_signed(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=not-this-host", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    s = StatusServer(tls=ctx)
    try:
        got = asyncio.run(probe_http("127.0.0.1", s.port, "/status/503", 2, https=True))
        assert got == (False, "HTTP 503")  # the TLS handshake passed: the status was read
        assert asyncio.run(probe_http("127.0.0.1", s.port, "/", 2, https=True)) == (True, None)
    finally:
        s.close()


def test_probe_tcp(server: StatusServer, closed_port: int) -> None:
    assert asyncio.run(probe_tcp("127.0.0.1", server.port, 2)) == (True, None)
    assert asyncio.run(probe_tcp("127.0.0.1", closed_port, 2)) == (False, "connection refused")


PATH_ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["/bin/true"], {}, (True, None)),
        (["/bin/false"], {}, (False, "exit status 1")),
        (["/bin/sh", "-c", "exit 3"], {}, (False, "exit status 3")),
        (["/bin/sh", "-c", "kill -SEGV $$"], {}, (False, "killed by signal SIGSEGV")),
        (["/bin/sh", "-c", 'test "$FOO" = bar && test -z "$HOME"'], {"FOO": "bar"},
         (True, None)),
        (["/no/such/check"], {}, (False, "command not found: /no/such/check")),
        ([], {}, (False, "empty command")),
    ],
    ids=["true", "false", "exit 3", "signal", "exactly the given env", "not found", "empty"],
)
def test_probe_command(
    argv: list[str], env: dict[str, str], expected: tuple[bool, str | None]
) -> None:
    assert asyncio.run(probe_command(argv, env, 5)) == expected


def _running(pid: int) -> bool:
    """Alive and not a zombie (pid 1 of a container may never reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _spawn_sleeper_argv(pidfile: Path) -> list[str]:
    # The shell backgrounds a grandchild and waits: killing only the shell would leave it.
    return ["/bin/sh", "-c", f"sleep 30 & echo $! > {pidfile}; wait"]


def test_probe_command_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    got = asyncio.run(probe_command(_spawn_sleeper_argv(pidfile), PATH_ENV, 0.5))
    assert got == (False, "timed out after 0.5s")
    assert time.monotonic() - started < 2
    grandchild = int(pidfile.read_text())
    assert wait_for(lambda: not _running(grandchild), 2)


def test_probe_command_cancelled_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"

    async def cancel_midway() -> None:
        probe = asyncio.create_task(probe_command(_spawn_sleeper_argv(pidfile), PATH_ENV, 30))
        while not pidfile.exists() or not pidfile.read_text().strip():
            await asyncio.sleep(0.02)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe

    asyncio.run(cancel_midway())
    grandchild = int(pidfile.read_text())
    assert wait_for(lambda: not _running(grandchild), 2)


# ---------------------------------------------------------------------------------------------
# HealthMonitor end to end (real loop, real servers, a fake runtime that is not under test)
# ---------------------------------------------------------------------------------------------


class FakeRuntime:
    """probe_host/check_command as a local runtime would answer them."""

    def probe_host(self, task: Task) -> str:
        return "127.0.0.1"

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]:
        env = dict(PATH_ENV)
        env.update({f"PORT{i}": str(p) for i, p in enumerate(task.ports)})
        return ["/bin/sh", "-c", command], env


@pytest.fixture
def monitor() -> Iterator[HealthMonitor]:
    m = HealthMonitor(FakeRuntime(), SystemClock())
    m.start_in_thread()
    yield m
    m.stop()


def alive(m: HealthMonitor, task_id: str) -> list[bool]:
    return [r.alive for r in m.results(task_id)]


def test_monitor_healthy_then_killed_when_server_stops(monitor: HealthMonitor) -> None:
    srv = StatusServer()
    task = probed_task(ports=(srv.port,), started_at=datetime.now(UTC))
    monitor.sync([(task, [make_check(path="/health")])])
    assert wait_for(lambda: alive(monitor, task.id) == [True], 2.0)  # first probe is immediate
    changes = monitor.drain_changes()
    assert [(t, i, r.alive) for t, i, r in changes] == [(task.id, 0, True)]
    assert task_health(monitor.results(task.id)) is True
    assert monitor.to_kill() == []

    srv.close()
    assert wait_for(lambda: monitor.to_kill() != [], 4.0)  # 2 failures at 1 s intervals
    [(task_id, cause)] = monitor.to_kill()
    assert task_id == task.id
    assert "connection refused" in cause and "2 consecutive failures" in cause
    [result] = monitor.results(task.id)
    assert result.consecutive_failures >= 2 and result.first_success is not None
    assert [(t, r.alive) for t, _, r in monitor.drain_changes()] == [(task.id, False)]
    assert task_health(monitor.results(task.id)) is False


def test_monitor_tcp_and_command_checks(monitor: HealthMonitor, server: StatusServer) -> None:
    task = probed_task(ports=(server.port,), started_at=datetime.now(UTC))
    checks = [
        make_check(protocol="TCP"),
        make_check(protocol="COMMAND", command={"value": 'test -n "$PORT0"'}),
        make_check(protocol="COMMAND", command={"value": "exit 7"}, maxConsecutiveFailures=0),
    ]
    monitor.sync([(task, checks)])
    assert wait_for(lambda: alive(monitor, task.id)[:2] == [True, True], 2.5)
    assert wait_for(lambda: monitor.results(task.id)[2].consecutive_failures >= 1, 2.5)
    assert monitor.results(task.id)[2].last_failure_cause == "exit status 7"
    assert monitor.to_kill() == []  # maxConsecutiveFailures 0: never killed


def test_monitor_grace_period_follows_the_clock(closed_port: int) -> None:
    clock = FakeClock(T0)
    m = HealthMonitor(FakeRuntime(), clock)
    m.start_in_thread()
    try:
        task = probed_task(ports=(closed_port,), started_at=T0)
        m.sync([(task, [make_check(gracePeriodSeconds=30)])])
        assert wait_for(lambda: m.results(task.id)[0].last_failure is not None, 2.0)
        [r] = m.results(task.id)
        assert r.last_failure_cause == "connection refused" and r.consecutive_failures == 0
        assert task_health(m.results(task.id)) is None  # starting, not unhealthy
        clock.advance(31)
        assert wait_for(lambda: m.to_kill() != [], 4.0)
        assert m.drain_changes() == []  # never alive, so alive never flipped
    finally:
        m.stop()


def test_monitor_ignore_http_1xx(monitor: HealthMonitor, server: StatusServer) -> None:
    task = probed_task(ports=(server.port,), started_at=datetime.now(UTC))
    checks = [make_check(path="/status/102", ignoreHttp1xx=True), make_check(path="/status/102")]
    monitor.sync([(task, checks)])
    assert wait_for(lambda: monitor.results(task.id)[1].consecutive_failures >= 1, 2.0)
    ignored, failed = monitor.results(task.id)
    assert ignored == HealthResult(task_id=task.id)  # untouched: neither pass nor fail
    assert failed.last_failure_cause == "HTTP 102"
    assert server.paths.count("/status/102") >= 2


def test_monitor_slow_probe_does_not_delay_others(
    monitor: HealthMonitor, server: StatusServer
) -> None:
    slow = probed_task("slow.1", ports=(server.port,))
    fast = probed_task("fast.1", ports=(server.port,))
    monitor.sync([(slow, [make_check(path="/slow/3", timeoutSeconds=3)]),
                  (fast, [make_check()])])
    started = time.monotonic()
    assert wait_for(lambda: alive(monitor, fast.id) == [True], 2.5)
    assert time.monotonic() - started < 2.5  # not held behind the 3 s slow probe
    assert alive(monitor, slow.id) == [False]


def test_monitor_forgets_removed_tasks(monitor: HealthMonitor, server: StatusServer) -> None:
    task = probed_task(ports=(server.port,))
    monitor.sync([(task, [make_check()])])
    assert wait_for(lambda: alive(monitor, task.id) == [True], 2.0)
    monitor.sync([])
    assert monitor.results(task.id) == []
    assert monitor.export_state()["tasks"] == {}
    time.sleep(0.2)  # let a probe in flight land (it must be discarded)
    hits = server.hits
    time.sleep(1.3)
    assert server.hits == hits  # probing stopped
    assert monitor.results(task.id) == []


def test_monitor_check_change_starts_over(monitor: HealthMonitor, server: StatusServer) -> None:
    task = probed_task(ports=(server.port,))
    monitor.sync([(task, [make_check()])])
    assert wait_for(lambda: alive(monitor, task.id) == [True], 2.0)
    monitor.sync([(task, [make_check(path="/status/503")])])
    [r] = monitor.results(task.id)
    assert r.first_success is None  # a different check: fresh result
    assert wait_for(lambda: monitor.results(task.id)[0].last_failure_cause == "HTTP 503", 2.0)


def test_monitor_missing_port_is_a_failure(monitor: HealthMonitor) -> None:
    task = probed_task(ports=())
    monitor.sync([(task, [make_check()])])
    assert wait_for(lambda: monitor.results(task.id)[0].consecutive_failures >= 1, 2.0)
    assert monitor.results(task.id)[0].last_failure_cause == "task has no port at index 0"


def test_export_import_round_trip(monitor: HealthMonitor, server: StatusServer) -> None:
    task = probed_task(ports=(server.port,), started_at=datetime.now(UTC))
    check = make_check()
    monitor.sync([(task, [check])])
    assert wait_for(lambda: alive(monitor, task.id) == [True], 2.0)
    monitor.stop()
    saved = json.loads(json.dumps(monitor.export_state()))  # really JSON
    before = monitor.results(task.id)

    restarted = HealthMonitor(FakeRuntime(), SystemClock())
    restarted.start_in_thread()
    try:
        restarted.import_state(saved)
        assert restarted.export_state() == saved  # unconfirmed state is kept for the next save
        hits = server.hits
        time.sleep(0.3)
        assert server.hits == hits  # restored but unconfirmed: not probed
        restarted.sync([(task, [check])])
        [r] = restarted.results(task.id)
        assert r.first_success == before[0].first_success and r.alive
        assert task_health(restarted.results(task.id)) is True
        # Confirmed by sync: probing resumes where it left off.
        assert wait_for(lambda: server.hits > hits, 2.0)
        assert wait_for(
            lambda: restarted.results(task.id)[0].last_success != before[0].last_success, 2.0)
        assert restarted.results(task.id)[0].first_success == before[0].first_success
        assert restarted.drain_changes() == []  # it was alive before the restart too
    finally:
        restarted.stop()

    # A changed check, or a task no longer running, drops the restored state.
    other = HealthMonitor(FakeRuntime(), SystemClock())
    other.import_state(saved)
    other.sync([(task, [make_check(path="/other")])])
    assert other.results(task.id) == [HealthResult(task_id=task.id)]
    gone = HealthMonitor(FakeRuntime(), SystemClock())
    gone.import_state(saved)
    gone.sync([])
    assert gone.export_state()["tasks"] == {}


def test_import_ignores_unknown_or_malformed_state() -> None:
    m = HealthMonitor(FakeRuntime(), SystemClock())
    m.import_state({"version": 99, "tasks": {"t": {}}})
    m.import_state({"version": 1, "tasks": {"t": {"checks": {"0": {"check": "nonsense"}}},
                                            "u": "nonsense"}})
    assert m.export_state() == {"version": 1, "tasks": {}}


def test_run_directly_is_cancellable_and_exclusive(server: StatusServer) -> None:
    async def scenario() -> None:
        m = HealthMonitor(FakeRuntime(), SystemClock(), max_concurrency=1)
        runner = asyncio.create_task(m.run())
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            await m.run()
        task = probed_task(ports=(server.port,))
        m.sync([(task, [make_check()])])
        for _ in range(100):
            if alive(m, task.id) == [True]:
                break
            await asyncio.sleep(0.02)
        assert alive(m, task.id) == [True]
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert alive(m, task.id) == [True]  # results survive stopping

    asyncio.run(scenario())
