"""Standbys forward writes to the leader, so clients can talk to any replica (one Service name).

As Marathon's standbys do: a request that changes state (``POST``, ``PUT``, ``PATCH``,
``DELETE``) reaching a replica that is not the leader is sent on to the leader's address, and
the leader's answer goes back unchanged, with ``X-Dromos-Via`` naming the replica that
forwarded it. Reads are answered by the standby from its own copy of the state. With no leader
known (an election in progress) the answer is ``503`` with ``Retry-After``: the client retries,
nothing is half-done. A request already forwarded once is never forwarded again (two replicas
that each believe the other leads answer 503 instead of looping).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from scheduler.ha.elector import LeaderState

VIA = "X-Dromos-Via"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Hop-by-hop headers (RFC 9110 §7.6.1) and those httpx sets itself.
_DROP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
                   "proxy-authorization", "proxy-authenticate", "host", "content-length"})


class ForwardWrites:
    """ASGI middleware (see the module docstring). ``leadership()`` is asked per request."""

    def __init__(self, app: ASGIApp, leadership: Callable[[], LeaderState], me: str,
                 timeout_s: float = 30.0) -> None:
        self.app = app
        self.leadership = leadership
        self.me = me
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WRITES:
            await self.app(scope, receive, send)
            return
        now = self.leadership()
        if now.leading:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        response = await self._forward(request, now.leader)
        await response(scope, receive, send)

    async def _forward(self, request: Request, leader: str | None) -> Response:
        if request.headers.get(VIA) or not leader or leader == self.me:
            return JSONResponse({"message": "no leader is elected right now; retry shortly"},
                                status_code=503, headers={"Retry-After": "1"})
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _DROP}
        headers[VIA] = self.me
        url = f"http://{leader}{request.url.path}"
        if request.url.query:
            url += f"?{request.url.query}"
        try:
            answer = await self._client.request(request.method, url, headers=headers,
                                                content=await request.body())
        except httpx.HTTPError as e:
            return JSONResponse({"message": f"the leader {leader} did not answer: {e}"},
                                status_code=503, headers={"Retry-After": "1"})
        out = {k: v for k, v in answer.headers.items() if k.lower() not in _DROP
               and k.lower() != "content-encoding"}
        out[VIA] = self.me
        return Response(answer.content, status_code=answer.status_code, headers=out)
