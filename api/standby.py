"""What a standby ``dromos serve --standby`` answers while another process holds the state.

A standby serves a small HTTP surface on its own address until it takes the lock: ``/ping``
(Marathon's liveness answer, saying it is a standby), ``/v2/info`` and ``/v2/leader`` (naming the
holder, as Marathon's standbys name the leader), and ``503`` with ``Retry-After`` for everything
else, so a client never mistakes a standby's empty answer for "no apps". When the lock is
taken, the standby server stops and the full Dromos starts on the same address.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from scheduler.store.state_lock import Holder

STANDBY_HEADER = "X-Dromos-Role"


def standby_app(holder: Callable[[], Holder | None], me: str) -> Starlette:
    """The standby's routes; ``holder()`` reads the current holder's identity on each call."""

    def leader_address() -> str | None:
        h = holder()
        return h.api if h else None

    async def ping(_: Request) -> Response:
        return PlainTextResponse("pong", headers={STANDBY_HEADER: "standby"})

    async def info(_: Request) -> Response:
        return JSONResponse({"name": "dromos", "leader": leader_address(), "elected": False,
                             "role": "standby", "address": me},
                            headers={STANDBY_HEADER: "standby"})

    async def leader(_: Request) -> Response:
        address = leader_address()
        if address is None:
            return JSONResponse({"message": "There is no leader"}, status_code=404)
        return JSONResponse({"leader": address}, headers={STANDBY_HEADER: "standby"})

    async def refuse(request: Request) -> Response:
        h = holder()
        who = f"the state directory's holder ({h.describe()})" if h else "the holder"
        return JSONResponse(
            {"message": f"this Dromos ({me}) is a standby; ask {who}, or retry when this one "
                        "has taken over"},
            status_code=503, headers={"Retry-After": "1", STANDBY_HEADER: "standby"})

    return Starlette(routes=[
        Route("/ping", ping),
        Route("/v2/info", info),
        Route("/v2/leader", leader),
        Route("/{path:path}", refuse, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ])


class StandbyServer:
    """The standby surface served from a background thread until :meth:`stop`."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                                     log_level="warning", lifespan="off"))
        # uvicorn installs signal handlers only on the main thread; this one runs elsewhere.
        self._thread = threading.Thread(target=self._server.run, name="dromos-standby",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and wait until the address is free for the full server."""
        self._server.should_exit = True
        self._thread.join(10)
