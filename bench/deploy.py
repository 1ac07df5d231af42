"""Deployment throughput and API latency.

1. Rolling upgrade of N instances (default 200) on the local runtime: real processes, real
   executors; tasks replaced per second with Marathon's default strategy
   (minimumHealthCapacity 1, maximumOverCapacity 1). Baseline in the same run: the same
   upgrade one task at a time (minimumHealthCapacity 1, maximumOverCapacity 0, Marathon's
   surge of one) on N/4 instances.
2. ``GET /v2/apps`` latency with 10,000 apps under 50 concurrent clients, against a real
   uvicorn server; baseline in the same run: ``GET /ping`` (the HTTP stack's floor).

    python bench/deploy.py [--instances 200] [--apps 10000] [--clients 50] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.app import create_app
from scheduler.clock import SystemClock
from scheduler.events import EventBus
from scheduler.model.app import parse_app
from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.local import LocalRuntime
from scheduler.store.sqlite import SqliteStore


def orchestrator(tmp: Path) -> tuple[Orchestrator, LocalRuntime]:
    node = Node("bench", Resources(10_000, 10**7, 10**7), ((40000, 49999),))
    runtime = LocalRuntime(tmp, [node])
    o = Orchestrator(SqliteStore(tmp / "dromos.db"), runtime, EventBus(), SystemClock(),
                     loop_interval=0.1)
    return o, runtime


def rolling_upgrade(instances: int, max_over: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="dromos-deploy-"))
    o, _ = orchestrator(tmp)
    o.start()
    try:
        app = {"id": "/fleet", "cmd": "exec sleep 3600", "instances": instances,
               "cpus": 0.01, "mem": 1, "portDefinitions": [], "env": {"V": "1"},
               "upgradeStrategy": {"minimumHealthCapacity": 1,
                                   "maximumOverCapacity": max_over}}
        o.create_app(parse_app(app))
        _wait(lambda: not o.deployments(), 600)
        spec = o.app("/fleet")
        started = time.perf_counter()
        o.update_app(spec.model_copy(update={"env": {"V": "2"}, "version": None}))
        _wait(lambda: not o.deployments(), 1200)
        elapsed = time.perf_counter() - started
        o.delete_app("/fleet", force=True)
        _wait(lambda: not o.deployments(), 120)
    finally:
        o.stop()
    return {"instances": instances, "seconds": round(elapsed, 2),
            "tasks_replaced_per_s": round(instances / elapsed, 1)}


def _wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _load(url: str, clients: int, requests: int) -> list[float]:
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        async def worker(n: int) -> None:
            for _ in range(n):
                t = time.perf_counter()
                r = await client.get(url)
                r.raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)
        per = max(1, requests // clients)
        await asyncio.gather(*(worker(per) for _ in range(clients)))
    return latencies


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))], 1)


def api_latency(apps: int, clients: int, requests: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="dromos-api-"))
    o, _ = orchestrator(tmp)
    with o.store.atomic():  # bulk load: one transaction, no tasks (instances 0)
        for i in range(apps):
            o.store.create_app(parse_app({
                "id": f"/team-{i % 50}/app-{i}", "cmd": "sleep 1", "instances": 0,
                "labels": {"team": str(i % 50)}, "version": "2026-01-01T00:00:00.000Z",
            }, keep_version=True))
    o.reload_apps()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(o), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait(lambda: server.started, 30)
    base = f"http://127.0.0.1:{port}"
    try:
        ping = asyncio.run(_load(base + "/ping", clients, requests))
        lat = asyncio.run(_load(base + "/v2/apps", clients, requests))
    finally:
        server.should_exit = True
        thread.join(10)
    return {"apps": apps, "clients": clients, "requests": len(lat),
            "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
            "ping_p50_ms": pct(ping, 0.5), "ping_p99_ms": pct(ping, 0.99)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", type=int, default=200)
    ap.add_argument("--apps", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ours = rolling_upgrade(args.instances, max_over=1.0)
    one_by_one = rolling_upgrade(max(4, args.instances // 4), max_over=0.0)
    api = api_latency(args.apps, args.clients, args.requests)
    speedup = round(ours["tasks_replaced_per_s"] / one_by_one["tasks_replaced_per_s"], 1)
    print(f"rolling upgrade, {ours['instances']} instances (mHC 1, mOC 1): "
          f"{ours['seconds']} s, {ours['tasks_replaced_per_s']} tasks replaced/s")
    print(f"baseline, one at a time ({one_by_one['instances']} instances, mOC 0): "
          f"{one_by_one['tasks_replaced_per_s']} tasks replaced/s  (ours x{speedup})")
    print(f"GET /v2/apps, {api['apps']} apps, {api['clients']} clients: "
          f"p50 {api['p50_ms']} ms, p99 {api['p99_ms']} ms "
          f"(GET /ping floor: p50 {api['ping_p50_ms']} ms, p99 {api['ping_p99_ms']} ms)")
    if args.json:
        print(json.dumps({"rolling_upgrade": ours, "baseline_one_at_a_time": one_by_one,
                          "speedup": speedup, "api_latency": api}))


if __name__ == "__main__":
    main()
