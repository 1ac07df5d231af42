"""Bind benchmark: Dromos placing pods itself vs kube-scheduler, on one offline cluster.

    .venv/bin/python bench/k8s_bind.py                  # 1,000 nodes, 10,000 pods per side
    .venv/bin/python bench/k8s_bind.py --json           # ... one JSON object as the last line
    .venv/bin/python bench/k8s_bind.py --nodes 100 --pods 1000 --keep   # quick, keep cluster

The cluster (``kind-cluster/offline/up.sh --disable-qps-limits``, its own name so the test
cluster is not touched): etcd, kube-apiserver, kube-controller-manager and kube-scheduler
1.33 built from Go modules, and KWOK playing the kubelet of ``--nodes`` nodes (8 cpus,
32 GiB, 110 pods each). The control-plane components' client rate limits are lifted, so
kube-scheduler is not throttled by its default 50 QPS.

Both sides make the same pods -- the pod the Kubernetes runtime builds for a task of 0.1 cpu
and 64 MiB, in a namespace with Pod Security ``restricted`` enforced -- with the same number
of client threads (``--workers``) and the same HTTP client, in the same run:

- **Dromos**: from the node inventory the runtime keeps (already listed), the real placement
  pipeline (``Placer``) places every task, and ``KubernetesRuntime.launch`` creates each pod
  with ``spec.nodeName`` set. Timed from the first placement to the last create answered: a
  pod is bound when it exists.
- **kube-scheduler**: the same pods without ``nodeName`` are created; kube-scheduler binds
  them. Timed from the first create to the moment no pod of the batch is left unbound
  (polled every 100 ms through ``remainingItemCount`` of a ``limit=1`` list, so the poller
  costs next to nothing).

Dromos runs first; kube-scheduler then schedules onto the same nodes (it sees Dromos's pods).
pods/s = pods / seconds; ratio = Dromos / kube-scheduler. Everything (API server, etcd, the
kwok controller marking pods Running, both clients) shares this machine's cores, so the
absolute figures depend on it; the ratio is the point. Anchor: kube-scheduler's own perf
suite expects at least ~680 pods/s for 10k pods on 5,000 nodes on dedicated machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from kubernetes import client as k8s_client  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

from scheduler.model.app import parse_app  # noqa: E402
from scheduler.model.task import Task, TaskState, new_task_id  # noqa: E402
from scheduler.placement.pipeline import Placer  # noqa: E402
from scheduler.placement.results import ClusterSnapshot, Placement, PlacementRequest  # noqa: E402
from scheduler.runtimes.base import launch_spec  # noqa: E402
from scheduler.runtimes.kubernetes import (  # noqa: E402
    KubernetesRuntime,
    build_pod,
    load_client_configuration,
)

OFFLINE = REPO / "kind-cluster" / "offline"
VERSION = "2026-01-01T00:00:00.000Z"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def up(name: str, nodes: int) -> str:
    log(f"starting cluster {name} with {nodes} nodes (kind-cluster/offline/up.sh)...")
    done = subprocess.run(["bash", str(OFFLINE / "up.sh"), "--name", name, "--nodes", str(nodes),
                           "--disable-qps-limits"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"up.sh failed:\n{done.stderr[-2000:]}")
    return done.stdout.strip().splitlines()[-1].removeprefix("KUBECONFIG=")


def down(name: str) -> None:
    subprocess.run(["bash", str(OFFLINE / "down.sh"), "--name", name], capture_output=True,
                   check=False)


def make_namespace(core: Any, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}}
    try:
        core.create_namespace(body)
    except ApiException as e:
        if e.status != 409:
            raise
    while True:  # pods are admitted once the namespace has its default service account
        try:
            core.read_namespaced_service_account("default", name)
            return
        except ApiException as e:
            if e.status != 404:
                raise
            time.sleep(0.1)


def run_pool(workers: int, items: Sequence[Any], work: Callable[[Any], None]) -> None:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(work, items):
            pass


def bench_dromos(configuration: Any, pods: int, workers: int, namespace: str,
                 state: Path) -> dict[str, float]:
    rt = KubernetesRuntime(state, namespace=namespace, configuration=configuration,
                           keep_ended_seconds=None)
    try:
        inventory = rt.nodes()  # starts the watches and waits for the first lists
        log(f"dromos: {len(inventory)} nodes in the runtime's inventory")
        app = parse_app({"id": "/bench/dromos", "cmd": "sleep 3600", "cpus": 0.1, "mem": 64,
                         "instances": pods, "portDefinitions": []})
        request = PlacementRequest(app_id=app.id, resources=app.resources)

        start = time.perf_counter()
        placer = Placer(ClusterSnapshot(tuple(rt.nodes())))
        placements, rejected = placer.place_many(request, pods)
        if rejected is not None:
            sys.exit(f"placement failed after {len(placements)} pods: {rejected.describe()}")
        placed = time.perf_counter()
        now = datetime.now(UTC)

        def launch(p: Placement) -> None:
            task = Task(id=new_task_id(app.id), app_id=app.id, host=p.host, version=VERSION,
                        state=TaskState.STAGING, staged_at=now)
            rt.launch(launch_spec(app, task))

        run_pool(workers, placements, launch)
        end = time.perf_counter()
    finally:
        rt.close()
    return {"seconds": end - start, "place_seconds": placed - start,
            "create_seconds": end - placed}


def bench_kube_scheduler(configuration: Any, pods: int, workers: int,
                         namespace: str) -> dict[str, float]:
    core = k8s_client.CoreV1Api(k8s_client.ApiClient(configuration))
    app = parse_app({"id": "/bench/kube", "cmd": "sleep 3600", "cpus": 0.1, "mem": 64,
                     "portDefinitions": []})
    now = datetime.now(UTC)
    bodies = []
    for _ in range(pods):
        task = Task(id=new_task_id(app.id), app_id=app.id, host="", version=VERSION,
                    state=TaskState.STAGING, staged_at=now)
        body = build_pod(launch_spec(app, task), namespace=namespace, node_name="",
                         image="dromos-bench/none:1")
        del body["spec"]["nodeName"]  # kube-scheduler's to choose
        bodies.append(body)

    created = threading.Event()

    def unbound() -> int:
        page = json.loads(core.list_namespaced_pod(
            namespace, field_selector="spec.nodeName=", limit=1,
            _preload_content=False).data)
        return len(page.get("items") or ()) + int(
            (page.get("metadata") or {}).get("remainingItemCount") or 0)

    def create(body: dict[str, Any]) -> None:
        core.create_namespaced_pod(namespace, body, _preload_content=False)

    created_at: list[float] = []

    def create_all() -> None:
        run_pool(workers, bodies, create)
        created_at.append(time.perf_counter())
        created.set()

    start = time.perf_counter()
    creator = threading.Thread(target=create_all, daemon=True)
    creator.start()
    while True:
        time.sleep(0.1)
        if created.is_set() and unbound() == 0:
            break
    end = time.perf_counter()
    creator.join()
    core.api_client.close()
    return {"seconds": end - start, "create_seconds": created_at[0] - start}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=16,
                        help="client threads creating pods, the same on both sides")
    parser.add_argument("--name", default="dromos-bench", help="cluster name")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    args = parser.parse_args(argv)

    kubeconfig = up(args.name, args.nodes)
    configuration = load_client_configuration(kubeconfig)
    configuration.connection_pool_maxsize = max(64, args.workers * 2)
    core = k8s_client.CoreV1Api(k8s_client.ApiClient(configuration))
    stamp = str(int(time.time()))
    ns_dromos, ns_kube = f"bench-dromos-{stamp}", f"bench-kube-{stamp}"
    try:
        make_namespace(core, ns_dromos)
        make_namespace(core, ns_kube)
        with tempfile.TemporaryDirectory(prefix="dromos-bench-") as state:
            log(f"dromos: placing and creating {args.pods} pods with nodeName...")
            dromos = bench_dromos(configuration, args.pods, args.workers, ns_dromos,
                                  Path(state))
        log(f"kube-scheduler: creating {args.pods} unscheduled pods, waiting until bound...")
        kube = bench_kube_scheduler(configuration, args.pods, args.workers, ns_kube)
    finally:
        if args.keep:
            log(f"cluster kept: KUBECONFIG={kubeconfig}")
        else:
            down(args.name)

    dromos_rate = args.pods / dromos["seconds"]
    kube_rate = args.pods / kube["seconds"]
    print(f"nodes {args.nodes}, pods {args.pods} per side, {args.workers} client threads, "
          f"{os.cpu_count()} cores")
    print(f"dromos (placement + create with nodeName): {dromos['seconds']:7.2f} s "
          f"{dromos_rate:8.1f} pods/s  (placement {dromos['place_seconds']:.2f} s, "
          f"creates {dromos['create_seconds']:.2f} s)")
    print(f"kube-scheduler (create, then bind):        {kube['seconds']:7.2f} s "
          f"{kube_rate:8.1f} pods/s  (all created after {kube['create_seconds']:.2f} s)")
    print(f"ratio dromos / kube-scheduler: {dromos_rate / kube_rate:.2f}")
    if args.json:
        print(json.dumps({
            "dromos_pods_per_s": round(dromos_rate, 1),
            "kube_scheduler_pods_per_s": round(kube_rate, 1),
            "ratio": round(dromos_rate / kube_rate, 3),
            "nodes": args.nodes, "pods": args.pods, "workers": args.workers,
            "dromos_seconds": round(dromos["seconds"], 3),
            "dromos_place_seconds": round(dromos["place_seconds"], 3),
            "kube_scheduler_seconds": round(kube["seconds"], 3),
            "kube_scheduler_create_seconds": round(kube["create_seconds"], 3),
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
