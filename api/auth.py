"""Credentials on every route but ``/ping`` when configured (HTTP Basic or ``token=<t>``)."""

from __future__ import annotations

import base64
import binascii
import hmac

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from scheduler.config import Credentials

OPEN_PATHS = frozenset({"/ping"})


def authorized(header: str | None, creds: Credentials) -> bool:
    """Whether an ``Authorization`` header value satisfies ``creds`` (constant-time compare).

    Accepted forms: ``token=<t>`` (what Marathon clients send), ``Bearer <t>``, and
    ``Basic <base64 user:password>``.
    """
    if not creds.configured:
        return True
    if not header:
        return False
    scheme, _, rest = header.strip().partition(" ")
    if creds.token:
        given: str | None = None
        if header.startswith("token="):
            given = header[len("token="):]
        elif scheme.lower() == "bearer":
            given = rest.strip()
        if given is not None and hmac.compare_digest(given.encode(), creds.token.encode()):
            return True
    if creds.basic and scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(rest.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        ok_user = hmac.compare_digest(user.encode(), creds.basic[0].encode())
        ok_pass = hmac.compare_digest(password.encode(), creds.basic[1].encode())
        return ok_user and ok_pass
    return False


class AuthMiddleware(BaseHTTPMiddleware):
    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        super().__init__(app)
        self.credentials = credentials

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.url.path in OPEN_PATHS or authorized(
            request.headers.get("authorization"), self.credentials
        ):
            return await call_next(request)
        return JSONResponse(
            {"message": "Unauthorized: credentials are required"},
            status_code=401,
            headers={"WWW-Authenticate": 'Basic realm="dromos"'},
        )
