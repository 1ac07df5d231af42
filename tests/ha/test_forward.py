"""Standbys forward writes to the leader and answer reads themselves (real HTTP both ways)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.forward import VIA, ForwardWrites
from scheduler.ha.elector import LeaderState
from tests.support.server import free_port


def replica(name: str) -> Starlette:
    async def echo(request: Request) -> Response:
        return JSONResponse({"served_by": name, "method": request.method,
                             "path": request.url.path, "query": request.url.query,
                             "body": (await request.body()).decode(),
                             "auth": request.headers.get("authorization")},
                            status_code=201 if request.method == "POST" else 200)

    return Starlette(routes=[Route("/{p:path}", echo, methods=["GET", "POST", "PUT", "DELETE"])])


@contextmanager
def running(app: object, port: int) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,  # type: ignore[arg-type]
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


def test_writes_go_to_the_leader_reads_stay_and_no_leader_is_503() -> None:
    leader_port, standby_port = free_port(), free_port()
    state = {"now": LeaderState("me", False, f"127.0.0.1:{leader_port}")}
    standby = ForwardWrites(replica("standby"), lambda: state["now"],
                            me=f"127.0.0.1:{standby_port}")
    with running(replica("leader"), leader_port), running(standby, standby_port) as url:
        wrote = httpx.post(url + "/v2/apps?force=true", content=b'{"id": "/x"}',
                           headers={"Authorization": "token=s3cret"})
        assert wrote.status_code == 201
        assert wrote.headers[VIA] == f"127.0.0.1:{standby_port}"
        assert wrote.json() == {"served_by": "leader", "method": "POST", "path": "/v2/apps",
                                "query": "force=true", "body": '{"id": "/x"}',
                                "auth": "token=s3cret"}
        read = httpx.get(url + "/v2/apps")
        assert read.json()["served_by"] == "standby" and VIA not in read.headers

        state["now"] = LeaderState("me", False, None)  # election in progress
        refused = httpx.put(url + "/v2/apps/x", content=b"{}")
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"

        state["now"] = LeaderState("me", True, f"127.0.0.1:{standby_port}")  # now it leads
        assert httpx.delete(url + "/v2/apps/x").json()["served_by"] == "standby"


def test_a_forwarded_request_is_never_forwarded_again() -> None:
    port = free_port()
    other = f"127.0.0.1:{free_port()}"
    looping = ForwardWrites(replica("a"), lambda: LeaderState("me", False, other),
                            me=f"127.0.0.1:{port}")
    with running(looping, port) as url:
        answer = httpx.post(url + "/v2/apps", headers={VIA: other})
        assert answer.status_code == 503
