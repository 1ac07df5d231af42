"""The Services of apps (see the package docstring, "Services"): created or updated when a
runtime instance launches a task of the app, deleted once the app has had no pod for
:data:`SERVICE_IDLE_SECONDS`."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from scheduler.runtimes.base import LABEL_APP, RuntimeUnavailable
from scheduler.runtimes.kubernetes.cache import parse_time
from scheduler.runtimes.kubernetes.client import TIMEOUT, UNREACHABLE, describe, status_message
from scheduler.runtimes.kubernetes.fencing import Fence
from scheduler.runtimes.kubernetes.names import ANNOTATION_APP_ID, LABEL_MANAGED_BY, MANAGED_BY

log = logging.getLogger(__name__)

Json = dict[str, Any]
SERVICE_IDLE_SECONDS = 60.0
SERVICE_SWEEP_SECONDS = 30.0

Unavailable = Callable[[str, BaseException], RuntimeUnavailable]
"""Turns a failure while doing something into the error to raise (and backs off)."""


@dataclass
class _ServiceState:
    fingerprint: str
    ensured_at: float = field(default_factory=time.monotonic)


class ServiceKeeper:
    """The Services of one namespace, as far as one runtime instance ensured them.
    Thread-safe."""

    def __init__(self, namespace: str, unavailable: Unavailable, fence: Fence) -> None:
        self.namespace = namespace
        self.fence = fence
        self._unavailable = unavailable
        self._lock = threading.Lock()
        self._services: dict[str, _ServiceState] = {}
        self._last_launch: dict[str, float] = {}
        self._sweep_at = 0.0

    def launched(self, app_id: str) -> None:
        """Note that a task of ``app_id`` was just launched (its Service is in use)."""
        with self._lock:
            self._last_launch[app_id] = time.monotonic()

    def ensure(self, core: Any, app_id: str, service: Json) -> None:
        """Create the app's Service, or update its selector and ports when they differ from
        what this instance last ensured. A Service the API server refuses (invalid, or RBAC)
        is logged, not raised: the task still runs, only its by-name address is missing.
        Raises :class:`RuntimeUnavailable` when the API server cannot be reached."""
        fingerprint = json.dumps(service["spec"], sort_keys=True)
        with self._lock:
            known = self._services.get(app_id)
            if known is not None and known.fingerprint == fingerprint:
                known.ensured_at = time.monotonic()
                return
        name = service["metadata"]["name"]
        service["metadata"].setdefault("annotations", {}).update(self.fence.annotations())
        try:
            try:
                core.create_namespaced_service(self.namespace, service, _preload_content=False,
                                               _request_timeout=TIMEOUT)
            except ApiException as e:
                if e.status != 409:
                    raise
                # It exists (an earlier instance, or an older version of the app): make its
                # ports and selector this version's; a merge patch replaces both wholesale.
                core.patch_namespaced_service(
                    name, self.namespace,
                    {"metadata": {"labels": service["metadata"]["labels"],
                                  "annotations": service["metadata"]["annotations"]},
                     "spec": {"selector": service["spec"]["selector"],
                              "ports": service["spec"]["ports"]}},
                    _content_type="application/merge-patch+json", _preload_content=False,
                    _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status is not None and 400 <= e.status < 500 and e.status != 429:
                # Invalid, or not allowed (RBAC): not retried on every launch of this version.
                log.warning("the API server refused Service %s of app %s: %s %s", name, app_id,
                            e.status, status_message(e))
                with self._lock:
                    self._services[app_id] = _ServiceState(fingerprint)
                return
            raise self._unavailable(f"creating Service {name!r}", e) from e
        except UNREACHABLE as e:
            raise self._unavailable(f"creating Service {name!r}", e) from e
        with self._lock:
            self._services[app_id] = _ServiceState(fingerprint)

    def sweep(self, core: Callable[[], Any], apps_with_pods: Iterable[str]) -> None:
        """Delete Services of ours whose app (label) is not in ``apps_with_pods`` and had no
        launch for ``SERVICE_IDLE_SECONDS`` (the app was deleted or scaled to zero; a later
        launch creates it again). At most every :data:`SERVICE_SWEEP_SECONDS`; ``core`` is
        only called then. Failures are logged: the next sweep tries again."""
        now = time.monotonic()
        if now < self._sweep_at:
            return
        self._sweep_at = now + SERVICE_SWEEP_SECONDS
        apps = set(apps_with_pods)
        try:
            api = core()
            response = api.list_namespaced_service(
                self.namespace, label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_APP}",
                _preload_content=False, _request_timeout=TIMEOUT)
            for svc in json.loads(response.data).get("items") or []:
                meta = svc.get("metadata") or {}
                label = (meta.get("labels") or {}).get(LABEL_APP)
                app_id = (meta.get("annotations") or {}).get(ANNOTATION_APP_ID, "")
                with self._lock:
                    launched = self._last_launch.get(app_id, -math.inf)
                created = parse_time(meta.get("creationTimestamp"))
                young = created is not None and (
                    datetime.now(UTC) - created).total_seconds() < SERVICE_IDLE_SECONDS
                if label in apps or young or now - launched < SERVICE_IDLE_SECONDS:
                    continue
                self.fence.stamp(api.patch_namespaced_service, meta["name"], self.namespace)
                api.delete_namespaced_service(meta["name"], self.namespace,
                                              _preload_content=False, _request_timeout=TIMEOUT)
                with self._lock:
                    self._services.pop(app_id, None)
        except ApiException as e:
            if e.status != 404:
                log.warning("sweeping Services failed: %s", describe(e))
        except (RuntimeUnavailable, *UNREACHABLE) as e:
            log.debug("sweeping Services failed: %s", e)
