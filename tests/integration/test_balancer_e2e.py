"""End to end: a real `dromos serve`, real `python3 -m http.server` tasks, and a steady client
that only ever talks to the app's service port while the app is scaled, upgraded (rolling
restart) and a task is killed: the issue's measure is zero failed requests."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.runtimes.conftest import cleanup_local_state
from tests.support.server import Server, free_port, wait_for

pytestmark = pytest.mark.integration

NODES = [{"hostname": "node-lb", "cpus": 4, "mem": 4096, "disk": 1000, "ports": "34500-34599"}]
APP_ID = "/lb/web"
APP = {
    "id": APP_ID,
    "cmd": "exec python3 -m http.server $PORT0 --bind 127.0.0.1",
    "instances": 3,
    "cpus": 0.1,
    "mem": 32,
    "portDefinitions": [{"port": 0, "name": "http"}],
    "taskKillGracePeriodSeconds": 1,
    "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0,
                      "gracePeriodSeconds": 30, "intervalSeconds": 1, "timeoutSeconds": 1,
                      "maxConsecutiveFailures": 3}],
}

@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Server, int]]:
    nodes_file = tmp_path / "nodes.json"
    nodes_file.write_text(json.dumps(NODES))
    service_port = free_port()
    srv = Server(tmp_path / "state", nodes_file, "--service-ports",
                 f"{service_port}-{service_port + 9}")
    srv.start()
    yield srv, service_port
    srv.stop()
    cleanup_local_state(srv.state)


class SteadyClient:
    """Sequential GETs through the service port, a new connection each (so every request is
    balanced afresh); counts outcomes per phase."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.phase = "start"
        self.ok: dict[str, int] = {}
        self.failed: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            phase = self.phase
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/")
                r = conn.getresponse()
                body = r.read()
                if r.status == 200 and body.endswith(b"</html>\n"):
                    self.ok[phase] = self.ok.get(phase, 0) + 1
                else:
                    self.failed.setdefault(phase, []).append(f"HTTP {r.status}: {body[-40:]!r}")
            except (OSError, http.client.HTTPException) as e:
                self.failed.setdefault(phase, []).append(f"{type(e).__name__}: {e}")
            finally:
                conn.close()
            time.sleep(0.005)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def lines(srv: Server) -> list[list[str]]:
    r = httpx.get(srv.url + "/v2/tasks", headers={"Accept": "text/plain"}, timeout=10)
    r.raise_for_status()
    assert r.headers["content-type"].startswith("text/plain")
    return [line.split("\t") for line in r.text.splitlines()]


def backends(srv: Server, service_port: int) -> list[str]:
    """The app's backends as GET /v2/tasks (text/plain) lists them."""
    (line,) = [ln for ln in lines(srv) if ln[0] == "lb_web"]
    assert line[1] == str(service_port) and line[-1] == ""  # Marathon: a tab after each
    return line[2:-1]


def running_healthy(srv: Server) -> list[dict[str, Any]]:
    tasks = srv.get(f"/v2/apps{APP_ID}/tasks")["tasks"]
    return [t for t in tasks if t["state"] == "TASK_RUNNING" and t["healthCheckResults"]
            and all(h["alive"] for h in t["healthCheckResults"])]


def settled(srv: Server, service_port: int, n: int) -> bool:
    """n healthy tasks, all listed for the balancer, and no other task left."""
    tasks = srv.get(f"/v2/apps{APP_ID}/tasks")["tasks"]
    healthy = running_healthy(srv)
    listed = backends(srv, service_port)
    return (len(tasks) == n and len(healthy) == n
            and sorted(listed) == sorted(f"127.0.0.1:{t['ports'][0]}" for t in healthy))


def scale(srv: Server, n: int) -> None:
    r = httpx.put(srv.url + f"/v2/apps{APP_ID}", json={"instances": n}, timeout=10)
    assert r.status_code == 200, r.text


def test_steady_client_sees_no_failure_through_scaling_upgrade_and_kill(
        server: tuple[Server, int]) -> None:
    srv, service_port = server
    r = httpx.post(srv.url + "/v2/apps", json=APP, timeout=10)
    assert r.status_code == 201, r.text
    # The lowest port of the configured range, written into the definition as Marathon does.
    assert r.json()["portDefinitions"][0]["port"] == service_port
    assert srv.get(f"/v2/apps{APP_ID}")["app"]["ports"] == [service_port]

    wait_for(lambda: settled(srv, service_port, 3), 60, "3 healthy, balanced tasks")
    for t in srv.get(f"/v2/apps{APP_ID}/tasks")["tasks"]:
        assert t["servicePorts"] == [service_port]
    assert httpx.get(f"http://127.0.0.1:{service_port}/", timeout=5).status_code == 200

    client = SteadyClient(service_port)
    client.start()
    try:
        time.sleep(1)
        client.phase = "scale 3→5"
        scale(srv, 5)
        wait_for(lambda: settled(srv, service_port, 5), 60, "5 healthy, balanced tasks")
        time.sleep(1)

        client.phase = "scale 5→2"
        scale(srv, 2)
        wait_for(lambda: settled(srv, service_port, 2), 60, "2 tasks")
        time.sleep(1)

        client.phase = "rolling upgrade"
        before = {t["id"] for t in srv.get(f"/v2/apps{APP_ID}/tasks")["tasks"]}
        r = httpx.put(srv.url + f"/v2/apps{APP_ID}", json={"env": {"RELEASE": "2"}},
                      timeout=10)
        assert r.status_code == 200, r.text
        wait_for(lambda: settled(srv, service_port, 2) and not before & {
            t["id"] for t in running_healthy(srv)}, 60, "every task replaced")
        assert httpx.get(srv.url + "/v2/deployments", timeout=10).json() == []
        time.sleep(1)

        client.phase = "kill"
        victim = running_healthy(srv)[0]["id"]
        r = httpx.delete(srv.url + f"/v2/apps{APP_ID}/tasks/{victim}", timeout=10)
        assert r.status_code == 200, r.text
        wait_for(lambda: settled(srv, service_port, 2) and victim not in
                 {t["id"] for t in running_healthy(srv)}, 60, "the killed task replaced")
        time.sleep(1)
    finally:
        client.stop()

    total = sum(client.ok.values())
    assert total > 100, client.ok
    assert client.ok.get("scale 3→5", 0) > 20
    assert "start" not in client.failed and "scale 3→5" not in client.failed, client.failed
    assert client.failed == {}, client.failed
