"""Limits at the HTTP edge: a request body size cap, and JSON out that is always strict.

:class:`BodyLimitMiddleware` answers ``413`` for a body over ``max_body_bytes`` (default
3 MiB, the Kubernetes API server's limit): at once when ``Content-Length`` says so, before a
byte of the body is read; otherwise (chunked uploads, a lying header) as soon as the bytes
received pass the limit -- the rest is never read, so a large body costs at most the limit
plus one chunk of memory.

:func:`strict_dumps` and :class:`StrictJSONResponse` never emit ``Infinity`` or ``NaN``
(which browsers' and most clients' JSON parsers refuse). Validation keeps non-finite numbers
out of the store; should one get in anyway, it is written as ``null`` (and logged) rather
than making every listing invalid JSON or a 500.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("dromos.api")

DEFAULT_MAX_BODY_BYTES = 3 * 1024 * 1024


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def strict_dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes a non-finite number (written as ``null`` instead).

    The fast path is ``json.dumps(allow_nan=False)``; only a document that holds such a
    number pays for the second, cleaning pass."""
    kwargs.setdefault("separators", (",", ":"))
    try:
        return json.dumps(value, allow_nan=False, **kwargs)
    except ValueError:
        log.warning("a response held a non-finite number; it was written as null")
        return json.dumps(_finite(value), allow_nan=False, **kwargs)


class StrictJSONResponse(JSONResponse):
    """A JSON response whose body is strict JSON (see :func:`strict_dumps`)."""

    def render(self, content: Any) -> bytes:
        return strict_dumps(content, ensure_ascii=False).encode("utf-8")


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Pure ASGI middleware refusing request bodies over ``max_body_bytes`` with ``413``
    and a Marathon-shaped ``{"message": ...}``; nothing of such a request is handled."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0  # the server rejects a malformed header itself
                if declared > limit:
                    await self._refuse(send)
                    return
        received = 0
        exceeded = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, exceeded
            if exceeded:
                raise _TooLarge
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded:
                return  # whatever the app answers to the cut-off body, 413 is the answer
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"message": f"request body is larger than the limit of "
                                      f"{self.max_body_bytes} bytes (dromos serve "
                                      "--max-body-bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body, "more_body": False})
