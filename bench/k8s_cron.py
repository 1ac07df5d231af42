"""Cron benchmark: K Dromos cron jobs vs K Kubernetes CronJobs, all firing every minute, on
one offline cluster in the same run.

    .venv/bin/python bench/k8s_cron.py                    # K = 500, 2 measured minutes
    .venv/bin/python bench/k8s_cron.py --k 50 --json      # quick; JSON object last
    .venv/bin/python bench/k8s_cron.py --default-qps      # control plane's default rate limits

The cluster is ``kind-cluster/offline/up.sh`` under its own name (``--name``), ``--nodes``
KWOK nodes, with the control-plane components' client rate limits lifted
(``--disable-qps-limits``: kube-controller-manager's CronJob and Job controllers are not held
to 20 QPS) unless ``--default-qps``. Dromos's Kubernetes client has no rate limit of its own.
Every task is a pod of 0.1 cpu and 64 MiB whose simulated process exits 0 after
``--run-for``; both sides' pods are built by Dromos's pod builder.

- **Dromos**: a real ``dromos serve --runtime kubernetes`` (subprocess). K jobs with schedule
  ``cron: * * * * *`` and ``concurrent: true`` (a run may start while the previous one still
  runs, as ``concurrencyPolicy: Allow``; Chronos's default would skip an occurrence whose
  predecessor is late) are posted to ``/scheduler/iso8601``; Dromos creates each run's pod.
- **CronJob**: K CronJobs ``* * * * *`` (``concurrencyPolicy: Allow``); the CronJob controller
  creates a Job per minute, the Job controller its pod, kube-scheduler binds it.

The sides run one after the other (Dromos first, stopped before the CronJobs are made). For
each side only the ``--minutes`` whole minutes after the last definition was accepted are
measured, so every measured minute has all K firing. A pod's skew is when the watcher saw it
created (``time.time()`` on the event, sub-second) minus its scheduled minute: for Dromos the
occurrence in the run id (annotation ``dromos.io/run-id``), for a CronJob the minute in its
Job's name. Pods not seen within ``--settle`` seconds after the last measured minute count as
missing (reported, left out of the percentiles). Jobs' skew (creationTimestamp, whole seconds)
is reported too. ratio_p99 = Dromos p99 / CronJob pods p99.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
    parse_time,
    percentile,
    up,
)
from scheduler.model.app import parse_app
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import launch_spec
from scheduler.runtimes.kubernetes import build_pod, load_client_configuration

RUN_ID = re.compile(r":(\d{8}T\d{6}Z)$")


def sim_env(run_for: str) -> dict[str, str]:
    return {"DROMOS_SIM_EXIT": "0", "DROMOS_SIM_RUN_FOR": run_for}


def next_minute(t: float) -> float:
    return math.floor(t / 60) * 60 + 60


def skews(pods: dict[str, PodSeen], scheduled_of: Any, minutes: set[float]) -> dict[str, Any]:
    """Skews of the pods whose scheduled minute is one of ``minutes``."""
    seen, created = [], []
    for p in pods.values():
        t = scheduled_of(p)
        if t is None or t not in minutes:
            continue
        seen.append(p.first_seen - t)
        created.append(p.created - t)
    return {"seen": seen, "created": created}


def measure(watcher: PodWatcher, scheduled_of: Any, minutes: set[float], k: int,
            settle: float) -> dict[str, Any]:
    """Wait until every measured minute's K pods were seen, or ``settle`` seconds after the
    last measured minute; the skews."""
    want = k * len(minutes)

    def count(pods: dict[str, PodSeen]) -> int:
        return sum(1 for p in pods.values() if scheduled_of(p) in minutes)

    last = max(minutes)
    while True:
        with watcher.cond:
            n = count(watcher.pods)
        if n >= want or time.time() > last + settle:
            break
        time.sleep(1)
    with watcher.cond:
        found = skews(watcher.pods, scheduled_of, minutes)
    found["missing"] = want - len(found["seen"])
    return found


def dromos_scheduled(p: PodSeen) -> float | None:
    run = p.annotations.get("dromos.io/run-id", "")
    m = RUN_ID.search(run)  # attempt 0 only: retries end in ".retryN"
    if not m:
        return None
    return datetime.strptime(m.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()


def cronjob_scheduled(p: PodSeen) -> float | None:
    job = p.labels.get("batch.kubernetes.io/job-name") or p.labels.get("job-name") or ""
    _, _, minute = job.rpartition("-")
    return int(minute) * 60.0 if minute.isdigit() else None


def bench_dromos(kubeconfig: str, configuration: Any, namespace: str, args: Any) -> dict[str, Any]:
    with k8s_client.ApiClient(configuration) as api, PodWatcher(api, namespace) as watcher, \
            DromosServer(kubeconfig, namespace, args.serve_arg) as dromos:
        bodies = [{"name": f"cron-{i:05d}", "command": "true", "schedule": "cron: * * * * *",
                   "cpus": 0.1, "mem": 64, "disk": 0, "retries": 0, "owner": "bench@dromos",
                   "concurrent": True,  # as the CronJobs' concurrencyPolicy: Allow
                   "environmentVariables": [{"name": n, "value": v}
                                            for n, v in sim_env(args.run_for).items()]}
                  for i in range(args.k)]
        log(f"dromos: posting {args.k} cron jobs to /scheduler/iso8601 ...")
        start = time.time()
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in pool.map(lambda b: dromos.post("/scheduler/iso8601", b), bodies):
                pass
        posted = time.time()
        log(f"dromos: posted in {posted - start:.1f} s")
        first = next_minute(posted)
        minutes = {first + 60 * i for i in range(args.minutes)}
        log(f"dromos: measuring minutes {fmt(first)} .. {fmt(max(minutes))} "
            f"(load {load_average()})")
        result = measure(watcher, dromos_scheduled, minutes, args.k, args.settle)
        result["post_seconds"] = posted - start
        result["load"] = load_average()
    return result


def cronjob_body(i: int, namespace: str, run_for: str) -> dict[str, Any]:
    app = parse_app({"id": "/bench/cron", "cmd": "true", "cpus": 0.1, "mem": 64,
                     "portDefinitions": [], "env": sim_env(run_for)})
    task = Task(id=f"bench_cron.{i}", app_id=app.id, host="", version="x",
                state=TaskState.STAGING, staged_at=datetime.now(UTC))
    pod = build_pod(launch_spec(app, task), namespace=namespace, node_name="",
                    image="dromos-bench/none:1")
    spec = pod["spec"]
    del spec["nodeName"]  # kube-scheduler's to choose
    return {
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": f"cron-{i:05d}"},
        "spec": {
            "schedule": "* * * * *", "concurrencyPolicy": "Allow",
            "successfulJobsHistoryLimit": 10, "failedJobsHistoryLimit": 10,
            "jobTemplate": {"spec": {"backoffLimit": 0, "template": {
                "metadata": {"labels": {"bench": "cron"}}, "spec": spec}}},
        },
    }


def bench_cronjobs(configuration: Any, namespace: str, args: Any) -> dict[str, Any]:
    with k8s_client.ApiClient(configuration) as api, PodWatcher(api, namespace) as watcher:
        batch = k8s_client.BatchV1Api(api)
        log(f"cronjob: creating {args.k} CronJobs ...")
        start = time.time()
        with ThreadPoolExecutor(max_workers=8) as pool:
            for _ in pool.map(lambda i: batch.create_namespaced_cron_job(
                    namespace, cronjob_body(i, namespace, args.run_for),
                    _preload_content=False), range(args.k)):
                pass
        created = time.time()
        log(f"cronjob: created in {created - start:.1f} s")
        first = next_minute(created)
        minutes = {first + 60 * i for i in range(args.minutes)}
        log(f"cronjob: measuring minutes {fmt(first)} .. {fmt(max(minutes))} "
            f"(load {load_average()})")
        result = measure(watcher, cronjob_scheduled, minutes, args.k, args.settle)
        result["post_seconds"] = created - start
        result["load"] = load_average()
        jobs = json.loads(batch.list_namespaced_job(namespace, _preload_content=False).data)
        job_skews = []
        for job in jobs.get("items") or ():
            meta = job["metadata"]
            stamp = (meta.get("annotations") or {}).get(
                "batch.kubernetes.io/cronjob-scheduled-timestamp")
            if stamp and parse_time(stamp) in minutes:
                job_skews.append(parse_time(meta["creationTimestamp"]) - parse_time(stamp))
        result["jobs"] = job_skews
        # Stop the firing (one call) before the namespace is left behind.
        batch.delete_collection_namespaced_cron_job(namespace)
    return result


def fmt(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def summary(label: str, r: dict[str, Any]) -> str:
    s = r["seen"]
    return (f"{label}: p50 {percentile(s, 50):6.2f} s  p99 {percentile(s, 99):6.2f} s  "
            f"max {max(s, default=float('nan')):6.2f} s  ({len(s)} pods, {r['missing']} "
            f"missing; creationTimestamp p99 {percentile(r['created'], 99):.0f} s; "
            f"load {r['load']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=500, help="cron jobs per side")
    parser.add_argument("--minutes", type=int, default=2, help="measured minutes per side")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--run-for", default="5s", help="how long each run's process runs")
    parser.add_argument("--settle", type=float, default=120.0,
                        help="seconds after the last measured minute to wait for late pods")
    parser.add_argument("--default-qps", action="store_true",
                        help="keep the control plane's default client rate limits")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra argument for dromos serve (repeatable)")
    parser.add_argument("--name", default="dromos-kbench-cron", help="cluster name")
    parser.add_argument("--keep", action="store_true", help="leave the cluster running")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    args = parser.parse_args(argv)

    kubeconfig = up(args.name, args.nodes, lift_qps=not args.default_qps)
    configuration = load_client_configuration(kubeconfig)
    configuration.connection_pool_maxsize = 32
    core = k8s_client.CoreV1Api(k8s_client.ApiClient(configuration))
    stamp = str(int(time.time()))
    ns_dromos, ns_kube = f"cron-dromos-{stamp}", f"cron-kube-{stamp}"
    try:
        make_namespace(core, ns_dromos)
        make_namespace(core, ns_kube)
        dromos = bench_dromos(kubeconfig, configuration, ns_dromos, args)
        log(summary("dromos", dromos))
        kube = bench_cronjobs(configuration, ns_kube, args)
        log(summary("cronjob pods", kube))
    finally:
        if args.keep:
            log(f"cluster kept: KUBECONFIG={kubeconfig}")
        else:
            down(args.name)

    d99 = percentile(dromos["seen"], 99)
    k99 = percentile(kube["seen"], 99)
    j99 = percentile(kube["jobs"], 99)
    print(f"{args.k} jobs per side firing every minute, {args.minutes} measured minutes, "
          f"{args.nodes} nodes, rate limits {'default' if args.default_qps else 'lifted'}")
    print(summary("dromos      ", dromos))
    print(summary("cronjob pods", kube))
    print(f"cronjob Jobs: p99 {j99:.0f} s (creationTimestamp, {len(kube['jobs'])} jobs)")
    print(f"ratio p99 dromos / cronjob pods: {d99 / k99:.2f} (target <= 0.5)")
    if args.json:
        print(json.dumps({
            "dromos_p99_s": round(d99, 3),
            "cronjob_pods_p99_s": round(k99, 3),
            "ratio_p99": round(d99 / k99, 3),
            "dromos_p50_s": round(percentile(dromos["seen"], 50), 3),
            "cronjob_pods_p50_s": round(percentile(kube["seen"], 50), 3),
            "cronjob_jobs_p99_s": round(j99, 3),
            "dromos_missing": dromos["missing"], "cronjob_missing": kube["missing"],
            "k": args.k, "minutes": args.minutes, "nodes": args.nodes,
            "rate_limits": "default" if args.default_qps else "lifted",
            "load_dromos": dromos["load"], "load_cronjob": kube["load"],
        }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
