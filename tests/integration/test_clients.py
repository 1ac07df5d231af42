"""Existing client libraries, unchanged, against a real `dromos serve`:
marathon 0.13.0 (the common Python Marathon client) and chronos-python."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import marathon
import pytest
from chronos import ChronosClient
from marathon.models import MarathonApp

from tests.support.server import Server, serving, wait_for

pytestmark = pytest.mark.integration

NODES = [{"hostname": f"node-{c}", "cpus": 2, "mem": 1024, "disk": 1000,
          "ports": f"{34000 + 100 * i}-{34000 + 100 * i + 49}"} for i, c in enumerate("ab")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("clients"), NODES) as srv:
        yield srv


def test_marathon_client_full_cycle(server: Server) -> None:
    c = marathon.MarathonClient(server.url)
    assert c.ping().strip() in (b"pong", "pong", b'"pong"')
    app = c.create_app("client-app", MarathonApp(cmd="sleep 600", cpus=0.1, mem=16,
                                                 instances=2, labels={"via": "client"}))
    assert app.id == "/client-app"

    def running() -> Any:
        a = c.get_app("client-app", embed_tasks=True)
        return a if a.tasks_running == 2 else None

    got = wait_for(running, 30, "two running tasks via the client")
    assert {t.app_id for t in got.tasks} == {"/client-app"}
    wait_for(lambda: not c.list_deployments(), 30, "the creating deployment to finish")
    assert [a.id for a in c.list_apps(label="via==client")] == ["/client-app"]
    assert len(c.list_tasks("client-app")) == 2
    victim = c.list_tasks("client-app")[0].id
    c.kill_task("client-app", victim)  # replaced: the app still wants two
    wait_for(lambda: victim not in {t.id for t in c.list_tasks("client-app")}
             and c.get_app("client-app").tasks_running == 2, 30, "a replacement")
    wait_for(lambda: not c.list_deployments(), 30, "deployments to settle")
    assert c.kill_given_tasks([c.list_tasks("client-app")[0].id], scale=True)
    wait_for(lambda: c.get_app("client-app").instances == 1, 30, "scale via tasks/delete")
    wait_for(lambda: not c.list_deployments(), 30, "deployments to settle")
    c.scale_app("client-app", instances=2)
    wait_for(lambda: c.get_app("client-app").tasks_running == 2, 30, "scale back up")
    c.scale_app("client-app", instances=1)
    wait_for(lambda: c.get_app("client-app").tasks_running == 1, 30, "scale down")
    wait_for(lambda: not c.list_deployments(), 30, "the scaling deployment to finish")
    fetched = c.get_app("client-app")
    fetched.mem = 24  # clients PUT back the whole object they fetched
    c.update_app("client-app", fetched)
    assert c.get_app("client-app").mem == 24
    deps = c.list_deployments()
    assert [d.affected_apps for d in deps] == [["/client-app"]]
    wait_for(lambda: not c.list_deployments(), 60, "the rolling upgrade to finish")
    c.restart_app("client-app")
    wait_for(lambda: not c.list_deployments(), 60, "the restart to finish")
    versions = c.list_versions("client-app")
    assert len(versions) >= 4
    c.rollback_app("client-app", versions[-1])
    wait_for(lambda: c.get_app("client-app").mem == 16, 30, "rollback to the first version")
    wait_for(lambda: not c.list_deployments(), 60, "the rollback to finish")
    assert c.get_info().name == "dromos"
    assert isinstance(c.list_queue(), list)
    c.delete_app("client-app")
    with pytest.raises(marathon.exceptions.NotFoundError):
        c.get_app("client-app")


def test_chronos_client_full_cycle(server: Server) -> None:
    host = server.url.removeprefix("http://")
    c = ChronosClient(host)  # 3.x paths: /v1/scheduler/...
    base = {"command": "true", "owner": "ds@example.com", "cpus": 0.1, "mem": 16,
            "epsilon": "PT30S", "disabled": False}
    c.add({**base, "name": "etl", "schedule": "R/2030-01-01T00:00:00Z/P1D"})
    c.add({**base, "name": "train", "parents": ["etl"]})
    assert sorted(j["name"] for j in c.list()) == ["etl", "train"]
    assert [j["name"] for j in c.search(name="tra")] == ["train"]
    c.run("etl")

    def etl_done() -> Any:
        stat = c.job_stat("etl")
        return stat if stat["histogram"]["count"] >= 1 else None

    wait_for(etl_done, 30, "etl's manual run to succeed")
    # train depends on etl: it runs after etl's success.
    wait_for(lambda: c.job_stat("train")["histogram"]["count"] >= 1, 30, "train to run")
    graph = c.scheduler_graph()
    assert "link,etl,train" in str(graph)
    assert isinstance(c.scheduler_stat_99th(), list)
    c.delete("train")
    c.delete("etl")
    assert c.list() == []


def test_chronos_client_2x_paths(server: Server) -> None:
    c = ChronosClient(server.url.removeprefix("http://"), scheduler_api_version=None)
    base = {"name": "old-style", "command": "true", "owner": "x@example.com",
            "epsilon": "PT1M", "async": False, "disabled": False, "cpus": 0.1, "mem": 16}
    c.add({**base, "schedule": "R/2030-01-01T00:00:00Z/PT1H"})
    c.update({**base, "schedule": "R/2030-01-01T00:00:00Z/PT2H"})
    assert c.list()[0]["schedule"] == "R/2030-01-01T00:00:00Z/PT2H"
    c.delete("old-style")
