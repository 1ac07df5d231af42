"""Health checking for service tasks: a pure state machine, real probes, and a monitor.

Three layers, from pure to effectful:

1. :func:`record_probe`, :func:`should_kill`, :func:`task_health` decide. No I/O; time is an
   argument. They carry Marathon's semantics (grace period, consecutive failures, kill rule).
2. :func:`probe_http`, :func:`probe_tcp`, :func:`probe_command` act: one real probe each,
   bounded by a timeout, returning ``(outcome, cause)``.
3. :class:`HealthMonitor` schedules probes for many (task, check) pairs on its own event loop
   (optionally in a background thread) and feeds outcomes through :func:`record_probe`.

Semantics decisions (where Marathon leaves room or differs between its check flavours):

- **First probe timing.** A pair is probed as soon as the monitor learns of it (the task is
  already RUNNING), then every ``intervalSeconds`` measured start to start; a probe that
  overruns its interval is followed by the next one immediately, and probes of one pair never
  overlap. ``delaySeconds`` is ignored: it is the Mesos-executed checks' delay before the first
  check, whereas Dromos runs every check itself, like Marathon-executed checks, and the grace
  period already covers slow starters.
- **Grace period.** A failure counts iff ``now >= started_at + gracePeriodSeconds`` or the
  check has succeeded before. Failures inside the grace period before a first success are
  recorded (``last_failure``, ``last_failure_cause``) but change nothing else. Once the grace
  period is over failures count even without a prior success, so a task that never comes up
  is eventually replaced.
- **ignoreHttp1xx.** A 1xx status is normally a failure (pass is 200-399). With
  ``ignoreHttp1xx`` a 1xx response is *ignored*: neither pass nor fail, the result stays as it
  was. :func:`probe_http` reports that as outcome ``None``.
- **HTTPS** does not verify certificates (tasks use self-signed ones; Marathon does the same).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import ssl
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote

from scheduler.clock import Clock
from scheduler.model.health import HealthCheck, HealthResult
from scheduler.model.task import Task, TaskState
from scheduler.model.timefmt import parse_iso

log = logging.getLogger(__name__)

#: A probe's verdict: True pass, False fail, None ignored (an HTTP 1xx with ignoreHttp1xx).
Outcome = bool | None

# ---------------------------------------------------------------------------------------------
# 1. Pure decisions
# ---------------------------------------------------------------------------------------------


def record_probe(
    prev: HealthResult,
    check: HealthCheck,
    task_started_at: datetime | None,
    now: datetime,
    ok: bool,
    cause: str | None,
) -> HealthResult:
    """The result after one probe of ``check`` that passed (``ok``) or failed with ``cause``.

    - A pass sets ``alive``, clears ``consecutive_failures``, sets ``first_success`` (only the
      first time) and ``last_success``. ``last_failure``/``last_failure_cause`` are kept, so the
      API can still say why the task was last unhealthy.
    - A failure always sets ``last_failure`` and ``last_failure_cause``. It *counts* (adds one
      to ``consecutive_failures`` and clears ``alive``) iff the check has succeeded before or
      the grace period is over (``now >= task_started_at + gracePeriodSeconds``).
    - ``task_started_at`` ``None`` means the start is unknown; the grace period is then taken
      as over, because assuming a grace that cannot be measured could protect a dead task
      forever.
    """
    if ok:
        return replace(
            prev,
            alive=True,
            consecutive_failures=0,
            first_success=prev.first_success or now,
            last_success=now,
        )
    failed = replace(prev, last_failure=now, last_failure_cause=cause or "failed")
    in_grace = task_started_at is not None and now < task_started_at + timedelta(
        seconds=check.gracePeriodSeconds
    )
    if prev.first_success is None and in_grace:
        return failed
    return replace(failed, alive=False, consecutive_failures=prev.consecutive_failures + 1)


def should_kill(result: HealthResult, check: HealthCheck) -> bool:
    """True when the task failed ``maxConsecutiveFailures`` counted probes in a row.

    ``maxConsecutiveFailures == 0`` means never kill (Marathon's contract).
    """
    limit = check.maxConsecutiveFailures
    return limit > 0 and result.consecutive_failures >= limit


def _has_verdict(result: HealthResult) -> bool:
    """Whether anything that counts has happened (a pass, or a counted failure).

    Failures ignored during the grace period leave a result without a verdict: the task is
    starting, neither healthy nor unhealthy.
    """
    return result.alive or result.first_success is not None or result.consecutive_failures > 0


def task_health(results: Sequence[HealthResult]) -> bool | None:
    """One task's health over all of its app's checks, as Marathon counts it.

    - ``None``: the app has no checks (``results`` is empty), or some check has no verdict
      yet (never probed, or only failures ignored in the grace period) and none is failing.
    - ``True``: every check is alive (counts toward ``tasksHealthy``).
    - ``False``: some check has a verdict and is not alive (counts toward ``tasksUnhealthy``).
    """
    if not results:
        return None
    if any(_has_verdict(r) and not r.alive for r in results):
        return False
    if not all(_has_verdict(r) for r in results):
        return None
    return True


def probe_port(task: Task, check: HealthCheck) -> int | None:
    """The port a network check targets: ``check.port`` if set, else the task's port at
    ``check.effective_port_index``. ``None`` when the task has no port at that index."""
    if check.port is not None:
        return check.port
    idx = check.effective_port_index
    return task.ports[idx] if idx < len(task.ports) else None


# ---------------------------------------------------------------------------------------------
# 2. Probes (real I/O)
# ---------------------------------------------------------------------------------------------


def _seconds(timeout: float) -> str:
    return f"timed out after {timeout:g}s"


def _os_cause(exc: OSError, host: str) -> str:
    """A short, readable cause for a connection error."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {exc.strerror or exc}"
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _insecure_tls() -> ssl.SSLContext:
    # Like Marathon: tasks commonly serve self-signed certificates, and a health check asks
    # "does it answer", not "is it who it claims to be".
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _BadResponse(Exception):
    pass


def _request_target(path: str) -> str:
    # Only the path and query go on the request line; spaces and non-ASCII get escaped so a
    # sloppy path cannot break the request.
    path = path.split("#", 1)[0] or "/"
    if not path.startswith("/"):
        path = "/" + path
    return quote(path, safe="/?&=:@!$'()*+,;%~-._")


def _host_header(host: str, port: int) -> str:
    try:
        is_v6 = ipaddress.ip_address(host).version == 6
    except ValueError:
        is_v6 = False
    return f"[{host}]:{port}" if is_v6 else f"{host}:{port}"


async def _http_status(host: str, port: int, path: str, https: bool) -> int:
    """Send one GET and return the status code of the first response line."""
    reader, writer = await asyncio.open_connection(
        host, port, ssl=_insecure_tls() if https else None
    )
    try:
        request = (
            f"GET {_request_target(path)} HTTP/1.1\r\n"
            f"Host: {_host_header(host, port)}\r\n"
            "User-Agent: Dromos-HealthCheck/1\r\n"
            "Accept: */*\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(request.encode("ascii"))
        await writer.drain()
        try:
            line = await reader.readline()
        except (ValueError, asyncio.LimitOverrunError) as e:
            raise _BadResponse("malformed HTTP response") from e
    finally:
        # The verdict depends on the status line only; no need to wait for a graceful close.
        writer.close()
    if not line:
        raise _BadResponse("connection closed before a response")
    parts = line.decode("latin-1").split(None, 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise _BadResponse("malformed HTTP response")
    return int(parts[1])


async def probe_http(
    host: str,
    port: int,
    path: str,
    timeout: float,
    *,
    https: bool = False,
    ignore_1xx: bool = False,
) -> tuple[Outcome, str | None]:
    """GET ``path`` and judge the status of the first response line within ``timeout`` s.

    Returns ``(True, None)`` for 200-399 (redirects are not followed: a 3xx passes),
    ``(False, cause)`` for any other status, an error or a timeout, and ``(None, "HTTP 1xx")``
    for a 1xx status when ``ignore_1xx`` (Marathon's ``ignoreHttp1xx``: the response is
    ignored and the health result must stay as it was).

    Dromos speaks HTTP/1.1 itself rather than through httpx because httpx's transport treats
    every 1xx as an interim response and waits for a final one, which would make a 1xx status
    impossible to see, and ``ignoreHttp1xx`` meaningless. HTTPS skips certificate checks.
    """
    try:
        async with asyncio.timeout(timeout):
            status = await _http_status(host, port, path, https)
    except TimeoutError:  # before OSError: TimeoutError is one
        return False, _seconds(timeout)
    except OSError as e:
        return False, _os_cause(e, host)
    except _BadResponse as e:
        return False, str(e)
    if 200 <= status <= 399:
        return True, None
    if 100 <= status <= 199 and ignore_1xx:
        return None, f"HTTP {status}"
    return False, f"HTTP {status}"


async def probe_tcp(host: str, port: int, timeout: float) -> tuple[bool, str | None]:
    """Pass iff a TCP connection to ``host:port`` is established within ``timeout`` s."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return False, _seconds(timeout)
    except OSError as e:
        return False, _os_cause(e, host)
    writer.close()
    return True, None


def _kill_group(pid: int) -> None:
    # The check runs in its own session, so its process group id is its pid; killing the
    # group also takes down whatever the command spawned (a shell's children, for instance).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def probe_command(
    argv: Sequence[str], env: Mapping[str, str], timeout: float
) -> tuple[bool, str | None]:
    """Run ``argv`` (exec'd directly, never through a shell of ours) with exactly ``env`` as
    its environment; pass iff it exits 0 within ``timeout`` s.

    The command runs in a new session. On timeout or cancellation its whole process group is
    SIGKILLed; after a normal exit any stragglers it left in its group are killed too, so a
    check leaves nothing running. Output is discarded. Causes: ``"exit status 1"``,
    ``"killed by signal SIGSEGV"``, ``"timed out after 2s"``, ``"command not found: x"``.
    """
    if not argv:
        return False, "empty command"
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
    except FileNotFoundError:
        return False, f"command not found: {argv[0]}"
    except OSError as e:
        return False, f"cannot run {argv[0]}: {(e.strerror or str(e)).lower()}"
    try:
        async with asyncio.timeout(timeout):
            rc = await proc.wait()
    except TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        return False, _seconds(timeout)
    except BaseException:
        # Cancelled (monitor stopping, task gone): never leave the check behind, and reap it
        # (SIGKILL makes that immediate) so its transport closes with the loop.
        _kill_group(proc.pid)
        with contextlib.suppress(asyncio.CancelledError):
            await proc.wait()
        raise
    _kill_group(proc.pid)
    if rc == 0:
        return True, None
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = str(-rc)
        return False, f"killed by signal {name}"
    return False, f"exit status {rc}"


# ---------------------------------------------------------------------------------------------
# 3. The monitor
# ---------------------------------------------------------------------------------------------


class ProbeRuntime(Protocol):
    """The part of :class:`scheduler.runtimes.base.Runtime` the monitor needs.

    Both methods are called from the monitor's thread (through a worker thread, so a slow
    runtime cannot stall the probing loop); they must be thread-safe.
    """

    def probe_host(self, task: Task) -> str: ...

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]: ...


@dataclass(eq=False)
class _Pair:
    """State of one (task, check index). Identity matters: a worker only writes to the pair it
    was started for, so a pair replaced or removed meanwhile is never resurrected."""

    task: Task
    index: int
    check: HealthCheck
    first_seen: datetime
    result: HealthResult
    # The check as imported from a saved state, before the first sync confirmed it.
    imported_check: dict[str, Any] | None = None


_STATE_VERSION = 1
_MAX_CHANGES = 10_000


def _ts(d: datetime) -> str:
    # Full precision (unlike the API's millisecond ``iso``), so a restart changes nothing.
    return d.isoformat()


def _result_to_state(r: HealthResult) -> dict[str, Any]:
    def ts(d: datetime | None) -> str | None:
        return _ts(d) if d else None

    return {
        "alive": r.alive,
        "consecutive_failures": r.consecutive_failures,
        "first_success": ts(r.first_success),
        "last_success": ts(r.last_success),
        "last_failure": ts(r.last_failure),
        "last_failure_cause": r.last_failure_cause,
    }


def _result_from_state(task_id: str, d: Mapping[str, Any]) -> HealthResult:
    def ts(key: str) -> datetime | None:
        v = d.get(key)
        return parse_iso(v) if v else None

    return HealthResult(
        task_id=task_id,
        alive=bool(d.get("alive", False)),
        consecutive_failures=int(d.get("consecutive_failures", 0)),
        first_success=ts("first_success"),
        last_success=ts("last_success"),
        last_failure=ts("last_failure"),
        last_failure_cause=d.get("last_failure_cause"),
    )


def _check_key(check: HealthCheck) -> dict[str, Any]:
    return check.model_dump(mode="json")


class HealthMonitor:
    """Probes the checks of running tasks and keeps their :class:`HealthResult`.

    Threading: :meth:`sync`, :meth:`results`, :meth:`to_kill`, :meth:`drain_changes`,
    :meth:`export_state` and :meth:`import_state` may be called from any thread; one lock
    guards the shared table. Probing happens on the event loop running :meth:`run` (your own,
    or the background thread of :meth:`start_in_thread`): one asyncio task per (task, check)
    pair, so a slow probe only delays its own pair, and at most ``max_concurrency`` probes are
    in flight at once.

    Time: timestamps and the grace period come from ``clock``; the spacing of probes uses the
    event loop's monotonic time.
    """

    source = "dromos"
    """Where health comes from: Dromos's own probes (see services/api_health.py for the other)."""

    def __init__(self, runtime: ProbeRuntime, clock: Clock, *, max_concurrency: int = 64) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        self._runtime = runtime
        self._clock = clock
        self._max_concurrency = max_concurrency
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, int], _Pair] = {}
        self._check_counts: dict[str, int] = {}
        self._changes: deque[tuple[str, int, HealthResult]] = deque(maxlen=_MAX_CHANGES)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._main: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ table (any thread)

    def sync(self, targets: Sequence[tuple[Task, Sequence[HealthCheck]]]) -> None:
        """Make the probed set exactly ``targets``: the RUNNING tasks and their app's checks.

        New pairs start probing at once; pairs whose check at that index changed start over
        with a fresh result; pairs absent from ``targets`` stop and are forgotten. A known
        task's newer :class:`Task` value (ports, ``started_at``) replaces the old one without
        resetting its results. Idempotent; cheap when nothing changed.
        """
        now = self._clock.now()
        with self._lock:
            wanted: dict[tuple[str, int], _Pair] = {}
            counts: dict[str, int] = {}
            confirmed = False
            for task, checks in targets:
                counts[task.id] = len(checks)
                for i, check in enumerate(checks):
                    key = (task.id, i)
                    old = self._pairs.get(key)
                    if old is not None and old.imported_check is not None:
                        # Restored from a saved state: keep it only if the check is the same.
                        if old.imported_check == _check_key(check):
                            old.check, old.imported_check = check, None
                            confirmed = True  # it needs a worker now
                        else:
                            old = None
                    if old is not None and old.check == check:
                        old.task = task
                        wanted[key] = old
                    else:
                        wanted[key] = _Pair(task, i, check, now, HealthResult(task_id=task.id))
            # Wake the loop only when workers must start or stop: the orchestrator calls this
            # every pass, mostly with nothing new.
            changed = confirmed or wanted.keys() != self._pairs.keys() or any(
                self._pairs[k] is not p for k, p in wanted.items()
            )
            self._pairs = wanted
            self._check_counts = counts
            if changed:
                self._signal_locked()

    def results(self, task_id: str) -> list[HealthResult]:
        """One result per check index of the task's last :meth:`sync` (an empty, not-alive
        result for checks not probed yet); ``[]`` for a task not being monitored."""
        with self._lock:
            n = self._check_counts.get(task_id, 0)
            out = []
            for i in range(n):
                pair = self._pairs.get((task_id, i))
                out.append(pair.result if pair else HealthResult(task_id=task_id))
            return out

    def to_kill(self) -> list[tuple[str, str]]:
        """``(task id, cause)`` for every monitored task some check says must be killed
        (:func:`should_kill`). Repeated on every call while it holds, so kills must be
        idempotent; a task leaves the list once :meth:`sync` stops including it."""
        with self._lock:
            out: dict[str, str] = {}
            for (task_id, i), pair in sorted(self._pairs.items()):
                if task_id in out or not should_kill(pair.result, pair.check):
                    continue
                out[task_id] = (
                    f"{pair.result.consecutive_failures} consecutive failures of "
                    f"{pair.check.protocol.kind} health check {i}: "
                    f"{pair.result.last_failure_cause}"
                )
            return list(out.items())

    def drain_changes(self) -> list[tuple[str, int, HealthResult]]:
        """``(task id, check index, result)`` for every flip of ``alive`` since the last call,
        oldest first. At most the last 10 000 flips are kept between calls."""
        with self._lock:
            out = list(self._changes)
            self._changes.clear()
            return out

    def export_state(self) -> dict[str, Any]:
        """JSON-serialisable snapshot of every pair's result (and the check it belongs to), so
        health survives a Dromos restart through :meth:`import_state`."""
        with self._lock:
            tasks: dict[str, Any] = {}
            for (task_id, i), pair in sorted(self._pairs.items()):
                entry = tasks.setdefault(task_id, {"checks": {}})
                entry["checks"][str(i)] = {
                    "check": pair.imported_check or _check_key(pair.check),
                    "first_seen": _ts(pair.first_seen),
                    "result": _result_to_state(pair.result),
                }
            return {"version": _STATE_VERSION, "tasks": tasks}

    def import_state(self, data: Mapping[str, Any]) -> None:
        """Restore results saved by :meth:`export_state`; call before the first :meth:`sync`.

        A restored pair is only kept by the next :meth:`sync` if that task is still targeted
        with an identical check at the same index; otherwise it is dropped. Data of an unknown
        version, or malformed entries, are ignored (health then starts over: safe, just slower).
        """
        if data.get("version") != _STATE_VERSION:
            return
        restored: dict[tuple[str, int], _Pair] = {}
        saved_checks = [
            (task_id, idx, saved)
            for task_id, entry in (data.get("tasks") or {}).items()
            if isinstance(entry, Mapping) and isinstance(entry.get("checks"), Mapping)
            for idx, saved in entry["checks"].items()
        ]
        for task_id, idx, saved in saved_checks:
            try:
                check_dump = dict(saved["check"])
                check = HealthCheck.model_validate(check_dump)
                first_seen = parse_iso(saved["first_seen"])
                pair = _Pair(
                    # A placeholder until sync supplies the real task value.
                    task=Task(id=task_id, app_id="", host="", version="",
                              state=TaskState.RUNNING, staged_at=first_seen),
                    index=int(idx),
                    check=check,
                    first_seen=first_seen,
                    result=_result_from_state(task_id, saved["result"]),
                    imported_check=check_dump,
                )
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                log.warning("dropping saved health state of %s[%s]: %s", task_id, idx, e)
                continue
            restored[(task_id, int(idx))] = pair
        with self._lock:
            for key, pair in restored.items():
                self._pairs.setdefault(key, pair)
            # No worker starts for restored pairs until sync confirms them (see _reconcile).

    # ------------------------------------------------------------------ the loop

    async def run(self) -> None:
        """Probe until cancelled. Only one ``run`` at a time per monitor."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        with self._lock:
            if self._loop is not None:
                raise RuntimeError("HealthMonitor.run is already running")
            self._loop, self._wake = loop, wake
        sem = asyncio.Semaphore(self._max_concurrency)
        workers: dict[tuple[str, int], tuple[_Pair, asyncio.Task[None]]] = {}
        try:
            while True:
                # Clear before reading the table: a sync landing after this is signalled again.
                wake.clear()
                self._reconcile(workers, sem)
                await wake.wait()
        finally:
            for _, worker in workers.values():
                worker.cancel()
            await asyncio.gather(*(w for _, w in workers.values()), return_exceptions=True)
            with self._lock:
                self._loop = self._wake = None

    def start_in_thread(self) -> None:
        """Run :meth:`run` on a fresh event loop in a daemon thread; returns once it runs."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("HealthMonitor thread already started")
        started = threading.Event()

        async def main() -> None:
            self._main = asyncio.current_task()
            started.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self.run()

        self._thread = threading.Thread(
            target=lambda: asyncio.run(main()), name="dromos-health", daemon=True
        )
        self._thread.start()
        started.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread started by :meth:`start_in_thread` (cancels probes in flight,
        killing running COMMAND checks) and wait up to ``timeout`` s for it. Results are kept."""
        thread, main = self._thread, self._main
        if thread is None:
            return
        with self._lock:
            loop = self._loop
        if loop is not None and main is not None:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(main.cancel)
        thread.join(timeout)
        self._thread = self._main = None

    # ------------------------------------------------------------------ internals

    def _signal_locked(self) -> None:
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # loop closing: run() is ending anyway
                self._loop.call_soon_threadsafe(self._wake.set)

    def _reconcile(
        self,
        workers: dict[tuple[str, int], tuple[_Pair, asyncio.Task[None]]],
        sem: asyncio.Semaphore,
    ) -> None:
        """On the loop: one worker per confirmed pair, none for anything else."""
        with self._lock:
            live = {k: p for k, p in self._pairs.items() if p.imported_check is None}
        for key, (pair, worker) in list(workers.items()):
            if live.get(key) is not pair:
                worker.cancel()
                del workers[key]
        for key, pair in live.items():
            if key not in workers:
                worker = asyncio.create_task(self._work(key, pair, sem), name=f"health:{key}")
                workers[key] = (pair, worker)

    async def _work(self, key: tuple[str, int], pair: _Pair, sem: asyncio.Semaphore) -> None:
        loop = asyncio.get_running_loop()
        interval = pair.check.intervalSeconds
        next_at = loop.time()
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                async with sem:
                    ok, cause = await self._probe(pair)
            except Exception as e:  # a bug must not silently end probing of this pair
                log.exception("health probe of %s crashed", key)
                ok, cause = False, f"internal error: {e}"
            if not self._record(key, pair, ok, cause):
                return
            next_at = max(next_at + interval, loop.time())

    async def _probe(self, pair: _Pair) -> tuple[Outcome, str | None]:
        with self._lock:
            task, check = pair.task, pair.check
        timeout = float(check.timeoutSeconds)
        kind = check.protocol.kind
        try:
            if kind == "COMMAND":
                assert check.command is not None  # guaranteed by HealthCheck validation
                argv, env = await asyncio.to_thread(
                    self._runtime.check_command, task, check.command.value
                )
                return await probe_command(argv, env, timeout)
            host = await asyncio.to_thread(self._runtime.probe_host, task)
        except Exception as e:
            return False, f"cannot prepare probe: {e}"
        port = probe_port(task, check)
        if port is None:
            return False, f"task has no port at index {check.effective_port_index}"
        if kind == "TCP":
            return await probe_tcp(host, port, timeout)
        return await probe_http(
            host, port, check.path, timeout,
            https=kind == "HTTPS", ignore_1xx=check.ignoreHttp1xx,
        )

    def _record(self, key: tuple[str, int], pair: _Pair, ok: Outcome, cause: str | None) -> bool:
        """Apply one outcome; False when the pair is no longer monitored (worker ends)."""
        now = self._clock.now()
        with self._lock:
            if self._pairs.get(key) is not pair:
                return False
            if ok is None:  # ignored (HTTP 1xx with ignoreHttp1xx): nothing changes
                return True
            prev = pair.result
            started = pair.task.started_at or pair.first_seen
            pair.result = record_probe(prev, pair.check, started, now, ok, cause)
            if pair.result.alive != prev.alive:
                self._changes.append((key[0], key[1], pair.result))
            return True
