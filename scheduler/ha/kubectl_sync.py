"""kubectl as a way in: the leader acts on App and Job objects users apply or delete.

:class:`KubectlSync` keeps a watch cache of the namespace's App and Job objects (the runtime's
:class:`~scheduler.runtimes.kubernetes.cache.Reflector`: list, then watch from the
resourceVersion, list again on 410) and, whenever one changes, makes one pass
(:meth:`KubectlSync.sync_once`) that compares every object with the store:

- each object whose ``metadata.generation`` it has not handled yet is classified by
  :func:`scheduler.ha.bridge.classify` (the REST API's validation):
  ``Echo`` (Dromos's own write coming back) does nothing; ``Apply`` calls the orchestrator
  command the REST API would (``create_app`` / ``update_app`` / ``put_job``), after making the
  store adopt the object as classified (its name, resourceVersion and generation), so the
  command's write replaces it: no second object for a user-named one, and no conflict with
  the user's change being applied; ``Invalid`` (or a command that refuses) sets
  ``status.conditions`` Valid=False, posts a Warning Event, and runs nothing;
- each app or job the store holds whose object is missing from a cache at least as new as
  Dromos's last write of that object was deleted by a user (``kubectl delete``): the app (with
  its tasks) or the job is deleted. ResourceVersions of an etcd-backed API server are
  increasing integers; that is what makes "at least as new" decidable. A record written after
  the cache's version (Dromos's create not yet seen by the watch) is never taken for deleted.

It runs on the leader only: the commands and the status writes carry the fence. A command
failing for a reason that may pass (the store unreachable, leadership lost) is tried again on
the next pass (every ``resync_s`` at the latest); a refusal is reported on the object until its
spec changes.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client as k8s_client

from scheduler.ha.bridge import Apply, Echo, Invalid, Kind, classify, key_of
from scheduler.ha.elector import NotLeader
from scheduler.ha.kube_http import KubeConflict, KubeError, KubeNotFound
from scheduler.ha.kube_status import Verdict, Verdicts, post_event, write_condition
from scheduler.runtimes.kubernetes.cache import Reflector
from scheduler.store.kubernetes import (
    GROUP,
    KEY_ANNOTATION,
    VERSION,
    KubernetesStore,
    StoreUnavailable,
)

log = logging.getLogger("dromos.ha.kubectl_sync")

KINDS: tuple[Kind, ...] = ("App", "Job")
PLURALS: dict[Kind, str] = {"App": "apps", "Job": "jobs"}
TRANSIENT: tuple[type[BaseException], ...] = (StoreUnavailable, NotLeader, KubeError)


@dataclass(frozen=True)
class Commands:
    """The orchestrator commands the REST API uses, taking the Marathon / Chronos JSON
    (already validated; ``id`` / ``name`` set). A command that refuses raises (the message is
    shown on the object); :data:`TRANSIENT` exceptions mean "try again later"."""

    create_app: Callable[[dict[str, Any]], object]
    update_app: Callable[[dict[str, Any]], object]
    delete_app: Callable[[str], object]  # deletes its tasks too
    put_job: Callable[[dict[str, Any]], object]
    delete_job: Callable[[str], object]


def _newer_or_same(cache_version: str | None, record_version: str) -> bool:
    try:
        return cache_version is not None and int(cache_version) >= int(record_version)
    except ValueError:
        return False  # not an etcd-backed server: deletions cannot be told apart; keep


class KubectlSync:
    """See the module docstring. ``api``: a kubernetes ``ApiClient``; ``fence()``: the
    leader's token for status writes (raises ``NotLeader`` on a standby)."""

    def __init__(self, api: Any, namespace: str, store: KubernetesStore, commands: Commands,
                 fence: Callable[[], str], *, verdicts: Verdicts | None = None,
                 resync_s: float = 30.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._api = api
        self.namespace = namespace
        self._store = store
        self._commands = commands
        self._fence = fence
        self.verdicts = verdicts if verdicts is not None else Verdicts()
        self.resync_s = resync_s
        self._clock = clock
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handled: dict[tuple[str, str], int] = {}  # (kind, uid) → generation handled
        # Objects a command refused (an app locked by a deployment...): when to try again.
        self._retry_at: dict[tuple[str, str], datetime] = {}
        self._deleting: set[tuple[str, str, str]] = set()  # (kind, key, object name) asked
        custom = k8s_client.CustomObjectsApi(api)
        self._caches: dict[Kind, Reflector[dict[str, Any]]] = {
            kind: Reflector(
                f"{PLURALS[kind]}.{GROUP}",
                functools.partial(custom.list_namespaced_custom_object, GROUP, VERSION,
                                  namespace, PLURALS[kind]),
                self._seen, lambda _obj, _final: self._wake.set())
            for kind in KINDS}
        self.passes = 0

    def _seen(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """The caches' conversion: keeps the object and wakes the pass (called for every
        object listed and every watch event)."""
        self._wake.set()
        return dict(obj)

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        """Start watching and the pass thread (daemon) until :meth:`stop`."""
        for cache in self._caches.values():
            cache.start()
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="dromos-kubectl-sync",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for cache in self._caches.values():
            cache.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def synced(self) -> bool:
        return all(c.synced.is_set() for c in self._caches.values())

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.resync_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.sync_once()
            except Exception:  # one bad pass must not end the bridge
                log.exception("kubectl sync pass failed")

    # ------------------------------------------------------------------ one pass
    def sync_once(self) -> None:
        """Act on every unhandled object and every user deletion (module docstring). Does
        nothing until both caches have listed once."""
        if not self.synced():
            return
        for kind in KINDS:
            cache = self._caches[kind]
            version = cache.resource_version  # before the values: "at least as new"
            objects = cache.values()
            for obj in objects:
                self._object(kind, obj)
            self._deletions(kind, objects, version)
            uids = {str(o["metadata"].get("uid")) for o in objects}
            for gone in [h for h in self._handled if h[0] == kind and h[1] not in uids]:
                del self._handled[gone]
                self._retry_at.pop(gone, None)
        self.passes += 1

    def _object(self, kind: Kind, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp"):
            return
        handled_key = (kind, str(meta.get("uid")))
        generation = int(meta.get("generation") or 0)
        retry_at = self._retry_at.get(handled_key)
        if self._handled.get(handled_key) == generation and (
                retry_at is None or self._clock() < retry_at):
            return
        self._retry_at.pop(handled_key, None)
        name = str(meta["name"])
        key = (meta.get("annotations") or {}).get(KEY_ANNOTATION) or key_of(kind, obj)
        stored = self._store.stored(kind, key)
        if stored is not None and stored.name != name:
            what = "app" if kind == "App" else "job"
            self._report(kind, obj, Verdict(
                False, "Duplicate", f"{what} {key} is already defined by {kind} {stored.name}"))
        else:
            decision = classify(kind, obj, stored.text if stored is not None else None)
            if isinstance(decision, Invalid):
                self._report(kind, obj, Verdict(False, "Invalid",
                                                decision.condition_message()))
            elif isinstance(decision, Apply):
                try:
                    self._apply(kind, obj, decision, exists=stored is not None)
                except TRANSIENT as e:
                    log.info("applying %s %s: %s; trying again later", kind, name, e)
                    return  # not handled: the next pass tries again
                except Exception as e:  # the command refused (conflict, bad reference)
                    self._report(kind, obj, Verdict(False, "Rejected",
                                                    str(e) or type(e).__name__))
                    # The same object may be accepted later (a deployment ends): GitOps tools
                    # re-apply without changing it, so it is tried again after a while.
                    self._retry_at[handled_key] = self._clock() + timedelta(
                        seconds=self.resync_s)
                else:
                    self._report(kind, obj, Verdict(True, "Applied", ""))
            else:
                assert isinstance(decision, Echo)
        self._handled[handled_key] = generation

    def _apply(self, kind: Kind, obj: dict[str, Any], decision: Apply, *, exists: bool) -> None:
        # The command's write replaces this very object, at the version classified: a user's
        # object gets its record, and a user's change is not refused as a conflict with it.
        self._store.adopt(kind, obj, decision.key)
        if kind == "Job":
            self._commands.put_job(decision.definition)
        elif exists:
            self._commands.update_app(decision.definition)
        else:
            self._commands.create_app(decision.definition)
        log.info("applied %s %s from kubectl", kind, decision.key)

    def _report(self, kind: Kind, obj: dict[str, Any], verdict: Verdict) -> None:
        """Record the verdict and, when the object's Valid condition does not say it yet,
        write it, with a Warning Event for a refusal (so a new leader or a relist does not
        repeat them). A report that cannot be written is only logged (the status writer
        writes the verdict again)."""
        name = str(obj["metadata"]["name"])
        self.verdicts.set(kind, name, verdict)
        current = next((c for c in (obj.get("status") or {}).get("conditions") or []
                        if isinstance(c, dict) and c.get("type") == "Valid"), None)
        shown = current is not None and (current.get("status"), current.get("reason"),
                                         current.get("message") or "") == (
            "True" if verdict.valid else "False", verdict.reason, verdict.message)
        if shown or (current is None and verdict.valid):
            return  # said already (a valid object without a condition: the status writer's)
        now = self._clock()
        try:
            write_condition(self._api, self.namespace, kind, name, verdict, self._fence(), now)
            if not verdict.valid:
                post_event(self._api, self.namespace, obj, verdict.reason, verdict.message, now)
        except (KubeError, KubeConflict, KubeNotFound, NotLeader) as e:
            log.warning("reporting %s %s as %s failed: %s", kind, name, verdict.reason, e)

    def _deletions(self, kind: Kind, objects: list[dict[str, Any]], version: str | None) -> None:
        present = {str(o["metadata"]["name"]) for o in objects}
        keys = ([a.id for a in self._store.list_apps()] if kind == "App"
                else [j.name for j in self._store.list_jobs()])
        asked: set[tuple[str, str, str]] = set()
        for key in keys:
            stored = self._store.stored(kind, key)
            if (stored is None or stored.name in present
                    or not _newer_or_same(version, stored.resource_version)):
                continue
            if (kind, key, stored.name) in self._deleting:
                asked.add((kind, key, stored.name))
                continue  # asked already (an app's deletion waits for its tasks to end)
            try:
                if kind == "App":
                    self._commands.delete_app(key)
                else:
                    self._commands.delete_job(key)
            except TRANSIENT as e:
                log.info("deleting %s %s: %s; trying again later", kind, key, e)
                continue
            except Exception:
                log.exception("deleting %s %s (deleted with kubectl) failed", kind, key)
                continue
            asked.add((kind, key, stored.name))
            self.verdicts.forget(kind, stored.name)
            log.info("%s %s was deleted with kubectl: deleting it", kind, key)
        self._deleting = {d for d in self._deleting if d[0] != kind} | asked
