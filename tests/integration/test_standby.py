"""Two real `dromos serve` on one state directory: the second refuses, or (--standby) waits and
takes over after kill -9 of the first, adopting every task (same ids, same pids)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.runtimes.conftest import cleanup_local_state
from tests.support.server import Server, alive, executors, free_port, wait_for

pytestmark = pytest.mark.integration

NODES = [{"hostname": "node-a", "cpus": 2, "mem": 2048, "disk": 1000, "ports": "36100-36149"}]
SLEEPER = {"id": "/ha/sleeper", "cmd": "sleep 600", "instances": 2, "cpus": 0.1, "mem": 16}


def running(srv_url: str) -> dict[str, Any]:
    app = httpx.get(srv_url + "/v2/apps/ha/sleeper", timeout=10).json()["app"]
    return {t["id"]: t for t in app["tasks"] if t["state"] == "TASK_RUNNING"}


def test_second_server_refuses_then_standby_takes_over(tmp_path: Path) -> None:
    nodes_file = tmp_path / "nodes.json"
    nodes_file.write_text(json.dumps(NODES))
    first = Server(tmp_path / "state", nodes_file)
    first.start()
    standby_port = free_port()
    standby: subprocess.Popen[bytes] | None = None
    try:
        assert httpx.post(first.url + "/v2/apps", json=SLEEPER).status_code == 201
        before = wait_for(lambda: len(t := running(first.url)) == 2 and t, 30, "2 tasks")
        pids = {tid: executors(first.state)[tid]["pid"] for tid in before}

        # Without --standby: exits at once, non-zero, naming the holder.
        refused = subprocess.run(
            [sys.executable, "-m", "scheduler.cli", "serve", "--port", str(free_port()),
             "--state-dir", str(first.state), "--nodes", str(nodes_file)],
            capture_output=True, text=True, timeout=60)
        assert refused.returncode == 4, refused.stderr
        assert first.proc is not None
        assert f"pid {first.proc.pid}" in refused.stderr
        assert f"API 127.0.0.1:{first.port}" in refused.stderr

        # With --standby: answers /ping as a standby, refuses writes, names the leader.
        log = open(tmp_path / "standby.log", "ab")  # noqa: SIM115
        standby = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "serve", "--standby", "--port",
             str(standby_port), "--state-dir", str(first.state), "--nodes", str(nodes_file)],
            stdout=log, stderr=log, start_new_session=True)
        url = f"http://127.0.0.1:{standby_port}"
        ping = wait_for(lambda: httpx.get(url + "/ping"), 30, "standby /ping")
        assert ping.text == "pong" and ping.headers["X-Dromos-Role"] == "standby"
        assert httpx.get(url + "/v2/leader").json() == {"leader": f"127.0.0.1:{first.port}"}
        assert httpx.get(url + "/v2/info").json()["elected"] is False
        assert httpx.post(url + "/v2/apps", json=SLEEPER).status_code == 503

        first.kill9()
        wait_for(lambda: "X-Dromos-Role" not in httpx.get(url + "/ping").headers, 30,
                 "the standby to take over")
        after = wait_for(lambda: len(t := running(url)) == 2 and t, 30, "adopted tasks")
        assert set(after) == set(before)  # same ids: adopted, nothing relaunched
        assert {tid: executors(first.state)[tid]["pid"] for tid in after} == pids
        assert all(alive(int(p)) for p in pids.values())
        assert httpx.get(url + "/v2/info").json()["elected"] is True
    finally:
        if standby is not None:
            standby.terminate()
            standby.wait(10)
        first.stop()
        cleanup_local_state(first.state)
