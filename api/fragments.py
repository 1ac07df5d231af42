"""Per-app response fragments: ``GET /v2/apps`` and ``GET /v2/apps/{id}`` without the loop.

Each app's JSON, for each *view* (the set of embedded sections), is encoded once with orjson
and kept as bytes. ``GET /v2/apps/{id}`` serves the fragment inside ``{"app": ...}``;
``GET /v2/apps`` joins the fragments of the listed apps, and keeps the joined body until any
app changes. Serving a kept fragment or body takes no lock and reads no store: it never waits
for a control-loop pass.

Invalidation is per app, driven by the orchestrator's events (the facts Marathon clients use
for the same purpose): a definition written or deleted (``api_post_event``,
``app_terminated_event``), a task's state (``status_update_event``), health
(``health_status_changed_event`` and the other events naming an ``appId``), and deployments
started or finished (the apps their plan names). The orchestrator publishes each of these
inside the locked section that makes the change; fragments are built inside
:meth:`~scheduler.queries.Queries.quiescent` (that same lock), so a fragment built after an
event always sees the change it reports, and one built before is dropped by it.

Two things change without an event and are therefore never cached: the probe results
(``healthCheckResults`` timestamps and counters) of running tasks of apps with health checks
in views that embed tasks -- built afresh on each read -- and definitions written behind the
orchestrator's back (:meth:`~scheduler.orchestrator.Orchestrator.reload_apps`), which the
API's fragments follow only from that app's next event. Health *flips* (healthy counts) do
have an event, published by the pass that sees them.

Non-finite floats, which validation keeps out, are written as ``null`` (orjson's rule and
:func:`api.limits.strict_dumps`'s): the output is always strict JSON.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any

import orjson

from api.presentation import app_json, reads
from scheduler.events import MARATHON, Event
from scheduler.model.app import AppSpec
from scheduler.model.task import Task, TaskState
from scheduler.orchestrator import Orchestrator

View = frozenset[str]
"""The embedded sections of an app's JSON (``parse_embed``'s lowercase names)."""

ListKey = tuple[str | None, str | None, str | None, View]
"""A listing's query: ``cmd``, ``id``, ``label`` and the view."""

_KEPT_LISTS = 8  # distinct listing queries whose joined bodies are kept
_BULK_TASK_READ = 32  # more apps to build than this: read every task once, not per app


def changed_apps(event: Event) -> tuple[list[str], bool]:
    """The app ids an event says changed, and whether it says the first of them is gone."""
    p = event.payload
    if event.event_type == "app_terminated_event":
        return [str(p["appId"])], True
    if event.event_type == "api_post_event":
        definition = p.get("appDefinition") or {}
        return ([str(definition["id"])] if "id" in definition else []), False
    plan = p.get("plan")
    if isinstance(plan, dict):
        ids = [str(a["id"]) for side in ("original", "target")
               for a in (plan.get(side) or {}).get("apps", []) if "id" in a]
        return ids, False
    if "appId" in p:
        return [str(p["appId"])], False
    return [], False


def _probes_change_unannounced(spec: AppSpec, view: View, tasks: list[Task]) -> bool:
    return "tasks" in view and bool(spec.healthChecks) and any(
        t.state is TaskState.RUNNING for t in tasks)


class AppFragments:
    """The encoded fragments of every app and the joined listings, kept current from the
    orchestrator's event bus."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._o = orchestrator
        self._frags: dict[str, dict[View, bytes]] = {}
        self._lists: dict[ListKey, tuple[int, bytes]] = {}
        self._epochs = itertools.count(1)
        self._epoch = 0
        self._feed_lock = threading.Lock()
        with reads(orchestrator).quiescent():
            orchestrator.bus.add_listener(self._on_event)

    # ------------------------------------------------------------------ the change feed

    def _on_event(self, event: Event) -> None:
        if event.stream != MARATHON:
            return
        ids, _ = changed_apps(event)
        if not ids:
            return
        with self._feed_lock:
            for app_id in ids:
                self._frags.pop(app_id, None)
            self._epoch = next(self._epochs)

    def close(self) -> None:
        """Stop following the bus (the fragments kept are no longer trusted)."""
        self._o.bus.remove_listener(self._on_event)
        with self._feed_lock:
            self._frags.clear()
            self._lists.clear()

    # ------------------------------------------------------------------ reads (no lock)

    def cached_app(self, app_id: str, view: View) -> bytes | None:
        """``{"app": ...}`` from the kept fragment, or ``None`` (build it: :meth:`app`)."""
        frag = self._frags.get(app_id, {}).get(view)
        return None if frag is None else b'{"app":' + frag + b"}"

    def cached_list(self, key: ListKey) -> bytes | None:
        """The kept listing body for ``key`` if no app changed since it was joined."""
        kept = self._lists.get(key)
        return kept[1] if kept is not None and kept[0] == self._epoch else None

    # ------------------------------------------------------------------ builds (locked)

    def app(self, app_id: str, view: View) -> bytes:
        """``{"app": ...}`` for ``app_id``, building the fragment if needed. Raises
        :class:`~scheduler.orchestrator.NotFound`. Waits for a running pass."""
        o = self._o
        with reads(o).quiescent():
            spec = o.app(app_id)
            frag = self._fragment(spec, view, lambda: o.tasks(spec.id))
        return b'{"app":' + frag + b"}"

    def listing(self, key: ListKey, select: Callable[[AppSpec], bool]) -> bytes:
        """``{"apps": [...]}`` of the apps ``select`` keeps, in id order, from fragments
        (built where missing), and kept for :meth:`cached_list`. Waits for a running pass."""
        o = self._o
        view = key[3]
        with reads(o).quiescent():
            epoch = self._epoch
            specs = [s for s in o.apps() if select(s)]
            missing = sum(view not in self._frags.get(s.id, {}) for s in specs)
            by_app: dict[str, list[Task]] | None = None
            if missing > _BULK_TASK_READ:
                by_app = {}
                for t in o.tasks():
                    by_app.setdefault(t.app_id, []).append(t)

            def tasks_of(app_id: str) -> Callable[[], list[Task]]:
                if by_app is not None:
                    return lambda: by_app.get(app_id, [])
                return lambda: o.tasks(app_id)

            parts = [self._fragment(s, view, tasks_of(s.id)) for s in specs]
            body = b'{"apps":[' + b",".join(parts) + b"]}"
            if len(self._lists) >= _KEPT_LISTS and key not in self._lists:
                self._lists.pop(next(iter(self._lists)))
            self._lists[key] = (epoch, body)
        return body

    def _fragment(self, spec: AppSpec, view: View, tasks: Callable[[], list[Task]]) -> bytes:
        kept = self._frags.get(spec.id, {}).get(view)
        if kept is not None:
            return kept
        live = tasks()
        frag = encode(app_json(self._o, spec, set(view), live))
        if not _probes_change_unannounced(spec, view, live):
            self._frags.setdefault(spec.id, {})[view] = frag
        return frag


def encode(value: Any) -> bytes:
    """Strict JSON bytes (a non-finite float is written as ``null``)."""
    return orjson.dumps(value)
