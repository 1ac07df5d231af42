"""The status page at ``/``: a shell that ``api/web/dromos.js`` fills and keeps live from
``/ui/events`` (server-sent events; see :mod:`api.ui`).

The page carries the snapshot ``GET /ui/state`` answers inline (a JSON data block, never
executed), and the script renders it before the page's load event; only then does it open
the stream. A headless browser's ``--dump-dom`` or ``--screenshot``, which capture the page at
its load event, so capture data, and nothing waits for the stream to go quiet. (A ``fetch`` of
``/ui/state`` from the script would not do: the load event does not wait for it.)

What the server renders itself is little and escaped with :func:`html.escape`: the runtime's
state in the header, and a plain ``<noscript>`` summary (nodes, apps with their commands and
why instances wait, jobs) for a browser without JavaScript or a ``curl``. The page's script
builds everything else with DOM text nodes, never HTML strings, and the page is served with a
Content-Security-Policy that allows only its own script and styles: user text that slipped
through as markup could still not run.
"""

from __future__ import annotations

from functools import cache
from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.presentation import WEB_DIR, reads, schedule_info
from api.snapshot import state_cache, with_time
from scheduler import __version__
from scheduler.model.resources import Resources, format_port_ranges
from scheduler.model.task import TaskState
from scheduler.model.timefmt import iso
from scheduler.orchestrator import Orchestrator

router = APIRouter()

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


@cache
def _template() -> str:
    return (WEB_DIR / "index.html").read_text(encoding="utf-8")


def _amount(used: float, total: float) -> str:
    return f"{used:g} / {total:g}"


def render_fallback(o: Orchestrator) -> str:
    """The ``<noscript>`` summary: nodes, apps (command, instances, why waiting) and jobs,
    every user-provided string escaped."""
    nodes = o.nodes()
    apps = o.apps()
    specs = {a.id: a for a in apps}
    tasks = o.tasks()
    queue = o.queue()
    used: dict[str, Resources] = {}
    count: dict[str, int] = {}
    for t in tasks:
        spec = specs.get(t.app_id)
        if spec:
            used[t.host] = used.get(t.host, Resources()) + spec.resources
        count[t.host] = count.get(t.host, 0) + 1
    node_rows = "".join(
        f"<tr><td>{escape(n.hostname)}</td>"
        f"<td>{escape(', '.join(f'{k}={v}' for k, v in sorted(n.attributes.items())))}</td>"
        f"<td>{_amount(used.get(n.hostname, Resources()).cpus, n.resources.cpus)}</td>"
        f"<td>{_amount(used.get(n.hostname, Resources()).mem, n.resources.mem)}</td>"
        f"<td>{escape(format_port_ranges(n.ports))}</td>"
        f"<td>{count.get(n.hostname, 0)}</td></tr>"
        for n in nodes
    )
    app_rows = []
    for spec in apps:
        ts = [t for t in tasks if t.app_id == spec.id]
        running = sum(t.state is TaskState.RUNNING for t in ts)
        q = queue.get(spec.id)
        why = ""
        if q is not None:
            reason = q.rejection.describe() if q.rejection else "waiting for a pass"
            if q.delayed_until is not None:
                reason = f"launch delayed (backoff) until {iso(q.delayed_until)}"
            why = f"{q.count} waiting: {escape(reason)}"
        command = spec.cmd or " ".join(spec.args or [])
        app_rows.append(
            f"<tr><td>{escape(spec.id)}</td><td><code>{escape(command)}</code></td>"
            f"<td>{running} / {spec.instances} running</td><td>{why}</td></tr>"
        )
    job_rows = []
    for job in o.list_jobs():
        words = schedule_info(o, job)["describe"]
        job_rows.append(
            f"<tr><td>{escape(job.name)}</td><td>{escape(words)}</td>"
            f"<td>{escape(job.description)}</td>"
            f"<td>{'disabled' if job.disabled else ''}</td></tr>"
        )
    team_rows = "".join(
        f"<tr><td>{escape(team)}</td>"
        f"<td>{u['used']['cpus']:g} cpus, {u['used']['mem']:g} MiB, {u['used']['gpus']:g} gpus</td>"
        f"<td>{u['guaranteed']['cpus']:g} cpus, {u['guaranteed']['mem']:g} MiB, "
        f"{u['guaranteed']['gpus']:g} gpus</td>"
        f"<td>{u['borrowed']['cpus']:g} cpus, {u['borrowed']['mem']:g} MiB, "
        f"{u['borrowed']['gpus']:g} gpus</td></tr>"
        for team, u in o.team_usage().items()
    )
    preempt_rows = "".join(
        f"<li>{escape(str(p['preemptor']))} preempted {escape(str(p['victim']))} "
        f"({escape(str(p['taskId']))}): {escape(str(p['reason']))}</li>"
        for p in reversed(o.preemptions()[-20:])
    )
    backfill_rows = "".join(
        f"<li>{escape(b['job'])} {escape(b['from'])} → {escape(b['to'])}: "
        f"{b['done']}/{b['total']} done ({b['succeeded']} succeeded, {b['failed']} failed, "
        f"{b['skipped']} already ran), {escape(b['status'])}</li>"
        for b in o.backfills()
    )
    return (
        "<div class=fallback><p>This page updates itself with JavaScript; below is a "
        "snapshot. The same data as JSON: <a href=\"/ui/state\">/ui/state</a>.</p>"
        "<h2>Cluster</h2><table><tr><th>node</th><th>attributes</th><th>cpus</th>"
        f"<th>mem (MiB)</th><th>ports</th><th>tasks</th></tr>{node_rows}</table>"
        "<h2>Services</h2><table><tr><th>app</th><th>command</th><th>instances</th>"
        f"<th>waiting</th></tr>{''.join(app_rows)}</table>"
        "<h2>Jobs</h2><table><tr><th>job</th><th>schedule</th><th>description</th><th></th>"
        f"</tr>{''.join(job_rows)}</table>"
        "<h2>Teams</h2><table><tr><th>team</th><th>used</th><th>guaranteed</th>"
        f"<th>borrowed</th></tr>{team_rows}</table>"
        f"<h2>Preemptions</h2><ul>{preempt_rows}</ul>"
        f"<h2>Backfills</h2><ul>{backfill_rows}</ul></div>"
    )


def render(o: Orchestrator) -> str:
    """The page: the template with the version, the runtime's state and the fallback."""
    if o.runtime_available:
        runtime_class, runtime_text = "ok", f"{reads(o).runtime_name} runtime"
    else:
        runtime_class = "bad"
        runtime_text = (f"{reads(o).runtime_name} runtime unavailable: "
                        f"{o.runtime_error or 'unknown'}")
    return (
        _template()
        .replace("{{VERSION}}", escape(__version__))
        .replace("{{RUNTIME_CLASS}}", runtime_class)
        .replace("{{RUNTIME_TEXT}}", escape(runtime_text))
        .replace("{{FALLBACK}}", render_fallback(o))
        .replace("{{STATE}}", inline_json(with_time(o, state_cache(o).get(o))))
    )


def inline_json(text: str) -> str:
    """JSON text made safe inside a ``<script>`` data block: ``<``, ``>`` and ``&`` as
    ``\\u`` escapes (the same JSON value), so no user string can end the block."""
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def status_page(request: Request) -> HTMLResponse:
    o: Orchestrator = request.app.state.orchestrator
    return HTMLResponse(render(o), headers={"Content-Security-Policy": CSP,
                                            "X-Content-Type-Options": "nosniff",
                                            "Cache-Control": "no-cache"})
