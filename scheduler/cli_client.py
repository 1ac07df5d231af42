"""HTTP client helpers for the ``dromos`` CLI: the REST calls, and waiting for an app to
converge. Talks only to the public HTTP surface (Marathon ``/v2``, Chronos ``/scheduler``, and
Dromos's ``/ui`` additions), so it works against any running Dromos.

Where it connects: ``--url``, else ``$DROMOS_URL``, else ``http://127.0.0.1:8080``.
Credentials: ``$DROMOS_AUTH_TOKEN`` (sent as ``Authorization: Bearer <t>``) or
``$DROMOS_BASIC_AUTH`` (``user:password``), the same variables ``dromos serve`` reads, so one
environment serves both sides. Tokens are never taken from the command line, where other
users of the machine could read them in the process list.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(Exception):
    """A request failed: Dromos answered an error (``status`` set) or could not be reached
    (``status`` is ``None``). The message is meant for the user as it is."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def resolve_url(flag: str | None) -> str:
    return (flag or os.environ.get("DROMOS_URL") or DEFAULT_URL).rstrip("/")


def _quote_app(app_id: str) -> str:
    """An app id as a path: ``/demo/web`` and ``demo/web`` both become ``/demo/web``."""
    return "/" + "/".join(quote(p, safe="") for p in app_id.strip("/").split("/"))


class Client:
    """A Dromos REST client. Every method raises :class:`ApiError` on failure."""

    def __init__(self, url: str, *, timeout: float = 15.0,
                 env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        headers = {"User-Agent": "dromos-cli", "Accept": "application/json"}
        auth: httpx.BasicAuth | None = None
        if env.get("DROMOS_AUTH_TOKEN"):
            headers["Authorization"] = f"Bearer {env['DROMOS_AUTH_TOKEN']}"
        elif env.get("DROMOS_BASIC_AUTH"):
            user, _, password = env["DROMOS_BASIC_AUTH"].partition(":")
            auth = httpx.BasicAuth(user, password)
        self.url = url
        self._http = httpx.Client(base_url=url, headers=headers, auth=auth, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def request(self, method: str, path: str, *, json: Any = None,
                params: Any = None, allow: tuple[int, ...] = ()) -> httpx.Response:
        """Send a request; a status >= 400 not in ``allow`` raises :class:`ApiError` with the
        server's message."""
        try:
            r = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as e:
            raise ApiError(f"cannot reach Dromos at {self.url}: {e} (is `dromos serve` "
                           "running? point --url or DROMOS_URL at it)") from None
        if r.status_code >= 400 and r.status_code not in allow:
            raise ApiError(_error_message(r), r.status_code)
        return r

    def get(self, path: str, params: Any = None) -> Any:
        return self.request("GET", path, params=params).json()

    # ------------------------------------------------------------------ services

    def apps(self) -> list[dict[str, Any]]:
        apps: list[dict[str, Any]] = self.get(
            "/v2/apps", params=[("embed", "apps.counts"), ("embed", "apps.tasks")])["apps"]
        return apps

    def app(self, app_id: str) -> dict[str, Any]:
        app: dict[str, Any] = self.get("/v2/apps" + _quote_app(app_id))["app"]
        return app

    def tasks(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = self.get("/v2/tasks")["tasks"]
        return tasks

    def queue(self) -> dict[str, dict[str, Any]]:
        """Waiting apps by id (Marathon's ``/v2/queue`` items)."""
        return {item["app"]["id"]: item for item in self.get("/v2/queue")["queue"]}

    def deployments(self) -> list[dict[str, Any]] | None:
        """Marathon's deployments, or ``None`` when this Dromos has no deployments API."""
        r = self.request("GET", "/v2/deployments", allow=(404, 405))
        if r.status_code in (404, 405):
            return None
        body = r.json()
        return body if isinstance(body, list) else None

    def deploy(self, definition: Mapping[str, Any],
               force: bool = False) -> tuple[str, str | None, bool]:
        """Create the app, or update it when it exists (``force``: even while a deployment
        holds it). Returns (app id, deployment id if the server named one, created)."""
        app_id = str(definition.get("id", ""))
        if not app_id:
            raise ApiError("the app definition has no 'id'")
        r = self.request("POST", "/v2/apps", json=dict(definition), allow=(409,))
        if r.status_code != 409:
            body = r.json()
            deps = body.get("deployments") or []
            dep_id = r.headers.get("Marathon-Deployment-Id") or (
                deps[0].get("id") if deps and isinstance(deps[0], dict) else None)
            return str(body.get("id", app_id)), dep_id, True
        r = self._put_app(app_id, dict(definition), force)
        return _deployment_of(r, app_id)

    def require_app(self, app_id: str) -> str:
        """``app_id`` as an absolute id, or :class:`ApiError` (404) saying it does not
        exist."""
        app = "/" + app_id.strip("/")
        r = self.request("GET", "/v2/apps" + _quote_app(app), allow=(404,))
        if r.status_code == 404:
            raise ApiError(f"app {app} does not exist (`dromos apps` lists the apps)", 404)
        return app

    def already_defined(self, definition: Mapping[str, Any]) -> tuple[str, str | None] | None:
        """(app id, the deployment rolling it out or ``None``) when the app exists and every
        field of ``definition`` already has that value; ``None`` otherwise (a change)."""
        app_id = "/" + str(definition.get("id", "")).strip("/")
        if app_id == "/":
            return None
        r = self.request("GET", "/v2/apps" + _quote_app(app_id), allow=(404,))
        if r.status_code == 404:
            return None
        current = r.json().get("app") or {}
        if not all(_within(v, current.get(k)) for k, v in definition.items() if k != "id"):
            return None
        deps = [d for d in self.deployments() or [] if app_id in (d.get("affectedApps") or [])]
        return app_id, (str(deps[0].get("id")) if deps else None)

    def scale(self, app_id: str, instances: int,
              force: bool = False) -> tuple[str, str | None, bool]:
        """Change an existing app's instances (a PUT alone would create a missing app)."""
        self.require_app(app_id)
        r = self._put_app(app_id, {"instances": instances}, force)
        return _deployment_of(r, app_id)

    def _put_app(self, app_id: str, body: dict[str, Any], force: bool) -> httpx.Response:
        r = self.request("PUT", "/v2/apps" + _quote_app(app_id), json=body,
                         params={"force": "true"} if force else None,
                         allow=() if force else (409,))
        if r.status_code == 409:
            raise ApiError(self.held_message(app_id, r), 409)
        return r

    def held_message(self, app_id: str, answer: httpx.Response) -> str:
        """Why a change of ``app_id`` was refused with 409: which deployment holds the app,
        what that deployment waits for, and how to go on."""
        try:
            body = answer.json()
        except ValueError:
            body = {}
        ids = [str(d.get("id")) for d in (body.get("deployments") or []) if isinstance(d, dict)]
        if not ids:
            return _error_message(answer)
        app = "/" + app_id.strip("/")
        known = {str(d.get("id")): d for d in (self.deployments() or [])}
        lines = []
        for dep_id in ids:
            d = known.get(dep_id)
            if d is None:
                lines.append(f"{app} is held by deployment {dep_id}")
                continue
            actions = ", ".join(f"{a.get('action')} {a.get('app', '')}".strip()
                                for a in d.get("currentActions") or [])
            lines.append(f"{app} is held by deployment {dep_id} (step "
                         f"{d.get('currentStep', 0)} of {d.get('totalSteps', 0)}"
                         + (f": {actions}" if actions else "") + ")")
        try:
            current = self.app(app)
            wants = (f", waiting for {app} to run {current.get('instances')} instances "
                     f"({current.get('tasksRunning', 0)} run now)")
        except ApiError:
            wants = ""
        reason = _dromos_reason(self, app)
        if reason is None:
            item = self.queue().get(app)
            reason = _queue_reason(item) if item is not None else None
        lines[-1] += wants + (f"; the rest cannot be placed: {reason}" if reason else "")
        return ("\n  ".join(lines) + "\n  to apply this change anyway, replacing that deployment, "
                "rerun with --force; or wait for it (`dromos deployments`)")

    # ------------------------------------------------------------------ Dromos's /ui

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = self.get("/ui/state")
        return state

    def run_job(self, name: str) -> dict[str, Any]:
        run: dict[str, Any] = self.request(
            "POST", f"/ui/jobs/{quote(name, safe='')}/run", json={}).json()["run"]
        return run

    def run(self, run_id: str) -> dict[str, Any]:
        run: dict[str, Any] = self.get(f"/ui/runs/{quote(run_id, safe='')}")["run"]
        return run

    def logs(self, ident: str, tail: int | None = None,
             cursor: str | None = None) -> dict[str, Any]:
        """One read of ``/ui/logs``: the tail (all lines when ``tail`` is ``None``), or what
        came after ``cursor``."""
        params: dict[str, Any] = {"cursor": cursor} if cursor else \
            {"tail": -1 if tail is None else tail}
        body: dict[str, Any] = self.get(f"/ui/logs/{quote(ident, safe='')}", params=params)
        return body


def _within(want: Any, have: Any) -> bool:
    """``want`` (from a definition file) is already what ``have`` (the app as Dromos returns
    it, with defaults filled in) says: objects by their given keys, lists item by item."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(_within(v, have.get(k)) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(want) == len(have) and all(
            _within(w, h) for w, h in zip(want, have, strict=True))
    return bool(want == have)


def _deployment_of(r: httpx.Response, app_id: str) -> tuple[str, str | None, bool]:
    body = r.json() if r.content else {}
    created = r.status_code == 201
    dep = r.headers.get("Marathon-Deployment-Id") or body.get("deploymentId")
    return str(body.get("id", app_id)) if created else app_id, dep, created


def _error_message(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        body = None
    if r.status_code == 401:
        return ("unauthorized: this Dromos requires credentials; set DROMOS_AUTH_TOKEN "
                "(or DROMOS_BASIC_AUTH=user:password)")
    if isinstance(body, dict):
        msg = str(body.get("message") or body.get("detail") or "")
        details = body.get("details")
        if isinstance(details, list):
            for d in details:
                if isinstance(d, dict):
                    msg += f"\n  {d.get('path', '')}: {'; '.join(map(str, d.get('errors', [])))}"
        if msg:
            return f"{msg} (HTTP {r.status_code})"
    return f"HTTP {r.status_code} from {r.request.method} {r.request.url.path}"


# ---------------------------------------------------------------------- waiting for an app


@dataclass(frozen=True)
class Progress:
    """Where an app stands against its definition, counted over its *current* tasks (those
    started at or after its last configuration change; older ones are being replaced)."""

    instances: int
    running: int
    healthy: int | None  # None: the app has no health checks
    staged: int
    old: int  # tasks of an earlier configuration, or being killed
    waiting_reason: str | None = None
    step: str | None = None  # "step 1 of 2" while a deployment runs

    @property
    def converged(self) -> bool:
        """Every wanted instance runs the current configuration (and is healthy, when the app
        has health checks), nothing is staged, and no surplus or outdated task is left."""
        ready = self.healthy if self.healthy is not None else self.running
        return (self.running == self.instances and ready == self.instances
                and self.staged == 0 and self.old == 0)

    def describe(self) -> str:
        parts = [f"{self.running}/{self.instances} running"]
        if self.healthy is not None:
            parts.append(f"{self.healthy} healthy")
        if self.staged:
            parts.append(f"{self.staged} starting")
        if self.old:
            parts.append(f"{self.old} old/stopping")
        if self.step:
            parts.append(self.step)
        text = " · ".join(parts)
        if self.waiting_reason:
            text += f" · waiting: {self.waiting_reason}"
        return text


def progress_of(app: Mapping[str, Any], waiting_reason: str | None = None,
                step: str | None = None) -> Progress:
    """:class:`Progress` from Marathon's app JSON (with ``tasks`` embedded)."""
    tasks = list(app.get("tasks") or [])
    cfg = str((app.get("versionInfo") or {}).get("lastConfigChangeAt") or app.get("version")
              or "")
    current = [t for t in tasks if str(t.get("version") or "") >= cfg
               and t.get("state") != "TASK_KILLING"]
    running = [t for t in current if t.get("state") == "TASK_RUNNING"]
    healthy: int | None = None
    if app.get("healthChecks"):
        healthy = sum(1 for t in running if t.get("healthCheckResults")
                      and all(r.get("alive") for r in t["healthCheckResults"]))
    return Progress(
        instances=int(app.get("instances", 0)),
        running=len(running),
        healthy=healthy,
        staged=sum(t.get("state") in ("TASK_STAGING", "TASK_STARTING") for t in current),
        old=len(tasks) - len(current),
        waiting_reason=waiting_reason,
        step=step,
    )


def _queue_reason(item: Mapping[str, Any]) -> str | None:
    """Marathon's words for a rejection, when Dromos's own words are not to be had."""
    summary = (item.get("processedOffersSummary") or {}).get("rejectSummaryLastOffers") or []
    parts = [f"{s['declined']} of {s['processed']} nodes: {s['reason']}"
             for s in summary if s.get("declined")]
    return "; ".join(parts) or None


@dataclass
class WaitOutcome:
    """How waiting ended: ``converged``, ``timeout``, ``unplaceable`` or
    ``deployment-failed``; ``progress`` is the last state seen."""

    outcome: str
    progress: Progress
    message: str = ""
    seconds: float = 0.0
    history: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.outcome == "converged"


def wait_for_app(client: Client, app_id: str, deployment_id: str | None, *,
                 timeout: float, stuck_after: float,
                 on_progress: Callable[[Progress, float], None] | None = None,
                 interval: float = 0.5,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> WaitOutcome:
    """Poll until the app converges (see :attr:`Progress.converged`), or give up.

    Gives up with ``timeout`` after ``timeout`` seconds; with ``unplaceable`` once the app's
    queue entry has shown a placement rejection for ``stuck_after`` seconds without a break
    (measured on this machine's clock, so the server's clock does not matter); with
    ``deployment-failed`` when the server has a deployments API and the deployment we
    started ended (failed, cancelled or superseded) while the app had still not converged
    a few seconds later. ``on_progress(progress, elapsed)`` is called after every poll.
    """
    start = clock()
    rejected_since: float | None = None
    deployment_gone_at: float | None = None
    has_deployments = deployment_id is not None
    while True:
        now = clock()
        elapsed = now - start
        queue = client.queue()
        item = queue.get("/" + app_id.strip("/"))
        reason = None
        if item is not None and _queue_reason(item):
            reason = _dromos_reason(client, app_id) or _queue_reason(item)
            rejected_since = now if rejected_since is None else rejected_since
        else:
            rejected_since = None
        step = None
        if has_deployments:
            deps = client.deployments()
            if deps is None:
                has_deployments = False
            else:
                mine = next((d for d in deps if d.get("id") == deployment_id), None)
                if mine is not None:
                    step = f"step {mine.get('currentStep', 0)} of {mine.get('totalSteps', 0)}"
                    deployment_gone_at = None
                elif deployment_gone_at is None:
                    deployment_gone_at = now
        progress = progress_of(client.app(app_id), reason, step)
        if on_progress is not None:
            on_progress(progress, elapsed)
        if progress.converged:
            return WaitOutcome("converged", progress, "converged", elapsed)
        if rejected_since is not None and now - rejected_since >= stuck_after:
            return WaitOutcome("unplaceable", progress,
                               f"cannot be placed: {reason} (for {now - rejected_since:.0f}s)",
                               elapsed)
        if deployment_gone_at is not None and now - deployment_gone_at >= 5.0:
            return WaitOutcome("deployment-failed", progress,
                               f"deployment {deployment_id} ended but the app did not converge "
                               "(failed, cancelled or superseded)", elapsed)
        if elapsed >= timeout:
            why = f" (waiting: {reason})" if reason else ""
            return WaitOutcome("timeout", progress,
                               f"timed out after {timeout:g}s: {progress.describe()}{why}",
                               elapsed)
        sleep(interval)


def _dromos_reason(client: Client, app_id: str) -> str | None:
    """Dromos's own sentence ("3 nodes: insufficient mem") from ``/ui/state``."""
    try:
        state = client.state()
    except ApiError:
        return None
    for app in state.get("apps", []):
        if app.get("id") == "/" + app_id.strip("/") and app.get("waiting"):
            return str(app["waiting"].get("reason") or "") or None
    return None
