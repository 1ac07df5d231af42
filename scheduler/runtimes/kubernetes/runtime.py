"""The :class:`KubernetesRuntime`: the Runtime protocol over the API server (see the package
docstring for the whole design)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from scheduler.model.node import Node
from scheduler.model.task import Task
from scheduler.runtimes.base import (
    LaunchSpec,
    Observation,
    Output,
    RuntimeUnavailable,
    SandboxFile,
    unobservable,
)
from scheduler.runtimes.extra import docker_section
from scheduler.runtimes.kills import KILL_FILE, kill_in_force
from scheduler.runtimes.kubernetes.cache import NodeView, PodView, Reflector, node_view, pod_view
from scheduler.runtimes.kubernetes.client import (
    TIMEOUT,
    UNREACHABLE,
    ApiConnection,
    refused_by_admission,
    status_message,
)
from scheduler.runtimes.kubernetes.fencing import Fence
from scheduler.runtimes.kubernetes.names import (
    CONTAINER_NAME,
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    DEFAULT_RUN_AS_USER,
    DNS_LABEL,
    pod_name,
)
from scheduler.runtimes.kubernetes.nodes import inventory
from scheduler.runtimes.kubernetes.pods import build_pod, build_service, grace_period
from scheduler.runtimes.kubernetes.records import (
    EXIT_FILE,
    OUTPUT_FILE,
    TaskRecords,
    collect_ended,
    observation,
    pod_handle,
    record_removal,
)
from scheduler.runtimes.kubernetes.services import ServiceKeeper
from scheduler.runtimes.output import (
    list_files,
    read_combined,
    read_file_in,
    read_text_in,
    tail_lines,
)
from scheduler.runtimes.users import kubernetes_uid

log = logging.getLogger(__name__)

SYNC_WAIT_SECONDS = 15.0
"""How long the first observe waits for the first list of pods before saying unavailable."""
DEFAULT_KEEP_ENDED_SECONDS = 3600.0
# Handed to `kubectl exec` (check_command) so it reaches the same cluster the client does.
_CLI_ENV = ("PATH", "HOME", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


class NamespaceMissing(Exception):
    """The runtime's namespace does not exist (and was not to be created)."""


class KubernetesRuntime:
    """Runs each task as one Pod in ``namespace`` of the cluster the client configuration
    points at (package docstring).

    ``state_dir``: where task records live (see the package docstring). ``configuration``: a
    client ``Configuration``; ``None`` loads one lazily with :func:`load_client_configuration`
    (``kubeconfig``, ``context``). ``namespace``: ``None`` means ``$DROMOS_KUBE_NAMESPACE``,
    else :data:`DEFAULT_NAMESPACE`. ``default_image``: the image of apps and jobs without a
    container (``None``: ``$DROMOS_KUBE_DEFAULT_IMAGE``, else :data:`DEFAULT_IMAGE`).
    ``run_as_user``: the uid tasks run as (``None``: the image's, which must not be root).
    ``hosts``: only these node hostnames are offered to placement (``None``: all). ``labels``:
    extra labels on every pod and Service (Dromos's own win). ``keep_ended_seconds``: how long
    ended pods stay (``None``: forever).

    Nothing touches the API server until first use, so a runtime can be built while it is
    down. Safe to use from several threads.
    """

    name = "kubernetes"

    def __init__(
        self,
        state_dir: Path,
        *,
        namespace: str | None = None,
        configuration: Any = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        default_image: str | None = None,
        run_as_user: int | None = DEFAULT_RUN_AS_USER,
        hosts: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        keep_ended_seconds: float | None = DEFAULT_KEEP_ENDED_SECONDS,
    ) -> None:
        self.namespace = (namespace or os.environ.get("DROMOS_KUBE_NAMESPACE")
                          or DEFAULT_NAMESPACE)
        if not DNS_LABEL.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a valid namespace name")
        self.state_dir = Path(state_dir).absolute()
        self.records_dir = self.state_dir / "kubernetes" / self.namespace / "tasks"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.default_image = (default_image or os.environ.get("DROMOS_KUBE_DEFAULT_IMAGE")
                              or DEFAULT_IMAGE)
        self.run_as_user = run_as_user
        self.hosts = frozenset(hosts) if hosts else None
        self.extra_labels = dict(labels or {})
        self.keep_ended_seconds = keep_ended_seconds
        self.kubeconfig = kubeconfig
        self._context = context
        self._connection = ApiConnection(configuration, kubeconfig, context)
        self._api = self._connection.core
        self._unavailable = self._connection.unavailable
        self._lock = threading.RLock()
        self._pods: Reflector[PodView] | None = None
        self._nodes: Reflector[NodeView] | None = None
        self.cluster_wide = False
        self._host_to_node: dict[str, str] = {}
        # The leader's fence on every write (set by the composition root for replicas).
        self.fence = Fence()
        self._services = ServiceKeeper(self.namespace, self._unavailable, self.fence)
        self._records_seen: dict[Path, dict[str, Any]] = {}

    # --- the Runtime protocol ----------------------------------------------------------------

    def nodes(self) -> list[Node]:
        """The schedulable Nodes with their free capacity for Dromos (package docstring):
        allocatable minus the requests of other pods bound there. Never raises; ``[]`` until
        the Nodes were listed once (it waits a few seconds for that on first use)."""
        try:
            self._watching()
        except RuntimeUnavailable:
            return []
        assert self._nodes is not None and self._pods is not None
        self._nodes.synced.wait(5.0)
        self._pods.synced.wait(5.0)
        out, mapping = inventory(self._nodes.values(), self._pods.values(), self._is_ours,
                                 self.hosts)
        with self._lock:
            self._host_to_node = mapping
        return out

    def check_namespace(self, create: bool = False) -> str:
        """Make sure the namespace exists, once at start: a missing one would otherwise show
        only as "runtime unavailable" on every pass. Returns ``"present"``, ``"created"``
        (``create`` and it was missing: made with Pod Security ``restricted`` enforced), or
        ``"unknown"`` (the API server does not answer, or Dromos may not read namespaces --
        a Role limited to its namespace -- so the start goes on and the loop reports).
        Raises :class:`NamespaceMissing` when it is missing and ``create`` is false."""
        try:
            core = self._api()
            core.read_namespace(self.namespace)
            return "present"
        except (RuntimeUnavailable, *UNREACHABLE):
            return "unknown"
        except ApiException as e:
            if e.status != 404:
                return "unknown"
        if not create:
            raise NamespaceMissing(
                f"the kubernetes namespace {self.namespace!r} does not exist: create it "
                f"(kubectl create namespace {self.namespace}), choose another with "
                "--kube-namespace, or start with --create-namespace")
        try:
            core.create_namespace({"metadata": {"name": self.namespace, "labels": {
                "pod-security.kubernetes.io/enforce": "restricted"}}})
        except ApiException as e:
            if e.status != 409:  # 409: someone created it meanwhile
                raise NamespaceMissing(f"cannot create the kubernetes namespace "
                                       f"{self.namespace!r}: {status_message(e)}") from None
        return "created"

    def user_problem(self, user: str) -> str | None:
        """Why pods cannot run as ``user``: not a number, or root
        (:func:`~scheduler.runtimes.users.kubernetes_uid`)."""
        try:
            kubernetes_uid(user)
        except ValueError as e:
            return str(e)
        return None

    def probe_host(self, task: Task) -> str:
        """The pod's IP when known (health checks reach the task there from inside the
        cluster), else the task's host."""
        view = self._cached(task.id)
        return view.pod_ip if view is not None and view.pod_ip else task.host

    def launch(self, spec: LaunchSpec) -> Mapping[str, Any]:
        """Create the task's pod on the node of ``spec.host``; return ``{"namespace", "pod",
        "uid"}``.

        Idempotent per task id: when the task's pod exists (in the cache, or the create
        answers 409 AlreadyExists and the pod carries this task id), its handle is returned;
        when the task ran before and its pod was deleted since, the recorded handle is
        returned -- a task id runs at most once. The app's Service is created or updated
        first when the app has ports. Raises ``ValueError`` when the task cannot run here
        (package docstring) or the API server rejects the pod as invalid, and
        :class:`RuntimeUnavailable` when the API server cannot be reached or refuses the
        runtime (credentials, RBAC, missing namespace).
        """
        name = pod_name(spec.task_id)
        image = spec.image or docker_section(spec).get("image") or self.default_image
        with self._lock:
            node_name = self._host_to_node.get(spec.host, spec.host)
        body = build_pod(spec, namespace=self.namespace, node_name=node_name, image=str(image),
                         run_as_user=self.run_as_user, extra_labels=self.extra_labels)
        cached = self._cached(spec.task_id)
        if cached is not None:
            return self._handle_of(cached)
        ended = self._records(name).read(EXIT_FILE)
        if ended is not None and ended.get("task_id") == spec.task_id:
            # It ran and its end is recorded (its pod may be deleted): never again.
            return pod_handle(self.namespace, name, str(ended.get("uid") or ""))
        core = self._api()
        fenced = self.fence.annotations()
        body["metadata"].setdefault("annotations", {}).update(fenced)
        service = build_service(spec, namespace=self.namespace, extra_labels=self.extra_labels)
        if service is not None:
            self._services.ensure(core, spec.app_id, service)
        try:
            response = core.create_namespaced_pod(self.namespace, body, _preload_content=False,
                                                  _request_timeout=TIMEOUT)
            created = json.loads(response.data)
        except ApiException as e:
            if e.status == 409:
                existing = self._get_pod(core, name)
                if existing is not None and existing.task_id == spec.task_id:
                    return self._handle_of(existing)
                if existing is not None:
                    raise ValueError(f"pod {name!r} belongs to task {existing.task_id!r}, not "
                                     f"{spec.task_id!r}") from None
                raise self._unavailable(f"pod {name!r} exists but cannot be read", e) from e
            if e.status in (400, 422) or refused_by_admission(e):
                raise ValueError(f"the API server refused the pod of task {spec.task_id!r}: "
                                 f"{status_message(e)}") from None
            raise self._unavailable(f"creating pod {name!r}", e) from e
        except UNREACHABLE as e:
            raise self._unavailable(f"creating pod {name!r}", e) from e
        self._connection.succeeded()
        # Nothing is written at launch: while the pod exists it is the record of the launch
        # (an fsync per create would halve the create rate).
        view = pod_view(created)
        if self._pods is not None:
            self._pods.put_created(view.key, view.uid, view)
        self._services.launched(spec.app_id)
        return self._handle_of(view)

    def kill(self, task: Task, grace_seconds: float) -> None:
        """Delete the task's pod with ``gracePeriodSeconds`` = ``grace_seconds`` (whole
        seconds, at least 1): the kubelet sends the container SIGTERM now and SIGKILL when the
        grace period is over. Does not block. The request is recorded first, so the end is
        reported KILLED, also by a restarted Dromos. A second kill never extends an earlier
        deadline (a shorter one deletes again with the shorter grace); a kill that failed
        because the API server was away can simply be sent again. A task whose pod has
        ended, is unknown, or whose end is recorded is left alone. Raises
        :class:`RuntimeUnavailable` when the API server cannot be reached."""
        try:
            name = pod_name(task.id)
        except ValueError:
            return
        records = self._records(name)
        if records.exists(EXIT_FILE):
            return
        core = self._api()
        view = self._cached(task.id) or self._get_pod(core, name)
        if view is None or view.task_id != task.id or view.ended:
            return
        now = time.time()
        request, new = kill_in_force(records.kill(), grace_seconds, now)
        if new:
            records.write(KILL_FILE, request.to_json())
        elif view.deleting:
            return  # already terminating with an earlier (or the same) deadline
        try:
            self.fence.stamp(core.patch_namespaced_pod, name, self.namespace)
            response = core.delete_namespaced_pod(
                name, self.namespace,
                body={"gracePeriodSeconds": grace_period(request.remaining(now)),
                      "preconditions": {"uid": view.uid}},
                _preload_content=False, _request_timeout=TIMEOUT)
            # Read the answer: an unread response keeps its connection out of the pool, and
            # every later call then pays a new TLS handshake (most of a kill's time).
            response.data  # noqa: B018
        except ApiException as e:
            if e.status in (404, 409):  # gone already, or a different pod of that name
                self._connection.succeeded()
                return
            raise self._unavailable(f"deleting pod {name!r}", e) from e
        except UNREACHABLE as e:
            raise self._unavailable(f"deleting pod {name!r}", e) from e
        self._connection.succeeded()

    def observe(self, tasks: Sequence[Task]) -> list[Observation]:
        """One observation per task, in order, from the watch cache (package docstring); one
        GET per task whose pod the cache does not hold. Records ends (``exit.json``) when
        first seen and deletes pods that ended more than ``keep_ended_seconds`` ago (their
        output's tail saved first) and Services of apps without pods. If one task cannot be
        observed its previous state is reported with the reason. Raises
        :class:`RuntimeUnavailable` while the API server cannot be reached (the cache may be
        stale then)."""
        pods = self._pods_cache()
        out: list[Observation] = []
        for task in tasks:
            try:
                out.append(self._observe_one(task))
            except RuntimeUnavailable:
                raise
            except Exception as e:  # one odd pod or record must not hide the others
                log.exception("observing task %s failed", task.id)
                out.append(unobservable(task, e))
        if self.keep_ended_seconds is not None:
            collect_ended(self._api, self.namespace,
                          [v for v in pods.values() if self._is_ours(v)], self._records,
                          self.keep_ended_seconds, self.fence)
        self._services.sweep(self._api, (v.app_label for v in pods.values()
                                         if self._is_ours(v) and v.app_label))
        return out

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]:
        """``kubectl exec`` of ``/bin/sh -c <command>`` in the task's container, so a COMMAND
        health check runs in the task's own environment; the environment returned is what
        ``kubectl`` needs to reach the same cluster."""
        cli = shutil.which("kubectl") or "kubectl"
        env = {k: v for k, v in os.environ.items() if k in _CLI_ENV}
        env.setdefault("PATH", os.defpath)
        argv = [cli]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self._context:
            argv += ["--context", self._context]
        argv += ["exec", "--namespace", self.namespace, pod_name(task.id), "-c",
                 CONTAINER_NAME, "--", "/bin/sh", "-c", command]
        return argv, env

    def read_output(self, task: Task, tail: int | None, cursor: str | None) -> Output:
        """The container's output (stdout and stderr interleaved, one ``output`` chunk) with
        a line cursor (:func:`~scheduler.runtimes.output.read_combined`), from :meth:`logs`."""
        return read_combined(self.logs(task, None), tail, cursor, self.name)

    def sandbox_files(self, task: Task) -> list[SandboxFile]:
        """The task's records and the output tail saved when its pod was deleted (the pod's
        own files stay in the pod)."""
        try:
            return list_files(self._records(pod_name(task.id)).directory)
        except ValueError:
            return []

    def read_sandbox_file(self, task: Task, path: str, offset: int = 0,
                          limit: int = 1 << 20) -> bytes:
        """One of :meth:`sandbox_files`."""
        try:
            directory = self._records(pod_name(task.id)).directory
        except ValueError as e:
            raise LookupError(str(e)) from None
        return read_file_in(directory, path, offset, limit)

    def close(self) -> None:
        """Stop the watch threads and drop the connection pool. Pods keep running; a new
        runtime over the same state adopts them."""
        with self._lock:
            reflectors = [r for r in (self._pods, self._nodes) if r is not None]
            self._pods = self._nodes = None
        for r in reflectors:
            r.stop()
        self._connection.close()

    # --- beyond the protocol -----------------------------------------------------------------

    def logs(self, task: Task, tail: int | None = 200) -> str:
        """The last ``tail`` lines (all when ``None``) of the task's container output
        (``kubectl logs``), or of the tail saved when its pod was deleted (``""`` when there is
        nothing). Raises :class:`RuntimeUnavailable` when the API server cannot be reached and
        ``LookupError`` when it cannot get the output from the node (the kubelet is not
        reachable, the container never started)."""
        try:
            name = pod_name(task.id)
        except ValueError as e:
            raise LookupError(str(e)) from None
        core = self._api()
        kwargs: dict[str, Any] = {"container": CONTAINER_NAME}
        if tail is not None:
            kwargs["tail_lines"] = max(0, tail)
        try:
            response = core.read_namespaced_pod_log(
                name, self.namespace, _preload_content=False, _request_timeout=TIMEOUT,
                **kwargs)
            self._connection.succeeded()
            return bytes(response.data).decode("utf-8", "replace")
        except ApiException as e:
            if e.status == 404:
                self._connection.succeeded()
            elif e.status is not None and 400 <= e.status < 500 and e.status not in (401, 403):
                raise LookupError(f"no output of task {task.id!r}: {status_message(e)}") from e
            elif e.status == 500:
                # The API server answers 500 when it cannot reach the node's kubelet.
                raise LookupError(f"no output of task {task.id!r}: {status_message(e)}") from e
            else:
                raise self._unavailable(f"reading the output of pod {name!r}", e) from e
        except UNREACHABLE as e:
            raise self._unavailable(f"reading the output of pod {name!r}", e) from e
        text = read_text_in(self._records(name).directory, OUTPUT_FILE)
        return tail_lines(text or "", tail)

    def pod_name(self, task_id: str) -> str:
        """The name of ``task_id``'s pod (see :func:`pod_name`)."""
        return pod_name(task_id)

    def ready(self, task: Task) -> bool | None:
        """Whether the task's pod is Ready (its readiness probe passes), ``None`` when the
        cache does not know the pod."""
        view = self._cached(task.id)
        return None if view is None else view.ready

    @property
    def relists(self) -> int:
        """How many times the pod cache was listed (1 + relists after 410 Gone/failures)."""
        return self._pods.relists if self._pods is not None else 0

    # --- the API server ----------------------------------------------------------------------

    def _watching(self) -> None:
        """Start the watch threads on first use (deciding whether pods can be watched
        cluster-wide, which needs one list)."""
        with self._lock:
            if self._pods is not None:
                return
            core = self._api()
            try:
                core.list_pod_for_all_namespaces(limit=1, _preload_content=False,
                                                 _request_timeout=TIMEOUT)
                self.cluster_wide = True
            except ApiException as e:
                if e.status not in (401, 403):
                    raise self._unavailable("listing pods", e) from e
                self.cluster_wide = False
            except UNREACHABLE as e:
                raise self._unavailable("listing pods", e) from e
            if self.cluster_wide:
                pods_call: Callable[..., Any] = core.list_pod_for_all_namespaces
            else:
                namespace = self.namespace

                def pods_call(**kwargs: Any) -> Any:
                    return core.list_namespaced_pod(namespace, **kwargs)

            self._pods = Reflector("pods", pods_call, pod_view, self._pod_removed)
            self._nodes = Reflector("nodes", core.list_node, node_view)
            self._pods.start()
            self._nodes.start()

    def _pods_cache(self) -> Reflector[PodView]:
        """The pod cache, synced and healthy, else :class:`RuntimeUnavailable`."""
        self._watching()
        pods = self._pods
        assert pods is not None
        deadline = time.monotonic() + SYNC_WAIT_SECONDS
        # Wait for the first list, but not through failures: those say it is unavailable.
        while not pods.synced.wait(0.05) and pods.failures == 0:
            if time.monotonic() >= deadline:
                break
        if not pods.synced.is_set() or not pods.healthy:
            raise RuntimeUnavailable(pods.error or "the pods have not been listed yet")
        return pods

    def _get_pod(self, core: Any, name: str) -> PodView | None:
        try:
            response = core.read_namespaced_pod(name, self.namespace, _preload_content=False,
                                                _request_timeout=TIMEOUT)
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._unavailable(f"reading pod {name!r}", e) from e
        except UNREACHABLE as e:
            raise self._unavailable(f"reading pod {name!r}", e) from e
        self._connection.succeeded()
        return pod_view(json.loads(response.data))

    # --- observing ---------------------------------------------------------------------------

    def _records(self, name: str) -> TaskRecords:
        return TaskRecords(self.records_dir / name, self._records_seen)

    def _is_ours(self, view: PodView) -> bool:
        return view.task_id is not None and view.namespace == self.namespace

    def _cached(self, task_id: str) -> PodView | None:
        pods = self._pods
        if pods is None:
            return None
        try:
            view = pods.get(f"{self.namespace}/{pod_name(task_id)}")
        except ValueError:
            return None
        return view if view is not None and view.task_id == task_id else None

    def _handle_of(self, view: PodView) -> dict[str, Any]:
        return pod_handle(view.namespace, view.name, view.uid)

    def _observe_one(self, task: Task) -> Observation:
        name = pod_name(task.id)
        records = self._records(name)
        view = self._cached(task.id)
        if view is None and not records.exists(EXIT_FILE):
            # Not in the cache: created a moment ago by another instance, or really gone.
            found = self._get_pod(self._api(), name)
            view = found if found is not None and found.task_id == task.id else None
        return observation(task, records, view, self.namespace, name)

    def _pod_removed(self, view: PodView, final: bool) -> None:
        """The watch saw a pod leave: record how its task ended (if it is ours)."""
        if self._is_ours(view):
            record_removal(self._records(view.name), view, final)
