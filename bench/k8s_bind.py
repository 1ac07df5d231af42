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

Two more measurements, the number a user of ``dromos serve`` gets and the ceiling for it:

- **dromos serve**: a real ``dromos serve --runtime kubernetes`` (subprocess; ``--serve-arg``
  passes flags such as the applier's concurrency) is posted one app of ``--serve-pods``
  instances over ``/v2/apps``; timed from the POST to the moment a pod watcher has seen the
  last of its pods created.
- **raw creates**: the same pods, ``nodeName`` set round robin over the nodes, created by a
  plain client with ``--workers`` threads: what the API server allows at that concurrency.
  ``ratio_vs_raw_creates`` = dromos serve pods/s / raw pods/s (target >= 0.8).

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

from bench.k8s_offline import (  # noqa: E402
    DromosServer,
    PodWatcher,
    down,
    load_average,
    log,
    make_namespace,
    up,
)
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

VERSION = "2026-01-01T00:00:00.000Z"


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


def bench_raw_creates(configuration: Any, pods: int, workers: int,
                      namespace: str, node_names: Sequence[str]) -> dict[str, float]:
    """The same pods with ``nodeName`` set round robin, created by a plain client with
    ``workers`` threads: the API server's own pace at that concurrency."""
    core = k8s_client.CoreV1Api(k8s_client.ApiClient(configuration))
    app = parse_app({"id": "/bench/raw", "cmd": "sleep 3600", "cpus": 0.1, "mem": 64,
                     "portDefinitions": []})
    now = datetime.now(UTC)
    bodies = []
    for i in range(pods):
        host = node_names[i % len(node_names)]
        task = Task(id=new_task_id(app.id), app_id=app.id, host=host, version=VERSION,
                    state=TaskState.STAGING, staged_at=now)
        bodies.append(build_pod(launch_spec(app, task), namespace=namespace, node_name=host,
                                image="dromos-bench/none:1"))

    def create(body: dict[str, Any]) -> None:
        core.create_namespaced_pod(namespace, body, _preload_content=False)

    start = time.perf_counter()
    run_pool(workers, bodies, create)
    end = time.perf_counter()
    core.api_client.close()
    return {"seconds": end - start}


def bench_serve(kubeconfig: str, configuration: Any, pods: int, namespace: str,
                serve_args: Sequence[str], timeout: float) -> dict[str, Any]:
    """An app of ``pods`` instances posted to a real ``dromos serve``; seconds from the POST
    to the last of its pods created (seen by a watcher)."""
    with k8s_client.ApiClient(configuration) as api, PodWatcher(api, namespace) as watcher, \
            DromosServer(kubeconfig, namespace, serve_args) as dromos:
        log(f"dromos serve: posting an app of {pods} instances (pid {dromos.pid}) ...")
        load = load_average()
        start = time.time()
        dromos.post("/v2/apps", {"id": "/bench/serve", "cmd": "sleep 3600", "cpus": 0.1,
                                 "mem": 64, "instances": pods, "portDefinitions": []})
        end = watcher.wait_until(lambda seen: len(seen) >= pods, timeout,
                                 f"dromos serve: {pods} pods created")
        with watcher.cond:
            last_created = max(p.first_seen for p in watcher.pods.values())
        dromos.http.delete("/v2/apps/bench/serve", params={"force": "true"})
    return {"seconds": min(end, last_created) - start, "load": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--workers", type=int, default=16,
                        help="client threads creating pods, the same on both sides")
    parser.add_argument("--serve-pods", type=int, default=None,
                        help="instances of the app posted to dromos serve (default --pods)")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra argument for dromos serve (repeatable)")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds to wait for dromos serve's pods")
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
    ns_raw, ns_serve = f"bench-raw-{stamp}", f"bench-serve-{stamp}"
    serve_pods = args.serve_pods or args.pods
    try:
        for ns in (ns_dromos, ns_kube, ns_raw, ns_serve):
            make_namespace(core, ns)
        node_names = [n.metadata.name for n in core.list_node().items]
        log(f"raw creates: {serve_pods} pods with nodeName, {args.workers} threads...")
        raw = bench_raw_creates(configuration, serve_pods, args.workers, ns_raw, node_names)
        raw["load"] = load_average()
        log(f"dromos serve: {serve_pods} instances through the API...")
        serve = bench_serve(kubeconfig, configuration, serve_pods, ns_serve, args.serve_arg,
                            args.timeout)
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
    serve_rate = serve_pods / serve["seconds"]
    raw_rate = serve_pods / raw["seconds"]
    print(f"dromos serve (app of {serve_pods} posted, to the last pod created): "
          f"{serve['seconds']:7.2f} s {serve_rate:8.1f} pods/s  (load {serve['load']})")
    print(f"raw creates with nodeName, {args.workers} threads:           "
          f"{raw['seconds']:7.2f} s {raw_rate:8.1f} pods/s  (load {raw['load']})")
    print(f"ratio dromos serve / raw creates: {serve_rate / raw_rate:.2f} (target >= 0.8)")
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
            "dromos_serve_pods_per_s": round(serve_rate, 1),
            "dromos_serve_seconds": round(serve["seconds"], 3),
            "raw_creates_pods_per_s": round(raw_rate, 1),
            "ratio_vs_raw_creates": round(serve_rate / raw_rate, 3),
            "serve_pods": serve_pods, "load_serve": serve["load"],
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
