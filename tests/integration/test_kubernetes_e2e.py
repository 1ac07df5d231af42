"""End to end on Kubernetes: a real ``dromos serve --runtime kubernetes`` against the offline
KWOK cluster, checked with ``kubectl`` (what a user would look at), and ``manifests/`` applied
to the same cluster, checked with ``kubectl auth can-i``.

The cluster has three nodes (``kind-cluster/offline/up.sh``): dromos-node-0 (zone z1, rack
r1), dromos-node-1 (z2, r2), dromos-node-2 (z3, r3). Pods do not run real containers; their
``DROMOS_SIM_*`` variables script them (``kind-cluster/offline/stages.yaml``).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.model.task import TaskState
from scheduler.runtimes.kubernetes import (
    KubernetesRuntime,
    load_client_configuration,
    pod_name,
    service_name,
)
from tests.runtimes.conftest import make_app, make_task, wait_for_state
from tests.runtimes.k8s_support import (
    OFFLINE,
    REPO,
    Blackhole,
    api_server_address,
    ensure_namespace,
    kube_launch_spec,
    kubeconfig,
    kubeconfig_through,
    kubectl,
    kubectl_json,
    launch_spec_has_app_extras,
    namespace_for,
)
from tests.support.server import Server, wait_for

pytestmark = pytest.mark.integration

NODES = ["dromos-node-0", "dromos-node-1", "dromos-node-2"]
ZONE = {"dromos-node-0": "z1", "dromos-node-1": "z2", "dromos-node-2": "z3"}
RACK = {"dromos-node-0": "r1", "dromos-node-1": "r2", "dromos-node-2": "r3"}
RUN_AND_SUCCEED = [{"name": "DROMOS_SIM_EXIT", "value": "0"},
                   {"name": "DROMOS_SIM_RUN_FOR", "value": "2s"}]

APPS = [
    {"id": "/e2e/web", "cmd": "exec httpd -f -p $PORT0", "instances": 3, "cpus": 0.5,
     "mem": 128, "constraints": [["hostname", "UNIQUE"]],
     "portDefinitions": [{"port": 8080, "name": "http"}]},
    {"id": "/e2e/api", "cmd": "exec api-server", "instances": 2, "cpus": 0.25, "mem": 64,
     "constraints": [["zone", "IS", "z1"]]},
    {"id": "/e2e/worker", "cmd": "exec worker", "instances": 2, "cpus": 0.25, "mem": 64,
     "constraints": [["rack", "LIKE", "r[23]"], ["rack", "MAX_PER", "1"]]},
]


def pods(kube: str, ns: str, selector: str) -> list[dict[str, Any]]:
    """``kubectl get pods -l <selector>``, as (name, node, phase) records."""
    out = kubectl(kube, "get", "pods", "-n", ns, "-l", selector, "--no-headers", "-o",
                  "custom-columns=NAME:.metadata.name,NODE:.spec.nodeName,"
                  "PHASE:.status.phase,CREATED:.metadata.creationTimestamp").stdout
    return [dict(zip(("name", "node", "phase", "created"), line.split(), strict=True))
            for line in out.splitlines() if line.strip()]


def running(kube: str, ns: str, selector: str, n: int) -> list[dict[str, Any]] | None:
    found = [p for p in pods(kube, ns, selector) if p["phase"] == "Running"]
    return found if len(found) == n else None


@pytest.fixture
def cluster() -> str:
    return kubeconfig()


@dataclass
class Served:
    srv: Server
    ns: str
    hole: Blackhole
    """Dromos reaches the API server through this: cut it for an outage of Dromos's own."""


@pytest.fixture
def served(cluster: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    ns = namespace_for(tmp_path)
    ensure_namespace(ns)
    hole = Blackhole(api_server_address(cluster))
    # `dromos serve` finds the cluster the usual way: $KUBECONFIG.
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig_through(cluster, hole,
                                                            tmp_path / "kubeconfig")))
    nodes_file = tmp_path / "nodes.json"
    # With the kubernetes runtime a nodes file only says which nodes Dromos may use.
    nodes_file.write_text(json.dumps([{"hostname": n, "cpus": 1, "mem": 1} for n in NODES]))
    srv = Server(tmp_path / "state", nodes_file, "--runtime", "kubernetes",
                 "--kube-namespace", ns)
    srv.start()
    try:
        yield Served(srv, ns, hole)
    finally:
        srv.stop()
        hole.close()
        kubectl(cluster, "delete", "namespace", ns, "--wait=false", check=False)


def test_three_apps_with_constraints_and_two_dependent_jobs(
    cluster: str, served: Served,
) -> None:
    srv, ns, kube = served.srv, served.ns, cluster
    for app in APPS:
        r = httpx.post(srv.url + "/v2/apps", json=app, timeout=10)
        assert r.status_code == 201, r.text
    start = datetime.now(UTC) + timedelta(seconds=2)
    extract = {"name": "extract", "command": "extract.sh", "cpus": 0.1, "mem": 32,
               "schedule": f"R1/{start:%Y-%m-%dT%H:%M:%SZ}/PT1H", "epsilon": "PT1M",
               "environmentVariables": RUN_AND_SUCCEED}
    load = {"name": "load", "command": "load.sh", "cpus": 0.1, "mem": 32,
            "parents": ["extract"], "environmentVariables": RUN_AND_SUCCEED}
    assert httpx.post(srv.url + "/scheduler/iso8601", json=extract).status_code == 204
    assert httpx.post(srv.url + "/scheduler/dependency", json=load).status_code == 204

    # --- the apps, as kubectl shows them ---
    web = wait_for(lambda: running(kube, ns, "dromos.io/app=e2e_web", 3), 30, "3 web pods")
    assert sorted(p["node"] for p in web) == NODES, "hostname UNIQUE: one per node"
    api = wait_for(lambda: running(kube, ns, "dromos.io/app=e2e_api", 2), 30, "2 api pods")
    assert {ZONE[p["node"]] for p in api} == {"z1"}, "zone IS z1"
    worker = wait_for(lambda: running(kube, ns, "dromos.io/app=e2e_worker", 2), 30, "workers")
    assert sorted(RACK[p["node"]] for p in worker) == ["r2", "r3"], "LIKE r[23], MAX_PER 1"
    svc = kubectl_json(kube, "get", "service", "-n", ns, service_name("/e2e/web"))
    assert svc["spec"]["selector"] == {"dromos.io/app": "e2e_web"}
    # The app's service port once launch_spec hands the runtime the app's portDefinitions
    # (LaunchSpec.extra["portDefinitions"]); until then the runtime's documented fallback.
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == (
        [("http", 8080)] if launch_spec_has_app_extras() else [("port0", 10000)])
    marathon = srv.get("/v2/apps/e2e/web")["app"]
    assert sorted(pod_name(t["id"]) for t in marathon["tasks"]) == sorted(p["name"]
                                                                          for p in web)

    # --- the jobs: extract runs at its time, load after it succeeded ---
    def succeeded(job: str) -> list[dict[str, Any]] | None:
        found = pods(kube, ns, f"dromos.io/job={job}")
        return found if found and all(p["phase"] == "Succeeded" for p in found) else None

    [extracted] = wait_for(lambda: succeeded("extract"), 40, "extract to succeed")
    [loaded] = wait_for(lambda: succeeded("load"), 40, "load to succeed")
    assert loaded["created"] >= extracted["created"]
    finished = kubectl_json(kube, "get", "pod", "-n", ns, extracted["name"])
    ended = finished["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"]
    assert loaded["created"] >= ended, "the dependent job started after its parent ended"
    assert extracted["name"].startswith(f"extract-{start:%Y%m%dt%H%M%S}z-".lower()), \
        "a scheduled run's pod is named from its job and time"
    wait_for(lambda: srv.get("/scheduler/job/load")["successCount"] == 1, 20, "load counted")

    # --- Dromos restarts: it adopts every pod, creates none ---
    before = {p["name"] for p in pods(kube, ns, "dromos.io/task")}
    srv.kill9()
    srv.start()
    time.sleep(3)
    assert {p["name"] for p in pods(kube, ns, "dromos.io/task")} == before
    assert len(srv.get("/v2/apps/e2e/web")["app"]["tasks"]) == 3

    # --- the API server goes away: Dromos keeps serving and says so, then reconciles ---
    served.hole.cut()
    try:
        info = wait_for(lambda: (lambda i: i if not i["runtime"]["available"] else None)(
            srv.get("/dromos/info")), 20, "the runtime to be shown unavailable")
        assert info["runtime"]["name"] == "kubernetes" and info["runtime"]["error"]
        assert httpx.get(srv.url + "/ping").text == "pong"
        r = httpx.put(srv.url + "/v2/apps/e2e/web", json={**APPS[0], "instances": 2},
                      timeout=10)
        assert r.status_code == 200, r.text
        time.sleep(1)
        assert len(running(kube, ns, "dromos.io/app=e2e_web", 3) or ()) == 3, \
            "nothing reaches the cluster meanwhile"
    finally:
        served.hole.restore()
    wait_for(lambda: srv.get("/dromos/info")["runtime"]["available"], 60, "the runtime back")
    wait_for(lambda: running(kube, ns, "dromos.io/app=e2e_web", 2), 40,
             "the scale-down done after the outage")


# --- manifests ----------------------------------------------------------------------------------

CRUD = {"create", "delete", "get", "list", "update", "watch"}
ALLOWED = {
    # patch: a fenced delete stamps the object with the leader's token first.
    ("pods", ""): {"create", "delete", "get", "list", "patch", "watch"},
    ("pods/log", ""): {"get"},
    ("services", ""): CRUD | {"patch"},
    ("nodes", ""): {"get", "list", "watch"},
    # State (--store kubernetes) and the events that report bad kubectl-applied objects.
    **{(f"{kind}.dromos.io", ""): CRUD for kind in (
        "apps", "jobs", "appversions", "tasks", "jobruns", "metas", "transactions")},
    ("apps.dromos.io/status", ""): {"get", "update"},
    ("jobs.dromos.io/status", ""): {"get", "update"},
    ("events", ""): {"create"},
    # Leader election: creating the Lease, and only the Lease named dromos-leader after that.
    ("leases.coordination.k8s.io", ""): {"create"},
}
# Cluster-scoped parts other tests share (the CRDs, the fence policy): applied, never deleted
# here (deleting CRDs deletes every test's objects).
SHARED = ("05-crds.yaml", "15-fence.yaml")
# What every authenticated account may do (system:basic-user, system:discovery...).
BASELINE = {"selfsubjectaccessreviews.authorization.k8s.io",
            "selfsubjectrulesreviews.authorization.k8s.io",
            "selfsubjectreviews.authentication.k8s.io"}
ACCOUNT = "system:serviceaccount:dromos:dromos"


def can_i_list(kube: str) -> dict[str, set[str]]:
    """``kubectl auth can-i --list`` for Dromos's account: resource → verbs. Rows of
    non-resource URLs (which start with blanks) are everyone's and left out; rows limited to
    named objects are left out too (checked one by one with ``can-i``)."""
    out = kubectl(kube, "auth", "can-i", "--list", f"--as={ACCOUNT}", "-n", "dromos").stdout
    rules: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        groups = re.findall(r"\[([^\]]*)\]", line)
        if not line.strip() or line[0].isspace() or len(groups) < 3 or groups[-2].strip():
            continue
        rules.setdefault(line.split()[0], set()).update(groups[-1].split())
    return rules


def wait_namespace_gone(kube: str, name: str) -> None:
    wait_for(lambda: kubectl(kube, "get", "namespace", name, check=False).returncode != 0,
             120, f"namespace {name} to be deleted")


def test_manifests_give_dromos_exactly_what_it_needs(cluster: str, tmp_path: Path) -> None:
    kube = cluster
    wait_namespace_gone(kube, "dromos")  # an earlier run's, still terminating
    kubectl(kube, "apply", "-f", str(REPO / "manifests"))
    try:
        rules = can_i_list(kube)
        resource_rules = {k: v for k, v in rules.items() if k not in BASELINE}
        assert resource_rules == {r: v for (r, _), v in ALLOWED.items()}
        assert "*" not in json.dumps(sorted((k, sorted(v)) for k, v in rules.items()))
        for verb, what in [("get", "secrets"), ("list", "secrets"), ("create", "deployments"),
                           ("delete", "nodes"), ("update", "pods"), ("delete", "leases"),
                           ("update", "leases")]:
            out = kubectl(kube, "auth", "can-i", verb, what, f"--as={ACCOUNT}", "-n", "dromos",
                          check=False).stdout.strip()
            assert out == "no", f"{verb} {what}: {out}"
        out = kubectl(kube, "auth", "can-i", "list", "pods", "--all-namespaces",
                      f"--as={ACCOUNT}", check=False).stdout.strip()
        assert out == "no", "pods only in its own namespace"
        out = kubectl(kube, "auth", "can-i", "update", "lease/dromos-leader", f"--as={ACCOUNT}",
                      "-n", "dromos", check=False).stdout.strip()
        assert out == "yes", "its own Lease, and only that one (checked above)"

        ns = kubectl_json(kube, "get", "namespace", "dromos")
        assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
        deployment = kubectl_json(kube, "get", "deployment", "-n", "dromos", "dromos")
        template = deployment["spec"]["template"]["spec"]
        assert deployment["spec"]["replicas"] == 3
        assert template["serviceAccountName"] == "dromos"
        assert template["securityContext"]["runAsNonRoot"] is True
        assert template["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        assert not [v for v in template["volumes"] if "persistentVolumeClaim" in v]
        assert "--store" in template["containers"][0]["args"]
        pdb = kubectl_json(kube, "get", "poddisruptionbudget", "-n", "dromos", "dromos")
        assert pdb["spec"]["minAvailable"] == 2
        # The ReplicaSet's pod passed Pod Security "restricted" admission.
        wait_for(lambda: kubectl_json(kube, "get", "pods", "-n", "dromos", "-l",
                                      "app.kubernetes.io/name=dromos")["items"], 30,
                 "the Deployment's pod to be admitted")
        kubectl_json(kube, "get", "service", "-n", "dromos", "dromos")

        # The runtime works with nothing but these rights (a token of the account).
        token = kubectl(kube, "create", "token", "dromos", "-n", "dromos").stdout.strip()
        configuration = load_client_configuration(kube)
        configuration.api_key = {"authorization": "Bearer " + token}
        configuration.cert_file = configuration.key_file = None
        rt = KubernetesRuntime(tmp_path / "state", namespace="dromos",
                               configuration=configuration, default_image="x:1")
        try:
            nodes = rt.nodes()
            assert {"dromos-node-0", "dromos-node-1", "dromos-node-2"} <= {
                n.hostname for n in nodes}
            assert rt.cluster_wide is False, "it cannot list pods cluster-wide, and copes"
            app = make_app(id="/rbac/check", portDefinitions=[{"port": 80, "name": "http"}])
            task = make_task(app, host="dromos-node-0", ports=(31000,))
            task = task.with_(handle=dict(rt.launch(kube_launch_spec(app, task))))
            wait_for_state(rt, task, TaskState.RUNNING)
            kubectl_json(kube, "get", "service", "-n", "dromos", service_name("/rbac/check"))
            rt.kill(task, 1)
            wait_for_state(rt, task, TaskState.KILLED)
        finally:
            rt.close()
    finally:
        for f in sorted((REPO / "manifests").glob("*.yaml")):
            if f.name not in SHARED:
                kubectl(kube, "delete", "-f", str(f), "--wait=false", check=False)


def test_offline_scripts_are_there_and_idempotent() -> None:
    # up.sh on a running cluster only checks it and prints the kubeconfig again.
    kubeconfig()
    done = subprocess.run(["bash", str(OFFLINE / "up.sh"), "--name", "dromos-test",
                           "--nodes", "3"], capture_output=True, text=True, timeout=300,
                          check=True)
    assert done.stdout.strip().splitlines()[-1].startswith("KUBECONFIG=")
    assert "already up" in done.stderr
    assert "cached" in done.stderr, "nothing is rebuilt"
