"""The HTTP side of ``dromos serve``: the application for a built Dromos, and the server.

What to build (store, runtime, balancer…) is decided in :mod:`scheduler.composition`; this
module only turns those parts into an ASGI application and serves it.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from api.sse import close_streams
from scheduler.config import ServeConfig
from scheduler.groups import GroupManager
from scheduler.orchestrator import Orchestrator
from scheduler.services.open_files import AcceptErrorLog


def create_server_app(orchestrator: Orchestrator, group_manager: GroupManager,
                      config: ServeConfig) -> FastAPI:
    """The application ``dromos serve`` runs: :func:`api.app.create_app` with the configured
    credentials, the advertised leader address and the composition root's group manager."""
    app = create_app(orchestrator, config.credentials, leader=f"{config.host}:{config.port}",
                     max_body_bytes=config.max_body_bytes)
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


def run_http(app: FastAPI, host: str, port: int) -> None:
    """Serve ``app`` until interrupted (SIGINT/SIGTERM)."""
    _DromosServer(uvicorn.Config(app, host=host, port=port, log_level="warning"), app).run()
