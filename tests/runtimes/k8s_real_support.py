"""Kubernetes with a real node, for the tests: the offline control plane plus one kubelet with
containerd + runc, CNI bridge networking and kube-proxy (``up.sh --real-nodes 1``, see
``kind-cluster/offline/real-node.sh``). Pods there run real processes of the locally built
``dromos-test/busybox:1`` image: real output, exit codes, signals, probes run by the kubelet,
``kubectl exec``, and ClusterIP Services answering from this machine through kube-proxy.

One cluster (``dromos-real``, no KWOK nodes, its real node named ``localhost`` -- the host the
contract suite places its tasks on) is started when a test first needs it, shared by test
sessions and stopped by the last one, like the KWOK test cluster (:mod:`k8s_support`). It
needs root (containerd, mounts, network namespaces, iptables); :func:`real_kubeconfig` is the
one gate: it skips with the reason where the node cannot run (a failure under
``DROMOS_CI=1``).
"""

from __future__ import annotations

import functools
import os
import shutil
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from kubernetes.client.exceptions import ApiException

from scheduler.model.task import Task
from scheduler.runtimes.kubernetes import KubernetesRuntime, pod_name
from tests.runtimes.k8s_support import (
    cleanup_kube_state,
    core_api,
    kube_outage,
    launched_pod,
    make_kube_runtime,
    namespace_for,
    pods_of_task,
    shared_cluster,
)

if TYPE_CHECKING:
    from tests.runtimes.conftest import Launched, Outage

REAL_CLUSTER = os.environ.get("DROMOS_REAL_CLUSTER", "dromos-real")
REAL_NODE = "localhost"
UP_ARGS = ("--nodes", "0", "--real-nodes", "1", "--real-node-name", REAL_NODE)
NEEDS = ("containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "ip")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")

@functools.cache
def real_unavailable() -> str | None:
    """Why the real node cannot run here, or ``None`` once its cluster is up."""
    if os.geteuid() != 0:
        return "a real node needs root (containerd, mounts, network namespaces, iptables)"
    missing = [c for c in NEEDS if shutil.which(c) is None]
    missing += [f"/usr/lib/cni/{p}" for p in CNI_PLUGINS if not Path(f"/usr/lib/cni/{p}").exists()]
    if missing:
        return (f"missing {', '.join(missing)} (apt-get install containerd runc "
                "containernetworking-plugins iptables)")
    return shared_cluster(REAL_CLUSTER, UP_ARGS)[1]


def real_kubeconfig() -> str:
    """The real-node cluster's kubeconfig; skips the test (fails it under CI) with the reason
    when the cluster cannot come up."""
    why = real_unavailable()
    if why is not None:
        pytest.skip(f"kubernetes-real runtime unavailable: {why}")
    config, _ = shared_cluster(REAL_CLUSTER, UP_ARGS)
    assert config is not None
    return config


def make_real_runtime(state_dir: Path, **options: Any) -> KubernetesRuntime:
    """A KubernetesRuntime on the real-node cluster, in the test's own namespace (``kubectl
    exec`` of COMMAND checks goes there too)."""
    config = real_kubeconfig()
    options.setdefault("kubeconfig", config)
    return make_kube_runtime(state_dir, cluster_config=config, **options)


def real_stdout(state_dir: Path, task: Task) -> str:
    """What the task's container printed so far (``kubectl logs``); ``""`` before it starts."""
    api = core_api(real_kubeconfig())
    try:
        text: str = api.read_namespaced_pod_log(pod_name(task.id), namespace_for(state_dir))
    except ApiException as e:
        if e.status in (400, 404):  # not started yet (ContainerCreating), or no pod
            return ""
        raise
    return text


def cleanup_real_state(state_dir: Path) -> None:
    cleanup_kube_state(state_dir, real_kubeconfig())


def real_launched(state_dir: Path, task: Task) -> Launched:
    """How the task's pod on the real node runs it (its container's command, args, env)."""
    return launched_pod(state_dir, task, real_kubeconfig())


def real_copies(state_dir: Path, task: Task) -> int:
    """How many pods of the task exist (pods are never restarted: one pod, one process)."""
    return pods_of_task(state_dir, task, real_kubeconfig())


def real_outage(state_dir: Path, scratch: Path) -> AbstractContextManager[Outage]:
    """A runtime on the real-node cluster whose API server can be cut off (a Blackhole)."""
    config = real_kubeconfig()
    return kube_outage(state_dir, scratch, config, kubeconfig=config)
