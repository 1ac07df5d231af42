"""GET /v2/apps and /v2/apps/{id} from cached per-app fragments (issue 13, fast API): each
kind of change -- the definition, a task, health, a deployment, a delete -- shows in the next
GET after it, while an app nobody changed is served from its kept fragment."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.fragments import AppFragments, changed_apps, encode
from scheduler.clock import SystemClock
from scheduler.config import Credentials
from scheduler.events import EventBus
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.local import LocalRuntime
from scheduler.services.health import HealthMonitor
from scheduler.store.memory import MemoryStore
from tests.api.conftest import NODES
from tests.runtimes.conftest import cleanup_local_state

SLEEPER = {"id": "/web", "cmd": "sleep 600", "cpus": 0.1, "mem": 16, "instances": 0}
DEFAULT_VIEW = frozenset({"counts", "deployments"})
GET_VIEW = frozenset({"tasks", "counts", "deployments", "lasttaskfailure"})


def frags(client: TestClient) -> AppFragments:
    f: AppFragments = client.app.state.fragments  # type: ignore[attr-defined]
    return f


def listed(client: TestClient, app_id: str = "/web") -> dict[str, Any]:
    r = client.get("/v2/apps")
    assert r.status_code == 200
    [app] = [a for a in r.json()["apps"] if a["id"] == app_id]
    return dict(app)


def got(client: TestClient, app_id: str = "/web") -> dict[str, Any]:
    r = client.get(f"/v2/apps{app_id}")
    assert r.status_code == 200, r.text
    return dict(r.json()["app"])


def prime(client: TestClient, single_kept: bool = True) -> None:
    """Read both views, and check they are now kept (so the next GET would be served from
    them unless a change drops them). ``single_kept=False``: the app has running tasks with
    health checks, whose probe results are never kept in views that embed tasks."""
    listed(client), got(client)
    kept = frags(client).cached_app("/web", GET_VIEW)
    assert kept is not None if single_kept else kept is None
    assert frags(client).cached_list((None, None, None, DEFAULT_VIEW)) is not None


def pass_until(o: Orchestrator, done: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        o.run_once(o.clock.now())
        time.sleep(0.05)


def test_an_unchanged_app_is_served_from_its_fragment(client: TestClient) -> None:
    assert client.post("/v2/apps", json=SLEEPER).status_code == 201
    prime(client)
    kept = frags(client).cached_app("/web", GET_VIEW)
    assert client.get("/v2/apps/web").content == kept
    assert client.get("/v2/apps").content == frags(client).cached_list(
        (None, None, None, DEFAULT_VIEW))


def test_a_definition_change_shows_in_the_next_get(client: TestClient,
                                                   orchestrator: Orchestrator) -> None:
    assert client.post("/v2/apps", json=SLEEPER).status_code == 201
    orchestrator.run_once(orchestrator.clock.now())  # the create's deployment finishes
    prime(client)
    r = client.put("/v2/apps/web", json={"cmd": "sleep 601"})
    assert r.status_code == 200, r.text
    assert got(client)["cmd"] == "sleep 601"
    assert listed(client)["cmd"] == "sleep 601"
    assert got(client)["version"] == orchestrator.app("/web").version


def test_a_task_change_shows_in_the_next_get(client: TestClient,
                                             orchestrator: Orchestrator) -> None:
    assert client.post("/v2/apps", json={**SLEEPER, "instances": 1}).status_code == 201
    prime(client)
    assert got(client)["tasks"] == []
    orchestrator.run_once(orchestrator.clock.now())  # launches the task
    [task] = orchestrator.tasks("/web")
    app = got(client)
    assert [t["id"] for t in app["tasks"]] == [task.id]
    assert app["tasksStaged"] + app["tasksRunning"] == 1
    assert listed(client)["tasksStaged"] + listed(client)["tasksRunning"] == 1
    pass_until(orchestrator, lambda: orchestrator.tasks("/web")[0].state.value == "TASK_RUNNING",
               "the task to run")
    prime(client)
    r = client.delete(f"/v2/apps/web/tasks/{task.id}", params={"scale": "true"})
    assert r.status_code == 200, r.text
    assert got(client)["tasks"][0]["state"] == "TASK_KILLING"
    assert listed(client)["instances"] == 0


def test_a_deployment_and_a_delete_show_in_the_next_get(client: TestClient,
                                                        orchestrator: Orchestrator) -> None:
    assert client.post("/v2/apps", json=SLEEPER).status_code == 201
    prime(client)
    [deployment] = orchestrator.deployments()
    assert got(client)["deployments"] == [{"id": deployment.id}]
    orchestrator.run_once(orchestrator.clock.now())  # nothing to start: it finishes
    assert orchestrator.deployments() == []
    assert got(client)["deployments"] == []
    assert listed(client)["deployments"] == []
    prime(client)
    assert client.delete("/v2/apps/web").status_code == 200
    assert client.get("/v2/apps/web").status_code == 404
    assert client.get("/v2/apps").json() == {"apps": []}


@pytest.fixture
def healthy_world(tmp_path: Path) -> Iterator[tuple[Orchestrator, TestClient, Path]]:
    runtime = LocalRuntime(tmp_path / "local", NODES)
    clock = SystemClock()
    health = HealthMonitor(runtime, clock)
    o = Orchestrator(MemoryStore(), runtime, EventBus(), clock, health=health)
    health.start_in_thread()
    yield o, TestClient(create_app(o, Credentials())), tmp_path / "ok"
    health.stop()
    runtime.close()
    cleanup_local_state(tmp_path / "local")


def _flips(o: Orchestrator, alive: bool) -> list[Any]:
    return [e for e in o.bus.recent(500) if e.event_type == "health_status_changed_event"
            and e.payload["alive"] is alive]


def test_a_health_change_shows_in_the_next_get(
        healthy_world: tuple[Orchestrator, TestClient, Path]) -> None:
    o, client, flag = healthy_world
    flag.write_text("ok")
    check = {"protocol": "COMMAND", "command": {"value": f"test -f {flag}"},
             "intervalSeconds": 1, "gracePeriodSeconds": 0, "maxConsecutiveFailures": 0}
    r = client.post("/v2/apps", json={**SLEEPER, "instances": 1, "healthChecks": [check]})
    assert r.status_code == 201, r.text
    pass_until(o, lambda: _flips(o, True), "the task to turn healthy")
    prime(client, single_kept=False)
    assert listed(client)["tasksHealthy"] == 1
    assert listed(client)["tasksUnhealthy"] == 0

    flag.unlink()
    pass_until(o, lambda: _flips(o, False), "the task to turn unhealthy")
    app = listed(client)
    assert (app["tasksHealthy"], app["tasksUnhealthy"]) == (0, 1)
    [task] = got(client)["tasks"]
    assert task["healthCheckResults"][0]["alive"] is False


def test_listing_queries_are_kept_apart(client: TestClient) -> None:
    for i, cmd in enumerate(["sleep 600", "sleep 700"]):
        r = client.post("/v2/apps", json={**SLEEPER, "id": f"/a{i}", "cmd": cmd})
        assert r.status_code == 201
    assert [a["id"] for a in client.get("/v2/apps").json()["apps"]] == ["/a0", "/a1"]
    assert [a["id"] for a in client.get("/v2/apps", params={"cmd": "700"}).json()["apps"]] \
        == ["/a1"]
    with_tasks = client.get("/v2/apps", params={"embed": "apps.tasks"}).json()["apps"]
    assert [a["tasks"] for a in with_tasks] == [[], []]
    assert "tasks" not in client.get("/v2/apps").json()["apps"][0]


def test_fragments_are_strict_json() -> None:
    assert encode({"mem": math.inf, "cpus": math.nan, "n": [1.5]}) == \
        b'{"mem":null,"cpus":null,"n":[1.5]}'
    json.loads(encode({"x": -math.inf}), parse_constant=_refuse)


def _refuse(name: str) -> None:
    raise AssertionError(f"non-strict JSON constant {name}")


def test_which_apps_an_event_names(orchestrator: Orchestrator, client: TestClient) -> None:
    assert client.post("/v2/apps", json={**SLEEPER, "id": "/a"}).status_code == 201
    assert client.delete("/v2/apps/a", params={"force": "true"}).status_code == 200
    seen = {e.event_type: changed_apps(e) for e in orchestrator.bus.recent(50)}
    assert seen["api_post_event"] == (["/a"], False)
    assert seen["app_terminated_event"] == (["/a"], True)
    assert seen["deployment_info"] == (["/a"], False)
