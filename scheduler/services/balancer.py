"""The built-in TCP load balancer: Dromos listens on every service port and spreads
connections over the app's routable tasks (Marathon's HAProxy bridge / marathon-lb, in-process).

Used on runtimes whose tasks run on this machine (local processes, Docker). It owns one
thread running one asyncio loop; everything else talks to it through thread-safe methods:

- :meth:`Balancer.sync` (every orchestrator pass) replaces the routing table, opens a listener
  for each new service port and closes the listeners of ports that went away;
- :meth:`Balancer.stop_routing` / :meth:`Balancer.active_connections` are the draining
  mechanism: a task that is about to be killed gets no new connection from the moment
  ``stop_routing`` returns, and its open connections can be counted down before the kill.

Which tasks are routable is decided by the pure :func:`routes_from`. The balancer itself adds
only what a table cannot know: a backend that refuses a connection is skipped (the client is
connected to the next one instead, transparently, since nothing was sent yet) and avoided
for :data:`DOWN_SECONDS`; a client that arrives while a port has no backend at all waits up
to ``wait_for_backend`` seconds for one (a rolling restart with ``minimumHealthCapacity: 0``)
before it is closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import StrEnum
from typing import Any

from scheduler.model.app import AppSpec
from scheduler.model.task import Task, TaskState
from scheduler.services.open_files import AcceptErrorLog
from scheduler.services.service_ports import service_ports

log = logging.getLogger("dromos.balancer")

Backend = tuple[str, int, str]
"""``(host, port, task_id)``: where one task answers for one service port."""

EventSink = Callable[[str, dict[str, Any]], None]
"""``(event_type, payload)`` → publish it (the server wires the ``dromos`` event stream)."""

DOWN_SECONDS = 2.0
"""How long a backend that refused a connection is passed over while others are up."""

BIND_RETRY_MIN, BIND_RETRY_MAX = 2.0, 60.0
"""A port that cannot be bound is retried on later syncs, backing off between these."""

_BUFFER = 64 * 1024


class Policy(StrEnum):
    ROUND_ROBIN = "round-robin"
    LEAST_CONNECTIONS = "least-connections"


class Routes(dict[int, list[Backend]]):
    """servicePort → backends, plus ``owners`` (servicePort → app id) for reports."""

    def __init__(self, routes: Mapping[int, list[Backend]] | None = None,
                 owners: Mapping[int, str] | None = None) -> None:
        super().__init__(routes or {})
        self.owners: dict[int, str] = dict(owners or {})


def routable(task: Task, health: Mapping[str, bool | None],
             ready: Mapping[str, bool] | None = None) -> bool:
    """Whether ``task`` may get new connections: RUNNING, not being killed, healthy, ready.

    ``health`` is the orchestrator's per-pass map: an entry for every running task whose
    definition has health checks (``True`` only once they all pass), none for a task without
    checks -- so a missing entry means "no checks", and ``None``/``False`` keep the task out.
    ``ready`` likewise holds tasks with readiness checks (``False`` = not ready yet).
    """
    if task.state is not TaskState.RUNNING or task.kill_requested_at is not None:
        return False
    if health.get(task.id, True) is not True:
        return False
    return ready is None or ready.get(task.id, True)


def proxied_ports(spec: AppSpec, blocked: set[int] | frozenset[int] = frozenset()
                  ) -> list[tuple[int, int]]:
    """``(port index, servicePort)`` pairs the balancer listens on for ``spec``: TCP ports
    whose service port is not also a fixed host port (``requirePorts``, or a portMapping's
    ``hostPort``; ``blocked`` should hold every app's) -- there the task itself owns the
    number, clients reach it directly, and a listener would take the port from it."""
    if spec.container is not None and spec.container.portMappings is not None:
        protocols = [m.protocol for m in spec.container.portMappings]
    else:
        protocols = [p.protocol for p in spec.port_definitions]
    own = set(spec.fixed_host_ports)
    return [(i, sp) for i, (sp, proto) in enumerate(zip(service_ports(spec), protocols,
                                                        strict=True))
            if sp and "tcp" in proto.split(",") and sp not in own and sp not in blocked]


def routes_from(apps: Iterable[AppSpec], tasks: Iterable[Task],
                health: Mapping[str, bool | None], ready: Mapping[str, bool] | None = None,
                *, host_of: Callable[[Task], str] | None = None) -> Routes:
    """The routing table for :meth:`Balancer.sync`: servicePort → ``(host, port, task_id)``
    of every :func:`routable` task of the app, its ``i``-th host port for the app's ``i``-th
    service port (tasks of an older version keep serving through a rolling upgrade).

    Only apps that have tasks (in any state) are in the table, so the balancer's listening
    sockets scale with the apps that run, not with the apps defined (an app scaled to 0 has
    no listener: its clients are refused at once). An app's every proxied port is there,
    with an empty list while none of its tasks is routable, so the listener (the app's stable
    address) stays up through restarts and clients wait for a backend. ``host_of`` gives the
    address a task's ports answer on (the runtime's ``probe_host``; default 127.0.0.1).
    """
    apps = list(apps)
    blocked = {p for a in apps for p in a.fixed_host_ports}
    by_app: dict[str, list[Task]] = {}
    for t in tasks:
        by_app.setdefault(t.app_id, []).append(t)
    out = Routes()
    for app in sorted(apps, key=lambda a: a.id):
        if app.id not in by_app:
            continue
        ports = proxied_ports(app, blocked)
        live = [t for t in by_app[app.id] if routable(t, health, ready)]
        for i, sp in ports:
            if sp in out:  # assignment keeps service ports unique; never let one app steal
                continue
            out[sp] = [((host_of(t) if host_of else "127.0.0.1"), t.ports[i], t.id)
                       for t in live if i < len(t.ports)]
            out.owners[sp] = app.id
    return out


class Balancer:
    """TCP listeners on the service ports, balancing over :meth:`sync`'s backends.

    ``bind`` is the address listeners bind (loopback by default: the apps stay private to
    this machine unless the operator says otherwise). ``on_event`` receives
    ``service_port_unavailable`` (a port could not be bound: ``servicePort``, ``appId``,
    ``message``) and ``service_port_available`` (it could, later); the balancer never
    raises for a port it cannot open, it reports and retries.
    """

    def __init__(self, bind: str = "127.0.0.1", *,
                 policy: Policy | str = Policy.ROUND_ROBIN,
                 on_event: EventSink | None = None,
                 connect_timeout: float = 2.0,
                 wait_for_backend: float = 5.0) -> None:
        self.bind = bind
        self.policy = Policy(policy)
        self.connect_timeout = connect_timeout
        self.wait_for_backend = wait_for_backend
        self._on_event = on_event
        # Shared with the loop thread, guarded by _lock (held only for dict work).
        self._lock = threading.Lock()
        self._routes: dict[int, list[Backend]] = {}
        self._owners: dict[int, str] = {}
        self._stopped: set[str] = set()
        self._active: dict[str, int] = {}
        self._down_until: dict[str, float] = {}
        self._next: dict[int, int] = {}
        # Loop-thread only.
        self._servers: dict[int, asyncio.AbstractServer] = {}
        self._unbound: dict[int, tuple[float, float, str]] = {}  # port → (retry at, delay, why)
        self._sessions: set[asyncio.Task[None]] = set()
        # Immutable snapshots of the two above for other threads (replaced, never mutated).
        self._listening: frozenset[int] = frozenset()
        self._unbound_view: dict[int, str] = {}
        self._apply_lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the balancer's thread and loop; returns once the loop runs."""
        if self._thread is not None:
            raise RuntimeError("Balancer already started")
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,),
                                        name="dromos-balancer", daemon=True)
        self._thread.start()
        started.wait()
        assert self._loop is not None
        with self._lock:
            wanted = set(self._routes)
        asyncio.run_coroutine_threadsafe(self._apply(wanted), self._loop)

    def _run(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        # Out of descriptors, each listener's accept() fails every second: log it once.
        AcceptErrorLog().install(loop)
        self._loop = loop
        self._apply_lock = asyncio.Lock()
        loop.call_soon(started.set)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _shutdown(self) -> None:
        for server in self._servers.values():
            server.close()
        self._servers.clear()
        self._listening = frozenset()
        for s in list(self._sessions):
            s.cancel()
        await asyncio.gather(*self._sessions, return_exceptions=True)

    def stop(self) -> None:
        """Close every listener and connection and stop the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = None
        self._thread = None

    # ------------------------------------------------------------------ control (any thread)

    def sync(self, routes: Mapping[int, Sequence[Backend]]) -> concurrent.futures.Future[None]:
        """Make ``routes`` (servicePort → backends) the routing table, effective for every
        new connection once this returns. Listeners open and close asynchronously; the
        returned future completes when they match (tests wait on it; the orchestrator need
        not). A :class:`Routes` also names each port's app for bind-failure reports.
        Tasks in ``stop_routing`` stay excluded while they still appear in ``routes``.
        """
        owners = routes.owners if isinstance(routes, Routes) else {}
        with self._lock:
            self._routes = {p: list(b) for p, b in routes.items()}
            self._owners = dict(owners)
            present = {b[2] for bs in self._routes.values() for b in bs}
            self._stopped &= present
            self._down_until = {k: v for k, v in self._down_until.items() if k in present}
            self._next = {p: n for p, n in self._next.items() if p in self._routes}
            wanted = set(self._routes)
        loop = self._loop
        if loop is None or not loop.is_running():
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            return done
        return asyncio.run_coroutine_threadsafe(self._apply(wanted), loop)

    def stop_routing(self, task_ids: Iterable[str]) -> None:
        """Send no new connection to these tasks from now on (their open ones continue)."""
        with self._lock:
            self._stopped.update(task_ids)

    def resume_routing(self, task_ids: Iterable[str]) -> None:
        """Undo :meth:`stop_routing` (a kill that was called off)."""
        with self._lock:
            self._stopped.difference_update(task_ids)

    def active_connections(self, task_id: str) -> int:
        """Open proxied connections to ``task_id`` (including ones still connecting)."""
        with self._lock:
            return self._active.get(task_id, 0)

    def backends(self, port: int) -> list[Backend]:
        """The backends new connections to ``port`` may go to now."""
        with self._lock:
            return [b for b in self._routes.get(port, []) if b[2] not in self._stopped]

    def listening(self) -> frozenset[int]:
        """Service ports with an open listener (as of the last listener change)."""
        return self._listening

    def unbound(self) -> dict[int, str]:
        """Service ports that could not be bound, with the reason (as of the last change)."""
        return dict(self._unbound_view)

    # ------------------------------------------------------------------ listeners (loop)

    async def _apply(self, wanted: set[int]) -> None:
        assert self._apply_lock is not None
        async with self._apply_lock:  # one reconciliation at a time: no double bind
            for port in [p for p in self._servers if p not in wanted]:
                self._servers.pop(port).close()  # new connections refused; open ones finish
                log.info("service port %d closed", port)
            for port in [p for p in self._unbound if p not in wanted]:
                del self._unbound[port]
            now = time.monotonic()
            for port in sorted(wanted - set(self._servers)):
                failed = self._unbound.get(port)
                if failed is not None and now < failed[0]:
                    continue
                try:
                    server = await asyncio.start_server(
                        functools.partial(self._serve, port), host=self.bind, port=port,
                        reuse_address=True, limit=_BUFFER)
                except OSError as e:
                    self._bind_failed(port, e, failed, now)
                    continue
                self._servers[port] = server
                if failed is not None:
                    del self._unbound[port]
                    log.info("service port %d: listening on %s again", port, self.bind)
                    self._report("service_port_available", port,
                                 f"listening on {self.bind}:{port}")
                else:
                    log.info("service port %d: listening on %s", port, self.bind)
            self._listening = frozenset(self._servers)
            self._unbound_view = {p: why for p, (_, _, why) in self._unbound.items()}

    def _bind_failed(self, port: int, e: OSError, failed: tuple[float, float, str] | None,
                     now: float) -> None:
        why = f"cannot listen on {self.bind}:{port}: {e.strerror or e}"
        delay = BIND_RETRY_MIN if failed is None else min(BIND_RETRY_MAX, failed[1] * 2)
        self._unbound[port] = (now + delay, delay, why)
        if failed is None:  # once per outage, not every pass
            log.warning("service port %d (app %s): %s; retrying", port,
                        self._owners.get(port, "?"), why)
            self._report("service_port_unavailable", port, why)

    def _report(self, kind: str, port: int, message: str) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(kind, {"servicePort": port, "appId": self._owners.get(port),
                                  "message": message})
        except Exception:
            log.exception("reporting %s failed", kind)

    # ------------------------------------------------------------------ connections (loop)

    async def _serve(self, port: int, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        current = asyncio.current_task()
        if current is not None:
            self._sessions.add(current)
        try:
            backend = await self._connect(port)
            if backend is None:
                log.debug("service port %d: no backend, closing client", port)
                return
            task_id, b_reader, b_writer = backend
            try:
                await self._splice(reader, writer, b_reader, b_writer)
            finally:
                self._release(task_id)
                _abort(b_writer)
        except asyncio.CancelledError:
            # Only stop() cancels sessions. Ending quietly keeps asyncio's stream callback
            # from logging the cancellation as an error.
            pass
        finally:
            _abort(writer)
            if current is not None:
                self._sessions.discard(current)

    async def _connect(self, port: int
                       ) -> tuple[str, asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Connect to a backend for ``port``: the policy's pick, then the others, waiting
        for one to appear up to ``wait_for_backend``. The pick is counted in
        ``active_connections`` before connecting, so a drain never misses it."""
        deadline = time.monotonic() + self.wait_for_backend
        tried: set[str] = set()
        while True:
            choice = self._pick(port, tried)
            if choice is None:
                with self._lock:
                    gone = port not in self._routes
                if gone or time.monotonic() >= deadline:
                    return None
                tried.clear()  # every backend failed or none yet: look again shortly
                await asyncio.sleep(0.05)
                continue
            host, bport, task_id = choice
            try:
                r, w = await asyncio.wait_for(
                    asyncio.open_connection(host, bport, limit=_BUFFER), self.connect_timeout)
            except (OSError, TimeoutError) as e:
                log.debug("service port %d: backend %s (%s:%d) refused: %s",
                          port, task_id, host, bport, e)
                self._release(task_id)
                with self._lock:
                    self._down_until[task_id] = time.monotonic() + DOWN_SECONDS
                tried.add(task_id)
                continue
            return task_id, r, w

    def _pick(self, port: int, exclude: set[str]) -> Backend | None:
        with self._lock:
            candidates = [b for b in self._routes.get(port, [])
                          if b[2] not in self._stopped and b[2] not in exclude]
            if not candidates:
                return None
            now = time.monotonic()
            up = [b for b in candidates if self._down_until.get(b[2], 0.0) <= now]
            pool = up or candidates
            n = self._next.get(port, 0)
            self._next[port] = n + 1
            if self.policy is Policy.LEAST_CONNECTIONS:
                # Fewest open connections; round-robin among equals.
                rotated = pool[n % len(pool):] + pool[: n % len(pool)]
                choice = min(rotated, key=lambda b: self._active.get(b[2], 0))
            else:
                choice = pool[n % len(pool)]
            self._active[choice[2]] = self._active.get(choice[2], 0) + 1
            return choice

    def _release(self, task_id: str) -> None:
        with self._lock:
            left = self._active.get(task_id, 0) - 1
            if left > 0:
                self._active[task_id] = left
            else:
                self._active.pop(task_id, None)

    async def _splice(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter,
                      b_reader: asyncio.StreamReader, b_writer: asyncio.StreamWriter) -> None:
        """Copy both ways until both sides have finished sending (half-closes are passed
        on, as TCP clients expect); an error on either side aborts both."""
        up = asyncio.ensure_future(_pipe(c_reader, b_writer))
        down = asyncio.ensure_future(_pipe(b_reader, c_writer))
        try:
            pending: set[asyncio.Future[bool]] = {up, down}
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(not f.result() for f in done):
                    break
        finally:
            for f in (up, down):
                f.cancel()
            await asyncio.gather(up, down, return_exceptions=True)


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> bool:
    """Copy ``src`` to ``dst`` until EOF, then half-close ``dst``. False on a broken side."""
    try:
        while True:
            data = await src.read(_BUFFER)
            if not data:
                break
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
        return True
    except (ConnectionError, OSError):
        return False


def _abort(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()
