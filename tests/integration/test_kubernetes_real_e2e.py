"""End to end on a real Kubernetes node: a real ``dromos serve --runtime kubernetes`` (outside
the cluster, so task health comes from the pods' readiness in the API) against the offline
cluster with a real kubelet, containerd and kube-proxy (``up.sh --real-nodes 1``, see
tests/runtimes/k8s_real_support.py). What a user would see: ``httpd`` answering on the app's
Service from this machine all through a rolling restart, ``dromos logs`` and ``kubectl logs``
showing what it printed, a failing health check replacing a task, job runs that exit 0 and 3,
and every pod adopted after ``kill -9`` of Dromos. (The KWOK e2e test, with its three
simulated nodes and constraints, is tests/integration/test_kubernetes_e2e.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.runtimes.kubernetes import pod_name, service_name
from tests.runtimes.k8s_real_support import REAL_NODE, real_kubeconfig
from tests.runtimes.k8s_support import (
    TEST_IMAGE,
    core_api,
    ensure_namespace,
    kubectl,
    kubectl_json,
    namespace_for,
)
from tests.support.server import Server, wait_for

pytestmark = pytest.mark.integration

# busybox httpd serving its task id; on TERM it keeps serving 3 s more before it stops, the
# time kube-proxy needs to take the terminating pod out of the Service (an app that drains).
DRAINING_HTTPD = (
    "mkdir -p /tmp/www && echo \"$MESOS_TASK_ID\" > /tmp/www/index.html && "
    "{ httpd -f -vv -p $PORT0 -h /tmp/www & } && pid=$! && "
    "trap 'sleep 3; kill $pid; exit 0' TERM && wait $pid")
HEALTH = {"protocol": "HTTP", "path": "/", "portIndex": 0, "gracePeriodSeconds": 5,
          "intervalSeconds": 1, "timeoutSeconds": 1, "maxConsecutiveFailures": 2}


@dataclass
class Served:
    srv: Server
    ns: str
    kube: str


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    kube = real_kubeconfig()
    ns = namespace_for(tmp_path)
    ensure_namespace(ns, kube)
    monkeypatch.setenv("KUBECONFIG", kube)
    monkeypatch.setenv("DROMOS_KUBE_DEFAULT_IMAGE", TEST_IMAGE)  # built locally, never pulled
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # Dromos runs outside
    monkeypatch.delenv("DROMOS_KUBE_HEALTH", raising=False)
    nodes_file = tmp_path / "nodes.json"
    nodes_file.write_text(json.dumps([{"hostname": REAL_NODE, "cpus": 1, "mem": 1}]))
    srv = Server(tmp_path / "state", nodes_file, "--runtime", "kubernetes",
                 "--kube-namespace", ns)
    srv.start()
    try:
        yield Served(srv, ns, kube)
    finally:
        srv.stop()
        api = core_api(kube)
        api.delete_collection_namespaced_pod(ns, grace_period_seconds=0)
        kubectl(kube, "delete", "namespace", ns, "--wait=false", check=False)


def app_tasks(srv: Server, app_id: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = srv.get(f"/v2/apps{app_id}?embed=app.healthSource")[
        "app"]["tasks"]
    return tasks


def healthy(srv: Server, app_id: str, n: int) -> list[dict[str, Any]] | None:
    tasks = [t for t in app_tasks(srv, app_id) if t["state"] == "TASK_RUNNING"
             and t["healthCheckResults"] and all(r["alive"] for r in t["healthCheckResults"])]
    return tasks if len(tasks) == n else None


@dataclass
class Client:
    """Loops GET on a URL (a new connection each time) until stopped; at most 20 000
    requests, and never longer than ``limit`` seconds."""

    url: str
    limit: float = 180.0
    answers: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        for _ in range(20_000):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            try:
                r = httpx.get(self.url, timeout=5)
                if r.status_code == 200:
                    self.answers[r.text.strip()] += 1
                else:
                    self.failures.append(f"HTTP {r.status_code}")
            except httpx.HTTPError as e:
                self.failures.append(repr(e))
            time.sleep(0.02)


def test_an_apps_service_answers_through_kube_proxy_during_a_rolling_restart(
    served: Served,
) -> None:
    srv, ns, kube = served.srv, served.ns, served.kube
    app = {"id": "/real/web", "cmd": DRAINING_HTTPD, "instances": 2, "cpus": 0.1, "mem": 32,
           "portDefinitions": [{"port": 8080, "name": "http"}], "healthChecks": [HEALTH],
           "taskKillGracePeriodSeconds": 10,
           "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 1}}
    r = httpx.post(srv.url + "/v2/apps", json=app, timeout=10)
    assert r.status_code == 201, r.text
    before = wait_for(lambda: healthy(srv, "/real/web", 2), 90, "2 healthy web tasks")
    assert {t["healthSource"] for t in before} == {"kubernetes"}, \
        "Dromos runs outside the cluster: health is the pods' readiness"
    assert srv.get("/dromos/info")["healthSource"] == "kubernetes"

    # --- what the container printed: kubectl logs and dromos logs ---
    svc = kubectl_json(kube, "get", "service", "-n", ns, service_name("/real/web"))
    url = f"http://{svc['spec']['clusterIP']}:8080/"
    # kube-proxy writes the Service's rules a moment after the endpoints turn ready.
    wait_for(lambda: httpx.get(url, timeout=5).text.strip() in {t["id"] for t in before}, 30,
             "the Service to answer")
    first = before[0]["id"]
    wait_for(lambda: "response:200" in kubectl(kube, "logs", "-n", ns, pod_name(first)).stdout,
             30, "httpd's log of the kubelet's probes in kubectl logs")
    shown = subprocess.run([sys.executable, "-m", "scheduler.cli", "--url", srv.url, "logs",
                            first], capture_output=True, text=True, timeout=30, check=True)
    assert "url:/" in shown.stdout + shown.stderr, "dromos logs shows the same output"

    # --- Dromos killed with -9 and started again: every pod adopted, none created ---
    pods_before = {p["metadata"]["name"] for p in kubectl_json(
        kube, "get", "pods", "-n", ns, "-l", "dromos.io/task")["items"]}
    srv.kill9()
    srv.start()
    again = wait_for(lambda: healthy(srv, "/real/web", 2), 60, "the same 2 tasks, healthy")
    assert {t["id"] for t in again} == {t["id"] for t in before}
    assert {p["metadata"]["name"] for p in kubectl_json(
        kube, "get", "pods", "-n", ns, "-l", "dromos.io/task")["items"]} == pods_before

    # --- a rolling restart while a client loops on the Service: no request fails ---
    client = Client(url)
    loop = threading.Thread(target=client.run, daemon=True)
    loop.start()
    try:
        wait_for(lambda: sum(client.answers.values()) >= 20, 30, "the client to be answered")
        r = httpx.post(srv.url + "/v2/apps/real/web/restart", timeout=10)
        assert r.status_code == 200, r.text
        old = {t["id"] for t in before}

        def replaced() -> list[dict[str, Any]] | None:
            now = healthy(srv, "/real/web", 2)
            if not now or {t["id"] for t in now} & old or srv.get("/v2/deployments"):
                return None
            return now

        after = wait_for(replaced, 150, "every task replaced by a healthy one")
        # Both old pods are gone from the Service once their drain is over.
        wait_for(lambda: not [p for p in kubectl_json(kube, "get", "pods", "-n", ns, "-l",
                                                       "dromos.io/app=real_web")["items"]
                              if p["metadata"]["name"] in {pod_name(i) for i in old}],
                 60, "the old pods to be gone")
        seen_after = sum(client.answers[t["id"]] for t in after)
        wait_for(lambda: sum(client.answers[t["id"]] for t in after) > seen_after + 10, 30,
                 "the new tasks to answer the client")
    finally:
        client.stop.set()
        loop.join(30)
    assert client.failures == [], f"{len(client.failures)} failed requests: {client.failures[:5]}"
    assert set(client.answers) >= old | {t["id"] for t in after}, \
        "old and new tasks both answered on the Service"


def test_a_failing_health_check_replaces_the_task(served: Served) -> None:
    srv, ns, kube = served.srv, served.ns, served.kube
    # Serves for 10 s, then its page is gone (404): the kubelet's liveness probe fails and
    # kills httpd (which, unlike DRAINING_HTTPD, does not exit 0 on TERM).
    cmd = ("mkdir -p /tmp/www; echo \"$MESOS_TASK_ID\" > /tmp/www/index.html; "
           "(sleep 10; rm /tmp/www/index.html) & exec httpd -f -vv -p $PORT0 -h /tmp/www")
    app = {"id": "/real/flaky", "cmd": cmd, "instances": 1, "cpus": 0.1, "mem": 32,
           "portDefinitions": [{"port": 0, "name": "http"}], "healthChecks": [HEALTH]}
    assert httpx.post(srv.url + "/v2/apps", json=app, timeout=10).status_code == 201
    [first] = wait_for(lambda: healthy(srv, "/real/flaky", 1), 60, "a healthy task")

    def replacement() -> list[dict[str, Any]] | None:
        now = healthy(srv, "/real/flaky", 1)
        return now if now and now[0]["id"] != first["id"] else None

    wait_for(replacement, 90, "a new healthy task in place of the failing one")
    events = kubectl_json(kube, "get", "events", "-n", ns, "--field-selector",
                          f"involvedObject.name={pod_name(first['id'])}")["items"]
    assert any("Liveness probe failed" in e.get("message", "") for e in events), \
        "the kubelet ran the check and killed the container"
    failure = srv.get("/v2/apps/real/flaky")["app"].get("lastTaskFailure") or {}
    assert (failure.get("taskId"), failure.get("state")) == (first["id"], "TASK_FAILED"), failure


def test_job_runs_exit_0_and_3_on_the_node(served: Served) -> None:
    srv, ns, kube = served.srv, served.ns, served.kube
    wait_for(lambda: srv.get("/dromos/info")["nodes"], 30, "Dromos to see the node")
    start = datetime.now(UTC) + timedelta(seconds=2)
    for name, command in (("ok", "echo all good; exit 0"), ("bad", "echo failing; exit 3")):
        job = {"name": name, "command": command, "cpus": 0.1, "mem": 32, "retries": 0,
               "schedule": f"R1/{start:%Y-%m-%dT%H:%M:%SZ}/PT1H", "epsilon": "PT1M"}
        assert httpx.post(srv.url + "/scheduler/iso8601", json=job).status_code == 204

    def ended(job: str) -> dict[str, Any] | None:
        found = kubectl_json(kube, "get", "pods", "-n", ns, "-l", f"dromos.io/job={job}")
        pods = [p for p in found["items"] if p["status"].get("phase") in ("Succeeded", "Failed")]
        return pods[0] if pods else None

    ok = wait_for(lambda: ended("ok"), 60, "the ok job's pod to end")
    bad = wait_for(lambda: ended("bad"), 60, "the bad job's pod to end")
    assert ok["status"]["phase"] == "Succeeded"
    assert bad["status"]["phase"] == "Failed"
    code = bad["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
    assert code == 3, "the process's own exit code"
    assert kubectl(kube, "logs", "-n", ns, ok["metadata"]["name"]).stdout == "all good\n"
    wait_for(lambda: srv.get("/scheduler/job/ok")["successCount"] == 1, 30, "ok counted")
    wait_for(lambda: srv.get("/scheduler/job/bad")["errorCount"] == 1, 30, "bad counted")
