"""What App and Job objects show to ``kubectl``: their ``status`` and Events.

- :func:`app_status` / :func:`job_status` (pure) build the status Dromos writes from the
  figures the orchestrator reports; the printer columns of ``manifests/05-crds.yaml`` read them.
- :class:`Verdicts` holds the last validation verdict per object (the kubectl bridge writes
  it, the status writer reads it), so a periodic status write never turns an object a user
  got wrong back to ``Valid=True``.
- :class:`StatusWriter` writes the status of every app and job the store holds, when it
  changed, through the status subresource (read, merged, replaced: the RBAC of
  ``manifests/10-rbac.yaml`` grants ``get`` and ``update`` on it), carrying the fence token in
  ``status.fence``. A status write changes the object's resourceVersion but not its
  generation, which the store tells apart from a user's change of ``spec``.
- :func:`write_condition` and :func:`post_event` are the two writes the bridge reports with.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scheduler.ha.kube_http import KubeConflict, KubeError, KubeNotFound, request
from scheduler.store.kubernetes import GROUP, VERSION, KubernetesStore

log = logging.getLogger("dromos.ha.kube_status")

STATUS_ATTEMPTS = 3  # replaces refused as conflicting (the object changed meanwhile)
PLURALS = {"App": "apps", "Job": "jobs"}


@dataclass(frozen=True)
class AppFigures:
    """What ``kubectl get apps.dromos.io`` shows of an app."""

    instances: int
    running: int
    healthy: int
    version: str


@dataclass(frozen=True)
class JobFigures:
    """What ``kubectl get djob`` shows of a job (times as ISO 8601 text, ``None``: never)."""

    schedule: str
    last_run: str | None
    next_run: str | None
    last_result: str | None  # "success", "failure", ...


@dataclass(frozen=True)
class Verdict:
    """The Valid condition of one object."""

    valid: bool
    reason: str
    message: str

    def condition(self, now: datetime) -> dict[str, str]:
        return {"type": "Valid", "status": "True" if self.valid else "False",
                "reason": self.reason, "message": self.message,
                "lastTransitionTime": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}


ACCEPTED = Verdict(True, "Accepted", "")


class Verdicts:
    """Thread-safe map (kind, object name) → :class:`Verdict`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_object: dict[tuple[str, str], Verdict] = {}

    def set(self, kind: str, name: str, verdict: Verdict) -> None:
        with self._lock:
            self._by_object[(kind, name)] = verdict

    def get(self, kind: str, name: str) -> Verdict:
        with self._lock:
            return self._by_object.get((kind, name), ACCEPTED)

    def forget(self, kind: str, name: str) -> None:
        with self._lock:
            self._by_object.pop((kind, name), None)


def app_status(figures: AppFigures, verdict: Verdict) -> dict[str, Any]:
    """An App's status without the fence and the condition's time (so it can be compared)."""
    return {"instances": figures.instances, "running": figures.running,
            "healthy": figures.healthy, "version": figures.version,
            "conditions": [_timeless(verdict)]}


def job_status(figures: JobFigures, verdict: Verdict) -> dict[str, Any]:
    """A Job's status, as :func:`app_status`."""
    return {"schedule": figures.schedule, "lastRun": figures.last_run,
            "nextRun": figures.next_run, "lastResult": figures.last_result,
            "conditions": [_timeless(verdict)]}


def _timeless(verdict: Verdict) -> dict[str, str]:
    return {"type": "Valid", "status": "True" if verdict.valid else "False",
            "reason": verdict.reason, "message": verdict.message}


def _path(namespace: str, kind: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURALS[kind]}/{name}/status"


def patch_status(api: Any, namespace: str, kind: str, name: str, status: dict[str, Any],
                 fence: str, now: datetime, *, timeout_s: float = 10.0) -> None:
    """Merge ``status`` (conditions stamped with ``now``) into the object's status: read it,
    replace it at the version read, again when someone changed the object meanwhile.
    Raises ``KubeNotFound`` (the object is gone), ``KubeConflict`` (changing too fast),
    ``KubeError``."""
    fields = dict(status)
    fields["fence"] = fence
    if "conditions" in fields:
        fields["conditions"] = [{**c, "lastTransitionTime": _stamp(now)}
                                for c in fields["conditions"]]
    path = _path(namespace, kind, name)
    for attempt in range(STATUS_ATTEMPTS):
        current = request(api, "GET", path, timeout_s=timeout_s)
        current["status"] = {**(current.get("status") or {}), **fields}
        try:
            request(api, "PUT", path, current, timeout_s=timeout_s)
            return
        except KubeConflict:
            if attempt == STATUS_ATTEMPTS - 1:
                raise


def write_condition(api: Any, namespace: str, kind: str, name: str, verdict: Verdict,
                    fence: str, now: datetime) -> None:
    """Set the object's Valid condition (the rest of its status stays)."""
    patch_status(api, namespace, kind, name, {"conditions": [_timeless(verdict)]}, fence, now)


def post_event(api: Any, namespace: str, obj: dict[str, Any], reason: str, message: str,
               now: datetime, *, warning: bool = True) -> None:
    """A core/v1 Event about ``obj`` (``kubectl describe`` and ``kubectl get events`` show
    it)."""
    meta = obj["metadata"]
    stamp = _stamp(now)
    request(api, "POST", f"/api/v1/namespaces/{namespace}/events", {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
        "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": obj["kind"],
                           "name": meta["name"], "namespace": namespace,
                           "uid": meta.get("uid", ""),
                           "resourceVersion": meta.get("resourceVersion", "")},
        "reason": reason, "message": message[:1024],
        "type": "Warning" if warning else "Normal",
        "source": {"component": "dromos"}, "reportingComponent": "dromos",
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1})


def _stamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusWriter:
    """Writes the status of every App and Job object the store holds (see the module
    docstring). ``app_figures(app_id)`` / ``job_figures(name)`` return the figures, or
    ``None`` for a record that is gone; ``fence()`` returns the leader's token (raises
    ``NotLeader`` on a standby: nothing is written)."""

    def __init__(self, api: Any, namespace: str, store: KubernetesStore,
                 fence: Callable[[], str],
                 app_figures: Callable[[str], AppFigures | None],
                 job_figures: Callable[[str], JobFigures | None],
                 verdicts: Verdicts | None = None, *, interval_s: float = 5.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._api = api
        self.namespace = namespace
        self._store = store
        self._fence = fence
        self._app_figures = app_figures
        self._job_figures = job_figures
        self.verdicts = verdicts if verdicts is not None else Verdicts()
        self.interval_s = interval_s
        self._clock = clock
        self._written: dict[tuple[str, str], dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def write_once(self) -> int:
        """Patch every object whose status differs from what this writer last wrote to it;
        how many were patched. A failed patch is tried again on the next call."""
        wanted: dict[tuple[str, str], dict[str, Any]] = {}
        for app in self._store.list_apps():
            figures = self._app_figures(app.id)
            stored = self._store.stored("App", app.id)
            if figures is not None and stored is not None:
                wanted[("App", stored.name)] = app_status(
                    figures, self.verdicts.get("App", stored.name))
        for job in self._store.list_jobs():
            job_figures = self._job_figures(job.name)
            stored = self._store.stored("Job", job.name)
            if job_figures is not None and stored is not None:
                wanted[("Job", stored.name)] = job_status(
                    job_figures, self.verdicts.get("Job", stored.name))
        patched = 0
        for (kind, name), status in wanted.items():
            if self._written.get((kind, name)) == status:
                continue
            try:
                patch_status(self._api, self.namespace, kind, name, status, self._fence(),
                             self._clock())
            except KubeNotFound:
                continue  # deleted meanwhile: the bridge handles that
            except (KubeError, KubeConflict) as e:
                log.warning("writing the status of %s %s failed: %s", kind, name, e)
                continue
            self._written[(kind, name)] = status
            patched += 1
        for gone in set(self._written) - set(wanted):
            del self._written[gone]
        return patched

    def start(self) -> None:
        """Write every ``interval_s`` in a daemon thread until :meth:`stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="dromos-kube-status",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.write_once()
            except Exception:  # NotLeader, a store being reloaded: try again next time
                log.debug("status write pass failed", exc_info=True)
            self._stop.wait(self.interval_s)

