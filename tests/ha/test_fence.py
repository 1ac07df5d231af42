"""Fenced writes on a real API server: the ValidatingAdmissionPolicy of manifests/15-fence.yaml
refuses a deposed leader's writes, checked on the API server (not in Dromos's own logs).

Dromos's requests are made as its service account (impersonated with the test cluster's admin
credentials), under the least-privilege Role of manifests/10-rbac.yaml, in the test's own
namespace; the policy and binding are renamed per namespace so parallel runs do not collide.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s_client

from scheduler.ha.elector import LeaderElector, NotLeader
from scheduler.ha.kube_http import request
from scheduler.ha.lease import LeaseTimings
from scheduler.ha.lease_api import KubeLeaseApi
from scheduler.runtimes.kubernetes import load_client_configuration
from scheduler.store.kubernetes import KubernetesStore, StoreUnavailable
from tests.runtimes.k8s_support import ensure_namespace, kubeconfig, kubectl, namespace_for
from tests.store.conftest import make_app, version_at
from tests.store.kube_store import api_client

MANIFESTS = Path(__file__).resolve().parents[2] / "manifests"
LEASE = "dromos-leader"


def _namespaced(docs: list[dict[str, Any]], ns: str) -> list[dict[str, Any]]:
    """The project's RBAC moved to namespace ``ns`` (cluster-scoped names suffixed)."""
    out = []
    for doc in docs:
        meta = doc["metadata"]
        if "namespace" in meta:
            meta["namespace"] = ns
        if doc["kind"] in ("ClusterRole", "ClusterRoleBinding"):
            meta["name"] = f"{meta['name']}-{ns}"
        for subject in doc.get("subjects", []):
            subject["namespace"] = ns
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] = f"{doc['roleRef']['name']}-{ns}"
        out.append(doc)
    return out


@functools.cache
def _policy_installed() -> None:
    """The fence policy, as shipped: cluster-wide and namespace-agnostic, so one copy serves
    every test namespace. It is left installed: it only judges the ``dromos`` service
    accounts' requests, which no other test makes (and the API server does not always pick up
    a policy's parameters again after a policy with the same parameter kind is deleted)."""
    kubectl(kubeconfig(), "apply", "-f", str(MANIFESTS / "15-fence.yaml"))


def fenced_namespace(tmp_path: Path) -> tuple[str, Path]:
    """A test namespace labelled for the fence policy, with Dromos's RBAC moved into it: the
    namespace and the applied RBAC file (to delete it again). Skips (fails in CI) without a
    cluster."""
    api_client()  # the CRDs, applied once
    _policy_installed()
    ns = namespace_for(tmp_path)
    ensure_namespace(ns)
    kubectl(kubeconfig(), "label", "--overwrite", "namespace", ns, "dromos.io/fenced=true")
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "10-rbac.yaml").read_text()) if d]
    applied = tmp_path / "rbac.yaml"
    applied.write_text(yaml.safe_dump_all(_namespaced(docs, ns)))
    kubectl(kubeconfig(), "apply", "-f", str(applied))
    return ns, applied


@pytest.fixture
def fenced(tmp_path: Path) -> Iterator[str]:
    """A namespace with Dromos's RBAC under the fence policy; yields the namespace."""
    ns, applied = fenced_namespace(tmp_path)
    _wait_for_the_policy(ns)
    yield ns
    kubectl(kubeconfig(), "delete", "--ignore-not-found", "-f", str(applied), check=False)


def _wait_for_the_policy(ns: str) -> None:
    """The API server loads a new binding, and sees a new Lease, asynchronously: with a
    placeholder Lease in place, probe until a write by Dromos's account with a wrong token is
    refused (probes stored before that stay, under keys no test reads); then remove the
    placeholder, so each test starts with no Lease."""
    leases = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    request(api_client(), "POST", leases, {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LEASE, "namespace": ns},
        "spec": {"holderIdentity": "placeholder", "leaseTransitions": 0}})
    probe = KubernetesStore(as_dromos(ns), ns, lambda: "probe/-1")
    deadline = time.monotonic() + 60
    for attempt in itertools.count():
        try:
            probe.put_meta(f"policy-probe-{attempt}", {"probe": True})
        except StoreUnavailable as e:
            if "dromos-fence" in str(e):
                break
        if time.monotonic() > deadline:
            raise AssertionError("the fence policy was not enforced within 60 s")
        time.sleep(0.2)
    request(api_client(), "DELETE", f"{leases}/{LEASE}")


def as_dromos(ns: str) -> k8s_client.ApiClient:
    """An API client that acts as ``system:serviceaccount:<ns>:dromos``."""
    api = k8s_client.ApiClient(load_client_configuration(kubeconfig()))
    api.set_default_header("Impersonate-User", f"system:serviceaccount:{ns}:dromos")
    return api


def electors(ns: str, timings: LeaseTimings) -> tuple[LeaderElector, LeaderElector,
                                                     list[str], list[str]]:
    a_events: list[str] = []
    b_events: list[str] = []
    a = LeaderElector(KubeLeaseApi(as_dromos(ns), ns, LEASE, 2.0), "replica-a", timings,
                      on_started=lambda e: a_events.append(f"started {e}"),
                      on_stopped=lambda: a_events.append("stopped"))
    b = LeaderElector(KubeLeaseApi(as_dromos(ns), ns, LEASE, 2.0), "replica-b", timings,
                      on_started=lambda e: b_events.append(f"started {e}"),
                      on_stopped=lambda: b_events.append("stopped"))
    return a, b, a_events, b_events


def wait_until(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_deposed_leader_that_wakes_late_writes_nothing(fenced: str) -> None:
    ns = fenced
    timings = LeaseTimings(lease_s=3, renew_deadline_s=2, retry_s=0.5)
    a, b, a_events, b_events = electors(ns, timings)
    a.step()
    b.step()
    assert a_events == ["started 0"] and b_events == []

    # The leader's store: its token, captured now, is what a process paused right after its
    # own check would still send when it wakes up.
    stale_token = a.fence()
    leader_store = KubernetesStore(as_dromos(ns), ns, lambda: stale_token)
    leader_store.load()
    leader_store.put_app(make_app("/fenced/one", version_at(0)))

    # "SIGSTOP": a stops renewing. b takes over once the lease has expired.
    stop = threading.Event()
    runner = threading.Thread(target=b.run, args=(stop,))
    runner.start()
    try:
        wait_until(lambda: b_events == ["started 1"], 30, "b to take over")
        with pytest.raises(NotLeader):
            a.fence()  # its own check closes at the renew deadline...
        new_store = KubernetesStore(as_dromos(ns), ns, b.fence)
        new_store.load()
        assert new_store.get_app("/fenced/one") is not None
        new_store.put_app(make_app("/fenced/two", version_at(1)))

        # ...and the API server refuses what it sends anyway ("SIGCONT" with a stale token).
        with pytest.raises(StoreUnavailable, match="stale fence"):
            leader_store.put_app(make_app("/fenced/three", version_at(2)))
        with pytest.raises(StoreUnavailable, match="stale fence"):
            leader_store.delete_app("/fenced/one")
        with pytest.raises(StoreUnavailable, match="stale fence"):
            leader_store.put_app(make_app("/fenced/one", version_at(5), instances=9))
    finally:
        stop.set()
        runner.join(30)

    # On the API server: exactly what the new leader wrote, nothing of the deposed one's.
    check = KubernetesStore(api_client(), ns, lambda: "reader/0")
    check.load()
    assert sorted(a.id for a in check.list_apps()) == ["/fenced/one", "/fenced/two"]
    one = check.get_app("/fenced/one")
    assert one is not None and one.instances == 1


def test_writes_without_the_current_token_are_refused(fenced: str) -> None:
    ns = fenced
    a, _, _, _ = electors(ns, LeaseTimings(lease_s=15, renew_deadline_s=10, retry_s=2))
    a.step()
    good = KubernetesStore(as_dromos(ns), ns, a.fence)
    good.load()
    good.put_app(make_app("/ok", version_at(0)))
    for token in ("replica-a/7", "replica-b/0", ""):
        bad = KubernetesStore(as_dromos(ns), ns, lambda t=token: t)  # type: ignore[misc]
        bad.load()
        with pytest.raises(StoreUnavailable):
            bad.put_meta("k", {"v": 1})
    # Pods Dromos creates are fenced too: the same pod (valid under Pod Security
    # "restricted") is refused with a stale token and admitted with the current one.
    core = k8s_client.CoreV1Api(as_dromos(ns))

    def pod(token: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "fenced-pod", "annotations": {"dromos.io/fence": token}},
                "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                                             "seccompProfile": {"type": "RuntimeDefault"}},
                         "containers": [{"name": "c", "image": "busybox", "securityContext": {
                             "allowPrivilegeEscalation": False,
                             "capabilities": {"drop": ["ALL"]}}}]}}

    with pytest.raises(k8s_client.ApiException) as refused:
        core.create_namespaced_pod(ns, pod("replica-a/3"))
    assert "stale fence" in str(refused.value.body)
    core.create_namespaced_pod(ns, pod(a.fence()))
