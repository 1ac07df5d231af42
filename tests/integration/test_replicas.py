"""Three real `dromos serve --store kubernetes` replicas on the offline control plane, each
acting as Dromos's service account (a token from `kubectl create token`) under the shipped
RBAC and fence policy: one leads, standbys forward writes, and kill -9 of the leader during a
rolling deployment loses and doubles nothing. Checked on the API server (pods, Lease)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.ha.test_fence import MANIFESTS, fenced_namespace
from tests.runtimes.k8s_support import (
    TEST_IMAGE,
    kubeconfig,
    kubectl,
    kubectl_json,
    namespace_for,
)
from tests.support.server import free_port, wait_for

pytestmark = pytest.mark.integration

NODES = 3


@dataclass
class Replica:
    name: str
    port: int
    state: Path
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def role(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = httpx.get(self.url + "/dromos/role", timeout=5).json()
            return data
        except (httpx.HTTPError, ValueError):
            return None


@dataclass
class Replicas:
    """The started replicas, and how to start one more (stopped with the others)."""

    members: list[Replica]
    start: Callable[[str], Replica]


def token_kubeconfig(ns: str, path: Path) -> Path:
    """A kubeconfig that authenticates as ``system:serviceaccount:<ns>:dromos``."""
    admin = yaml.safe_load(Path(kubeconfig()).read_text())
    token = kubectl(kubeconfig(), "create", "token", "dromos", "-n", ns,
                    "--duration", "2h").stdout.strip()
    admin["users"][0]["user"] = {"token": token}
    path.write_text(yaml.safe_dump(admin))
    return path


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[Replicas]:
    ns, rbac = fenced_namespace(tmp_path)
    config = token_kubeconfig(ns, tmp_path / "dromos.kubeconfig")
    env = {**os.environ, "KUBECONFIG": str(config), "DROMOS_KUBE_DEFAULT_IMAGE": TEST_IMAGE}
    started: list[Replica] = []

    def start(name: str, port: int | None = None) -> Replica:
        port = port or free_port()
        state = tmp_path / name
        log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "serve", "--port", str(port),
             "--state-dir", str(state), "--runtime", "kubernetes", "--kube-namespace", ns,
             "--store", "kubernetes", "--advertise", f"127.0.0.1:{port}",
             "--lease-duration", "4", "--renew-deadline", "3", "--retry-period", "0.5"],
            stdout=log, stderr=log, env=env, start_new_session=True)
        r = Replica(name, port, state, proc)
        started.append(r)
        return r

    for i in range(3):
        start(f"r{i}")
    for r in started:
        wait_for(lambda r=r: r.role(), 60, f"{r.name} to answer")  # type: ignore[misc]
    try:
        yield Replicas(started, start)
    finally:
        for r in started:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        for r in started:
            try:
                r.proc.wait(20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
        kubectl(kubeconfig(), "delete", "pods", "--all", "-n", ns, "--wait=false",
                check=False)
        kubectl(kubeconfig(), "delete", "-f", str(rbac), "--wait=false", check=False)


def leader_of(rs: list[Replica]) -> Replica:
    """The one replica that says it leads (waits until exactly one does, and all alive
    replicas agree on it)."""
    def one() -> Replica | None:
        alive = [r for r in rs if r.proc.poll() is None]
        roles = {r.name: r.role() for r in alive}
        leaders = [r for r in alive if (roles[r.name] or {}).get("role") == "leader"]
        if len(leaders) != 1:
            return None
        address = f"127.0.0.1:{leaders[0].port}"
        if all((roles[r.name] or {}).get("leader") == address for r in alive):
            return leaders[0]
        return None

    found: Replica = wait_for(one, 60, "exactly one leader")
    return found


def pods(ns: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = kubectl_json(kubeconfig(), "get", "pods", "-n", ns,
                                               "-l", "dromos.io/app")["items"]
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


APP = {"id": "/ha/web", "cmd": "sleep 3600", "instances": 20, "cpus": 0.01, "mem": 8,
       "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2}}


def test_failover_during_a_rolling_deployment_loses_and_doubles_nothing(
        replicas: Replicas) -> None:
    rs = list(replicas.members)
    ns = namespace_for(rs[0].state.parent)
    leader = leader_of(rs)
    standby = next(r for r in rs if r is not leader)

    # A write to a standby is forwarded to the leader.
    created = httpx.post(standby.url + "/v2/apps", json=APP, timeout=30)
    assert created.status_code == 201, created.text
    assert created.headers.get("X-Dromos-Via") == f"127.0.0.1:{standby.port}"

    def running(url: str) -> dict[str, Any] | None:
        """The app once converged: no deployment, 20 tasks, all running (tasks whose kills
        are still in flight after a failover must be gone too)."""
        app = httpx.get(url + "/v2/apps/ha/web", timeout=10).json()["app"]
        converged = (app["tasksRunning"] == 20 and not app["deployments"]
                     and len(app["tasks"]) == 20)
        return app if converged else None

    wait_for(lambda: running(leader.url), 120, "20 running tasks")
    assert len(pods(ns)) == 20

    # A rolling upgrade; the leader is killed -9 three times while it runs.
    changed = httpx.put(standby.url + "/v2/apps/ha/web", json={**APP, "cmd": "sleep 7200"},
                        timeout=30)
    assert changed.status_code == 200, changed.text
    for _ in range(3):
        leader = leader_of(rs)
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(10)
        rs = [r for r in rs if r is not leader]
        rs.append(replicas.start(f"{leader.name}b"))  # a replacement replica
        leader_of(rs)

    leader = leader_of(rs)
    app = wait_for(lambda: running(leader.url), 240, "the deployment to finish")
    tasks = app["tasks"]
    assert len(tasks) == 20 and len({t["id"] for t in tasks}) == 20
    # Every pod accounted for: exactly one per running task, all of the new version.
    live = pods(ns)
    assert sorted(p["metadata"]["annotations"]["dromos.io/task-id"] for p in live) == sorted(
        t["id"] for t in tasks)
    assert {p["metadata"]["annotations"]["dromos.io/version"] for p in live} == {
        app["versionInfo"]["lastConfigChangeAt"]}


def test_kubectl_apply_status_rest_change_and_delete(replicas: Replicas) -> None:
    rs = replicas.members
    ns = namespace_for(rs[0].state.parent)
    leader = leader_of(rs)
    kube = kubeconfig()
    examples = MANIFESTS / "examples"
    kubectl(kube, "apply", "-n", ns, "-f", str(examples / "app.yaml"))
    kubectl(kube, "apply", "-n", ns, "-f", str(examples / "bad-app.yaml"))

    def hello_running() -> dict[str, Any] | None:
        r = httpx.get(leader.url + "/v2/apps/hello", timeout=10)
        app: dict[str, Any] = r.json()["app"] if r.status_code == 200 else {}
        return app if app and app["tasksRunning"] == 2 else None

    wait_for(hello_running, 120, "the kubectl-applied app to run 2 tasks")
    # Its status shows it (printer columns read these), and it stays one object.
    obj = wait_for(lambda: (o := kubectl_json(kube, "get", "apps.dromos.io", "hello", "-n",
                                              ns)).get("status", {}).get("running") == 2 and o,
                   60, "status.running = 2")
    assert [c["status"] for c in obj["status"]["conditions"] if c["type"] == "Valid"] == ["True"]
    names = [o["metadata"]["name"] for o in kubectl_json(kube, "get", "apps.dromos.io", "-n",
                                                         ns)["items"]]
    assert sorted(names) == ["broken", "hello"]

    # The bad one runs nothing and says why, at the REST API's paths.
    bad = wait_for(lambda: [c for c in kubectl_json(kube, "get", "apps.dromos.io", "broken",
                                                    "-n", ns).get("status", {})
                            .get("conditions", []) if c["type"] == "Valid"], 60,
                   "the bad object's condition")
    assert bad[0]["status"] == "False" and "/instances" in bad[0]["message"]
    assert httpx.get(leader.url + "/v2/apps/broken", timeout=10).status_code == 404
    events = kubectl_json(kube, "get", "events", "-n", ns)["items"]
    assert any(e["involvedObject"]["name"] == "broken" and e["type"] == "Warning"
               for e in events)

    # A REST change shows in the object.
    r = httpx.put(leader.url + "/v2/apps/hello?force=true", json={"instances": 3}, timeout=30)
    assert r.status_code == 200, r.text
    wait_for(lambda: kubectl_json(kube, "get", "apps.dromos.io", "hello", "-n",
                                  ns)["spec"]["instances"] == 3, 60, "spec.instances = 3")

    # kubectl delete removes the app and its pods.
    kubectl(kube, "delete", "-n", ns, "-f", str(examples / "app.yaml"))
    wait_for(lambda: httpx.get(leader.url + "/v2/apps/hello", timeout=10).status_code == 404,
             60, "the app to be deleted")
    wait_for(lambda: not [p for p in pods(ns)
                          if p["metadata"]["annotations"].get("dromos.io/app-id") == "/hello"],
             120, "its pods to go")
