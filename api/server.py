"""The HTTP side of ``dromos serve``: the application for a built Dromos, and the server.

What to build (store, runtime, balancer…) is decided in :mod:`scheduler.composition`; this
module only turns those parts into an ASGI application and serves it.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import uvicorn
from fastapi import FastAPI

from api.app import Replicated, create_app
from api.sse import close_streams
from api.standby import StandbyServer, standby_app
from scheduler.config import ServeConfig
from scheduler.orchestrator import Orchestrator
from scheduler.orchestrator.group_commands import GroupManager
from scheduler.services.open_files import AcceptErrorLog
from scheduler.store.state_lock import Holder, StateLock, read_holder

log = logging.getLogger("dromos.server")


def create_server_app(orchestrator: Orchestrator, group_manager: GroupManager,
                      config: ServeConfig, replica: Replicated | None = None) -> FastAPI:
    """The application ``dromos serve`` runs: :func:`api.app.create_app` with the configured
    credentials, the advertised address, the composition root's group manager and, with the
    Kubernetes store, the replica whose leadership decides where writes go."""
    app = create_app(orchestrator, config.credentials, leader=config.address,
                     max_body_bytes=config.max_body_bytes, replica=replica)
    app.state.group_manager = group_manager
    return app


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


def hold_state_dir(config: ServeConfig) -> StateLock:
    """Take the state directory's lock: at once, or (``--standby``) when its holder exits,
    serving the standby surface meanwhile. Raises :class:`StateDirHeld` without ``--standby``."""
    me = f"{config.host}:{config.port}"
    lock = StateLock(config.state_dir, Holder.me(me))
    if not config.standby:
        lock.acquire()
        return lock
    if lock.try_acquire():
        return lock
    holder = read_holder(config.state_dir)
    log.info("standby on http://%s: waiting for %s", me,
             holder.describe() if holder else "the state directory's holder")
    standby = StandbyServer(standby_app(lambda: read_holder(config.state_dir), me),
                            config.host, config.port)
    standby.start()
    try:
        lock.wait()
    finally:
        standby.stop()
    log.info("took over %s", config.state_dir)
    return lock


def run_http(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` until interrupted (SIGINT/SIGTERM)."""
    _DromosServer(uvicorn.Config(app, host=host, port=port, log_level="warning"), app).run()
