"""The Kubernetes store on the offline test cluster: CRDs applied once, a namespace per test."""

from __future__ import annotations

import functools
from pathlib import Path

from kubernetes import client as k8s_client

from scheduler.runtimes.kubernetes import load_client_configuration
from scheduler.store.kubernetes import KubernetesStore
from tests.runtimes.k8s_support import ensure_namespace, kubeconfig, kubectl, namespace_for

CRDS = Path(__file__).resolve().parents[2] / "manifests" / "05-crds.yaml"


@functools.cache
def _crds_applied(config: str) -> None:
    kubectl(config, "apply", "-f", str(CRDS))
    kubectl(config, "wait", "--for", "condition=Established", "--timeout", "60s",
            "-f", str(CRDS))


def api_client() -> k8s_client.ApiClient:
    config = kubeconfig()  # skips (or fails in CI) when the cluster cannot come up
    _crds_applied(config)
    return k8s_client.ApiClient(load_client_configuration(config))


def open_kube_store(tmp_path: Path, fence: str = "test/0") -> KubernetesStore:
    """An empty Kubernetes store in the test's own namespace (no fence policy installed)."""
    api = api_client()
    namespace = namespace_for(tmp_path)
    ensure_namespace(namespace)
    store = KubernetesStore(api, namespace, lambda: fence)
    store.load()
    return store
