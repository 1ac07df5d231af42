"""Trigger skew: how late do scheduled job runs start?

10,000 jobs (``R1/<t>/PT1H``) with fire times spread uniformly over a window are loaded into
a real orchestrator (SQLite store, synchronous=FULL) whose runtime launches nothing (it
records the launch instant and reports the run finished). Skew = launch instant - scheduled
time. Baseline, in the same run: the same orchestrator with the precise wake-up disabled, i.e.
a fixed 0.5 s polling loop (how a naive scheduler, or the services loop alone, would fire).

    python bench/triggers.py [--jobs 10000] [--window 120] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scheduler.clock import SystemClock
from scheduler.events import EventBus
from scheduler.model.job import parse_job
from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.model.task import Task, TaskState
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.base import LaunchSpec, Observation
from scheduler.store.sqlite import SqliteStore


class NoopRuntime:
    """Launches nothing: records when each run was launched; every run ends at once."""

    name = "noop"

    def __init__(self) -> None:
        self.launched: dict[str, float] = {}
        self.lock = threading.Lock()

    def nodes(self) -> list[Node]:
        return [Node("bench", Resources(1e6, 1e9, 1e9), ((31000, 32000),))]

    def launch(self, spec: LaunchSpec) -> Mapping[str, Any]:
        with self.lock:
            self.launched.setdefault(spec.run_id or spec.task_id, time.time())
        return {"noop": True}

    def kill(self, task: Task, grace_seconds: float) -> None:
        return None

    def observe(self, tasks: Sequence[Task]) -> list[Observation]:
        return [Observation(t.id, TaskState.FINISHED, exit_code=0) for t in tasks]

    def probe_host(self, task: Task) -> str:
        return "127.0.0.1"

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]:
        return ["true"], {}

    def close(self) -> None:
        return None


class PollingOrchestrator(Orchestrator):
    """The baseline: wakes every loop interval, never at the next fire time."""

    def _sleep_seconds(self) -> float:
        return self.loop_interval


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def run(cls: type[Orchestrator], jobs: int, window: float, lead: float) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="dromos-bench-"))
    runtime = NoopRuntime()
    store = SqliteStore(tmp / "dromos.db")
    orch = cls(store, runtime, EventBus(), SystemClock(), loop_interval=0.5)
    base = datetime.now(UTC) + timedelta(seconds=lead)
    scheduled: dict[str, datetime] = {}
    with store.atomic():  # bulk import: one transaction
        for i in range(jobs):
            t = base + timedelta(seconds=window * i / jobs)
            t = t.replace(microsecond=(t.microsecond // 1000) * 1000)
            name = f"job-{i:05d}"
            stamp = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"
            store.put_job(parse_job({"name": name, "command": "true",
                                     "schedule": f"R1/{stamp}/PT1H", "epsilon": "PT1M",
                                     "cpus": 0.01, "mem": 1, "disk": 0, "retries": 0}))
            scheduled[name] = t
    orch.jobs.reload()
    orch.start()
    deadline = time.time() + lead + window + 30
    while time.time() < deadline and len(runtime.launched) < jobs:
        time.sleep(0.5)
    orch.stop()
    skews = []
    for run_id, at in runtime.launched.items():
        name = run_id.split(":", 1)[0]
        skews.append((at - scheduled[name].timestamp()) * 1000)
    missing = jobs - len(skews)
    return {
        "jobs": jobs,
        "launched": len(skews),
        "missing": missing,
        "skew_ms": {
            "p50": round(percentile(skews, 0.50), 1),
            "p99": round(percentile(skews, 0.99), 1),
            "max": round(max(skews), 1),
            "mean": round(statistics.fmean(skews), 1),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--window", type=float, default=120.0, help="seconds the fire times span")
    ap.add_argument("--baseline-jobs", type=int, default=2_000)
    ap.add_argument("--baseline-window", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    ours = run(Orchestrator, args.jobs, args.window, lead=5.0)
    base = run(PollingOrchestrator, args.baseline_jobs, args.baseline_window, lead=5.0)
    ratio = {k: round(base["skew_ms"][k] / ours["skew_ms"][k], 1) if ours["skew_ms"][k] else None
             for k in ("p50", "p99", "max")}
    print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}{'launched':>10}")
    for label, r in (("dromos (wake at fire time)", ours),
                     ("baseline (0.5 s polling)", base)):
        s = r["skew_ms"]
        print(f"{label:28}{s['p50']:>10}{s['p99']:>10}{s['max']:>10}"
              f"{r['launched']:>6}/{r['jobs']}")
    print(f"baseline / dromos skew: p50 x{ratio['p50']}, p99 x{ratio['p99']}")
    if args.json:
        print(json.dumps({"jobs": ours["jobs"], "skew_ms": ours["skew_ms"],
                          "missing": ours["missing"], "baseline": base,
                          "baseline_over_dromos": ratio}))


if __name__ == "__main__":
    main()
