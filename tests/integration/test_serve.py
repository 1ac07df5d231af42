"""End to end: a real `dromos serve`, real processes, real HTTP health checks, real kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.runtimes.conftest import cleanup_local_state
from tests.support.server import Server, alive, executors, wait_for

pytestmark = pytest.mark.integration

NODES = [
    {"hostname": f"node-{c}", "cpus": 2, "mem": 2048, "disk": 1000,
     "ports": f"{33000 + 100 * i}-{33000 + 100 * i + 49}",
     "attributes": {"rack": f"r{i % 2}", "zone": "z1"}}
    for i, c in enumerate("abc")
]
WEB = {
    "id": "/demo/web",
    "cmd": "exec python3 -m http.server $PORT0 --bind 127.0.0.1",
    "instances": 3,
    "cpus": 0.1,
    "mem": 64,
    "constraints": [["hostname", "UNIQUE"]],
    "backoffSeconds": 1,
    "healthChecks": [{"protocol": "HTTP", "path": "/", "gracePeriodSeconds": 30,
                      "intervalSeconds": 1, "timeoutSeconds": 1,
                      "maxConsecutiveFailures": 3}],
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    nodes_file = tmp_path / "nodes.json"
    nodes_file.write_text(json.dumps(NODES))
    srv = Server(tmp_path / "state", nodes_file)
    srv.start()
    yield srv
    srv.stop()
    cleanup_local_state(srv.state)  # leave no process behind


def healthy_tasks(srv: Server) -> list[dict[str, Any]]:
    app = srv.get("/v2/apps/demo/web")["app"]
    tasks = [t for t in app["tasks"] if t["state"] == "TASK_RUNNING"
             and t["healthCheckResults"] and all(h["alive"] for h in t["healthCheckResults"])]
    return tasks


def test_three_healthy_tasks_replacement_and_adoption(server: Server) -> None:
    r = httpx.post(server.url + "/v2/apps", json=WEB)
    assert r.status_code == 201, r.text

    tasks = wait_for(lambda: len(healthy_tasks(server)) == 3 and healthy_tasks(server),
                     60, "3 healthy tasks")
    assert {t["host"] for t in tasks} == {"node-a", "node-b", "node-c"}
    for t in tasks:  # each task really serves HTTP on its port
        assert httpx.get(f"http://127.0.0.1:{t['ports'][0]}/").status_code == 200
    app = server.get("/v2/apps/demo/web")["app"]
    assert (app["tasksRunning"], app["tasksHealthy"], app["tasksUnhealthy"]) == (3, 3, 0)

    # Kill one task's process: it is replaced, and the failure is recorded.
    victim = tasks[0]
    child = executors(server.state)[victim["id"]]["child_pid"]
    os.kill(int(child), signal.SIGKILL)

    def replaced() -> bool:
        ts = healthy_tasks(server)
        return len(ts) == 3 and victim["id"] not in {t["id"] for t in ts}

    wait_for(replaced, 60, "a healthy replacement")
    failure = server.get("/v2/apps/demo/web")["app"]["lastTaskFailure"]
    assert failure["taskId"] == victim["id"]
    assert failure["state"] == "TASK_FAILED"

    # kill -9 Dromos: the tasks keep running; a restart adopts them, relaunching nothing.
    before = {t["id"]: t for t in healthy_tasks(server)}
    pids_before = {tid: executors(server.state)[tid]["pid"] for tid in before}
    server.kill9()
    for pid in pids_before.values():
        assert alive(int(pid))
    server.start()
    time.sleep(3)  # several control-loop passes
    after = wait_for(lambda: len(healthy_tasks(server)) == 3 and healthy_tasks(server), 30,
                     "3 healthy tasks after restart")
    assert {t["id"] for t in after} == set(before)
    assert {t["id"]: t["ports"] for t in after} == {k: v["ports"] for k, v in before.items()}
    assert {tid: executors(server.state)[tid]["pid"] for tid in before} == pids_before
    assert len(executors(server.state)) == 4  # 3 originals + 1 replacement, nothing new

    # Deleting the app stops its processes.
    assert httpx.delete(server.url + "/v2/apps/demo/web").status_code == 200
    wait_for(lambda: not any(alive(int(p)) for p in pids_before.values()), 30,
             "task processes to exit")


def test_refuses_non_loopback_without_credentials(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "serve", "--host", "0.0.0.0",
         "--state-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("DROMOS_")},
    )
    assert r.returncode == 2
    assert "refusing to listen on 0.0.0.0 without credentials" in r.stderr


def test_bad_nodes_file_names_the_field(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes.yaml"
    nodes.write_text("- hostname: a\n  cpus: 0\n  mem: 10\n")
    r = subprocess.run(
        [sys.executable, "-m", "scheduler.cli", "serve", "--nodes", str(nodes),
         "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=30,
    )
    assert r.returncode == 2
    assert "/0/cpus" in r.stderr
