"""``dromos stop-all``: stop every task of a state dir, cleanly.

* **Dromos is up** (``--url`` answers ``/ping``): through its API, since it would otherwise
  relaunch what was killed: every app is scaled to 0 instances (``?force=true``; the
  definitions stay, ``dromos scale APP N`` brings them back) and every running or queued job
  run is killed (``DELETE /scheduler/task/kill/NAME``). Scheduled jobs still fire at their
  next occurrence. It then waits until no task is left.
* **Dromos is not running**: by the executors' records in ``--state-dir`` (local runtime;
  see :mod:`scheduler.stop`): SIGTERM to each task's process group, SIGKILL after
  ``--grace`` seconds. A Dromos started later reports them as KILLED and, as for any lost
  instance, starts apps' instances again.

Exit 0 when nothing of the state dir is left running, 1 otherwise. ``--json`` prints
``{"via": "api"|"state-dir", "appsScaledToZero": [...], "jobsKilled": [...], "stopped":
[task ids], "remaining": [task ids]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from scheduler import cli_render, stop
from scheduler.cli_client import ApiError, Client, resolve_url

_ACTIVE_RUNS = frozenset({"queued", "running"})


def _up(c: Client) -> bool:
    try:
        c.request("GET", "/ping")
    except ApiError as e:
        return e.status is not None  # it answered, even if with an error (e.g. 401)
    return True


def _through_api(c: Client, grace: float) -> dict[str, Any]:
    scaled: list[str] = []
    for app in c.apps():
        if int(app.get("instances", 0)) > 0 or app.get("tasks"):
            c.scale(str(app["id"]), 0, force=True)
            scaled.append(str(app["id"]))
    killed: list[str] = []
    for job in c.state().get("jobs", []):
        if any(r.get("status") in _ACTIVE_RUNS for r in job.get("runs") or []):
            c.request("DELETE", f"/scheduler/task/kill/{quote(job['name'], safe='')}")
            killed.append(str(job["name"]))
    print(f"dromos: Dromos at {c.url} is up: scaled {len(scaled)} app(s) to 0 and killed the "
          f"runs of {len(killed)} job(s); waiting for their tasks to stop", file=sys.stderr)
    before = {str(t["id"]) for t in c.tasks()}
    deadline = time.monotonic() + grace + 15
    left: list[dict[str, Any]] = []
    with cli_render.progress("stopping") as bar:
        while True:
            left = c.tasks()
            bar.update(len(before) - len(left), len(before) or None,
                       f"{len(left)} task(s) left", grace + 15 - (deadline - time.monotonic()))
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return {"via": "api", "appsScaledToZero": scaled, "jobsKilled": killed,
            "stopped": sorted(before - {str(t["id"]) for t in left}),
            "remaining": sorted(str(t["id"]) for t in left)}


def _through_state_dir(state_dir: Path, grace: float) -> dict[str, Any]:
    alive = stop.running(state_dir)
    print(f"dromos: no Dromos answers; stopping the {len(alive)} running task(s) recorded in "
          f"{state_dir}", file=sys.stderr)
    with cli_render.progress("stopping") as bar:
        started = time.monotonic()
        left = stop.stop(alive, grace, on_progress=lambda done, total: bar.update(
            done, total or None, f"{done}/{total} stopped", time.monotonic() - started))
    gone = {e.task_id for e in left}
    return {"via": "state-dir", "appsScaledToZero": [], "jobsKilled": [],
            "stopped": [e.task_id for e in alive if e.task_id not in gone],
            "remaining": sorted(gone)}


def stop_all(args: argparse.Namespace) -> int:
    state_dir = Path(args.state_dir)
    with Client(resolve_url(args.url), timeout=5.0) as c:
        result = _through_api(c, args.grace) if _up(c) else \
            _through_state_dir(state_dir, args.grace)
    # Whatever the API path did, executors of this state dir still alive are stopped too
    # (e.g. a Dromos at --url that serves another state dir).
    if result["via"] == "api":
        extra = stop.running(state_dir)
        if extra:
            left = stop.stop(extra, args.grace)
            done = set(result["stopped"])
            result["stopped"] += [e.task_id for e in extra
                                  if e not in left and e.task_id not in done]
            result["remaining"] = sorted(set(result["remaining"]) | {e.task_id for e in left})
    if args.json:
        print(json.dumps(result, indent=2))
    n, left = len(result["stopped"]), result["remaining"]
    print(f"dromos: stopped {n} task(s)" + (
        f"; still running: {', '.join(left)}" if left else ""), file=sys.stderr)
    return 1 if left else 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "stop-all", parents=[common],
        help="stop every task of a state dir (through Dromos if it is up, else directly)")
    p.add_argument("--state-dir", default=".dromos",
                   help="the state dir whose tasks to stop (default .dromos)")
    p.add_argument("--grace", type=float, default=10.0,
                   help="seconds between SIGTERM and SIGKILL (default 10)")
    return p
