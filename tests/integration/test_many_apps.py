"""2,000 apps under a 1,024 open files limit (issue 11, defect 4): a real `dromos serve` in a
subprocess whose soft and hard RLIMIT_NOFILE are 1,024, real HTTP. Descriptors must scale with
the tasks that run, not with the apps defined: the API keeps answering, an app still
launches and its service port serves."""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.runtimes.conftest import cleanup_local_state
from tests.support.server import free_port, wait_for

pytestmark = pytest.mark.integration

LIMIT = 1024
APPS = 2000


def _limit_open_files(soft: int, hard: int) -> Callable[[], None]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return limit


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], str, int]]:
    yield from _serve(tmp_path, LIMIT, LIMIT)


def _serve(tmp_path: Path, soft: int, hard: int
           ) -> Iterator[tuple[str, subprocess.Popen[bytes], str, int]]:
    nodes = tmp_path / "nodes.json"
    task_port = free_port()
    nodes.write_text(json.dumps([{"hostname": "node-fd", "cpus": 4, "mem": 4096,
                                  "ports": f"{task_port}-{task_port}"}]))
    port = free_port()
    # Service ports on an address of their own inside 127/8: the 2,000 numbers this test may
    # take cannot collide with another test's listeners on 127.0.0.1.
    bind = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    log = open(tmp_path / "dromos.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli", "serve", "--port", str(port),
         "--state-dir", str(tmp_path / "state"), "--nodes", str(nodes),
         "--service-bind", bind, "--service-ports", "20000-22999"],
        stdout=log, stderr=log, start_new_session=True, preexec_fn=_limit_open_files(soft, hard),
        env={k: v for k, v in os.environ.items() if not k.startswith("DROMOS_")},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(url + "/ping").text == "pong", 30, "dromos /ping")
        yield url, proc, bind, task_port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        cleanup_local_state(tmp_path / "state")


def _open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_two_thousand_apps_under_a_1024_open_files_limit(
        server: tuple[str, subprocess.Popen[bytes], str, int]) -> None:
    url, proc, bind, _ = server
    limits = Path(f"/proc/{proc.pid}/limits").read_text()
    assert any(line.startswith("Max open files") and f"{LIMIT}" in line
               for line in limits.splitlines())
    apps = [{"id": f"a{i}", "cmd": "sleep 600", "instances": 0, "cpus": 0.01, "mem": 1}
            for i in range(APPS)]
    r = httpx.post(url + "/v2/groups", json={"id": "/many", "apps": apps}, timeout=300)
    assert r.status_code == 201, r.text
    # One app that runs: its service port is listened on and routes to the task.
    web = {"id": "/web", "instances": 1, "cpus": 0.1, "mem": 32,
           "cmd": "exec python3 -m http.server $PORT0 --bind 127.0.0.1"}
    r = httpx.post(url + "/v2/apps", json=web, timeout=60)
    assert r.status_code == 201, r.text
    service_port = r.json()["portDefinitions"][0]["port"]

    def served() -> bool:
        return httpx.get(f"http://{bind}:{service_port}/", timeout=5).status_code == 200

    wait_for(served, 90, "the app's service port to serve")
    listed = httpx.get(url + "/v2/apps", timeout=120)
    assert listed.status_code == 200 and len(listed.json()["apps"]) == APPS + 1
    # Descriptors follow the running tasks, not the 2,001 apps.
    assert _open_files(proc.pid) < 200
    # Writes keep working at that size.
    r = httpx.put(url + "/v2/apps/many/a0", json={"instances": 0, "cmd": "sleep 601"},
                  timeout=60)
    assert r.status_code == 200, r.text


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files line in /proc/<pid>/limits")


def test_serve_raises_its_soft_open_files_limit_to_the_hard_one(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.fail(f"the hard open files limit ({hard}) leaves no room for this test")
    for _url, proc, _bind, _port in _serve(tmp_path, 256, 2048):
        assert _soft_limit(proc.pid) == 2048
