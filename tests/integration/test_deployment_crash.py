"""Deployments survive kill -9: a 20-instance rolling upgrade interrupted several times
resumes and completes with exactly the planned tasks; cancelled deployments and deleted apps
stay gone after a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import Server, alive, executors, serving, wait_for

pytestmark = pytest.mark.integration

NODES = [{"hostname": f"node-{c}", "cpus": 4, "mem": 4096, "disk": 1000,
          "ports": f"{36000 + 100 * i}-{36000 + 100 * i + 49}"} for i, c in enumerate("ab")]
APP = {"id": "/fleet", "cmd": "exec sleep 600", "instances": 20, "cpus": 0.01, "mem": 1,
       "portDefinitions": [], "env": {"V": "1"},
       "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.2}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with serving(tmp_path, NODES) as srv:
        yield srv


def tasks(srv: Server) -> list[dict[str, Any]]:
    return list(srv.get("/v2/apps/fleet/tasks")["tasks"])


def no_deployments(srv: Server) -> bool:
    return srv.get("/v2/deployments") == []


def test_rolling_upgrade_resumes_after_kill_9(server: Server) -> None:
    assert httpx.post(server.url + "/v2/apps", json=APP).status_code == 201
    wait_for(lambda: no_deployments(server), 60, "the app to start")
    old = {t["id"] for t in tasks(server)}
    assert len(old) == 20

    r = httpx.put(server.url + "/v2/apps/fleet", json={"env": {"V": "2"}})
    assert r.status_code == 200
    new_version = r.json()["version"]
    for pause in (0.3, 0.8, 0.5):  # kill at several points of the upgrade
        time.sleep(pause)
        server.kill9()
        server.start()
    wait_for(lambda: no_deployments(server), 90, "the upgrade to complete after restarts")

    final = tasks(server)
    assert len(final) == 20
    assert {t["version"] for t in final} == {new_version}
    assert not ({t["id"] for t in final} & old)
    sandboxes = executors(server.state)
    # Exactly the plan: 20 old tasks and 20 replacements, no extra launch anywhere.
    assert len(sandboxes) == 40
    for tid, info in sandboxes.items():
        assert alive(int(info["pid"])) == (tid not in old), tid


def test_cancelled_deployments_and_deleted_apps_stay_gone(server: Server) -> None:
    assert httpx.post(server.url + "/v2/apps", json={**APP, "instances": 3}).status_code == 201
    wait_for(lambda: no_deployments(server), 60, "the app to start")
    dep = httpx.put(server.url + "/v2/apps/fleet",
                    json={"mem": 10**7}).json()["deploymentId"]  # can never be placed
    assert httpx.delete(server.url + f"/v2/deployments/{dep}?force=true").status_code == 202
    server.kill9()
    server.start()
    time.sleep(2)
    assert no_deployments(server)

    assert httpx.delete(server.url + "/v2/apps/fleet?force=true").status_code == 200
    server.kill9()
    server.start()
    time.sleep(2)
    assert httpx.get(server.url + "/v2/apps/fleet").status_code == 404
    wait_for(lambda: not any(alive(int(i["pid"])) for i in executors(server.state).values()),
             30, "every task of the deleted app to stop")
    wait_for(lambda: no_deployments(server), 30, "the stop deployment to finish")
