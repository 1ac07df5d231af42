"""Kubernetes for the tests: an offline cluster, a namespace per test, runtimes, clean-up.

The cluster is real where it matters to Dromos -- etcd, kube-apiserver (RBAC, Pod Security
admission, watch cache), kube-controller-manager and kube-scheduler, built from Go modules by
``kind-cluster/offline/build.sh`` -- and simulated where no registry or kubelet is available:
the kwok controller plays the kubelet of every node, following the Stage objects of
``kind-cluster/offline/stages.yaml``. No container runs, so a pod "scripts" its process
through ``DROMOS_SIM_*`` environment variables (documented in that file): start delay,
readiness, exit code after a run time, and what happens on SIGTERM.

One cluster (``dromos-test``, :data:`TEST_NODES` nodes plus a node named ``localhost``, the
host the contract suite's tasks are placed on) is started by ``up.sh`` when a test first needs
it, shared by concurrent test sessions, and stopped when the last of them exits
(``DROMOS_KEEP_K8S=1`` keeps it running for the next session).
Each test gets its own namespace (derived from its state directory, Pod Security
``restricted`` enforced, so every pod Dromos creates is checked against it);
:func:`cleanup_kube_state` force-deletes its pods and the namespace.

The runtime contract suite runs on this cluster like on the other backends: its tasks'
behaviour becomes ``DROMOS_SIM_*`` variables (``conftest.sim_env``), and what the suite reads
of a task comes from its pod (:func:`launched_pod`, :func:`pods_of_task`).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from scheduler.model.app import AppSpec
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import LaunchSpec, launch_spec
from scheduler.runtimes.kubernetes import KubernetesRuntime, load_client_configuration

if TYPE_CHECKING:
    from tests.runtimes.conftest import Launched, Outage

REPO = Path(__file__).resolve().parents[2]
OFFLINE = REPO / "kind-cluster" / "offline"
CLUSTER_NAME = os.environ.get("DROMOS_TEST_CLUSTER", "dromos-test")
TEST_NODES = 3
UP_TIMEOUT_SECONDS = 3600  # a first run builds the control plane from source (~15 min)
CACHE = Path(os.environ.get("DROMOS_K8S_CACHE", Path.home() / ".cache/dromos/k8s"))
TEST_IMAGE = "dromos-test/busybox:1"  # never pulled: no kubelet runs it

# --- the cluster -----------------------------------------------------------------------------

_build_failure: list[str] = []
"""Why build.sh failed before the tests started (see :func:`build_before_tests`)."""


def build_before_tests(items: Sequence[pytest.Item], config: pytest.Config) -> None:
    """Run ``build.sh`` once, before the first test, when any collected test needs Kubernetes
    (``--node`` too when one needs the real node). A first build takes ~20 minutes, longer than
    a test's timeout, so it cannot happen inside a test; when everything is cached it is a few
    ``--version`` calls. Its progress goes to the terminal. A failed build is remembered: every
    Kubernetes test then skips (fails under CI) with its reason, without building again."""
    ids = [item.nodeid for item in items if "kubernetes" in item.nodeid]
    if not ids:
        return
    args = ["--node"] if any("real" in nodeid for nodeid in ids) else []
    capture = config.pluginmanager.getplugin("capturemanager")
    guard = (capture.global_and_fixture_disabled() if capture is not None
             else contextlib.nullcontext())
    tail: collections.deque[str] = collections.deque(maxlen=4)
    with guard:
        try:
            proc = subprocess.Popen(["bash", str(OFFLINE / "build.sh"), *args],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        except OSError as e:
            _build_failure.append(f"build.sh could not run: {e}")
            return
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stderr.write(line)
            if line.strip():
                tail.append(line.strip())
        code = proc.wait()
    if code != 0:
        _build_failure.append(f"build.sh failed ({code}): {' / '.join(tail)}")


@functools.cache
def _cluster() -> tuple[str | None, str | None]:
    """(kubeconfig path, None) once the test cluster answers, or (None, why not). Brings it
    up the first time (see :func:`shared_cluster`) and adds the ``localhost`` node."""
    config, why = shared_cluster(CLUSTER_NAME, ("--nodes", str(TEST_NODES)))
    if config is not None:
        _ensure_localhost_node(config)
    return config, why


@functools.cache
def shared_cluster(name: str, up_args: tuple[str, ...]) -> tuple[str | None, str | None]:
    """(kubeconfig path, None) once the offline cluster ``name`` answers, or (None, why not).
    Brings it up the first time with ``up.sh --name NAME *up_args`` (a cluster with a real
    node is always handed to up.sh, which restarts whatever part of the node is not running).

    Several test sessions may share a cluster (developers run the suite in parallel): they
    serialise bringing it up on a lock, each registers itself, and the last one to leave
    stops it -- if a test session started it (a cluster someone started by hand stays).
    Once it is up, the cached binaries (``kubectl`` among them: a fresh machine has none of
    its own) come first on this process's ``PATH``, for the tests and the runtime's
    ``kubectl exec`` alike."""
    if _build_failure:
        return None, _build_failure[0]
    sessions = _sessions(name)
    sessions.mkdir(parents=True, exist_ok=True)
    with open(sessions.parent / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _answers(name) or "--real-nodes" in up_args:
            try:
                done = subprocess.run(
                    ["bash", str(OFFLINE / "up.sh"), "--name", name, *up_args],
                    capture_output=True, text=True, timeout=UP_TIMEOUT_SECONDS, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                return None, f"up.sh could not run: {e}"
            lines = done.stdout.strip().splitlines()
            if done.returncode != 0 or not lines or not lines[-1].startswith("KUBECONFIG="):
                why = (done.stderr or done.stdout).strip().splitlines()[-4:]
                return None, f"up.sh failed ({done.returncode}): {' / '.join(why)}"
            if "already up" not in done.stderr:
                (sessions.parent / "started-by-tests").touch()
        (sessions / str(os.getpid())).touch()
    atexit.register(_leave, name)
    if str(CACHE / "bin") not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = f"{CACHE / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    return str(_kubeconfig_path(name)), None


def _sessions(name: str) -> Path:
    """One file per test session using cluster ``name`` (its pid)."""
    return CACHE / "test-cluster" / name / "sessions"


def _kubeconfig_path(name: str = CLUSTER_NAME) -> Path:
    workdir = Path(os.environ.get("KWOK_WORKDIR", Path.home() / ".kwok"))
    return workdir / "clusters" / name / "kubeconfig.yaml"


def _answers(name: str) -> bool:
    if not _kubeconfig_path(name).exists():
        return False
    cli = CACHE / "bin" / "kubectl"
    if not cli.exists():
        return False  # up.sh builds it
    done = subprocess.run([str(cli), "--kubeconfig", str(_kubeconfig_path(name)), "get",
                           "--raw", "/readyz"], capture_output=True, timeout=20, check=False)
    return done.returncode == 0


def _leave(name: str) -> None:
    """At exit: unregister; the last session out stops a cluster that tests started."""
    sessions = _sessions(name)
    with open(sessions.parent / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (sessions / str(os.getpid())).unlink(missing_ok=True)
        for entry in sessions.iterdir():
            if entry.name.isdigit() and not Path(f"/proc/{entry.name}").exists():
                entry.unlink(missing_ok=True)  # a session that died without leaving
        marker = sessions.parent / "started-by-tests"
        if any(sessions.iterdir()) or not marker.exists():
            return
        if os.environ.get("DROMOS_KEEP_K8S") == "1":
            return
        subprocess.run(["bash", str(OFFLINE / "down.sh"), "--name", name],
                       capture_output=True, timeout=180, check=False)
        marker.unlink(missing_ok=True)


def _ensure_localhost_node(kubeconfig: str) -> None:
    """The contract suite places its tasks on host ``localhost``: give the cluster a node of
    that name (KWOK plays its kubelet like any other)."""
    node = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "localhost",
                     "annotations": {"kwok.x-k8s.io/node": "fake"},
                     "labels": {"kubernetes.io/hostname": "localhost", "rack": "r0",
                                "topology.kubernetes.io/zone": "z0", "type": "kwok"}},
        "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "500"},
                   "capacity": {"cpu": "16", "memory": "64Gi", "pods": "500"}},
    }
    kubectl(kubeconfig, "apply", "--server-side", "--field-manager", "dromos-tests", "-f", "-",
            input=json.dumps(node))
    kubectl(kubeconfig, "wait", "--for=condition=Ready", "node/localhost", "--timeout=60s")


def kube_unavailable() -> str | None:
    """Why the Kubernetes tests cannot run here, or ``None`` when the cluster is up. (The
    contract suite's backend skips with it as ``kubernetes runtime unavailable: <why>``, the
    words :func:`kubeconfig` uses.)"""
    return _cluster()[1]


def kubeconfig() -> str:
    """The test cluster's kubeconfig. The one gate of every test that needs the offline
    cluster (its own cluster too, see :func:`own_cluster`): when the cluster cannot come up
    here -- no Go and no proxy to build the binaries, say -- the test is skipped with the
    reason, which ``tests/conftest.py`` turns into a failure under ``DROMOS_CI=1``."""
    path, why = _cluster()
    if path is None:
        pytest.skip(f"kubernetes runtime unavailable: {why}")
    return path


def kubectl(config: str, *args: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run kubectl against ``config``; fails the test (with kubectl's words) on error."""
    done = subprocess.run(["kubectl", "--kubeconfig", config, *args], input=input,
                          capture_output=True, text=True, timeout=120, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done


def kwokctl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the cached kwokctl (e.g. ``stop cluster --name dromos-test``)."""
    return subprocess.run([str(CACHE / "bin" / "kwokctl"), *args], capture_output=True,
                          text=True, timeout=180, check=True)


def kubectl_json(config: str, *args: str) -> Any:
    return json.loads(kubectl(config, *args, "-o", "json").stdout)


@functools.cache
def core_api(config: str | None = None) -> Any:
    """A CoreV1Api for the helpers (runtimes under test make their own clients), on the test
    cluster or the one of kubeconfig ``config``."""
    configuration = load_client_configuration(config or kubeconfig())
    return k8s_client.CoreV1Api(k8s_client.ApiClient(configuration))


# --- namespaces and runtimes -----------------------------------------------------------------


def namespace_for(state_dir: Path) -> str:
    """The namespace of one test's state: a DNS label derived from the directory."""
    return "t-" + hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:12]


def ensure_namespace(name: str, config: str | None = None) -> None:
    """Create the namespace, Pod Security ``restricted`` enforced, unless it exists."""
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "dromos.io/test": "true"}}}
    try:
        core_api(config).create_namespace(body)
    except ApiException as e:
        if e.status != 409:
            raise
    # The serviceaccount controller adds "default" shortly after; pods need it to be admitted.
    deadline = time.monotonic() + 30
    while True:
        try:
            core_api(config).read_namespaced_service_account("default", name)
            return
        except ApiException as e:
            if e.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def make_kube_runtime(state_dir: Path, **options: Any) -> KubernetesRuntime:
    """A KubernetesRuntime over ``state_dir`` in the test's own namespace (created on first
    use), on the test cluster or the one of kubeconfig ``cluster_config``. Apps without a
    container get :data:`TEST_IMAGE` (nothing pulls it on KWOK)."""
    namespace = options.pop("namespace", None) or namespace_for(state_dir)
    config = options.pop("cluster_config", None)
    ensure_namespace(namespace, config)
    options.setdefault("default_image", TEST_IMAGE)
    options.setdefault("configuration", load_client_configuration(config or kubeconfig()))
    return KubernetesRuntime(state_dir, namespace=namespace, **options)


def launched_pod(state_dir: Path, task: Task, config: str | None = None) -> Launched:
    """How the task's pod runs it: its container's command, args and environment (on the
    test cluster or the one of kubeconfig ``config``)."""
    from scheduler.runtimes.kubernetes import pod_name
    from tests.runtimes.conftest import Launched

    pod = core_api(config).read_namespaced_pod(pod_name(task.id), namespace_for(state_dir))
    container = pod.spec.containers[0]
    env = {e.name: e.value or "" for e in container.env or ()}
    return Launched(container.command, container.args, env)


def pods_of_task(state_dir: Path, task: Task, config: str | None = None) -> int:
    """How many pods of the task exist (ended ones included: pods are never restarted)."""
    from scheduler.runtimes.kubernetes import label_value

    pods = core_api(config).list_namespaced_pod(
        namespace_for(state_dir), label_selector=f"dromos.io/task={label_value(task.id)}")
    return len(pods.items)


@contextlib.contextmanager
def kube_outage(state_dir: Path, scratch: Path, config: str | None = None,
                **options: Any) -> Iterator[Outage]:
    """A runtime over ``state_dir`` that reaches the API server (of the test cluster or the
    one of kubeconfig ``config``) through a :class:`Blackhole` (cut: every connection
    dropped, new ones refused; restore: back). ``options`` go to :func:`make_kube_runtime`."""
    from tests.runtimes.conftest import Outage

    configuration = load_client_configuration(config or kubeconfig())
    host, port = configuration.host.removeprefix("https://").rsplit(":", 1)
    hole = Blackhole((host, int(port)))
    configuration.host = f"https://{host}:{hole.port}"
    rt = make_kube_runtime(state_dir, configuration=configuration, cluster_config=config,
                           **options)
    try:
        yield Outage(rt, hole.cut, hole.restore)
    finally:
        rt.close()
        hole.close()


def cleanup_kube_state(state_dir: Path, config: str | None = None) -> None:
    """Force-delete every pod and Service in the test's namespace, then the namespace; raise
    if a pod stays."""
    namespace = namespace_for(state_dir)
    api = core_api(config)
    try:
        api.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        for svc in api.list_namespaced_service(namespace).items:
            api.delete_namespaced_service(svc.metadata.name, namespace)
    except ApiException as e:
        if e.status != 404:
            raise
        return
    deadline = time.monotonic() + 30
    while api.list_namespaced_pod(namespace).items:
        if time.monotonic() > deadline:
            raise AssertionError(f"pods of namespace {namespace} survived the clean-up")
        time.sleep(0.1)
    try:
        api.delete_namespace(namespace)
    except ApiException as e:
        if e.status != 404:
            raise


# --- launching with the app's checks and ports -------------------------------------------


def kube_launch_spec(app: AppSpec, task: Task) -> LaunchSpec:
    """``launch_spec`` plus what the kubernetes runtime reads from ``extra`` (the keys it
    documents): the app's effective port definitions, health and readiness checks."""
    spec = launch_spec(app, task)
    extra = dict(spec.extra)
    extra["portDefinitions"] = [p.model_dump(mode="json", exclude_none=True)
                                for p in app.port_definitions]
    extra["healthChecks"] = [hc.to_json() for hc in app.healthChecks]
    extra["readinessChecks"] = [rc.model_dump(mode="json") for rc in app.readinessChecks]
    return replace(spec, extra=extra)


def launch_spec_has_app_extras() -> bool:
    """Whether ``scheduler.runtimes.base.launch_spec`` already passes the app's port
    definitions and checks in ``extra`` (what :func:`kube_launch_spec` adds for the tests)."""
    app = AppSpec.model_validate({"id": "/x", "cmd": "true"})
    now = Task(id="x.1", app_id="/x", host="h", version="v", state=TaskState.STAGING,
               staged_at=datetime.now(UTC), ports=(1,))
    return "portDefinitions" in launch_spec(app, now).extra


def pod_of(config: str, namespace: str, name: str) -> Any:
    return kubectl_json(config, "get", "pod", "-n", namespace, name)


def pods_labelled(config: str, namespace: str, selector: str) -> Sequence[Any]:
    items: Sequence[Any] = kubectl_json(config, "get", "pods", "-n", namespace, "-l",
                                        selector)["items"]
    return items


# --- outages ------------------------------------------------------------------------------------


class Blackhole:
    """A TCP forwarder to the API server that can drop every connection and refuse new ones
    (the API server unreachable), and come back."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def kubeconfig_through(config: str, hole: Blackhole, path: Path) -> Path:
    """A copy of kubeconfig ``config`` whose server is reached through ``hole``."""
    text = Path(config).read_text()
    server = re.search(r"server:\s*https://([^:\s]+):(\d+)", text)
    assert server is not None, "the kubeconfig names no https server"
    path.write_text(text.replace(server.group(0),
                                 f"server: https://{server.group(1)}:{hole.port}"))
    return path


def api_server_address(config: str) -> tuple[str, int]:
    server = re.search(r"server:\s*https://([^:\s]+):(\d+)", Path(config).read_text())
    assert server is not None, "the kubeconfig names no https server"
    return server.group(1), int(server.group(2))


def own_cluster(name: str, nodes: int = 1) -> str:
    """A separate small cluster for a test that must disrupt it; the caller removes it
    (``down.sh --name``). Goes through :func:`kubeconfig` first, so where the offline cluster
    cannot come up at all it skips (fails under CI) with the same reason as every other
    Kubernetes test; where the shared cluster runs, a cluster of its own that does not come
    up is the test's failure."""
    kubeconfig()
    done = subprocess.run(["bash", str(OFFLINE / "up.sh"), "--name", name, "--nodes",
                           str(nodes)], capture_output=True, text=True, timeout=600,
                          check=False)
    if done.returncode != 0:
        raise AssertionError(f"up.sh --name {name} failed: {done.stderr[-1500:]}")
    return done.stdout.strip().splitlines()[-1].removeprefix("KUBECONFIG=")
