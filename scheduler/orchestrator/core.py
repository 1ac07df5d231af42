"""The orchestrator's state and read side: what every part (applier, deployments, app and job
commands, the control loop) shares, and the queries the API reads through."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler.clock import Clock
from scheduler.events import EventBus
from scheduler.model.app import AppSpec
from scheduler.model.app_paths import AppPaths
from scheduler.model.deployment import Deployment
from scheduler.model.health import HealthResult
from scheduler.model.node import Node
from scheduler.model.task import Task, TaskState
from scheduler.orchestrator.jobs import JobBook
from scheduler.placement.results import RejectionSummary, Strategy
from scheduler.placement.taken_ports import TakenPorts
from scheduler.runtimes.base import Runtime
from scheduler.services.backoff import Backoff
from scheduler.services.balancer import Balancer
from scheduler.services.health import HealthMonitor, task_health
from scheduler.services.service_ports import ServicePortAllocator
from scheduler.store.base import StateStore

DRAIN_SECONDS = 10.0
"""The longest a task removed from its service port waits for open connections to finish
before it is killed."""


class NotFound(Exception):
    """An app or task the caller named does not exist."""


class Conflict(Exception):
    """The write clashes with existing state (e.g. an app id that exists).

    ``deployments`` names the deployments that lock the app, when that is the reason."""

    def __init__(self, message: str, deployments: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.deployments = list(deployments)


@dataclass
class QueueInfo:
    """Why an app has fewer tasks than it wants, as of the last pass."""

    count: int
    since: datetime
    delayed_until: datetime | None = None
    rejection: RejectionSummary | None = None
    last_attempt_at: datetime | None = None
    last_placed_at: datetime | None = None


@dataclass
class PassReport:
    """What one :meth:`Orchestrator.run_once` did (for tests and logs)."""

    launched: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


def meta_key(kind: str, app_id: str) -> str:
    return f"app:{app_id}:{kind}"


class OrchestratorCore:
    """State shared by the orchestrator's parts, and its queries. Thread-safe: one lock
    guards every state change."""

    def __init__(
        self,
        store: StateStore,
        runtime: Runtime,
        bus: EventBus,
        clock: Clock,
        *,
        health: HealthMonitor | None = None,
        strategy: Strategy = Strategy.BINPACK,
        loop_interval: float = 0.5,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.bus = bus
        self.clock = clock
        self.health = health
        # Host ports found held by others: out of placement for a while (applier marks them,
        # the loop's placer holds them).
        self.taken_ports = TakenPorts()
        self.strategy = strategy
        self.loop_interval = loop_interval
        self.runtime_available = True
        self.runtime_error: str | None = None
        self._lock = threading.RLock()
        self._queue: dict[str, QueueInfo] = {}
        self._kills_issued: set[str] = set()
        self._spec_cache: dict[tuple[str, str], AppSpec | None] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.jobs = JobBook(store, bus)
        self._adopted = False  # running runs without a task adopted (first pass)
        # Service ports, chosen on every create/update; and the built-in balancer listening
        # on them (the server sets it on runtimes whose tasks run on this machine).
        self.service_ports = ServicePortAllocator(store.list_apps)
        self.balancer: Balancer | None = None
        # Active deployments, persisted (meta "deployments") in the same transaction as the
        # app writes that start them, so a restart resumes them.
        self._deployments: dict[str, Deployment] = {
            d["id"]: Deployment.from_json(d) for d in (store.get_meta("deployments") or [])
        }
        self._ready: dict[str, bool] = {}
        self._draining: set[str] = set()
        self._app_cache: dict[str, AppSpec] | None = None
        self._path_index: AppPaths | None = None  # the ids of _app_cache, by path
        # Bumped on every change of a definition or its versionInfo: read-side caches (the
        # /v2/apps response) key on it.
        self.apps_generation = 0
        self._vi_cache: dict[str, dict[str, str]] = {}
        self._json_cache: dict[tuple[str, str], dict[str, Any]] = {}
        if health is not None:
            saved = store.get_meta("health")
            if saved:
                health.import_state(saved)

    def wake(self) -> None:
        """Run a pass now (after a change that may need action)."""
        self._wake.set()

    # ------------------------------------------------------------------ queries

    def nodes(self) -> list[Node]:
        return self.runtime.nodes()

    def _apps(self) -> dict[str, AppSpec]:
        """Current app definitions, cached. Every app write goes through the orchestrator,
        which updates the cache in the same locked section; the store stays the source of
        truth and a restart (or :meth:`reload_apps`) reads it again."""
        with self._lock:
            if self._app_cache is None:
                self._app_cache = {a.id: a for a in self.store.list_apps()}
            return self._app_cache

    def _app_paths(self) -> AppPaths:
        """The ids of :meth:`_apps` indexed by path, for the app/group overlap check in
        O(depth of an id); app writes update it beside the cache."""
        with self._lock:
            if self._path_index is None:
                self._path_index = AppPaths(self._apps())
            return self._path_index

    def reload_apps(self) -> None:
        """Drop cached definitions (after writes that bypassed the orchestrator)."""
        with self._lock:
            self._app_cache = None
            self._path_index = None
            self._vi_cache.clear()
            self.apps_generation += 1

    def apps(self) -> list[AppSpec]:
        return [a for _, a in sorted(self._apps().items())]

    def app(self, app_id: str) -> AppSpec:
        spec = self._apps().get(app_id)
        if spec is None:
            raise NotFound(f"App '{app_id}' does not exist")
        return spec

    def marathon_json(self, spec: AppSpec) -> dict[str, Any]:
        """``spec.to_marathon()``, cached per version (a shallow copy: add keys freely)."""
        key = (spec.id, spec.version or "")
        cached = self._json_cache.get(key)
        if cached is None:
            if len(self._json_cache) > 50_000:
                self._json_cache.clear()
            cached = self._json_cache[key] = spec.to_marathon()
        return dict(cached)

    def tasks(self, app_id: str | None = None) -> list[Task]:
        """The live tasks of apps (of one app); job runs' attempts are not listed."""
        return [t for t in self.store.list_tasks(app_id)
                if not t.state.terminal and t.job is None]

    def health_results(self, task: Task, spec: AppSpec) -> list[HealthResult]:
        if self.health is None or not spec.healthChecks:
            return []
        return self.health.results(task.id)[: len(spec.healthChecks)]

    def is_healthy(self, task: Task, spec: AppSpec) -> bool | None:
        """``None`` when the app has no checks or none answered yet."""
        if not spec.healthChecks or task.state is not TaskState.RUNNING:
            return None
        return task_health(self.health_results(task, spec))

    def version_info(self, app_id: str) -> dict[str, str]:
        cached = self._vi_cache.get(app_id)
        if cached is None:
            info = self.store.get_meta(meta_key("versionInfo", app_id))
            cached = self._vi_cache[app_id] = dict(info) if info else {}
        return dict(cached)

    def _put_version_info(self, app_id: str, info: dict[str, str] | None) -> None:
        self.apps_generation += 1
        self.store.put_meta(meta_key("versionInfo", app_id), info)
        if info is None:
            self._vi_cache.pop(app_id, None)
        else:
            self._vi_cache[app_id] = dict(info)

    def last_task_failure(self, app_id: str) -> dict[str, Any] | None:
        v = self.store.get_meta(meta_key("lastTaskFailure", app_id))
        return dict(v) if v else None

    def queue(self) -> dict[str, QueueInfo]:
        with self._lock:
            return dict(self._queue)

    def backoff(self, app_id: str) -> Backoff:
        return Backoff.from_json(self.store.get_meta(meta_key("backoff", app_id)))

    def app_versions(self, app_id: str) -> list[str]:
        self.app(app_id)
        return self.store.list_app_versions(app_id)

    def app_version(self, app_id: str, version: str) -> AppSpec:
        spec = self.store.get_app_version(app_id, version)
        if spec is None:
            raise NotFound(f"App '{app_id}' has no version '{version}'")
        return spec

    def _spec_at(self, app_id: str, version: str) -> AppSpec | None:
        key = (app_id, version)
        if key not in self._spec_cache:
            self._spec_cache[key] = self.store.get_app_version(app_id, version)
        return self._spec_cache[key]
