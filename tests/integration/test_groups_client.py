"""Groups with the marathon 0.13.0 client, unchanged, against a real `dromos serve`:
create_group, get_group, list_groups, scale_group, update_group, rollback_group,
delete_group."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import marathon
import pytest
from marathon.models import MarathonApp
from marathon.models.group import MarathonGroup

from tests.support.server import Server, serving, wait_for

pytestmark = pytest.mark.integration

NODES = [{"hostname": f"node-{c}", "cpus": 2, "mem": 1024, "disk": 1000,
          "ports": f"{35000 + 100 * i}-{35000 + 100 * i + 49}"} for i, c in enumerate("ab")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Its own service-port range: the built-in balancer listens on those ports.
    tmp = tmp_path_factory.mktemp("groups-client")
    with serving(tmp, NODES, "--service-ports", "23000-23099") as srv:
        yield srv


def sleeper(app_id: str, **fields: Any) -> MarathonApp:
    return MarathonApp(id=app_id, cmd="sleep 600", cpus=0.05, mem=16, **fields)


def running(server: Server) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in server.get("/v2/tasks")["tasks"]:
        if t["state"] == "TASK_RUNNING":
            out[t["appId"]] = out.get(t["appId"], 0) + 1
    return out


def test_marathon_client_groups(server: Server) -> None:
    c = marathon.MarathonClient(server.url)
    group = MarathonGroup(id="/shop", groups=[
        MarathonGroup(id="db", apps=[sleeper("pg")]),
        MarathonGroup(id="web", dependencies=["../db"],
                      apps=[sleeper("front", instances=2)]),
    ])
    result = c.create_group(group)
    assert set(result) == {"deploymentId", "version"}

    got = c.get_group("shop")
    assert isinstance(got, MarathonGroup) and got.id == "/shop"
    assert [g.id for g in got.groups] == ["/shop/db", "/shop/web"]
    web = got.groups[1]
    assert web.dependencies == ["/shop/db"]
    assert [a.id for a in web.apps] == ["/shop/web/front"]
    assert web.apps[0].dependencies == ["/shop/db/pg"]
    assert [g.id for g in c.list_groups()] == ["/shop"]

    wait_for(lambda: running(server) == {"/shop/db/pg": 1, "/shop/web/front": 2}, 30,
             "the group's tasks")
    wait_for(lambda: not c.list_deployments(), 30, "the group deployment to finish")

    c.scale_group("shop", 2)
    wait_for(lambda: running(server) == {"/shop/db/pg": 2, "/shop/web/front": 4}, 30,
             "scaleBy 2")
    wait_for(lambda: not c.list_deployments(), 30, "the scaling to finish")

    fetched = c.get_group("shop/web")
    fetched.apps[0].mem = 24  # clients PUT back what they fetched
    c.update_group("shop/web", fetched)
    assert c.get_app("shop/web/front").mem == 24
    wait_for(lambda: not c.list_deployments(), 60, "the upgrade to finish")

    versions = httpx.get(server.url + "/v2/groups/shop/web/versions").json()
    assert len(versions) == 3  # created, scaled, updated
    c.rollback_group("shop/web", versions[-1], force=True)
    assert c.get_app("shop/web/front").mem == 16
    assert c.get_app("shop/web/front").instances == 2

    c.delete_group("shop", force=True)
    with pytest.raises(marathon.exceptions.NotFoundError):
        c.get_group("shop")
    assert c.list_apps() == []
    wait_for(lambda: running(server) == {}, 30, "every task of the group to stop")
