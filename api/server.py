"""Run Dromos: build store, runtime, health monitor and orchestrator, then serve HTTP."""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from scheduler.clock import SystemClock
from scheduler.config import ConfigError, ServeConfig
from scheduler.events import EventBus
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.base import Runtime
from scheduler.services.health import HealthMonitor
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
    raise ConfigError(f"unknown runtime {config.runtime!r}")


def build_orchestrator(config: ServeConfig) -> Orchestrator:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    store = SqliteStore(config.state_dir / "dromos.db")
    runtime = build_runtime(config)
    clock = SystemClock()
    return Orchestrator(store, runtime, EventBus(), clock,
                        health=HealthMonitor(runtime, clock))


def serve(config: ServeConfig) -> int:
    """Serve until interrupted. Tasks keep running after exit; the next start adopts them."""
    orchestrator = build_orchestrator(config)
    app = create_app(orchestrator, config.credentials, leader=f"{config.host}:{config.port}")
    orchestrator.start()
    log.info("Dromos on http://%s:%d (runtime %s, state %s)", config.host, config.port,
             config.runtime, config.state_dir)
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
    finally:
        orchestrator.stop()
    return 0
