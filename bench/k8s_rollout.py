"""Rolling-upgrade benchmark: a Dromos app of N instances vs a Deployment of N replicas, on one
offline cluster in the same run, both timed to "all new ready and all old gone".

    .venv/bin/python bench/k8s_rollout.py                 # N = 1,000 on 100 KWOK nodes
    .venv/bin/python bench/k8s_rollout.py --n 100 --json  # quick; JSON object last

The cluster is ``kind-cluster/offline/up.sh`` under its own name (``--name``) with ``--nodes``
KWOK nodes (8 cpus, 32 GiB, 110 pods each) and the control plane's client rate limits lifted
(``--disable-qps-limits``) unless ``--default-qps``. Every instance is the pod Dromos's
builder makes for a task of 0.1 cpu and 64 MiB (no probes: ready once running, on both sides).

- **Dromos**: a real ``dromos serve --runtime kubernetes`` (subprocess); the app is posted
  to ``/v2/apps`` with Marathon's default upgrade strategy (minimumHealthCapacity 1,
  maximumOverCapacity 1), and once its N pods are ready and its deployment is done, ``PUT
  /v2/apps/{id}`` changes an environment variable.
- **Deployment**: N replicas, ``RollingUpdate`` maxSurge 25%, maxUnavailable 25% (the
  defaults); once N pods are ready, the pod template's environment variable is patched.

Timed by one pod watcher per side from the update request to the moment N pods that were not
there before the update are Ready and every pod that was there has been deleted from the API.
Dromos runs first; its app is deleted and the server stopped before the Deployment is made.
ratio = Dromos seconds / Deployment seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client as k8s_client

from bench.k8s_offline import (
    DromosServer,
    PodSeen,
    PodWatcher,
    down,
    load_average,
    log,
    make_namespace,
    up,
)
from scheduler.model.app import parse_app
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import launch_spec
from scheduler.runtimes.kubernetes import build_pod, load_client_configuration

APP_ID = "/bench/roll"


def ready_count(pods: dict[str, PodSeen], exclude: frozenset[str] = frozenset()) -> int:
    return sum(1 for p in pods.values()
               if p.name not in exclude and p.ready_at is not None and p.terminal_at is None)


def rolled(pods: dict[str, PodSeen], old: frozenset[str], n: int) -> bool:
    """All new ready and all old gone."""
    return ready_count(pods, old) >= n and all(
        pods[name].deleted_at is not None for name in old if name in pods)


def timed_rollout(watcher: PodWatcher, n: int, update: Any, timeout: float,
                  side: str) -> dict[str, Any]:
    with watcher.cond:
        old = frozenset(p.name for p in watcher.pods.values() if p.deleted_at is None)
    log(f"{side}: {len(old)} pods before the update; updating (load {load_average()})")
    start = time.time()
    update()
    requested = time.time()
    new_ready = watcher.wait_until(lambda pods: ready_count(pods, old) >= n, timeout,
                                   f"{side}: {n} new pods ready")
    end = watcher.wait_until(lambda pods: rolled(pods, old, n), timeout,
                             f"{side}: old pods gone")
    return {"seconds": end - start, "new_ready_seconds": new_ready - start,
            "request_seconds": requested - start, "load": load_average()}


def bench_dromos(kubeconfig: str, configuration: Any, namespace: str,
                 args: Any) -> dict[str, Any]:
    body = {"id": APP_ID, "cmd": "sleep 3600", "cpus": 0.1, "mem": 64,
            "instances": args.n, "portDefinitions": [], "env": {"BENCH_VERSION": "1"}}
    with k8s_client.ApiClient(configuration) as api, PodWatcher(api, namespace) as watcher, \
            DromosServer(kubeconfig, namespace, args.serve_arg) as dromos:
        log(f"dromos: posting an app of {args.n} instances ...")
        start = time.time()
        dromos.post("/v2/apps", body)
        watcher.wait_until(lambda pods: ready_count(pods) >= args.n, args.timeout,
                           f"dromos: {args.n} pods ready")
        while dromos.http.get("/v2/deployments").json():
            time.sleep(0.2)
        log(f"dromos: {args.n} instances up in {time.time() - start:.1f} s")
        updated = dict(body, env={"BENCH_VERSION": "2"})
        result = timed_rollout(watcher, args.n,
                               lambda: dromos.put(f"/v2/apps{APP_ID}", updated),
                               args.timeout, "dromos")
        # force: Dromos may not have closed the deployment yet (the next loop pass does).
        gone = dromos.http.delete(f"/v2/apps{APP_ID}", params={"force": "true"})
        if gone.status_code >= 300:
            raise RuntimeError(f"DELETE app: {gone.status_code} {gone.text[:300]}")
        watcher.wait_until(lambda pods: all(p.deleted_at for p in pods.values()),
                           args.timeout, "dromos: app deleted")
    return result


def deployment_body(namespace: str, n: int) -> dict[str, Any]:
    app = parse_app({"id": APP_ID, "cmd": "sleep 3600", "cpus": 0.1, "mem": 64,
                     "portDefinitions": [], "env": {"BENCH_VERSION": "1"}})
    task = Task(id="bench_roll.template", app_id=app.id, host="", version="x",
                state=TaskState.STAGING, staged_at=datetime.now(UTC))
    spec = build_pod(launch_spec(app, task), namespace=namespace, node_name="",
                     image="dromos-bench/none:1")["spec"]
    del spec["nodeName"]  # kube-scheduler's to choose
    spec["restartPolicy"] = "Always"  # the only policy a Deployment allows
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "roll"},
        "spec": {
            "replicas": n, "selector": {"matchLabels": {"bench": "roll"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {"metadata": {"labels": {"bench": "roll"}}, "spec": spec},
        },
    }


def bench_deployment(configuration: Any, namespace: str, args: Any) -> dict[str, Any]:
    with k8s_client.ApiClient(configuration) as api, PodWatcher(api, namespace) as watcher:
        apps = k8s_client.AppsV1Api(api)
        body = deployment_body(namespace, args.n)
        log(f"deployment: creating {args.n} replicas ...")
        start = time.time()
        apps.create_namespaced_deployment(namespace, body, _preload_content=False)
        watcher.wait_until(lambda pods: ready_count(pods) >= args.n, args.timeout,
                           f"deployment: {args.n} pods ready")
        while True:  # the rollout of the first version is complete
            status = apps.read_namespaced_deployment_status("roll", namespace).status
            if (status.updated_replicas or 0) == args.n == (status.ready_replicas or 0) \
                    and (status.replicas or 0) == args.n:
                break
            time.sleep(0.2)
        log(f"deployment: {args.n} replicas up in {time.time() - start:.1f} s")
        containers = body["spec"]["template"]["spec"]["containers"]
        env = [e for e in containers[0]["env"] if e["name"] != "BENCH_VERSION"]
        env.append({"name": "BENCH_VERSION", "value": "2"})
        patch = {"spec": {"template": {"spec": {"containers": [
            {"name": containers[0]["name"], "env": env}]}}}}
        result = timed_rollout(watcher, args.n,
                               lambda: apps.patch_namespaced_deployment("roll", namespace, patch),
                               args.timeout, "deployment")
        apps.delete_namespaced_deployment("roll", namespace)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="instances / replicas")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--default-qps", action="store_true",
                        help="keep the control plane's default client rate limits")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra argument for dromos serve (repeatable)")
    parser.add_argument("--name", default="dromos-kbench-roll", help="cluster name")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    args = parser.parse_args(argv)

    kubeconfig = up(args.name, args.nodes, lift_qps=not args.default_qps)
    configuration = load_client_configuration(kubeconfig)
    configuration.connection_pool_maxsize = 32
    core = k8s_client.CoreV1Api(k8s_client.ApiClient(configuration))
    stamp = str(int(time.time()))
    ns_dromos, ns_kube = f"roll-dromos-{stamp}", f"roll-kube-{stamp}"
    try:
        make_namespace(core, ns_dromos)
        make_namespace(core, ns_kube)
        dromos = bench_dromos(kubeconfig, configuration, ns_dromos, args)
        log(f"dromos: rolled in {dromos['seconds']:.1f} s")
        kube = bench_deployment(configuration, ns_kube, args)
        log(f"deployment: rolled in {kube['seconds']:.1f} s")
    finally:
        if args.keep:
            log(f"cluster kept: KUBECONFIG={kubeconfig}")
        else:
            down(args.name)

    ratio = dromos["seconds"] / kube["seconds"]
    print(f"rolling upgrade of {args.n} instances on {args.nodes} nodes, rate limits "
          f"{'default' if args.default_qps else 'lifted'}")
    for label, r in (("dromos (Marathon defaults)", dromos), ("deployment (25%/25%)", kube)):
        print(f"{label:27} {r['seconds']:7.2f} s  (all new ready after "
              f"{r['new_ready_seconds']:.2f} s; load {r['load']})")
    print(f"ratio dromos / deployment: {ratio:.2f} (target <= 1.0)")
    if args.json:
        print(json.dumps({
            "dromos_s": round(dromos["seconds"], 3),
            "deployment_s": round(kube["seconds"], 3),
            "ratio": round(ratio, 3),
            "dromos_new_ready_s": round(dromos["new_ready_seconds"], 3),
            "deployment_new_ready_s": round(kube["new_ready_seconds"], 3),
            "n": args.n, "nodes": args.nodes,
            "rate_limits": "default" if args.default_qps else "lifted",
            "load_dromos": dromos["load"], "load_deployment": kube["load"],
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
