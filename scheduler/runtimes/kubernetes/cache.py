"""The watch cache: what the runtime keeps of pods and Nodes (compact views), kept current by
list + watch in a background thread per collection (see the package docstring, "Watching").
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from kubernetes.client.exceptions import ApiException

from scheduler.model.resources import Resources
from scheduler.model.task import TaskState
from scheduler.runtimes.backoff import Backoff
from scheduler.runtimes.base import LABEL_APP, LABEL_TASK
from scheduler.runtimes.kubernetes.client import (
    CONNECT_TIMEOUT_SECONDS,
    REQUEST_TIMEOUT_SECONDS,
    describe,
)
from scheduler.runtimes.kubernetes.names import ANNOTATION_TASK_ID, CONTAINER_NAME
from scheduler.runtimes.kubernetes.pods import pod_requests, resources_of

log = logging.getLogger(__name__)

WATCH_TIMEOUT_SECONDS = 60
"""Server-side timeout of one watch request; the client gives up 15 s after it, so a silently
dead connection is noticed within 75 s."""
LIST_PAGE_SIZE = 500
MAX_TOMBSTONES = 10000
ENDED_PHASES = frozenset({"Succeeded", "Failed"})



def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class PodView:
    """The parts of a pod the runtime uses (a full pod object is 10-20 times larger, and a
    cluster-wide cache holds every pod)."""

    namespace: str
    name: str
    uid: str
    node: str
    phase: str
    deleting: bool
    task_id: str | None
    requests: Resources
    app_label: str | None = None
    started_at: datetime | None = None
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    waiting: str = ""
    ready: bool = False
    pod_ip: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ended(self) -> bool:
        return self.phase in ENDED_PHASES


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """The :class:`PodView` of a pod object."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    task_id = annotations.get(ANNOTATION_TASK_ID) if LABEL_TASK in labels else None
    statuses = status.get("containerStatuses") or []
    main = next((s for s in statuses if s.get("name") == CONTAINER_NAME),
                statuses[0] if statuses else {})
    state = main.get("state") or {}
    terminated = state.get("terminated") or {}
    running = state.get("running") or {}
    waiting = state.get("waiting") or {}
    exit_code = terminated.get("exitCode")
    started = (parse_time(status.get("startTime")) or parse_time(running.get("startedAt"))
               or parse_time(terminated.get("startedAt")))
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or ())
    return PodView(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        node=str(spec.get("nodeName") or ""),
        phase=str(status.get("phase") or "Pending"),
        deleting=bool(meta.get("deletionTimestamp")),
        task_id=str(task_id) if task_id is not None else None,
        requests=pod_requests(pod),
        app_label=labels.get(LABEL_APP),
        started_at=started,
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        reason=str(terminated.get("reason") or status.get("reason") or ""),
        message=str(terminated.get("message") or status.get("message") or ""),
        waiting=str(waiting.get("reason") or ""),
        ready=ready,
        pod_ip=str(status.get("podIP") or ""),
    )


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str
    labels: Mapping[str, str]
    allocatable: Resources
    schedulable: bool


def node_view(node: Mapping[str, Any]) -> NodeView:
    """The :class:`NodeView` of a Node object. Not schedulable: cordoned, tainted NoSchedule
    or NoExecute (Dromos sets no tolerations), or not Ready."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    tainted = any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or ())
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or ())
    return NodeView(
        name=str(meta.get("name") or ""),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        allocatable=resources_of(status.get("allocatable") or status.get("capacity") or {}),
        schedulable=ready and not tainted and not spec.get("unschedulable"),
    )


def outcome(view: PodView, *, killed: bool) -> tuple[TaskState, int | None, str]:
    """How an ended (or vanished, ``killed``) pod's task ended: state, exit code, message."""
    code = view.exit_code
    if view.reason == "OOMKilled":
        how = "OOM killed"
    elif code is not None:
        how = f"exited with status {code}" + (f" ({view.reason})" if view.reason and
                                              view.reason not in ("Completed", "Error") else "")
    elif view.reason or view.message:
        how = ": ".join(x for x in (view.reason, view.message) if x)
    else:
        how = "ended with an unknown status"
    if killed:
        return TaskState.KILLED, code, f"killed: {how}"
    if view.phase == "Succeeded":
        return TaskState.FINISHED, 0 if code is None else code, how
    return TaskState.FAILED, code, how


# --- list + watch ----------------------------------------------------------------------------


class _Gone(Exception):
    """The API server no longer has the resourceVersion the watch asked for (410)."""


V = TypeVar("V")


class Reflector(Generic[V]):
    """A cache of one collection kept current by list + watch, in a daemon thread.

    ``list_call(**kwargs)`` is a client list method (``list_namespaced_pod`` bound to a
    namespace, ``list_node``...), called with ``_preload_content=False`` so objects stay plain
    JSON. ``convert`` turns an object into the cached value. ``on_removed(value, final)`` runs
    (in the thread) for each value that leaves the cache: ``final`` is ``True`` when it comes
    from a DELETED event (the object's last state), ``False`` when a relist found it gone.

    The watch resumes from the newest resourceVersion seen (events and bookmarks); ``410
    Gone`` or an ERROR event with code 410 makes it list again (counted in ``relists``). A
    failure marks the cache unhealthy (``error``), waits (the runtimes' :class:`Backoff`: 1 s
    doubling to 30 s) and lists again.
    """

    def __init__(self, name: str, list_call: Callable[..., Any],
                 convert: Callable[[Mapping[str, Any]], V],
                 on_removed: Callable[[V, bool], None] | None = None) -> None:
        self.name = name
        self._list_call = list_call
        self._convert = convert
        self._on_removed = on_removed
        self._lock = threading.Lock()
        self._items: dict[str, V] = {}
        # uids of recently deleted objects, oldest first (see put_created).
        self._tombstones: dict[str, None] = {}
        self.resource_version: str | None = None
        self.relists = 0
        self.failures = 0
        self.synced = threading.Event()
        self.healthy = False
        self.error = "not listed yet"
        self._stop = threading.Event()
        self._restart = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None

    # -- reading --

    def get(self, key: str) -> V | None:
        with self._lock:
            return self._items.get(key)

    def values(self) -> list[V]:
        with self._lock:
            return list(self._items.values())

    def put_created(self, key: str, uid: str, value: V) -> None:
        """Insert what a create returned, so readers see the object before its watch event.
        Nothing happens when the watch was faster: the cache already has this object in the
        same or a newer state, or saw it deleted already (its uid is a recent tombstone)."""
        with self._lock:
            if key not in self._items and uid not in self._tombstones:
                self._items[key] = value

    # -- the thread --

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"dromos-watch-{self.name}",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def restart_watch(self) -> None:
        """End the current watch request; the thread watches again from
        ``resource_version`` (tests set that to a compacted version to force a 410)."""
        self._restart.set()
        self._interrupt()

    def _interrupt(self) -> None:
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()  # unblocks the reading thread (urllib3 >= 2.3)
            with contextlib.suppress(Exception):
                response.release_conn()

    def _run(self) -> None:
        backoff = Backoff()
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                self._watch()
                backoff.succeeded()
            except _Gone:
                log.info("watch of %s: resourceVersion %s is gone (410); listing again",
                         self.name, self.resource_version)
                need_list = True
            except Exception as e:
                if self._stop.is_set():
                    return
                if isinstance(e, ApiException) and e.status == 410:
                    need_list = True  # some API servers refuse the watch request itself
                    continue
                if self._restart.is_set():
                    self._restart.clear()
                    if not need_list:
                        continue  # restart_watch() cut the stream: resume from the version
                self.failures += 1
                self.healthy = False
                self.error = f"watching {self.name} failed: {describe(e)}"
                backoff.failed(self.error)
                log.debug("%s; retrying in %.0fs", self.error, backoff.delay)
                self._stop.wait(backoff.delay)
                # After a failure nothing says which events were missed: start from a list.
                need_list = True

    def _relist(self) -> None:
        items: dict[str, V] = {}
        token: str | None = None
        version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_PAGE_SIZE}
            if token:
                kwargs["_continue"] = token
            response = self._list_call(
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS * 2),
                **kwargs)
            page = json.loads(response.data)
            for obj in page.get("items") or ():
                items[_object_key(obj)] = self._convert(obj)
            meta = page.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            token = meta.get("continue") or None
            if not token:
                break
        with self._lock:
            vanished = [v for k, v in self._items.items() if k not in items]
        for value in vanished:  # before they leave the cache (see _event)
            self._removed(value, final=False)
        with self._lock:
            self._items = items
            self.resource_version = version
            self.relists += 1
            self.healthy = True
            self.error = ""
        self.synced.set()

    def _watch(self) -> None:
        self._restart.clear()  # a restart asked for before this request is done by it
        response = self._list_call(
            watch=True, resource_version=self.resource_version, allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_SECONDS, _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT_SECONDS, WATCH_TIMEOUT_SECONDS + 15))
        self._response = response
        try:
            for line in _lines(response):
                if self._stop.is_set():
                    return
                self._event(json.loads(line))
        finally:
            self._response = None
            with contextlib.suppress(Exception):
                response.release_conn()

    def _event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise RuntimeError(f"watch error: {obj.get('message') or obj}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            value = self._convert(obj)
            with self._lock:
                self._items[_object_key(obj)] = value
                self.resource_version = version or self.resource_version
        elif kind == "DELETED":
            value = self._convert(obj)
            # Bookkeeping first, removal second: a reader never finds the object gone before
            # what its removal means is recorded.
            self._removed(value, final=True)
            with self._lock:
                self._items.pop(_object_key(obj), None)
                self.resource_version = version or self.resource_version
                self._tombstones[str((obj.get("metadata") or {}).get("uid"))] = None
                if len(self._tombstones) > MAX_TOMBSTONES:
                    del self._tombstones[next(iter(self._tombstones))]
        elif kind == "BOOKMARK":
            with self._lock:
                self.resource_version = version or self.resource_version

    def _removed(self, value: V, final: bool) -> None:
        if self._on_removed is None:
            return
        try:
            self._on_removed(value, final)
        except Exception:  # bookkeeping must not stop the watch
            log.exception("handling the removal of a %s failed", self.name)


def _object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _lines(response: Any) -> Iterator[bytes]:
    """The lines of a streamed (chunked) response as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending

