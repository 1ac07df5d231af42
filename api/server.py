"""Run Dromos: build store, runtime, health monitor and orchestrator, then serve HTTP."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.events import close_streams
from scheduler.clock import SystemClock
from scheduler.config import ConfigError, ServeConfig
from scheduler.events import DROMOS, EventBus
from scheduler.orchestrator import Orchestrator
from scheduler.orchestrator.group_commands import GroupManager
from scheduler.runtimes.base import Runtime
from scheduler.services.balancer import Balancer
from scheduler.services.health import HealthMonitor
from scheduler.services.open_files import AcceptErrorLog, raise_nofile_limit
from scheduler.store.sqlite import SqliteStore

log = logging.getLogger("dromos.server")


def build_runtime(config: ServeConfig) -> Runtime:
    if config.runtime == "local":
        from scheduler.runtimes.local import LocalRuntime

        try:
            return LocalRuntime(config.state_dir, list(config.nodes) if config.nodes else None)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if config.runtime == "docker":
        from scheduler.runtimes.docker import DockerRuntime

        # Connects lazily: Dromos starts (and serves its API) while the engine is down.
        try:
            return DockerRuntime(config.state_dir, list(config.nodes) if config.nodes else None)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if config.runtime == "kubernetes":
        from scheduler.runtimes.kubernetes import KubernetesRuntime

        # Connects lazily, like docker. Nodes come from the cluster; a --nodes file only
        # limits placement to the hostnames it lists (capacity and labels are the cluster's).
        hosts = [n.hostname for n in config.nodes] if config.nodes else None
        try:
            return KubernetesRuntime(config.state_dir, hosts=hosts)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    raise ConfigError(f"unknown runtime {config.runtime!r}")


def build_orchestrator(config: ServeConfig) -> Orchestrator:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(config.state_dir / "dromos.db")
    runtime = build_runtime(config)
    clock = SystemClock()
    orchestrator = Orchestrator(store, runtime, EventBus(), clock,
                                health=HealthMonitor(runtime, clock))
    orchestrator.service_ports.port_range = config.service_ports
    return orchestrator


def build_balancer(config: ServeConfig, orchestrator: Orchestrator) -> Balancer | None:
    """The built-in balancer, for runtimes whose tasks run on this machine (local, docker),
    unless ``--service-bind off``. Bind failures go to the ``dromos`` event stream."""
    if config.runtime not in ("local", "docker") or config.service_bind == "off":
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


class _DromosServer(uvicorn.Server):
    """uvicorn waits for open responses on shutdown, and an event stream never ends: close
    the streams first so SIGTERM stops Dromos promptly."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.dromos_app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        AcceptErrorLog().install(asyncio.get_running_loop())
        await super().startup(sockets)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        close_streams(self.dromos_app.state)
        await super().shutdown(sockets)


def serve(config: ServeConfig) -> int:
    """Serve until interrupted. Tasks keep running after exit; the next start adopts them."""
    soft, _ = raise_nofile_limit()
    log.info("open files limit: %d", soft)
    orchestrator = build_orchestrator(config)
    app = create_app(orchestrator, config.credentials, leader=f"{config.host}:{config.port}",
                     max_body_bytes=config.max_body_bytes)
    # Created now, not on the first /v2/groups request: creating it finishes any group change
    # a crash interrupted.
    app.state.group_manager = GroupManager(orchestrator)
    balancer = build_balancer(config, orchestrator)
    if balancer is not None:
        balancer.start()
        orchestrator.balancer = balancer
    orchestrator.start()
    log.info("Dromos on http://%s:%d (runtime %s, state %s)", config.host, config.port,
             config.runtime, config.state_dir)
    try:
        _DromosServer(uvicorn.Config(app, host=config.host, port=config.port,
                                     log_level="warning"), app).run()
    finally:
        orchestrator.stop()
        if balancer is not None:
            balancer.stop()
    return 0
