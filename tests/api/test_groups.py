"""/v2/groups through the API: shapes, codes, dependencies, versions, rollback, scaleBy."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scheduler.events import Event
from scheduler.orchestrator import Orchestrator
from scheduler.orchestrator.group_commands import PENDING_KEY, GroupManager

# marathon 0.13.0's MarathonGroup takes exactly these keyword arguments.
GROUP_KEYS = {"id", "apps", "groups", "pods", "dependencies", "version"}
APP_KEYS = frozenset(
    "acceptedResourceRoles args backoffFactor backoffSeconds cmd constraints container cpus "
    "dependencies deployments disk env executor healthChecks id role instances killSelection "
    "labels lastTaskFailure maxLaunchDelaySeconds mem ports requirePorts storeUrls "
    "taskRateLimit tasks tasksRunning tasksStaged tasksHealthy taskKillGracePeriodSeconds "
    "tasksUnhealthy upgradeStrategy unreachableStrategy uris user version versionInfo "
    "ipAddress fetch taskStats readinessChecks readinessCheckResults secrets portDefinitions "
    "residency gpus networks".split()
)


def app(app_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": app_id, "cmd": "sleep 600", "cpus": 0.05, "mem": 16, **fields}


PRODUCT = {"id": "/product", "groups": [
    {"id": "database", "apps": [app("mongo"), app("mysql")]},
    {"id": "service", "dependencies": ["../database"],
     "apps": [app("rails", dependencies=["play"]), app("play")]},
]}


def create(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v2/groups", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def app_ids(o: Orchestrator) -> list[str]:
    return [a.id for a in o.apps()]


def stored(o: Orchestrator, app_id: str) -> Any:
    return o.app(app_id)


def settle(o: Orchestrator, timeout: float = 20.0) -> None:
    """Run control-loop passes until no deployment is in progress (tasks really start)."""
    deadline = time.monotonic() + timeout
    while o.deployments():
        assert time.monotonic() < deadline, f"deployments stuck: {o.deployments()}"
        o.run_once(o.clock.now())
        time.sleep(0.02)


def check_shape(group: dict[str, Any]) -> None:
    assert set(group) == GROUP_KEYS
    assert group["pods"] == []
    assert group["version"].endswith("Z")
    for a in group["apps"]:
        assert set(a) <= APP_KEYS
    for g in group["groups"]:
        check_shape(g)


def flatten(group: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {a["id"]: a for a in group["apps"]}
    for g in group["groups"]:
        out.update(flatten(g))
    return out


# ------------------------------------------------------------------ create and read


def test_create_returns_a_deployment_and_the_group_reads_back(
        client: TestClient, orchestrator: Orchestrator) -> None:
    r = client.post("/v2/groups", json=PRODUCT)
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"deploymentId", "version"}
    assert r.headers["location"] == "/v2/groups/product"
    assert r.headers["marathon-deployment-id"] == body["deploymentId"]
    # the answered deployment is a real one: the last app written (a dependent)
    assert body["deploymentId"] in {d.id for d in orchestrator.deployments()}
    g = client.get("/v2/groups/product").json()
    check_shape(g)
    assert g["id"] == "/product" and g["version"] == body["version"]
    assert [s["id"] for s in g["groups"]] == ["/product/database", "/product/service"]
    service = g["groups"][1]
    assert service["dependencies"] == ["/product/database"]
    assert [a["id"] for a in service["apps"]] == ["/product/service/play",
                                                  "/product/service/rails"]
    assert client.get("/v2/groups/product/service").json() == service
    assert client.get("/v2/groups/product/versions").json() == [body["version"]]


def test_effective_dependencies_are_stored_on_each_app(
        client: TestClient, orchestrator: Orchestrator) -> None:
    create(client, PRODUCT)
    db = ["/product/database/mongo", "/product/database/mysql"]
    assert stored(orchestrator, "/product/service/play").dependencies == db
    assert stored(orchestrator, "/product/service/rails").dependencies == [
        "/product/service/play", *db]
    assert client.get("/v2/apps/product/service/rails").json()["app"]["dependencies"] == [
        "/product/service/play", *db]
    assert stored(orchestrator, "/product/database/mongo").dependencies == []


def test_apps_are_written_dependencies_first(client: TestClient,
                                             orchestrator: Orchestrator) -> None:
    sub = orchestrator.bus.subscribe()
    create(client, PRODUCT)
    events: list[Event] = []
    while (e := sub.get(timeout=0)) is not None:
        events.append(e)
    posted = [e.payload["uri"] for e in events if e.event_type == "api_post_event"]
    assert posted == ["/v2/apps/product/database/mongo", "/v2/apps/product/database/mysql",
                      "/v2/apps/product/service/play", "/v2/apps/product/service/rails"]
    assert [e.payload for e in events if e.event_type == "group_change_success"] == [
        {"groupId": "/product", "version": client.get("/v2/groups/product").json()["version"]}]


def test_dependents_wait_for_their_dependencies_at_runtime(
        client: TestClient, orchestrator: Orchestrator) -> None:
    create(client, {"id": "/stack", "apps": [app("db"), app("web", dependencies=["db"])]})
    orchestrator.run_once(orchestrator.clock.now())
    assert [t.app_id for t in orchestrator.tasks()] == ["/stack/db"]
    settle(orchestrator)
    assert sorted(t.app_id for t in orchestrator.tasks()) == ["/stack/db", "/stack/web"]


def test_root_group_lists_everything(client: TestClient) -> None:
    empty = client.get("/v2/groups").json()
    assert empty == {"id": "/", "apps": [], "groups": [], "pods": [], "dependencies": [],
                     "version": "1970-01-01T00:00:00.000Z"}
    assert client.post("/v2/apps", json=app("/loose")).status_code == 201
    assert client.post("/v2/apps", json=app("/implicit/web")).status_code == 201
    create(client, {"id": "/empty"})
    create(client, PRODUCT)
    root = client.get("/v2/groups").json()
    check_shape(root)
    assert root["id"] == "/"
    assert [a["id"] for a in root["apps"]] == ["/loose"]
    assert [g["id"] for g in root["groups"]] == ["/empty", "/implicit", "/product"]
    assert root["groups"][0]["apps"] == [] and root["groups"][0]["groups"] == []
    # a group exists while apps live under it, even if never created as a group
    assert client.get("/v2/groups/implicit").json()["apps"][0]["id"] == "/implicit/web"
    assert client.get("/v2/groups/implicit/versions").json() == []


def test_unknown_groups_are_404(client: TestClient) -> None:
    for method, path in [("GET", "/v2/groups/nope"), ("GET", "/v2/groups/nope/versions"),
                         ("DELETE", "/v2/groups/nope"), ("PATCH", "/v2/groups/nope"),
                         ("GET", "/v2/groups/nope/versions/2020-01-01T00:00:00.000Z")]:
        r = client.request(method, path, json={} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert "message" in r.json()
    assert client.get("/v2/groups/Bad_Id").status_code == 422


# ------------------------------------------------------------------ validation


def assert_nothing_stored(client: TestClient, o: Orchestrator, group_id: str) -> None:
    assert o.apps() == []
    assert client.get(f"/v2/groups{group_id}").status_code == 404
    assert client.get("/v2/groups").json()["groups"] == []
    assert o.store.get_meta("groups") in (None, [])


def test_cycles_are_422_and_nothing_is_stored(client: TestClient,
                                              orchestrator: Orchestrator) -> None:
    r = client.post("/v2/groups", json={"id": "/cyc", "groups": [
        {"id": "a", "dependencies": ["../b"], "apps": [app("x")]},
        {"id": "b", "apps": [app("y", dependencies=["/cyc/a/x"])]},
    ]})
    assert r.status_code == 422, r.text
    assert r.json() == {"message": "Object is not valid", "details": [
        {"path": "/groups/0/apps/0/dependencies",
         "errors": ["dependency cycle: /cyc/a/x -> /cyc/b/y -> /cyc/a/x"]}]}
    assert_nothing_stored(client, orchestrator, "/cyc")


def test_invalid_members_and_unknown_dependencies_are_422_with_paths(
        client: TestClient, orchestrator: Orchestrator) -> None:
    r = client.post("/v2/groups", json={"id": "/bad", "apps": [app("ok")], "groups": [
        {"id": "x", "apps": [app("a"), app("b", cpus=-1)]},
        {"id": "y", "dependencies": ["/nowhere"], "apps": [app("c")]},
    ]})
    assert r.status_code == 422
    assert [d["path"] for d in r.json()["details"]] == ["/groups/0/apps/1/cpus"]
    r = client.post("/v2/groups", json={"id": "/bad", "groups": [
        {"id": "y", "dependencies": ["/nowhere"], "apps": [app("c")]}]})
    assert r.status_code == 422
    assert r.json()["details"][0]["path"] == "/groups/0/dependencies/0"
    assert client.post("/v2/groups", json={"apps": []}).json()["details"][0]["path"] == "/id"
    assert_nothing_stored(client, orchestrator, "/bad")


def test_service_port_clash_is_422_before_anything_is_written(
        client: TestClient, orchestrator: Orchestrator) -> None:
    port = {"portDefinitions": [{"port": 10500}]}
    r = client.post("/v2/groups", json={"id": "/p", "apps": [app("a", **port),
                                                               app("b", **port)]})
    assert r.status_code == 422, r.text
    assert r.json()["details"][0]["path"] == "/apps/1/portDefinitions/0/port"
    assert_nothing_stored(client, orchestrator, "/p")


def test_conflicts_are_409(client: TestClient) -> None:
    create(client, PRODUCT)
    r = client.post("/v2/groups", json={"id": "/product"})
    assert r.status_code == 409 and "already created" in r.json()["message"]
    assert client.post("/v2/groups", json={"id": "/product/database/mongo"}).status_code == 409
    r = client.post("/v2/groups", json={"id": "/product/database/mongo/sub"})
    assert r.status_code == 409 and "An app with the path" in r.json()["message"]


def test_post_with_a_path_resolves_the_id_against_it(client: TestClient) -> None:
    r = client.post("/v2/groups/team", json={"id": "svc", "apps": [app("web")]})
    assert r.status_code == 201 and r.headers["location"] == "/v2/groups/team/svc"
    assert client.get("/v2/groups/team/svc").json()["apps"][0]["id"] == "/team/svc/web"


# ------------------------------------------------------------------ updates


def test_put_replaces_given_fields_and_deletes_apps_left_out(
        client: TestClient, orchestrator: Orchestrator) -> None:
    create(client, PRODUCT)
    r = client.put("/v2/groups/product/service?force=true",
                   json={"apps": [app("play", mem=32), app("new")]})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"deploymentId", "version"}
    assert app_ids(orchestrator) == ["/product/database/mongo", "/product/database/mysql",
                                     "/product/service/new", "/product/service/play"]
    assert stored(orchestrator, "/product/service/play").mem == 32
    # dependencies were not given: the group keeps its own, and they are inherited
    service = client.get("/v2/groups/product/service").json()
    assert service["dependencies"] == ["/product/database"]
    assert stored(orchestrator, "/product/service/new").dependencies == [
        "/product/database/mongo", "/product/database/mysql"]
    # groups not given are kept; given ones are updated; left-out ones deleted
    r = client.put("/v2/groups/product?force=true", json={"groups": [
        {"id": "database", "apps": [app("mongo")]}]})
    assert r.status_code == 200
    assert app_ids(orchestrator) == ["/product/database/mongo"]
    assert [g["id"] for g in client.get("/v2/groups/product").json()["groups"]] == [
        "/product/database"]


def test_put_creates_a_missing_group(client: TestClient) -> None:
    r = client.put("/v2/groups/fresh", json={"apps": [app("a")]})
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/v2/groups/fresh"
    assert client.get("/v2/groups/fresh").json()["apps"][0]["id"] == "/fresh/a"


def test_put_of_an_unchanged_definition_writes_no_app(
        client: TestClient, orchestrator: Orchestrator) -> None:
    create(client, PRODUCT)
    before = {a.id: a.version for a in orchestrator.apps()}
    assert client.put("/v2/groups/product", json=PRODUCT).status_code == 200
    # what a client fetched, PUT back whole (read-only fields, effective dependencies,
    # assigned service ports and all)
    fetched = client.get("/v2/groups/product").json()
    assert client.put("/v2/groups/product", json=fetched).status_code == 200
    assert {a.id: a.version for a in orchestrator.apps()} == before
    assert len(client.get("/v2/groups/product/versions").json()) == 3


def test_patch_merges_apps_by_id_and_keeps_the_rest(
        client: TestClient, orchestrator: Orchestrator) -> None:
    create(client, PRODUCT)
    r = client.patch("/v2/groups/product/service?force=true", json={
        "apps": [{"id": "play", "instances": 2}, app("extra")]})
    assert r.status_code == 200, r.text
    play = stored(orchestrator, "/product/service/play")
    assert play.instances == 2 and play.cmd == "sleep 600"
    assert "/product/service/rails" in app_ids(orchestrator)
    assert "/product/service/extra" in app_ids(orchestrator)
    # the declared dependencies are what merges start from: dropping the group's
    # dependency drops the inherited ones, the app's own stay
    r = client.patch("/v2/groups/product/service?force=true", json={"dependencies": []})
    assert r.status_code == 200
    assert stored(orchestrator, "/product/service/rails").dependencies == [
        "/product/service/play"]
    assert stored(orchestrator, "/product/service/play").dependencies == []
    r = client.patch("/v2/groups/product/service", json={"apps": [{"id": "play", "cpus": -1}]})
    assert r.status_code == 422 and r.json()["details"][0]["path"] == "/apps/0/cpus"


def test_dependents_follow_changes_of_the_group_they_depend_on(
        client: TestClient, orchestrator: Orchestrator) -> None:
    create(client, PRODUCT)
    r = client.patch("/v2/groups/product/database?force=true", json={"apps": [app("redis")]})
    assert r.status_code == 200
    db = ["/product/database/mongo", "/product/database/mysql", "/product/database/redis"]
    assert stored(orchestrator, "/product/service/play").dependencies == db
    assert client.delete("/v2/groups/product/database?force=true").status_code == 200
    # no dependent is left waiting for an app that is gone
    assert stored(orchestrator, "/product/service/play").dependencies == []
    assert stored(orchestrator, "/product/service/rails").dependencies == [
        "/product/service/play"]


def test_locked_apps_are_409_unless_forced(client: TestClient,
                                           orchestrator: Orchestrator) -> None:
    create(client, PRODUCT)
    r = client.put("/v2/groups/product", json={"scaleBy": 2})
    assert r.status_code == 409, r.text
    assert r.json()["deployments"] and all("id" in d for d in r.json()["deployments"])
    assert all(a.instances == 1 for a in orchestrator.apps())  # nothing half done
    assert client.put("/v2/groups/product?force=true", json={"scaleBy": 2}).status_code == 200
    assert all(a.instances == 2 for a in orchestrator.apps())


def test_scale_by_multiplies_instances_rounding_up_without_restarts(
        client: TestClient, orchestrator: Orchestrator) -> None:
    create(client, {"id": "/s", "apps": [app("a", instances=3), app("b", instances=1)],
                    "groups": [{"id": "deep", "apps": [app("c", instances=2)]}]})
    settle(orchestrator)
    config = {a.id: orchestrator.version_info(a.id)["lastConfigChangeAt"]
              for a in orchestrator.apps()}
    r = client.put("/v2/groups/s", json={"scaleBy": 1.5})
    assert r.status_code == 200, r.text
    assert {a.id: a.instances for a in orchestrator.apps()} == {
        "/s/a": 5, "/s/b": 2, "/s/deep/c": 3}
    # a scaling, not a new configuration: running tasks stay
    assert {a.id: orchestrator.version_info(a.id)["lastConfigChangeAt"]
            for a in orchestrator.apps()} == config
    assert r.json()["version"] == client.get("/v2/groups/s/versions").json()[0]
    r = client.put("/v2/groups/s", json={"scaleBy": 2, "apps": []})
    assert r.status_code == 422 and r.json()["details"][0]["path"] == "/scaleBy"
    assert client.put("/v2/groups/s", json={"scaleBy": -1}).status_code == 422
    assert client.put("/v2/groups/nope", json={"scaleBy": 2}).status_code == 404


def test_rollback_restores_the_whole_subtree(client: TestClient,
                                             orchestrator: Orchestrator) -> None:
    v1 = create(client, PRODUCT)["version"]
    client.put("/v2/groups/product/service?force=true",
               json={"apps": [app("play", mem=64), app("new")]})
    versions = client.get("/v2/groups/product/versions").json()
    assert versions[-1] == v1 and len(versions) == 1  # /product itself changed once
    r = client.put("/v2/groups/product?force=true", json={"version": v1})
    assert r.status_code == 200, r.text
    assert r.json()["version"] > v1
    assert app_ids(orchestrator) == ["/product/database/mongo", "/product/database/mysql",
                                     "/product/service/play", "/product/service/rails"]
    assert stored(orchestrator, "/product/service/play").mem == 16
    assert client.get("/v2/groups/product/versions").json() == [r.json()["version"], v1]
    # the marathon client's path for the same thing
    sv = client.get("/v2/groups/product/service/versions").json()
    r = client.put(f"/v2/groups/product/service/versions/{sv[1]}?force=true")
    assert r.status_code == 200, r.text
    assert "/product/service/new" in app_ids(orchestrator)
    assert client.put("/v2/groups/product", json={"version": "2000-01-01T00:00:00.000Z"}
                      ).status_code == 404


def test_a_recorded_version_reads_back(client: TestClient) -> None:
    v1 = create(client, PRODUCT)["version"]
    g = client.get(f"/v2/groups/product/versions/{v1}").json()
    check_shape(g)
    assert sorted(flatten(g)) == ["/product/database/mongo", "/product/database/mysql",
                                  "/product/service/play", "/product/service/rails"]
    # declared dependencies, as written
    assert flatten(g)["/product/service/rails"]["dependencies"] == ["/product/service/play"]


def test_delete_removes_apps_dependents_first_and_the_versions(
        client: TestClient, orchestrator: Orchestrator) -> None:
    create(client, {"id": "/chain", "apps": [
        app("c", dependencies=["b"]), app("a"), app("b", dependencies=["a"])]})
    client.post("/v2/apps", json=app("/elsewhere"))
    sub = orchestrator.bus.subscribe()
    r = client.delete("/v2/groups/chain?force=true")
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"deploymentId", "version"}
    stopped = []
    while (e := sub.get(timeout=0)) is not None:
        if e.event_type == "app_terminated_event":
            stopped.append(e.payload["appId"])
    assert stopped == ["/chain/c", "/chain/b", "/chain/a"]
    assert app_ids(orchestrator) == ["/elsewhere"]
    assert client.get("/v2/groups/chain").status_code == 404
    assert client.get("/v2/groups/chain/versions").status_code == 404
    # re-created, it starts a new history
    create(client, {"id": "/chain"})
    assert len(client.get("/v2/groups/chain/versions").json()) == 1


def test_delete_root_deletes_everything(client: TestClient, orchestrator: Orchestrator) -> None:
    create(client, PRODUCT)
    client.post("/v2/apps", json=app("/loose"))
    assert client.delete("/v2/groups?force=true").status_code == 200
    assert orchestrator.apps() == []
    assert client.get("/v2/groups").json()["groups"] == []


def test_a_change_interrupted_by_a_crash_is_finished_on_restart(
        client: TestClient, orchestrator: Orchestrator, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Crash(BaseException):
        """Stands for the process dying: no handler runs."""

    real = orchestrator.update_app
    calls = []

    def dying(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0].id)
        if len(calls) == 3:
            raise Crash
        return real(*args, **kwargs)

    monkeypatch.setattr(orchestrator, "update_app", dying)
    with pytest.raises(Crash):
        GroupManager(orchestrator).create(PRODUCT)
    assert len(orchestrator.apps()) == 2
    assert orchestrator.store.get_meta(PENDING_KEY) is not None
    monkeypatch.setattr(orchestrator, "update_app", real)
    GroupManager(orchestrator)  # a restart: the manager finishes what was committed
    assert len(orchestrator.apps()) == 4
    assert orchestrator.store.get_meta(PENDING_KEY) is None
    assert stored(orchestrator, "/product/service/play").dependencies == [
        "/product/database/mongo", "/product/database/mysql"]
