"""The Kubernetes runtime against a real API server (the offline KWOK cluster).

The runtime contract (launch, observe, kill with grace, exit codes, adoption...) is checked
for Kubernetes by ``test_contract.py``, with the process's behaviour scripted by
``DROMOS_SIM_*`` variables that the cluster's KWOK stages act on. Here is what is specific to
Kubernetes: labels (checked with ``kubectl``), binding by ``nodeName``, requests, probes,
Services and readiness, deterministic names, the node inventory, the watch's relist after
``410 Gone``, an API server outage and recovery, Pod Security, and job-run pods.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scheduler.cli import build_parser
from scheduler.model.app import AppSpec
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import LaunchSpec, Runtime, RuntimeUnavailable, launch_spec
from scheduler.runtimes.kubernetes import (
    KubernetesRuntime,
    app_label,
    build_pod,
    label_value,
    load_client_configuration,
    parse_quantity,
    pod_name,
    service_name,
)
from scheduler.runtimes.kubernetes.names import DEFAULT_RUN_AS_USER
from tests.runtimes.conftest import (
    BACKENDS,
    RuntimeFactory,
    make_app,
    make_task,
    observe_one,
    wait_for_state,
    wait_until,
)
from tests.runtimes.k8s_support import (
    OFFLINE,
    TEST_IMAGE,
    Blackhole,
    core_api,
    kube_launch_spec,
    kubeconfig,
    kubectl,
    kubectl_json,
    kwokctl,
    namespace_for,
    own_cluster,
    pod_of,
    pods_labelled,
)

NODE = "dromos-node-0"


@pytest.fixture
def kube() -> str:
    """The test cluster's kubeconfig (brings the cluster up on first use)."""
    return kubeconfig()


@pytest.fixture
def factory(kube: str, tmp_path: Path) -> Iterator[RuntimeFactory]:
    made = RuntimeFactory(BACKENDS["kubernetes"], tmp_path / "state")
    try:
        yield made
    finally:
        made.teardown()


@pytest.fixture
def rt(factory: RuntimeFactory) -> KubernetesRuntime:
    runtime = factory()
    assert isinstance(runtime, KubernetesRuntime)
    return runtime


def ns_of(factory: RuntimeFactory) -> str:
    return namespace_for(factory.state_dir)


def klaunch(rt: Runtime, app: AppSpec, task: Task) -> Task:
    """Launch as the orchestrator would, with the app's ports and checks in ``extra``."""
    handle = rt.launch(kube_launch_spec(app, task))
    return task.with_(handle=dict(handle), state=TaskState.STARTING)


def sim(**env: str) -> dict[str, str]:
    """``DROMOS_SIM_*`` variables: how the simulated process behaves (stages.yaml)."""
    return {f"DROMOS_SIM_{k.upper()}": v for k, v in env.items()}


# --- what the contract suite cannot see of a pod ------------------------------------------------


def test_a_killed_tasks_pod_is_deleted(
    rt: KubernetesRuntime, factory: RuntimeFactory, kube: str,
) -> None:
    app = make_app(env=sim(on_term="exit:0"))
    task = klaunch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.RUNNING)

    rt.kill(task, grace_seconds=10)
    obs = wait_for_state(rt, task, TaskState.KILLED, timeout=5)
    assert obs.exit_code == 0
    wait_until(lambda: kubectl(kube, "get", "pod", "-n", ns_of(factory), pod_name(task.id),
                               check=False).returncode != 0, timeout=10, what="the pod to go")


def test_container_ports_are_the_tasks_ports_under_their_names(
    rt: KubernetesRuntime, factory: RuntimeFactory, kube: str,
) -> None:
    app = make_app(portDefinitions=[{"port": 0, "name": "http"}, {"port": 0}])
    task = klaunch(rt, app, make_task(app, host=NODE, ports=(31005, 31006)))

    container = pod_of(kube, ns_of(factory), pod_name(task.id))["spec"]["containers"][0]
    assert [(p["name"], p["containerPort"]) for p in container["ports"]] == [
        ("http", 31005), ("port1", 31006)], "the task binds $PORTn inside its pod"


def test_check_command_is_kubectl_exec_into_the_tasks_container(
    rt: KubernetesRuntime, factory: RuntimeFactory, kube: str,
) -> None:
    app = make_app()
    task = klaunch(rt, app, make_task(app, ports=(31042,)))

    argv, env = rt.check_command(task, 'echo "$MESOS_TASK_ID $PORT0"; exit 2')

    name = pod_name(task.id)
    assert argv[0].endswith("kubectl")
    assert argv[argv.index("exec"):] == [
        "exec", "--namespace", ns_of(factory), name, "-c", "task", "--",
        "/bin/sh", "-c", 'echo "$MESOS_TASK_ID $PORT0"; exit 2']
    assert "PATH" in env
    assert pod_of(kube, ns_of(factory), name)["metadata"]["name"] == name


# --- labels, binding, requests, probes ---------------------------------------------------------


def test_pods_carry_dromos_labels_and_kubectl_finds_them_by_app(
    rt: KubernetesRuntime, factory: RuntimeFactory, kube: str,
) -> None:
    app = make_app(id="/prod/web", instances=2)
    tasks = [klaunch(rt, app, make_task(app, host=NODE)) for _ in range(2)]

    out = kubectl(kube, "get", "pods", "-n", ns_of(factory), "-l", "dromos.io/app=prod_web",
                  "-o", "custom-columns=NAME:.metadata.name", "--no-headers").stdout
    assert sorted(out.split()) == sorted(pod_name(t.id) for t in tasks)
    pod = pod_of(kube, ns_of(factory), pod_name(tasks[0].id))
    labels, annotations = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    assert labels["dromos.io/app"] == "prod_web" == app_label("/prod/web")
    assert labels["dromos.io/task"] == tasks[0].id, "uuid task ids are label-safe as they are"
    assert labels["dromos.io/version"] == label_value(tasks[0].version)
    assert annotations["dromos.io/app-id"] == "/prod/web"
    assert annotations["dromos.io/task-id"] == tasks[0].id
    assert annotations["dromos.io/version"] == tasks[0].version
    assert "dromos.io/job" not in labels


def test_pods_are_bound_by_node_name_with_requests_equal_to_limits(
    rt: KubernetesRuntime, factory: RuntimeFactory, kube: str,
) -> None:
    app = make_app(cpus=0.25, mem=64, disk=10)
    task = klaunch(rt, app, make_task(app, host="dromos-node-2"))

    pod = pod_of(kube, ns_of(factory), pod_name(task.id))
    spec = pod["spec"]
    assert spec["nodeName"] == "dromos-node-2", "bound at creation: Dromos is the scheduler"
    assert spec["restartPolicy"] == "Never"
    resources = spec["containers"][0]["resources"]
    assert resources["requests"] == resources["limits"] == {
        "cpu": "250m", "memory": "64Mi", "ephemeral-storage": "10Mi"}
    assert pod["status"].get("qosClass") == "Guaranteed"
    events = kubectl_json(kube, "get", "events", "-n", ns_of(factory), "--field-selector",
                          f"involvedObject.name={pod_name(task.id)}")["items"]
    assert not [e for e in events if e.get("reason") == "Scheduled"], "kube-scheduler not used"
    wait_for_state(rt, task, TaskState.RUNNING)


def test_health_and_readiness_checks_become_probes(
    rt: KubernetesRuntime, factory: RuntimeFactory, kube: str,
) -> None:
    app = make_app(
        portDefinitions=[{"port": 0, "name": "http"}, {"port": 0, "name": "admin"}],
        healthChecks=[
            {"protocol": "HTTP", "path": "/health", "portIndex": 1, "gracePeriodSeconds": 30,
             "intervalSeconds": 5, "timeoutSeconds": 2, "maxConsecutiveFailures": 3},
            {"protocol": "TCP", "portIndex": 0},
        ],
        readinessChecks=[{"name": "ready", "protocol": "HTTP", "path": "/ready",
                          "portName": "http", "intervalSeconds": 7, "timeoutSeconds": 3}],
    )
    task = klaunch(rt, app, make_task(app, host=NODE, ports=(31001, 31002)))

    c = pod_of(kube, ns_of(factory), pod_name(task.id))["spec"]["containers"][0]
    http = {"path": "/health", "port": "admin", "scheme": "HTTP"}
    assert c["livenessProbe"]["httpGet"] == http
    assert (c["livenessProbe"]["periodSeconds"], c["livenessProbe"]["timeoutSeconds"],
            c["livenessProbe"]["failureThreshold"]) == (5, 2, 3)
    assert c["startupProbe"]["httpGet"] == http
    assert c["startupProbe"]["failureThreshold"] == 30 // 5 + 3, "grace period, then 3 failures"
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http", "scheme": "HTTP"}
    assert (c["readinessProbe"]["periodSeconds"], c["readinessProbe"]["timeoutSeconds"]) == (7, 3)


def test_tcp_and_command_checks_map_to_tcp_socket_and_exec_probes() -> None:
    app = make_app(portDefinitions=[{"port": 0}],
                   healthChecks=[{"protocol": "MESOS_TCP", "gracePeriodSeconds": 0}])
    pod = build_pod(kube_launch_spec(app, make_task(app, ports=(31000,))), namespace="n",
                    node_name="n1", image="i")
    c = pod["spec"]["containers"][0]
    assert c["livenessProbe"]["tcpSocket"] == {"port": "port0"}
    assert "startupProbe" not in c, "no grace period: nothing to tolerate before success"
    assert c["readinessProbe"]["tcpSocket"] == {"port": "port0"}, "traffic only when healthy"

    app = make_app(healthChecks=[{"protocol": "COMMAND", "command": {"value": "test -f /ok"},
                                  "maxConsecutiveFailures": 0}])
    c = build_pod(kube_launch_spec(app, make_task(app, ports=(31000,))), namespace="n",
                  node_name="n1", image="i")["spec"]["containers"][0]
    assert "livenessProbe" not in c, "maxConsecutiveFailures 0 never kills"
    assert c["readinessProbe"]["exec"] == {"command": ["/bin/sh", "-c", "test -f /ok"]}


def test_pods_meet_pod_security_restricted_and_root_is_refused(
    factory: RuntimeFactory, kube: str,
) -> None:
    # The test namespaces enforce "restricted": every pod above was admitted by it.
    root = factory.backend.make(factory.state_dir)
    assert isinstance(root, KubernetesRuntime)
    root.run_as_user = 0
    app = make_app()
    with pytest.raises(ValueError, match="PodSecurity"):
        root.launch(kube_launch_spec(app, make_task(app)))
    root.close()


def test_what_kubernetes_cannot_run_is_refused_before_any_call() -> None:
    for fields, why in [
        ({"container": {"type": "DOCKER", "docker": {"image": "i", "privileged": True}}},
         "privileged"),
        ({"container": {"type": "DOCKER", "docker": {"image": "i", "network": "HOST"}}},
         "HOST"),
        ({"gpus": 0.5}, "whole GPUs"),
    ]:
        app = make_app(**fields)
        with pytest.raises(ValueError, match=why):
            build_pod(launch_spec(app, make_task(app)), namespace="n", node_name="x", image="i")


# --- Services ---------------------------------------------------------------------------------


def endpoints_ready(kube: str, namespace: str, service: str) -> dict[str, bool]:
    slices = kubectl_json(kube, "get", "endpointslices", "-n", namespace, "-l",
                          f"kubernetes.io/service-name={service}")["items"]
    return {e["targetRef"]["name"]: bool(e.get("conditions", {}).get("ready"))
            for s in slices for e in s.get("endpoints") or ()}


def test_an_app_with_ports_gets_a_service_that_only_routes_to_ready_pods(
    rt: KubernetesRuntime, factory: RuntimeFactory, kube: str,
) -> None:
    ns = ns_of(factory)
    app = make_app(id="/shop/cart", portDefinitions=[{"port": 8080, "name": "http"}])
    ready = klaunch(rt, app, make_task(app, host="dromos-node-0", ports=(31010,)))
    not_ready_app = app.with_changes(env=sim(ready="false"))
    not_ready = klaunch(rt, not_ready_app, make_task(app, host="dromos-node-1", ports=(31011,)))

    svc = kubectl_json(kube, "get", "service", "-n", ns, service_name("/shop/cart"))
    assert svc["spec"]["selector"] == {"dromos.io/app": "shop_cart"}
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("http", 8080, "http")]
    assert svc["metadata"]["annotations"]["dromos.io/app-id"] == "/shop/cart"
    wait_for_state(rt, ready, TaskState.RUNNING)
    wait_for_state(rt, not_ready, TaskState.RUNNING)
    assert rt.ready(ready) is True and rt.ready(not_ready) is False

    want = {pod_name(ready.id): True, pod_name(not_ready.id): False}
    wait_until(lambda: endpoints_ready(kube, ns, service_name("/shop/cart")) == want,
               timeout=30, what="the EndpointSlice to list the ready pod only")


def test_a_new_app_version_updates_its_service_ports(
    factory: RuntimeFactory, kube: str,
) -> None:
    ns = ns_of(factory)
    app = make_app(id="/api", portDefinitions=[{"port": 9000, "name": "http"}])
    klaunch(factory(), app, make_task(app, host=NODE, ports=(31020,)))
    v2 = app.with_changes(portDefinitions=[{"port": 9000, "name": "http"},
                                           {"port": 9001, "name": "grpc"}])
    klaunch(factory(), v2, make_task(v2, host=NODE, ports=(31021, 31022)))

    svc = kubectl_json(kube, "get", "service", "-n", ns, "api")
    assert [(p["name"], p["port"]) for p in svc["spec"]["ports"]] == [("http", 9000),
                                                                      ("grpc", 9001)]


# --- names --------------------------------------------------------------------------------------


def test_pod_names_are_deterministic_dns_labels_with_a_hash_when_sanitised() -> None:
    assert pod_name("etl:20261201T010000Z") == pod_name("etl:20261201T010000Z")
    assert pod_name("etl:20261201T010000Z").startswith("etl-20261201t010000z-")
    assert pod_name("etl:20261201T010000Z.retry1") != pod_name("etl:20261201T010000Z")
    assert pod_name("etl:1") != pod_name("etl-1") == "etl-1", "unchanged ids keep their name"
    long_id = "a" * 40 + ":" + "b" * 40
    assert len(pod_name(long_id)) <= 63
    assert pod_name(long_id) != pod_name(long_id + "c")
    assert service_name("/web") == "web"
    assert service_name("/a/b-c") != service_name("/a-b/c")
    assert app_label("/prod/web") == "prod_web"


@given(st.text(min_size=1, max_size=300))
def test_every_task_id_gets_a_valid_pod_name_and_label(task_id: str) -> None:
    import re

    name = pod_name(task_id)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63
    value = label_value(task_id)
    assert re.fullmatch(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?", value)
    assert len(value) <= 63


def test_quantities_parse_like_kubernetes() -> None:
    assert parse_quantity("250m") == 0.25
    assert parse_quantity("1Gi") == 2**30
    assert parse_quantity("1e3") == 1000
    assert parse_quantity(2) == 2.0
    assert parse_quantity("1.5k") == 1500
    with pytest.raises(ValueError):
        parse_quantity("12 apples")


# --- job runs -----------------------------------------------------------------------------------


def job_spec(task_id: str, run_id: str, host: str = NODE, **env: str) -> LaunchSpec:
    return LaunchSpec(task_id=task_id, app_id="job:etl", version="", host=host, ports=(),
                      resources=make_app(cpus=0.1, mem=16).resources,
                      env={"CHRONOS_JOB_NAME": "etl", **env}, labels={}, cmd="true",
                      job_name="etl", run_id=run_id)


def test_job_runs_are_pods_named_from_job_and_time_and_a_retried_create_adopts(
    factory: RuntimeFactory, kube: str, tmp_path: Path,
) -> None:
    ns = ns_of(factory)
    run_id = "etl:20261201T010000Z"
    rt = factory()
    handle = rt.launch(job_spec(run_id, run_id, **sim(exit="0", run_for="500ms")))

    name = pod_name(run_id)
    assert handle["pod"] == name
    pod = pod_of(kube, ns, name)
    labels = pod["metadata"]["labels"]
    assert labels["dromos.io/job"] == "etl"
    assert labels["dromos.io/run"] == label_value(run_id)
    assert pod["metadata"]["annotations"]["dromos.io/run-id"] == run_id
    assert pod["spec"]["restartPolicy"] == "Never"
    assert "dromos.io/app" not in labels

    # A Dromos that lost its records (another state) retries the create: 409 → adopted.
    other = make_other_state_runtime(factory, tmp_path)
    again = other.launch(job_spec(run_id, run_id))
    assert dict(again) == dict(handle)
    assert len(pods_labelled(kube, ns, "dromos.io/job=etl")) == 1
    other.close()

    retry = rt.launch(job_spec(run_id + ".retry1", run_id))
    assert retry["pod"] != name
    run_task = Task(id=run_id, app_id="job:etl", host=NODE, version="",
                    state=TaskState.RUNNING, staged_at=make_task(make_app()).staged_at,
                    handle=dict(handle))
    obs = wait_for_state(rt, run_task, TaskState.FINISHED)
    assert obs.exit_code == 0


def make_other_state_runtime(factory: RuntimeFactory, tmp_path: Path) -> KubernetesRuntime:
    rt = KubernetesRuntime(tmp_path / "other-state", namespace=ns_of(factory),
                           configuration=load_client_configuration(kubeconfig()))
    return rt


def test_a_task_id_runs_at_most_once_even_after_its_pod_was_deleted(
    factory: RuntimeFactory, kube: str,
) -> None:
    rt = factory.backend.make(factory.state_dir)
    assert isinstance(rt, KubernetesRuntime)
    factory.made.append(rt)
    rt.keep_ended_seconds = 0  # delete ended pods at the next observe
    app = make_app(cmd="exit 0", env=sim(exit="0"))
    task = klaunch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.FINISHED)
    ns = ns_of(factory)
    wait_until(lambda: (rt.observe([task]), kubectl(kube, "get", "pod", "-n", ns,
                                                   pod_name(task.id), check=False))[1]
               .returncode != 0, timeout=15, what="the ended pod to be deleted")

    again = rt.launch(kube_launch_spec(app, task))
    assert dict(again) == dict(task.handle), "the recorded handle, no new pod"
    assert kubectl(kube, "get", "pod", "-n", ns, pod_name(task.id),
                   check=False).returncode != 0
    assert observe_one(rt, task).state is TaskState.FINISHED


def test_logs_come_through_the_api_server_and_outlive_the_pod(
    factory: RuntimeFactory, kube: str,
) -> None:
    rt = factory.backend.make(factory.state_dir)
    assert isinstance(rt, KubernetesRuntime)
    factory.made.append(rt)
    rt.keep_ended_seconds = 0
    app = make_app(env=sim(run_for="1s", exit="0"))
    task = klaunch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.RUNNING)

    # KWOK answers `kubectl logs` of every task with kind-cluster/offline/sim-output.log.
    assert rt.logs(task, tail=2) == "line 4\nline 5\n"
    everything = rt.logs(task, tail=None)
    assert "simulated output" in everything and "line 3 (stderr)" in everything

    wait_for_state(rt, task, TaskState.FINISHED)
    ns = ns_of(factory)
    wait_until(lambda: (rt.observe([task]), kubectl(kube, "get", "pod", "-n", ns,
                                                   pod_name(task.id), check=False))[1]
               .returncode != 0, timeout=15, what="the ended pod to be deleted")
    assert rt.logs(task, tail=2) == "line 4\nline 5\n", "its tail was kept"
    assert rt.logs(make_task(app), tail=5) == "", "no pod, nothing kept: no output"


# --- nodes --------------------------------------------------------------------------------------


def node_named(rt: KubernetesRuntime, hostname: str) -> Any:
    return next(n for n in rt.nodes() if n.hostname == hostname)


def test_nodes_are_allocatable_minus_other_pods_with_labels_as_attributes(
    rt: KubernetesRuntime, factory: RuntimeFactory, kube: str,
) -> None:
    node = node_named(rt, "dromos-node-1")
    assert node.attributes["zone"] == "z2" == node.attributes["topology.kubernetes.io/zone"]
    assert node.attributes["rack"] == "r2"
    assert node.attribute("hostname") == "dromos-node-1"
    assert node.ports

    # Dromos's own pods are not subtracted (placement counts them itself)...
    app = make_app(cpus=2, mem=1024)
    klaunch(rt, app, make_task(app, host="dromos-node-1"))
    # ...pods that are not Dromos's are.
    foreign = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "someone-else", "namespace": ns_of(factory)},
        "spec": {"nodeName": "dromos-node-1", "containers": [{
            "name": "c", "image": "x", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
            "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True,
                                "runAsUser": 1000, "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"}}}]},
    }
    core_api().create_namespaced_pod(ns_of(factory), foreign)

    def freed() -> Any:
        after = node_named(rt, "dromos-node-1")
        return after if after.resources.cpus == pytest.approx(node.resources.cpus - 1) else None

    after = wait_until(freed, timeout=10, what="the foreign pod's requests to be subtracted")
    assert after.resources.mem == pytest.approx(node.resources.mem - 1024)


def test_cordoned_nodes_are_not_offered(rt: KubernetesRuntime, kube: str) -> None:
    assert any(n.hostname == "dromos-node-2" for n in rt.nodes())
    kubectl(kube, "cordon", "dromos-node-2")
    try:
        wait_until(lambda: all(n.hostname != "dromos-node-2" for n in rt.nodes()),
                   timeout=10, what="the cordoned node to disappear")
    finally:
        kubectl(kube, "uncordon", "dromos-node-2")
    wait_until(lambda: any(n.hostname == "dromos-node-2" for n in rt.nodes()), timeout=10,
               what="the node to come back")


# --- watching -----------------------------------------------------------------------------------


def test_the_watch_relists_after_410_gone_and_keeps_observing(factory: RuntimeFactory) -> None:
    rt = factory()
    assert isinstance(rt, KubernetesRuntime)
    app = make_app()
    first = klaunch(rt, app, make_task(app))
    wait_for_state(rt, first, TaskState.RUNNING)
    relists = rt.relists
    assert rt._pods is not None

    rt._pods.resource_version = "1"  # long compacted: the API server answers 410 Gone
    rt._pods.restart_watch()
    wait_until(lambda: rt.relists > relists, timeout=15, what="a relist after 410 Gone")

    # Changes made by someone else after the relist reach this runtime's cache.
    other = factory()
    second = klaunch(other, app, make_task(app))
    wait_until(lambda: rt._cached(second.id) is not None, timeout=10,
               what="the watch to deliver the new pod")
    other.kill(second, 1)
    wait_for_state(rt, second, TaskState.KILLED)


def test_api_server_unreachable_is_runtime_unavailable_then_it_recovers(
    factory: RuntimeFactory, kube: str,
) -> None:
    configuration = load_client_configuration(kube)
    host, port = configuration.host.removeprefix("https://").rsplit(":", 1)
    hole = Blackhole((host, int(port)))
    configuration.host = f"https://{host}:{hole.port}"
    rt = factory.backend.make(factory.state_dir, configuration=configuration)
    assert isinstance(rt, KubernetesRuntime)
    factory.made.append(rt)
    try:
        app = make_app(env=sim(run_for="2s", exit="0"))
        task = klaunch(rt, app, make_task(app))
        wait_for_state(rt, task, TaskState.RUNNING)
        known_nodes = rt.nodes()

        hole.cut()
        with pytest.raises(RuntimeUnavailable):
            wait_until(lambda: rt.observe([task]) and None, timeout=10)
        with pytest.raises(RuntimeUnavailable):
            klaunch(rt, app, make_task(app))
        assert rt.nodes() == known_nodes, "nodes() answers from its cache, never raises"
        time.sleep(2.5)  # the task ends while Dromos cannot see it

        hole.restore()

        def recovered() -> Any:
            try:
                return observe_one(rt, task)
            except RuntimeUnavailable:
                return None

        obs = wait_until(recovered, timeout=40, interval=0.2, what="the runtime to recover")
        obs = wait_for_state(rt, task, TaskState.FINISHED, timeout=10)
        assert obs.exit_code == 0, "what happened during the outage is reconciled"
        later = klaunch(rt, app, make_task(app))
        assert later.handle["pod"] == pod_name(later.id)
    finally:
        hole.close()


def test_api_server_stopped_and_started_again(tmp_path: Path) -> None:
    """The real thing, on a cluster of its own (other tests share the test cluster): every
    control-plane process stopped, then started again."""
    kube = own_cluster("dromos-outage")
    try:
        wait_until(lambda: kubectl(kube, "get", "serviceaccount", "default", check=False)
                   .returncode == 0, timeout=30, what="the default service account")
        rt = KubernetesRuntime(tmp_path / "state", namespace="default",
                               configuration=load_client_configuration(kube),
                               default_image=TEST_IMAGE, run_as_user=None)
        app = make_app()
        task = klaunch(rt, app, make_task(app, host="dromos-node-0"))
        wait_for_state(rt, task, TaskState.RUNNING)
        # The node cache must be filled before the outage for the check below to mean
        # "served from the cache" (the node watch lists nodes on its own schedule).
        wait_until(lambda: [n.hostname for n in rt.nodes()] == ["dromos-node-0"],
                   timeout=30, what="the node cache")

        kwokctl("stop", "cluster", "--name", "dromos-outage")
        with pytest.raises(RuntimeUnavailable):
            wait_until(lambda: rt.observe([task]) and None, timeout=10)
        with pytest.raises(RuntimeUnavailable):
            rt.kill(task, 1)
        assert [n.hostname for n in rt.nodes()] == ["dromos-node-0"], "from the cache"

        kwokctl("start", "cluster", "--name", "dromos-outage")

        def recovered() -> Any:
            try:
                return observe_one(rt, task)
            except RuntimeUnavailable:
                return None

        obs = wait_until(recovered, timeout=60, interval=0.2, what="the runtime to recover")
        assert obs.state is TaskState.RUNNING, "adopted again, nothing started twice"
        wait_until(lambda: _try_kill(rt, task), timeout=30, what="a kill to go through")
        # The kill reached the API server: the pod is marked for deletion. (How soon KWOK's
        # restarted controller then finishes the termination is KWOK's business; it can take
        # longer than the test's patience after a full control-plane restart.)
        def deleting() -> bool:
            got = kubectl(kube, "get", "pod", pod_name(task.id), "-n", "default", "-o",
                          "jsonpath={.metadata.deletionTimestamp}", check=False)
            return got.returncode != 0 or bool(got.stdout.strip())  # gone, or going

        wait_until(deleting, timeout=30, what="the pod to be marked for deletion")
        rt.close()
    finally:
        subprocess.run(["bash", str(OFFLINE / "down.sh"), "--name", "dromos-outage"],
                       capture_output=True, timeout=120, check=False)


def _try_kill(rt: KubernetesRuntime, task: Task) -> bool:
    try:
        rt.kill(task, 1)
        return True
    except RuntimeUnavailable:
        return False


def test_a_runtime_can_be_built_while_the_api_server_is_down(tmp_path: Path) -> None:
    config = tmp_path / "kubeconfig"
    config.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}]}))
    rt = KubernetesRuntime(tmp_path / "state", kubeconfig=str(config))
    app = make_app()
    task = make_task(app)
    assert rt.nodes() == []
    with pytest.raises(RuntimeUnavailable):
        rt.launch(launch_spec(app, task))
    with pytest.raises(RuntimeUnavailable):
        rt.observe([task])
    rt.close()


def test_kubectl_shows_what_the_runtime_runs(
    rt: KubernetesRuntime, factory: RuntimeFactory, kube: str,
) -> None:
    app = make_app(id="/ops/cron-cleaner")
    task = klaunch(rt, app, make_task(app, host=NODE))
    wait_for_state(rt, task, TaskState.RUNNING)
    out = subprocess.run(
        ["kubectl", "--kubeconfig", kube, "get", "pods", "-n", ns_of(factory), "-l",
         "dromos.io/app=ops_cron-cleaner", "-o", "wide", "--no-headers"],
        capture_output=True, text=True, check=True).stdout
    assert pod_name(task.id) in out and "Running" in out and NODE in out


def test_a_numeric_user_is_the_pods_run_as_user_and_names_or_root_are_refused() -> None:
    """Issue 11, defect 6: ``user`` was ignored. A pod's user is a number, never root."""
    app = make_app(user="1234")
    pod = build_pod(launch_spec(app, make_task(app)), namespace="n", node_name="x", image="i")
    assert pod["spec"]["securityContext"]["runAsUser"] == 1234
    default = build_pod(launch_spec(make_app(), make_task(make_app())), namespace="n",
                        node_name="x", image="i")
    assert default["spec"]["securityContext"]["runAsUser"] == DEFAULT_RUN_AS_USER
    for user, why in [("nobody", "numeric uid"), ("0", "non-root")]:
        app = make_app(user=user)
        with pytest.raises(ValueError, match=why):
            build_pod(launch_spec(app, make_task(app)), namespace="n", node_name="x", image="i")
        rt = object.__new__(KubernetesRuntime)  # user_problem reads no state
        assert why in (rt.user_problem(user) or "")


def test_a_missing_namespace_stops_the_start_with_a_clear_message_or_is_created(
        kube: str, tmp_path: Path) -> None:
    """Issue 11, defect 8: a missing namespace showed as "runtime unavailable" twice a
    second. ``dromos serve`` now refuses to start, saying what to do, unless
    ``--create-namespace``."""
    namespace = "dromos-missing-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:10]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROMOS_KUBE")}
    env["KUBECONFIG"] = kube
    done = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "serve", "--runtime", "kubernetes",
         "--kube-namespace", namespace, "--state-dir", str(tmp_path / "state"), "--port", "0"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert f"the kubernetes namespace '{namespace}' does not exist" in done.stderr
    assert "--create-namespace" in done.stderr
    assert build_parser().parse_args(["serve", "--create-namespace"]).create_namespace
    rt = KubernetesRuntime(tmp_path / "state", namespace=namespace,
                           configuration=load_client_configuration(kube))
    try:
        assert rt.check_namespace(create=True) == "created"
        made = core_api().read_namespace(namespace)
        assert made.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert rt.check_namespace() == "present"
    finally:
        rt.close()
        core_api().delete_namespace(namespace)


def test_a_pod_of_an_app_with_a_numeric_user_is_admitted_and_runs_as_it(
        factory: RuntimeFactory, rt: KubernetesRuntime) -> None:
    app = make_app(user="4321")
    task = klaunch(rt, app, make_task(app))
    pod = core_api().read_namespaced_pod(pod_name(task.id), ns_of(factory))
    assert pod.spec.security_context.run_as_user == 4321
    assert pod.spec.security_context.run_as_non_root is True
