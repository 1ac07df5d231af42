"""The :class:`~scheduler.store.base.StateStore` contract kept in the Kubernetes API.

Every record is one custom resource in group ``dromos.io`` (see ``manifests/05-crds.yaml``):
apps and jobs as ``App`` and ``Job`` objects whose ``spec`` is the Marathon or Chronos JSON (so
``kubectl get apps.dromos.io`` and ``kubectl apply`` work on them), and app versions, tasks, job
runs and small metadata as ``AppVersion``, ``Task``, ``JobRun`` and ``Meta`` objects whose
``spec.value`` is the stored record. The record's key (app id, task id, ...) is the annotation
``dromos.io/key``; object names are derived from it (readable prefix + digest).

How it keeps the contract:
- **Reads** come from an in-memory copy (the :class:`MemoryStore` this class extends), loaded by
  a list at start and kept current by this process's own writes (the leader is the only writer).
- **Writes** go to the API server before they are acknowledged. Each top-level write, or each
  outermost ``atomic()`` block, is turned into the list of objects it changed (a diff of the
  copy before and after). One change is one write. Several changes are made all-or-nothing by
  a redo journal: a ``Transaction`` object holding every change is created first (one object:
  the API server stores it atomically, and that is the commit point), then the changes are
  applied one by one, then the journal is deleted. A crash in between leaves the journal; the
  next leader replays it (every change is an idempotent put or delete) before it serves.
  If the commit point is not reached, the copy is rolled back and the caller gets
  :class:`StoreUnavailable`: nothing is half-written.
- **Optimistic concurrency**: every replace carries the ``resourceVersion`` last seen; a 409
  means someone else changed the object, and the write is retried on the fresh object only for
  Dromos's own record kinds, and for apps and jobs only when their ``metadata.generation`` is
  the one last seen (a status write, an added label), never over a user's change of ``spec``.
- **Objects users made**: an App or Job created with ``kubectl`` has a name of the user's
  choosing; :meth:`KubernetesStore.adopt` maps the record's key to it (the kubectl bridge does
  so before it applies the object), so later writes replace that object instead of creating a
  second one. Labels and annotations that are not Dromos's (``kubectl apply``'s
  last-applied-configuration, a GitOps tool's tracking label) are kept on every replace.
- **Fencing**: every write carries the leader's fence token (``dromos.io/fence``), which the
  API server checks against the Lease (``manifests/15-fence.yaml``); ``fence()`` raises
  :class:`~scheduler.ha.elector.NotLeader` on a standby, so a standby never writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from scheduler.ha.kube_http import KubeConflict, KubeError, KubeNotFound, request
from scheduler.ha.lease import FENCE_ANNOTATION
from scheduler.store.codec import decode_run
from scheduler.store.memory import MemoryStore, _run_row, _State

log = logging.getLogger("dromos.store.kubernetes")

GROUP = "dromos.io"
VERSION = "v1alpha1"
KEY_ANNOTATION = "dromos.io/key"
LEASE_NAME = "dromos-leader"  # the Lease replicas elect on; the fence policy reads it
JOB_LABEL = "dromos.io/job"
STRUCTURED_KINDS = {"App": "apps", "Job": "jobs"}  # kind → _State field


# How long a write refused by the fence is retried while the token is still ours (see
# _request); the policy's informer normally catches up within milliseconds.
FENCE_CATCH_UP_S = 3.0
FENCE_POLICY = "dromos-fence"


def _token_of(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    token = ((body.get("metadata") or {}).get("annotations") or {}).get(FENCE_ANNOTATION)
    return str(token) if token is not None else None


@dataclass(frozen=True)
class StoredObject:
    """An app or job record and the object that holds it."""

    text: str
    name: str
    resource_version: str


def _foreign_metadata(obj: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The object's labels and annotations that are not Dromos's own."""
    meta = obj.get("metadata") or {}
    return {part: {k: str(v) for k, v in (meta.get(part) or {}).items()
                   if not k.startswith(f"{GROUP}/")}
            for part in ("labels", "annotations")}


class StoreUnavailable(Exception):
    """The API server refused or could not take a write; nothing of it was stored."""


@dataclass(frozen=True)
class Kind:
    """One record kind: the ``_State`` field it mirrors and its custom resource."""

    field: str
    kind: str
    plural: str
    structured: bool  # spec is the record itself (apps, jobs) rather than {"value": record}


KINDS = (
    Kind("apps", "App", "apps", True),
    Kind("versions", "AppVersion", "appversions", False),
    Kind("tasks", "Task", "tasks", False),
    Kind("jobs", "Job", "jobs", True),
    Kind("runs", "JobRun", "jobruns", False),
    Kind("meta", "Meta", "metas", False),
)
_BY_FIELD = {k.field: k for k in KINDS}
TRANSACTIONS = "transactions"

_SLUG = re.compile(r"[^a-z0-9]+")


def object_name(key: str) -> str:
    """A DNS-1123 name for ``key``: a readable prefix and a digest (ids may hold ``/``, ``:``,
    upper case; two keys never share a name)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    slug = _SLUG.sub("-", key.lower()).strip("-")[:40].strip("-")
    return f"{slug}-{digest}" if slug else digest


def _entries(state: _State, field: str) -> dict[str, str]:
    """The field's records as key → encoded text (versions flattened to ``id\\nversion``)."""
    if field == "versions":
        return {f"{app}\n{v}": text for app, vs in state.versions.items() for v, text in vs.items()}
    if field == "runs":
        return {k: row.body for k, row in state.runs.items()}
    value: dict[str, str] = getattr(state, field)
    return value


def _set_entry(state: _State, field: str, key: str, text: str | None) -> None:
    if field == "versions":
        app, _, version = key.partition("\n")
        if text is None:
            state.versions.get(app, {}).pop(version, None)
            if not state.versions.get(app, True):
                state.versions.pop(app, None)
        else:
            state.versions.setdefault(app, {})[version] = text
    elif field == "runs":
        if text is None:
            state.runs.pop(key, None)
        else:
            state.runs[key] = _run_row(decode_run(text))
    else:
        target: dict[str, str] = getattr(state, field)
        if text is None:
            target.pop(key, None)
        else:
            target[key] = text


@dataclass(frozen=True)
class Change:
    """Put ``text`` under ``key`` (``None``: delete it)."""

    field: str
    key: str
    text: str | None

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "key": self.key, "text": self.text}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Change:
        return cls(str(data["field"]), str(data["key"]), data.get("text"))


def diff(before: _State, after: _State) -> list[Change]:
    """What changed between two copies, in a replay-safe order: puts of jobs and apps before
    the records that refer to them, deletes after."""
    puts: list[Change] = []
    deletes: list[Change] = []
    for kind in KINDS:
        old, new = _entries(before, kind.field), _entries(after, kind.field)
        puts += [Change(kind.field, k, t) for k, t in sorted(new.items()) if old.get(k) != t]
        deletes += [Change(kind.field, k, None) for k in sorted(old) if k not in new]
    return puts + deletes[::-1]


class KubernetesStore(MemoryStore):
    """See the module docstring. ``api`` is a kubernetes ``ApiClient``; ``fence`` returns the
    token for a write now (or raises ``NotLeader``)."""

    def __init__(self, api: Any, namespace: str, fence: Callable[[], str], *,
                 timeout_s: float = 10.0) -> None:
        super().__init__()
        self.api = api
        self.namespace = namespace
        self._fence = fence
        self.timeout_s = timeout_s
        self._names: dict[tuple[str, str], tuple[str, str]] = {}  # (field, key) → (name, rv)
        # Apps and jobs: the generation last seen, and metadata to keep (module docstring).
        self._generations: dict[tuple[str, str], int] = {}
        self._foreign: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
        self._depth = 0
        self._commit_lock = threading.Lock()

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        """Read every record from the API server into the copy (at start, and after a
        standby becomes the leader)."""
        state = _State()
        names: dict[tuple[str, str], tuple[str, str]] = {}
        generations: dict[tuple[str, str], int] = {}
        foreign: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
        for kind in KINDS:
            for obj in self._list(kind.plural):
                key = (obj["metadata"].get("annotations") or {}).get(KEY_ANNOTATION)
                if key is None:
                    continue  # not written by Dromos (a user's kubectl apply): see the bridge
                text = self._text_of(kind, obj)
                _set_entry(state, kind.field, key, text)
                names[(kind.field, key)] = (obj["metadata"]["name"],
                                            obj["metadata"]["resourceVersion"])
                if kind.structured:
                    generations[(kind.field, key)] = int(obj["metadata"].get("generation") or 0)
                    foreign[(kind.field, key)] = _foreign_metadata(obj)
        with self._lock:
            self._state = state
            self._names = names
            self._generations = generations
            self._foreign = foreign

    # ------------------------------------------------------------------ the kubectl bridge
    def stored(self, kind: str, key: str) -> StoredObject | None:
        """The record of app or job ``key`` (``kind`` ``"App"``/``"Job"``) and the name and
        resourceVersion of its object, or ``None`` when there is no such record."""
        field = STRUCTURED_KINDS[kind]
        with self._lock:
            text = _entries(self._state, field).get(key)
            known = self._names.get((field, key))
        if text is None or known is None:
            return None
        return StoredObject(text, known[0], known[1])

    def adopt(self, kind: str, obj: dict[str, Any], key: str) -> None:
        """Make ``obj`` (an App or Job object a user created, as read from the API server)
        the object that holds record ``key``: the next write of that record replaces it,
        keeping its foreign labels and annotations. Writes nothing."""
        field = STRUCTURED_KINDS[kind]
        meta = obj["metadata"]
        with self._lock:
            self._names[(field, key)] = (str(meta["name"]), str(meta["resourceVersion"]))
            self._generations[(field, key)] = int(meta.get("generation") or 0)
            self._foreign[(field, key)] = _foreign_metadata(obj)

    def replay_journals(self) -> int:
        """Finish every transaction a crashed leader committed but did not apply; how many."""
        journals = sorted(self._list(TRANSACTIONS),
                          key=lambda o: (o["metadata"].get("creationTimestamp", ""),
                                         o["metadata"]["name"]))
        for obj in journals:
            changes = [Change.from_json(c) for c in obj["spec"]["changes"]]
            with self._lock:
                for c in changes:
                    _set_entry(self._state, c.field, c.key, c.text)
            self._apply_all(changes)
            self._delete(TRANSACTIONS, obj["metadata"]["name"], obj)
        return len(journals)

    # ------------------------------------------------------------------ transactions
    @contextmanager
    def atomic(self) -> Iterator[None]:
        """All writes of the outermost block reach the API server together (module docstring)."""
        with self._lock:
            self._check_open()
            snapshot = self._state.copy()
            self._depth += 1
            try:
                yield
            except BaseException:
                self._state = snapshot
                raise
            finally:
                self._depth -= 1
            if self._depth == 0:
                self._persist(snapshot)

    def _persist(self, before: _State) -> None:
        changes = diff(before, self._state)
        if not changes:
            return
        try:
            self._commit(changes)
        except BaseException:
            self._state = before
            raise

    # Every write of the protocol runs as a one-write transaction.
    def _write(self, method: Callable[..., Any], *args: Any) -> Any:
        with self.atomic():
            return method(*args)

    def create_app(self, spec: Any) -> None:
        self._write(super().create_app, spec)

    def put_app(self, spec: Any) -> None:
        self._write(super().put_app, spec)

    def delete_app(self, app_id: str) -> bool:
        return bool(self._write(super().delete_app, app_id))

    def put_task(self, task: Any) -> None:
        self._write(super().put_task, task)

    def delete_task(self, task_id: str) -> bool:
        return bool(self._write(super().delete_task, task_id))

    def put_job(self, job: Any) -> None:
        self._write(super().put_job, job)

    def delete_job(self, name: str) -> bool:
        return bool(self._write(super().delete_job, name))

    def create_run(self, run: Any) -> bool:
        return bool(self._write(super().create_run, run))

    def put_run(self, run: Any) -> None:
        self._write(super().put_run, run)

    def put_meta(self, key: str, value: Any) -> None:
        self._write(super().put_meta, key, value)

    # ------------------------------------------------------------------ the API server
    def _commit(self, changes: list[Change]) -> None:
        fence = self._fence()  # NotLeader on a standby: nothing is sent
        if len(changes) == 1:
            self._apply_all(changes, fence)
            return
        journal = self._request("POST", self._path(TRANSACTIONS), {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Transaction",
            "metadata": {"generateName": "tx-", "namespace": self.namespace,
                         "annotations": {FENCE_ANNOTATION: fence}},
            "spec": {"changes": [c.to_json() for c in changes]}})
        # Committed. From here on a failure leaves the journal for replay_journals().
        self._apply_all(changes, fence)
        self._delete(TRANSACTIONS, journal["metadata"]["name"], journal, fence)

    def _apply_all(self, changes: list[Change], fence: str | None = None) -> None:
        fence = fence if fence is not None else self._fence()
        for c in changes:
            kind = _BY_FIELD[c.field]
            known = self._names.get((c.field, c.key))
            if c.text is None:
                if known is not None:
                    self._delete(kind.plural, known[0], None, fence)
                    self._names.pop((c.field, c.key), None)
                    self._generations.pop((c.field, c.key), None)
                    self._foreign.pop((c.field, c.key), None)
                continue
            body = self._object(kind, c.key, c.text, fence)
            if known is None:
                obj = self._create_or_replace(kind, body)
            else:
                body["metadata"]["name"] = known[0]  # an adopted object keeps its name
                body["metadata"]["resourceVersion"] = known[1]
                obj = self._replace(kind, body, self._generations.get((c.field, c.key)))
            self._names[(c.field, c.key)] = (obj["metadata"]["name"],
                                             obj["metadata"]["resourceVersion"])
            if kind.structured:
                self._generations[(c.field, c.key)] = int(obj["metadata"].get("generation")
                                                          or 0)

    def _create_or_replace(self, kind: Kind, body: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._request("POST", self._path(kind.plural), body)
        except KubeConflict:
            # Exists already (a journal being replayed, or a copy that missed a write).
            current = self._request("GET", self._path(kind.plural, body["metadata"]["name"]))
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self._request("PUT", self._path(kind.plural, body["metadata"]["name"]), body)

    def _replace(self, kind: Kind, body: dict[str, Any],
                 generation: int | None = None) -> dict[str, Any]:
        name = body["metadata"]["name"]
        try:
            return self._request("PUT", self._path(kind.plural, name), body)
        except KubeConflict:
            # Dromos's own records have one writer (the leader): take the fresh version. Apps
            # and jobs too when only their status or metadata changed (same generation).
            current = self._request("GET", self._path(kind.plural, name))
            if kind.structured and current["metadata"].get("generation") != generation:
                raise StoreUnavailable(
                    f"{kind.kind} {name} was changed by someone else; retry") from None
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self._request("PUT", self._path(kind.plural, name), body)

    def _delete(self, plural: str, name: str, obj: dict[str, Any] | None,
                fence: str | None = None) -> None:
        fence = fence if fence is not None else self._fence()
        path = self._path(plural, name)
        try:
            current = obj if obj is not None else self._request("GET", path)
            # The API server checks a delete's fence on the object being deleted: stamp it.
            annotations = current["metadata"].setdefault("annotations", {})
            if annotations.get(FENCE_ANNOTATION) != fence:
                annotations[FENCE_ANNOTATION] = fence
                current = self._request("PUT", path, current)
            self._request("DELETE", path, {
                "kind": "DeleteOptions", "apiVersion": "v1",
                "preconditions": {"resourceVersion": current["metadata"]["resourceVersion"]}})
        except KubeNotFound:
            return

    def _object(self, kind: Kind, key: str, text: str, fence: str) -> dict[str, Any]:
        record = json.loads(text)
        foreign = self._foreign.get((kind.field, key)) or {}
        labels = dict(foreign.get("labels") or {})
        if kind.field == "runs":
            labels[JOB_LABEL] = object_name(str(record.get("job", "")))
        annotations = {**(foreign.get("annotations") or {}),
                       KEY_ANNOTATION: key, FENCE_ANNOTATION: fence}
        return {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": kind.kind,
            "metadata": {"name": object_name(key), "namespace": self.namespace,
                         "labels": labels, "annotations": annotations},
            "spec": record if kind.structured else {"value": record},
        }

    @staticmethod
    def _text_of(kind: Kind, obj: dict[str, Any]) -> str:
        record = obj["spec"] if kind.structured else obj["spec"]["value"]
        return json.dumps(record, separators=(",", ":"))

    def _path(self, plural: str, name: str | None = None) -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{plural}"
        return base if name is None else f"{base}/{name}"

    def _list(self, plural: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            query = "?limit=500" + (f"&continue={token}" if token else "")
            page = self._request("GET", self._path(plural) + query)
            items += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One request; a refusal by the fence policy is retried while this process still
        holds the token it sent: the API server reads the Lease from an informer, so for a
        moment after a takeover it may not know the new holder yet (it then refuses, which is
        safe). A token that is no longer ours is not retried."""
        sent = _token_of(body)
        deadline = time.monotonic() + FENCE_CATCH_UP_S
        while True:
            try:
                return request(self.api, method, path, body, timeout_s=self.timeout_s)
            except KubeError as e:
                refused_by_fence = e.status in (403, 422) and FENCE_POLICY in str(e)
                if not (refused_by_fence and sent is not None and time.monotonic() < deadline
                        and self._still_ours(sent)):
                    raise StoreUnavailable(str(e)) from None
            time.sleep(0.05)

    def _still_ours(self, token: str) -> bool:
        try:
            return self._fence() == token
        except Exception:  # NotLeader
            return False
