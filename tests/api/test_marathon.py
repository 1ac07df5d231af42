"""The /v2 surface: shapes, codes and semantics from the Marathon reference."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from scheduler.config import Credentials
from scheduler.orchestrator import Orchestrator

# The exact key sets strict Marathon clients accept (reference: "Response objects").
APP_KEYS = frozenset(
    "acceptedResourceRoles args backoffFactor backoffSeconds cmd constraints container cpus "
    "dependencies deployments disk env executor healthChecks id role instances killSelection "
    "labels lastTaskFailure maxLaunchDelaySeconds mem ports requirePorts storeUrls "
    "taskRateLimit tasks tasksRunning tasksStaged tasksHealthy taskKillGracePeriodSeconds "
    "tasksUnhealthy upgradeStrategy unreachableStrategy uris user version versionInfo "
    "ipAddress fetch taskStats readinessChecks readinessCheckResults secrets portDefinitions "
    "residency gpus networks".split()
)
TASK_KEYS = frozenset(
    "appId healthCheckResults host id ports servicePorts slaveId stagedAt startedAt version "
    "ipAddresses state localVolumes region zone role".split()
)
QUEUE_KEYS = frozenset(
    "app overdue count delay since processedOffersSummary lastUnusedOffers".split()
)
INFO_KEYS = frozenset(
    "event_subscriber frameworkId http_config leader marathon_config name version elected "
    "zookeeper_config buildref".split()
)

SLEEPER = {"id": "/sleeper", "cmd": "sleep 600", "cpus": 0.1, "mem": 16}


def settle(o: Orchestrator, timeout: float = 15.0) -> None:
    """Run passes until no deployment is in progress (tasks start for real meanwhile)."""
    deadline = time.monotonic() + timeout
    while o.deployments():
        assert time.monotonic() < deadline, f"deployments stuck: {o.deployments()}"
        o.run_once(o.clock.now())
        time.sleep(0.02)


def post(client: TestClient, body: dict[str, Any]) -> Any:
    r = client.post("/v2/apps", json=body)
    assert r.status_code == 201, r.text
    return r


def test_post_returns_201_location_and_the_app(client: TestClient) -> None:
    r = post(client, SLEEPER)
    assert r.headers["location"] == "/v2/apps/sleeper"
    body = r.json()
    assert body["id"] == "/sleeper"
    assert set(body) <= APP_KEYS
    assert body["version"].endswith("Z")


def test_duplicate_id_is_409(client: TestClient) -> None:
    post(client, SLEEPER)
    r = client.post("/v2/apps", json=SLEEPER)
    assert r.status_code == 409
    assert "already exists" in r.json()["message"]


def test_malformed_json_is_400(client: TestClient) -> None:
    r = client.post("/v2/apps", content=b'{"id": ', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["message"] == "Invalid JSON"


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded",
                                          "text/plain"], ids=["none", "curl-d", "text"])
@pytest.mark.parametrize(("path", "body"), [
    ("/v2/apps", SLEEPER), ("/v2/groups", {"id": "/g", "apps": [SLEEPER | {"id": "/g/s"}]}),
    ("/scheduler/iso8601", {"name": "j", "command": "true",
                            "schedule": "R/2030-01-01T00:00:00Z/PT1H"}),
], ids=["apps", "groups", "jobs"])
def test_a_body_not_sent_as_json_is_415_saying_which_header(
        client: TestClient, path: str, body: dict[str, Any], content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client.post(path, content=json.dumps(body).encode(), headers=headers)
    assert r.status_code == 415
    assert "Content-Type: application/json" in r.json()["message"]
    assert f"got Content-Type: {content_type or 'none'}" in r.json()["message"]
    assert client.get("/v2/apps").json()["apps"] == []
    assert client.get("/scheduler/jobs").json() == []
    # A JSON body that is not an object is still a 422 naming the document.
    r = client.post(path, json=[body])
    assert r.status_code == 422 and r.json()["details"][0]["path"] == "/"


def test_invalid_app_is_422_with_paths_and_nothing_is_stored(client: TestClient) -> None:
    r = client.post("/v2/apps", json={"id": "/bad", "cmd": "x",
                                      "upgradeStrategy": {"minimumHealthCapacity": 2}})
    assert r.status_code == 422
    assert r.json()["message"] == "Object is not valid"
    paths = [d["path"] for d in r.json()["details"]]
    assert "/upgradeStrategy/minimumHealthCapacity" in paths
    assert client.get("/v2/apps/bad").status_code == 404
    assert client.get("/v2/apps").json() == {"apps": []}


def test_unknown_app_is_404(client: TestClient) -> None:
    r = client.get("/v2/apps/nope")
    assert r.status_code == 404
    assert r.json() == {"message": "App '/nope' does not exist"}


def test_tasks_start_and_appear_with_marathon_shapes(client: TestClient,
                                                     orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "instances": 2})
    orchestrator.run_once(orchestrator.clock.now())
    orchestrator.run_once(orchestrator.clock.now())
    app = client.get("/v2/apps/sleeper").json()["app"]
    assert set(app) <= APP_KEYS
    assert app["tasksRunning"] == 2
    assert len(app["tasks"]) == 2
    for t in app["tasks"]:
        assert set(t) <= TASK_KEYS
        assert t["state"] == "TASK_RUNNING"
        assert t["appId"] == "/sleeper"
    tasks = client.get("/v2/apps/sleeper/tasks").json()["tasks"]
    assert {t["id"] for t in tasks} == {t["id"] for t in app["tasks"]}
    assert len(client.get("/v2/tasks").json()["tasks"]) == 2
    assert len(client.get("/v2/tasks?status=running").json()["tasks"]) == 2
    assert client.get("/v2/tasks?status=staging").json()["tasks"] == []


def test_put_scales_without_touching_running_tasks(client: TestClient,
                                                   orchestrator: Orchestrator) -> None:
    post(client, SLEEPER)
    settle(orchestrator)
    before = {t.id for t in orchestrator.tasks("/sleeper")}
    orchestrator.clock.advance(1)  # type: ignore[attr-defined]
    r = client.put("/v2/apps/sleeper", json={"instances": 3})
    assert r.status_code == 200
    assert set(r.json()) == {"deploymentId", "version"}
    assert r.headers["marathon-deployment-id"] == r.json()["deploymentId"]
    orchestrator.run_once(orchestrator.clock.now())
    after = {t.id for t in orchestrator.tasks("/sleeper")}
    assert before < after and len(after) == 3


def test_put_merges_by_default_and_partial_update_false_replaces(
        client: TestClient, orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "labels": {"team": "ds"}, "mem": 32})
    settle(orchestrator)
    client.put("/v2/apps/sleeper", json={"instances": 0})
    settle(orchestrator)
    app = client.get("/v2/apps/sleeper").json()["app"]
    assert app["labels"] == {"team": "ds"} and app["mem"] == 32 and app["instances"] == 0
    client.put("/v2/apps/sleeper?partialUpdate=False", json={"cmd": "sleep 5"})
    app = client.get("/v2/apps/sleeper").json()["app"]
    assert app["labels"] == {} and app["mem"] == 128 and app["instances"] == 1


def test_put_creates_with_201(client: TestClient) -> None:
    r = client.put("/v2/apps/fresh", json={"cmd": "sleep 1", "instances": 0})
    assert r.status_code == 201
    assert client.get("/v2/apps/fresh").status_code == 200


def test_patch_merges(client: TestClient, orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "instances": 0})
    settle(orchestrator)
    assert client.patch("/v2/apps/sleeper", json={"labels": {"a": "b"}}).status_code == 200
    assert client.get("/v2/apps/sleeper").json()["app"]["labels"] == {"a": "b"}


def test_a_client_can_put_back_what_it_fetched(client: TestClient,
                                               orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "instances": 0})
    settle(orchestrator)
    fetched = client.get("/v2/apps/sleeper").json()["app"]
    fetched["mem"] = 48
    r = client.put("/v2/apps/sleeper", json=fetched)
    assert r.status_code == 200, r.text
    assert client.get("/v2/apps/sleeper").json()["app"]["mem"] == 48


def test_versions_are_kept_and_rollback_works(client: TestClient,
                                              orchestrator: Orchestrator) -> None:
    first = post(client, {**SLEEPER, "instances": 0}).json()["version"]
    settle(orchestrator)
    orchestrator.clock.advance(1)  # type: ignore[attr-defined]
    client.put("/v2/apps/sleeper", json={"mem": 64})
    settle(orchestrator)
    versions = client.get("/v2/apps/sleeper/versions").json()["versions"]
    assert len(versions) == 2 and versions[-1] == first
    old = client.get(f"/v2/apps/sleeper/versions/{first}").json()
    assert old["mem"] == 16
    orchestrator.clock.advance(1)  # type: ignore[attr-defined]
    assert client.put("/v2/apps/sleeper", json={"version": first}).status_code == 200
    assert client.get("/v2/apps/sleeper").json()["app"]["mem"] == 16
    assert len(client.get("/v2/apps/sleeper/versions").json()["versions"]) == 3


def test_bad_update_is_rejected_and_the_app_is_unchanged(client: TestClient,
                                                         orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "instances": 0})
    settle(orchestrator)
    r = client.put("/v2/apps/sleeper", json={"cpus": -1})
    assert r.status_code == 422
    assert [d["path"] for d in r.json()["details"]] == ["/cpus"]
    assert client.get("/v2/apps/sleeper").json()["app"]["cpus"] == 0.1


def test_delete_app_kills_its_tasks(client: TestClient, orchestrator: Orchestrator) -> None:
    post(client, SLEEPER)
    settle(orchestrator)
    r = client.delete("/v2/apps/sleeper")
    assert r.status_code == 200 and "deploymentId" in r.json()
    assert client.get("/v2/apps/sleeper").status_code == 404
    assert all(t.state.value == "TASK_KILLING" for t in orchestrator.tasks())


def test_kill_task_with_scale_lowers_instances(client: TestClient,
                                               orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "instances": 2})
    orchestrator.run_once(orchestrator.clock.now())
    victim = orchestrator.tasks("/sleeper")[0].id
    r = client.delete(f"/v2/apps/sleeper/tasks/{victim}?scale=true")
    assert r.status_code == 200
    assert client.get("/v2/apps/sleeper").json()["app"]["instances"] == 1


def test_kill_unknown_task_is_404(client: TestClient) -> None:
    post(client, {**SLEEPER, "instances": 0})
    assert client.delete("/v2/apps/sleeper/tasks/sleeper.nope").status_code == 404


def test_kill_task_without_scale_gets_it_replaced(client: TestClient,
                                                  orchestrator: Orchestrator) -> None:
    post(client, SLEEPER)
    orchestrator.run_once(orchestrator.clock.now())
    victim = orchestrator.tasks("/sleeper")[0].id
    killed = client.delete(f"/v2/apps/sleeper/tasks/{victim}").json()["task"]
    assert killed["id"] == victim and killed["state"] == "TASK_KILLING"
    orchestrator.run_once(orchestrator.clock.now())
    ids = {t.id for t in orchestrator.tasks("/sleeper") if t.kill_requested_at is None}
    assert len(ids) == 1 and victim not in ids


def test_queue_explains_why_instances_wait(client: TestClient,
                                           orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "instances": 4, "constraints": [["hostname", "UNIQUE"]]})
    orchestrator.run_once(orchestrator.clock.now())
    queue = client.get("/v2/queue").json()["queue"]
    assert len(queue) == 1
    item = queue[0]
    assert set(item) <= QUEUE_KEYS
    assert item["count"] == 1
    summary = item["processedOffersSummary"]
    by_reason = {r["reason"]: r for r in summary["rejectSummaryLastOffers"]}
    assert by_reason["UnfulfilledConstraint"]["declined"] == 3
    assert "UnfulfilledConstraint" in by_reason and summary["processedOffersCount"] == 3


def test_queue_is_empty_when_nothing_waits(client: TestClient) -> None:
    assert client.get("/v2/queue").json() == {"queue": []}


def test_label_selectors_and_cmd_filter(client: TestClient) -> None:
    post(client, {"id": "/a", "cmd": "sleep 1", "instances": 0, "labels": {"tier": "web"}})
    post(client, {"id": "/b", "cmd": "true", "instances": 0, "labels": {"tier": "db"}})
    post(client, {"id": "/c", "cmd": "sleep 2", "instances": 0})

    def ids(q: str) -> list[str]:
        return [a["id"] for a in client.get(f"/v2/apps?{q}").json()["apps"]]

    assert ids("label=tier") == ["/a", "/b"]
    assert ids("label=tier==web") == ["/a"]
    assert ids("label=tier!=web") == ["/b", "/c"]
    assert ids("label=tier in (web, db)") == ["/a", "/b"]
    assert ids("label=tier notin (web)") == ["/b", "/c"]
    assert ids("cmd=sleep") == ["/a", "/c"]
    assert ids("id=b") == ["/b"]


def test_embed_tasks_in_list(client: TestClient, orchestrator: Orchestrator) -> None:
    post(client, SLEEPER)
    orchestrator.run_once(orchestrator.clock.now())
    plain = client.get("/v2/apps").json()["apps"][0]
    assert "tasks" not in plain and plain["tasksStaged"] + plain["tasksRunning"] == 1
    embedded = client.get("/v2/apps?embed=apps.tasks").json()["apps"][0]
    assert len(embedded["tasks"]) == 1


def test_info_leader_ping(client: TestClient) -> None:
    info = client.get("/v2/info").json()
    assert set(info) <= INFO_KEYS
    assert info["name"] == "dromos" and info["elected"] is True
    # Nested objects are built from fixed keyword sets by strict clients too.
    assert set(info["marathon_config"]) <= {"master", "framework_name", "hostname",
                                             "task_launch_timeout", "features"}
    assert info["marathon_config"]["master"] == "local (available)"
    assert set(info["http_config"]) <= {"assets_path", "http_port", "https_port"}
    assert client.get("/dromos/info").json()["runtime"] == {
        "name": "local", "available": True, "error": None}
    assert client.get("/dromos/info").json()["healthSource"] is None  # no health monitor here
    assert client.get("/v2/leader").json() == {"leader": "127.0.0.1:8080"}
    assert client.get("/ping").text == "pong"


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v2/apps" in spec["paths"]


def test_status_page_escapes_user_text(client: TestClient, orchestrator: Orchestrator) -> None:
    post(client, {**SLEEPER, "instances": 0, "cmd": "echo '<script>alert(1)</script>'"})
    page = client.get("/").text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;" in page
    assert "/sleeper" in page and "node-a" in page


def test_credentials_guard_every_route_but_ping(orchestrator: Orchestrator) -> None:
    creds = Credentials(token="s3cret", basic=("ops", "pw"))
    c = TestClient(create_app(orchestrator, creds))
    assert c.get("/ping").status_code == 200
    assert c.get("/v2/apps").status_code == 401
    assert c.post("/v2/apps", json=SLEEPER).status_code == 401
    assert c.get("/v2/apps", headers={"Authorization": "token=wrong"}).status_code == 401
    assert c.get("/v2/apps", headers={"Authorization": "token=s3cret"}).status_code == 200
    assert c.get("/v2/apps", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/v2/apps", auth=("ops", "pw")).status_code == 200
    assert c.get("/v2/apps", auth=("ops", "nope")).status_code == 401
    assert orchestrator.apps() == []


def test_a_user_the_local_runtime_does_not_know_is_a_422_and_nothing_is_stored(
        client: TestClient) -> None:
    """Issue 11, defect 6: ``user`` was accepted and ignored (the task ran as root)."""
    r = client.post("/v2/apps", json={"id": "/as-ghost", "cmd": "sleep 1", "cpus": 0.1,
                                      "mem": 16, "user": "dromos-no-such-user"})
    assert r.status_code == 422, r.text
    assert r.json()["details"] == [{"path": "/user", "errors": [
        "there is no user 'dromos-no-such-user' on this machine"]}]
    assert client.get("/v2/apps/as-ghost").status_code == 404
