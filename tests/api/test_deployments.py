"""Deployments: locks, force, cancel with rollback, restart, timeouts, dependency order."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from scheduler.orchestrator import Orchestrator
from tests.api.test_marathon import SLEEPER, post, settle

DEPLOYMENT_KEYS = {"affectedApps", "currentActions", "currentStep", "id", "steps",
                   "totalSteps", "version", "affectedPods"}


def deployments(client: TestClient) -> list[dict[str, Any]]:
    r = client.get("/v2/deployments")
    assert r.status_code == 200
    return list(r.json())


def test_creating_an_app_shows_a_start_then_scale_deployment(client: TestClient,
                                                            orchestrator: Orchestrator) -> None:
    post(client, SLEEPER)
    [d] = deployments(client)
    assert set(d) <= DEPLOYMENT_KEYS
    assert d["affectedApps"] == ["/sleeper"]
    assert [s["actions"][0]["action"] for s in d["steps"]] == ["StartApplication",
                                                               "ScaleApplication"]
    assert d["totalSteps"] == 2 and d["currentStep"] == 1
    app = client.get("/v2/apps/sleeper").json()["app"]
    assert app["deployments"] == [{"id": d["id"]}]
    settle(orchestrator)
    assert deployments(client) == []
    assert client.get("/v2/apps/sleeper").json()["app"]["deployments"] == []


def test_a_locked_app_answers_409_naming_the_deployment_and_force_overrides(
        client: TestClient, orchestrator: Orchestrator) -> None:
    post(client, SLEEPER)
    [d] = deployments(client)
    r = client.put("/v2/apps/sleeper", json={"instances": 2})
    assert r.status_code == 409
    assert r.json()["deployments"] == [{"id": d["id"]}]
    r = client.put("/v2/apps/sleeper?force=true", json={"instances": 2})
    assert r.status_code == 200
    [d2] = deployments(client)
    assert d2["id"] == r.json()["deploymentId"] != d["id"]
    settle(orchestrator)
    assert len(orchestrator.tasks("/sleeper")) == 2


def test_cancel_rolls_back_to_the_previous_version(client: TestClient,
                                                   orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "mem": 16})
    settle(orchestrator)
    orchestrator.clock.advance(1)  # type: ignore[attr-defined]
    # An update that can never converge: its new tasks cannot be placed (too much memory).
    r = client.put("/v2/apps/sleeper", json={"mem": 999999})
    dep = r.json()["deploymentId"]
    orchestrator.run_once(orchestrator.clock.now())
    orchestrator.clock.advance(1)  # type: ignore[attr-defined]
    r = client.delete(f"/v2/deployments/{dep}")
    assert r.status_code == 200 and r.json()["deploymentId"] != dep
    assert client.get("/v2/apps/sleeper").json()["app"]["mem"] == 16
    settle(orchestrator)


def test_force_cancel_stops_in_place(client: TestClient, orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "mem": 16})
    settle(orchestrator)
    orchestrator.clock.advance(1)  # type: ignore[attr-defined]
    dep = client.put("/v2/apps/sleeper", json={"mem": 999999}).json()["deploymentId"]
    r = client.delete(f"/v2/deployments/{dep}?force=true")
    assert r.status_code == 202 and r.content == b""
    assert deployments(client) == []
    assert client.get("/v2/apps/sleeper").json()["app"]["mem"] == 999999


def test_cancel_of_a_creation_deletes_the_app(client: TestClient,
                                              orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "mem": 999999})
    [d] = deployments(client)
    assert client.delete(f"/v2/deployments/{d['id']}").status_code == 200
    assert client.get("/v2/apps/sleeper").status_code == 404
    settle(orchestrator)


def test_unknown_deployment_is_404(client: TestClient) -> None:
    assert client.delete("/v2/deployments/nope").status_code == 404


def test_restart_replaces_every_task(client: TestClient, orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "instances": 2,
                  "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}})
    settle(orchestrator)
    before = {t.id for t in orchestrator.tasks("/sleeper")}
    orchestrator.clock.advance(1)  # type: ignore[attr-defined]
    r = client.post("/v2/apps/sleeper/restart")
    assert r.status_code == 200 and "deploymentId" in r.json()
    [d] = deployments(client)
    assert d["steps"][0]["actions"][0]["action"] == "RestartApplication"
    settle(orchestrator, timeout=30)
    after = {t.id for t in orchestrator.tasks("/sleeper")}
    assert len(after) == 2 and not (before & after)


def test_a_deployment_that_times_out_fails_and_rolls_back(client: TestClient,
                                                          orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "mem": 16})
    settle(orchestrator)
    events = orchestrator.bus.subscribe()
    orchestrator.clock.advance(1)  # type: ignore[attr-defined]
    r = client.put("/v2/apps/sleeper", json={
        "mem": 999999,
        "upgradeStrategy": {"deploymentTimeoutSeconds": 30, "autoRollback": True}})
    dep = r.json()["deploymentId"]
    orchestrator.run_once(orchestrator.clock.now())
    assert [d["id"] for d in deployments(client)] == [dep]
    orchestrator.clock.advance(31)  # type: ignore[attr-defined]
    orchestrator.run_once(orchestrator.clock.now())
    seen = []
    while (e := events.get(timeout=0.1)) is not None:
        seen.append(e)
    failed = [e for e in seen if e.event_type == "deployment_failed"]
    assert failed and failed[0].payload["id"] == dep
    assert client.get("/v2/apps/sleeper").json()["app"]["mem"] == 16  # rolled back
    settle(orchestrator)


def test_an_app_waits_for_its_dependencies(client: TestClient,
                                           orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "id": "/api", "dependencies": ["/db"]})
    orchestrator.run_once(orchestrator.clock.now())
    assert orchestrator.tasks("/api") == []
    post(client, {**SLEEPER, "id": "/db"})
    settle(orchestrator)
    assert len(orchestrator.tasks("/db")) == 1 and len(orchestrator.tasks("/api")) == 1


def test_tasks_delete_kills_given_tasks_across_apps(client: TestClient,
                                                    orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "instances": 2})
    post(client, {**SLEEPER, "id": "/other"})
    settle(orchestrator)
    a = orchestrator.tasks("/sleeper")[0].id
    b = orchestrator.tasks("/other")[0].id
    r = client.post("/v2/tasks/delete", json={"ids": ["nope.1"]})
    assert r.status_code == 400
    assert all(t.kill_requested_at is None for t in orchestrator.tasks())
    r = client.post("/v2/tasks/delete?scale=true", json={"ids": [a, b]})
    assert r.status_code == 200 and "deploymentId" in r.json()
    assert client.get("/v2/apps/sleeper").json()["app"]["instances"] == 1
    assert client.get("/v2/apps/other").json()["app"]["instances"] == 0
    settle(orchestrator)
