"""The status page: nodes, services, tasks and why instances wait. Server-rendered, escaped.

This is the foundation's page (refreshes itself every few seconds); the live SSE page replaces
it later. Every user-provided string goes through :func:`html.escape`.
"""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from scheduler.model.resources import Resources, format_port_ranges
from scheduler.model.task import TaskState
from scheduler.orchestrator import Orchestrator

router = APIRouter()

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
header{background:#1d232b;color:#fff;padding:10px 20px}header b{font-size:18px}
main{padding:16px 20px;display:grid;gap:16px}
section{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:12px 16px}
h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}
td,th{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f2;vertical-align:top}
th{font-weight:600;color:#5a6470}.bar{background:#e6e9ed;border-radius:3px;height:8px;width:120px}
.bar i{display:block;height:8px;border-radius:3px;background:#3b82f6}
.ok{color:#15803d}.bad{color:#b91c1c}.wait{color:#b45309}.muted{color:#6b7280}
code{font-size:12px}
"""


def _bar(used: float, total: float) -> str:
    pct = 0 if total <= 0 else min(100, round(100 * used / total))
    return (f'<div class="bar" title="{used:g} / {total:g}"><i style="width:{pct}%"></i></div>'
            f'<span class="muted">{used:g} / {total:g}</span>')


def render(o: Orchestrator) -> str:
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
    rows = []
    for n in nodes:
        u = used.get(n.hostname, Resources())
        attrs = ", ".join(f"{escape(k)}={escape(v)}" for k, v in sorted(n.attributes.items()))
        rows.append(
            f"<tr><td><b>{escape(n.hostname)}</b><br><span class=muted>{attrs}</span></td>"
            f"<td>{_bar(u.cpus, n.resources.cpus)}</td><td>{_bar(u.mem, n.resources.mem)}</td>"
            f"<td>{_bar(u.disk, n.resources.disk)}</td>"
            f"<td><code>{escape(format_port_ranges(n.ports))}</code></td>"
            f"<td>{count.get(n.hostname, 0)}</td></tr>"
        )
    node_html = ("<table><tr><th>node</th><th>cpus</th><th>mem (MiB)</th><th>disk (MiB)</th>"
                 "<th>ports</th><th>tasks</th></tr>" + "".join(rows) + "</table>")
    app_rows = []
    for spec in apps:
        ts = [t for t in tasks if t.app_id == spec.id]
        running = sum(t.state is TaskState.RUNNING for t in ts)
        health = [o.is_healthy(t, spec) for t in ts]
        healthy = sum(h is True for h in health)
        q = queue.get(spec.id)
        why = ""
        if q is not None:
            reason = q.rejection.describe() if q.rejection else ""
            if q.delayed_until is not None:
                reason = f"launch delayed (backoff) until {q.delayed_until:%H:%M:%S}"
            why = f'<span class="wait">{q.count} waiting: {escape(reason)}</span>'
        hc = f"{healthy} healthy" if spec.healthChecks else "no health checks"
        command = spec.cmd or " ".join(spec.args or [])
        app_rows.append(
            f"<tr><td><b>{escape(spec.id)}</b><br><code>{escape(command)}</code></td>"
            f"<td>{running} / {spec.instances} running</td><td>{hc}</td>"
            f"<td class=muted>{escape(spec.version or '')}</td><td>{why}</td></tr>"
        )
    app_html = ("<table><tr><th>app</th><th>instances</th><th>health</th><th>version</th>"
                "<th>waiting</th></tr>" + "".join(app_rows) + "</table>") if apps else \
        '<p class="muted">No apps yet. POST one to /v2/apps.</p>'
    task_rows = []
    for t in tasks:
        spec = specs.get(t.app_id)
        h = o.is_healthy(t, spec) if spec else None
        hs = {True: '<span class="ok">healthy</span>', False: '<span class="bad">unhealthy</span>',
              None: '<span class="muted">-</span>'}[h]
        task_rows.append(
            f"<tr><td><code>{escape(t.id)}</code></td><td>{escape(t.app_id)}</td>"
            f"<td>{escape(t.host)}</td><td>{escape(','.join(map(str, t.ports)))}</td>"
            f"<td>{escape(t.state.value)}</td><td>{hs}</td></tr>"
        )
    task_html = ("<table><tr><th>task</th><th>app</th><th>host</th><th>ports</th><th>state</th>"
                 "<th>health</th></tr>" + "".join(task_rows) + "</table>") if tasks else \
        '<p class="muted">No tasks.</p>'
    runtime = (f'<span class="ok">{escape(o.runtime.name)} runtime</span>' if o.runtime_available
               else f'<span class="bad">{escape(o.runtime.name)} runtime unavailable: '
                    f'{escape(o.runtime_error or "")}</span>')
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>Dromos</title>"
        '<meta http-equiv="refresh" content="3"><meta name=viewport content="width=device-width">'
        f"<style>{_STYLE}</style></head><body><header><b>Dromos</b> &nbsp; {runtime}</header><main>"
        f"<section><h2>Cluster</h2>{node_html}</section>"
        f"<section><h2>Services</h2>{app_html}</section>"
        f"<section><h2>Tasks</h2>{task_html}</section>"
        "</main></body></html>"
    )


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def status_page(request: Request) -> str:
    o: Orchestrator = request.app.state.orchestrator
    return render(o)
