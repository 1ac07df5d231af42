"""The composition root: the one place that builds Dromos from its configuration.

:func:`build` turns a :class:`~scheduler.config.ServeConfig` into a :class:`Dromos`: the SQLite
store, the runtime (by name, from :mod:`scheduler.runtimes.registry`), the event bus, the
clock, the health monitor, the orchestrator, the group manager and the built-in balancer.
:func:`serve` adds the HTTP application (``api``) and runs it; the ``dromos`` program
(:mod:`scheduler.cli.program`) calls it for ``dromos serve``.

Everything else receives what it needs from here; nothing below this module builds a store,
a runtime or a balancer of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from api.server import create_server_app, hold_state_dir, run_http
from scheduler.clock import SystemClock
from scheduler.config import ServeConfig
from scheduler.events import DROMOS, EventBus
from scheduler.orchestrator import Orchestrator
from scheduler.orchestrator.group_commands import GroupManager
from scheduler.runtimes import registry
from scheduler.runtimes.base import Runtime
from scheduler.services.balancer import Balancer
from scheduler.services.health import HealthMonitor
from scheduler.services.open_files import raise_nofile_limit
from scheduler.store.sqlite import SqliteStore

log = logging.getLogger("dromos.server")


@dataclass
class Dromos:
    """A built, not yet started, Dromos: what :func:`serve` runs and the API is built on."""

    config: ServeConfig
    orchestrator: Orchestrator
    group_manager: GroupManager
    balancer: Balancer | None

    def start(self) -> None:
        """Start the balancer (if any), then the control loop."""
        if self.balancer is not None:
            self.balancer.start()
            self.orchestrator.balancer = self.balancer
        self.orchestrator.start()

    def stop(self) -> None:
        """Stop the control loop, then the balancer. Tasks keep running (the next start
        adopts them)."""
        self.orchestrator.stop()
        if self.balancer is not None:
            self.balancer.stop()


def build_runtime(config: ServeConfig) -> Runtime:
    """The runtime ``config.runtime`` names. Raises :class:`~scheduler.config.ConfigError`."""
    return registry.create(config.runtime, config)


def build_orchestrator(config: ServeConfig) -> Orchestrator:
    """Store, runtime, bus, clock and health monitor, assembled into an orchestrator."""
    config.state_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(config.state_dir / "dromos.db")
    runtime = build_runtime(config)
    clock = SystemClock()
    orchestrator = Orchestrator(store, runtime, EventBus(), clock,
                                health=HealthMonitor(runtime, clock))
    orchestrator.service_ports.port_range = config.service_ports
    return orchestrator


def build_balancer(config: ServeConfig, orchestrator: Orchestrator) -> Balancer | None:
    """The built-in balancer, for runtimes whose tasks bind ports on this machine (see
    :attr:`~scheduler.runtimes.registry.RuntimeEntry.local_ports`), unless
    ``--service-bind off``. Bind failures go to the ``dromos`` event stream."""
    if not registry.entry(config.runtime).local_ports or config.service_bind == "off":
        return None
    lo, hi = config.service_ports
    for node in orchestrator.nodes():
        # Tasks bind their host ports on this same machine: a shared number is a clash.
        if any(a <= hi and lo <= b for a, b in node.ports):
            log.warning("service ports %d-%d overlap node %s's ports: a task may fail to "
                        "bind a port the balancer holds (or the reverse)", lo, hi,
                        node.hostname)
    bus, clock = orchestrator.bus, orchestrator.clock

    def report(kind: str, payload: dict[str, Any]) -> None:
        bus.publish(kind, clock.now(), stream=DROMOS, **payload)

    return Balancer(config.service_bind, on_event=report)


def build(config: ServeConfig) -> Dromos:
    """Everything ``dromos serve`` runs, built from ``config`` and not yet started."""
    orchestrator = build_orchestrator(config)
    # Created now, not on the first /v2/groups request: creating it finishes any group change
    # a crash interrupted.
    group_manager = GroupManager(orchestrator)
    return Dromos(config, orchestrator, group_manager, build_balancer(config, orchestrator))


def serve(config: ServeConfig) -> int:
    """Build Dromos, serve its HTTP API until interrupted, then stop it. Only one process
    serves a state directory (:mod:`scheduler.store.state_lock`): raises
    :class:`~scheduler.store.state_lock.StateDirHeld` when another holds it, unless
    ``config.standby``, which waits for it."""
    lock = hold_state_dir(config)
    try:
        return _serve_holding(config)
    finally:
        lock.release()


def _serve_holding(config: ServeConfig) -> int:

    soft, _ = raise_nofile_limit()
    log.info("open files limit: %d", soft)
    dromos = build(config)
    app = create_server_app(dromos.orchestrator, dromos.group_manager, config)
    dromos.start()
    log.info("Dromos on http://%s:%d (runtime %s, state %s)", config.host, config.port,
             config.runtime, config.state_dir)
    try:
        run_http(app, config.host, config.port)
    finally:
        dromos.stop()
    return 0
