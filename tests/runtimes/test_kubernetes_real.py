"""The Kubernetes runtime on a real node (``kind-cluster/offline/up.sh --real-nodes 1``: a
kubelet with containerd + runc, CNI bridge networking, kube-proxy). The whole runtime contract
runs there as the ``kubernetes-real`` backend of tests/runtimes/test_contract.py; this module
holds what only a real node shows: probes run by the kubelet, ``kubectl logs`` of real
output, and a Service answering from this machine through kube-proxy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from scheduler.model.app import AppSpec
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.kubernetes import KubernetesRuntime, pod_name, service_name
from tests.runtimes.conftest import (
    BACKENDS,
    RuntimeFactory,
    make_app,
    make_task,
    wait_for_state,
    wait_until,
)
from tests.runtimes.k8s_real_support import REAL_NODE, real_kubeconfig
from tests.runtimes.k8s_support import core_api, kube_launch_spec, kubectl_json, namespace_for

# An HTTP server in the busybox test image: serves /tmp/www on $PORT0 and logs every request.
HTTPD = ("mkdir -p /tmp/www && echo \"hello from $MESOS_TASK_ID\" > /tmp/www/index.html && "
         "exec httpd -f -vv -p $PORT0 -h /tmp/www")


@pytest.fixture
def kube() -> str:
    return real_kubeconfig()


@pytest.fixture
def factory(kube: str, tmp_path: Path) -> Iterator[RuntimeFactory]:
    made = RuntimeFactory(BACKENDS["kubernetes-real"], tmp_path / "state")
    try:
        yield made
    finally:
        made.teardown()


@pytest.fixture
def rt(factory: RuntimeFactory) -> KubernetesRuntime:
    runtime = factory()
    assert isinstance(runtime, KubernetesRuntime)
    return runtime


def klaunch(rt: KubernetesRuntime, app: AppSpec, task: Task) -> Task:
    """Launch as the orchestrator would, with the app's ports and checks in ``extra``."""
    handle = rt.launch(kube_launch_spec(app, task))
    return task.with_(handle=dict(handle), state=TaskState.STARTING)


def events_of(kube: str, factory: RuntimeFactory, task: Task) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = kubectl_json(
        kube, "get", "events", "-n", namespace_for(factory.state_dir), "--field-selector",
        f"involvedObject.name={pod_name(task.id)}")["items"]
    return got


# --- only on a real node ----------------------------------------------------------------------


def test_the_kubelet_runs_the_health_check_and_ends_a_task_that_fails_it(
    kube: str, factory: RuntimeFactory, rt: KubernetesRuntime,
) -> None:
    """A Marathon HTTP health check becomes the kubelet's probes: the pod is Ready while the
    check passes, and once it fails maxConsecutiveFailures times the kubelet kills the
    container; the task ends FAILED (Dromos then starts a replacement, see the e2e test)."""
    app = make_app(
        cmd=HTTPD.replace("&& exec httpd",
                          "&& { (sleep 6; rm /tmp/www/index.html) & } && exec httpd"),
        portDefinitions=[{"port": 0, "name": "http"}],
        healthChecks=[{"protocol": "HTTP", "path": "/", "portIndex": 0,
                       "gracePeriodSeconds": 3, "intervalSeconds": 1, "timeoutSeconds": 1,
                       "maxConsecutiveFailures": 2}])
    task = klaunch(rt, app, make_task(app, host=REAL_NODE, ports=(31080,)))
    wait_for_state(rt, task, TaskState.RUNNING, timeout=30)
    wait_until(lambda: rt.ready(task), timeout=20, what="the readiness probe to pass")

    obs = wait_for_state(rt, task, TaskState.FAILED, TaskState.FINISHED, timeout=60)
    assert obs.state is TaskState.FAILED
    assert rt.ready(task) is not True
    messages = [e.get("message", "") for e in events_of(kube, factory, task)]
    assert any("Liveness probe failed" in m for m in messages), messages
    assert "url:/" in factory.stdout(task), "the kubelet's probes reached the server"


def test_logs_are_what_the_container_printed(rt: KubernetesRuntime) -> None:
    # stdout and stderr are two pipes: their lines interleave in the order they are read.
    app = make_app(cmd="echo one; sleep 0.5; echo two >&2; sleep 0.5; echo three")
    task = klaunch(rt, app, make_task(app, host=REAL_NODE))
    wait_for_state(rt, task, TaskState.FINISHED, timeout=30)

    assert rt.logs(task).splitlines() == ["one", "two", "three"]
    assert rt.logs(task, tail=1) == "three\n"


def test_the_apps_service_answers_from_this_machine_through_kube_proxy(
    kube: str, factory: RuntimeFactory, rt: KubernetesRuntime,
) -> None:
    app = make_app(id="/web", cmd=HTTPD, instances=2,
                   portDefinitions=[{"port": 8080, "name": "http"}],
                   healthChecks=[{"protocol": "HTTP", "path": "/", "portIndex": 0,
                                  "intervalSeconds": 1}])
    tasks = [klaunch(rt, app, make_task(app, host=REAL_NODE, ports=(port,)))
             for port in (31081, 31082)]
    for task in tasks:
        wait_for_state(rt, task, TaskState.RUNNING, timeout=30)
        wait_until(lambda task=task: rt.ready(task), timeout=20, what="the pod to be ready")
    svc = kubectl_json(kube, "get", "service", "-n", namespace_for(factory.state_dir),
                       service_name("/web"))
    url = f"http://{svc['spec']['clusterIP']}:8080/"

    def answered_by_both() -> set[str] | None:
        try:
            seen = {httpx.get(url, timeout=5).text.strip() for _ in range(20)}
        except httpx.ConnectError:
            return None  # kube-proxy has not written the Service's rules yet (REJECT)
        return seen if seen == {f"hello from {t.id}" for t in tasks} else None

    wait_until(answered_by_both, timeout=30, interval=0.5,
               what="both pods to answer on the Service's ClusterIP")
    endpoints = core_api(kube).read_namespaced_endpoints(service_name("/web"),
                                                         namespace_for(factory.state_dir))
    ips = sorted(a.ip for s in endpoints.subsets for a in s.addresses)
    assert ips == sorted(rt.probe_host(t) for t in tasks), "the endpoints are the pods' IPs"
