"""``create_app(orchestrator)``: the FastAPI application (Marathon /v2, status page, /ping)."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse

from api import chronos, events, groups, marathon, metrics, sharing, status, ui
from api.auth import AuthMiddleware
from api.forward import ForwardWrites
from api.fragments import AppFragments
from api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware, StrictJSONResponse
from scheduler import __version__
from scheduler.config import Credentials
from scheduler.ha.elector import LeaderState
from scheduler.model.app import AppSpec
from scheduler.model.validation import SpecError
from scheduler.orchestrator import Conflict, NotFound, Orchestrator


class Replicated(Protocol):
    """What the API needs of a replica (:class:`scheduler.ha.replica.Replica`)."""

    def leadership(self) -> LeaderState: ...

    def abdicate(self) -> bool: ...


def create_app(
    orchestrator: Orchestrator,
    credentials: Credentials | None = None,
    leader: str = "127.0.0.1:8080",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    replica: Replicated | None = None,
) -> FastAPI:
    """Build the HTTP application around a (started or not) orchestrator. Request bodies
    over ``max_body_bytes`` get 413 (see :mod:`api.limits`). With ``replica`` (one of several
    replicas on the Kubernetes store), writes reaching a standby are forwarded to the leader
    (:mod:`api.forward`) and ``/v2/info``, ``/v2/leader`` say who leads; without, this process
    is the only one and always the leader."""
    app = FastAPI(
        title="Dromos",
        version=__version__,
        description="Marathon-compatible /v2 API for services; status page at /.",
        default_response_class=StrictJSONResponse,
    )
    app.state.orchestrator = orchestrator
    # Per-app encoded fragments for GET /v2/apps and /v2/apps/{id}, kept current from the
    # orchestrator's events (api/fragments.py).
    app.state.fragments = AppFragments(orchestrator)
    app.state.leader = leader
    app.state.port = int(leader.rsplit(":", 1)[-1]) if ":" in leader else 8080
    app.state.replica = replica
    if replica is not None:
        # Innermost: requests are authenticated and size-checked here before being forwarded.
        app.add_middleware(ForwardWrites, leadership=replica.leadership, me=leader)
    if credentials is not None and credentials.configured:
        app.add_middleware(AuthMiddleware, credentials=credentials)
    # Added last, so outermost: an oversized body is refused before anything else runs.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=max_body_bytes)

    @app.exception_handler(SpecError)
    async def _spec_error(_: Request, e: SpecError) -> JSONResponse:
        return JSONResponse(e.to_json(), status_code=422)

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, e: NotFound) -> JSONResponse:
        return JSONResponse({"message": str(e)}, status_code=404)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, e: Conflict) -> JSONResponse:
        return JSONResponse(
            {"message": str(e), "deployments": [{"id": d} for d in e.deployments]},
            status_code=409,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, e: RequestValidationError) -> JSONResponse:
        errors: list[Any] = list(e.errors())
        if _not_sent_as_json(request, errors):
            return JSONResponse({"message": _NOT_JSON.format(
                request.headers.get("content-type") or "none")}, status_code=415)
        if any(err.get("type") == "json_invalid" for err in errors):
            msgs = [str(err.get("ctx", {}).get("error", err.get("msg"))) for err in errors]
            return JSONResponse(
                {"message": "Invalid JSON", "details": [{"path": "/", "errors": msgs}]},
                status_code=400,
            )
        details = []
        for err in errors:
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path")]
            details.append({"path": "/" + "/".join(loc), "errors": [str(err.get("msg"))]})
        return JSONResponse({"message": "Object is not valid", "details": details},
                            status_code=422)

    @app.get("/ping", response_class=PlainTextResponse)
    async def ping() -> str:
        return "pong"

    app.include_router(marathon.router)
    app.include_router(groups.router)
    app.include_router(events.router)
    app.include_router(metrics.router)
    for router in chronos.routers:
        app.include_router(router)
    app.include_router(status.router)
    app.include_router(sharing.router)
    app.include_router(ui.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


_NOT_JSON = ("Unsupported Media Type: send the body as JSON with 'Content-Type: "
             "application/json' (got Content-Type: {}); with curl add "
             "-H 'Content-Type: application/json'")


def _not_sent_as_json(request: Request, errors: list[Any]) -> bool:
    """The body was not parsed because it was not labelled JSON (curl's ``-d`` sends
    ``application/x-www-form-urlencoded``; no header at all is not parsed either). Bodies are
    deliberately not guessed to be JSON: a web page can make the browser send such requests
    cross-site without asking (no CORS preflight), so guessing would let any page create
    apps on an unauthenticated Dromos."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/json" or content_type.endswith("+json"):
        return False
    return any(tuple(err.get("loc", ())) == ("body",) and err.get("type") == "dict_type"
               for err in errors)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the real app definition schema on /v2/apps bodies.

    Bodies are taken as plain objects (so errors come out Marathon-shaped from parse_app);
    this puts AppSpec's JSON schema back into the document for clients and fuzzers.
    """
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    full = AppSpec.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(full.pop("$defs", {}))
    schemas["AppDefinition"] = full
    schemas["AppUpdate"] = {k: v for k, v in full.items() if k != "required"}
    for path, ops in doc["paths"].items():
        if not path.startswith("/v2/apps"):
            continue
        for method, op in ops.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body is not None:
                name = "AppDefinition" if method == "post" else "AppUpdate"
                body["schema"] = {"$ref": f"#/components/schemas/{name}"}
    app.openapi_schema = doc
    return doc
