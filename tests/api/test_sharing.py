"""Issue 15 at the level users meet it: HTTP against a real orchestrator over the fake runtime
and a frozen clock (passes are run by hand). Priorities and preemption, quotas."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.snapshot import build_state
from scheduler.clock import FakeClock
from scheduler.config import Credentials
from scheduler.events import DROMOS, EventBus
from scheduler.model.job import RunStatus
from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.orchestrator import Orchestrator
from scheduler.store.memory import MemoryStore
from tests.support.fake_runtime import FakeRuntime

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime(node_list=[Node("n1", Resources(4, 4096, 100_000), ((31000, 31099),))])


@pytest.fixture
def orch(runtime: FakeRuntime) -> Iterator[Orchestrator]:
    clock = FakeClock()
    clock.set(T0)
    yield Orchestrator(MemoryStore(), runtime, EventBus(), clock)


@pytest.fixture
def client(orch: Orchestrator) -> TestClient:
    return TestClient(create_app(orch, Credentials()))


def passes(o: Orchestrator, n: int = 1) -> None:
    for _ in range(n):
        o.run_once(o.clock.now())


def job(name: str, cpus: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "command": "sleep 100", "schedule": "R0/2026-06-01T00:00:00Z/PT1H",
            "epsilon": "PT30S", "cpus": cpus, "mem": 16, "retries": 0, **extra}


def app(app_id: str, cpus: float, instances: int = 1,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": app_id, "cmd": "sleep 100", "cpus": cpus, "mem": 16,
            "instances": instances, "labels": labels or {}}


def preempted_events(o: Orchestrator) -> list[dict[str, Any]]:
    return [e.payload for e in o.bus.recent(stream=DROMOS) if e.event_type == "task_preempted"]


def test_a_service_preempts_a_batch_run_which_is_requeued_without_spending_a_retry(
        client: TestClient, orch: Orchestrator, runtime: FakeRuntime) -> None:
    assert client.post("/scheduler/iso8601", json=job("etl", 3)).status_code == 204
    assert client.put("/scheduler/job/etl").status_code == 204
    passes(orch)
    [run] = orch.job_runs("etl")
    assert run.status is RunStatus.RUNNING
    etl_task = run.task_id

    assert client.post("/v2/apps", json=app("/web", 2)).status_code == 201
    passes(orch)  # the app does not fit: queued with a rejection
    passes(orch)  # sharing preempts the batch run with the job's grace
    assert runtime.kills == [(etl_task, 3.0)]
    [ev] = preempted_events(orch)
    assert (ev["preemptor"], ev["taskId"], ev["victim"], ev["kind"]) == (
        "/web", etl_task, "etl", "priority")
    assert "priority" in ev["reason"]
    body = client.get("/dromos/sharing").json()
    assert body["preemptions"][0]["taskId"] == etl_task
    assert [w["kind"] for w in body["waiting"]] == ["preempting"]

    passes(orch)  # the victim is gone: the service is placed first, the run queued again
    web = client.get("/v2/apps/web/tasks").json()["tasks"]
    assert len(web) == 1
    [run] = orch.job_runs("etl")
    assert run.status is RunStatus.QUEUED
    assert run.attempt == 0  # not a failure: no retry spent
    assert run.task_id == f"{etl_task}.preempt1"
    assert client.get("/v2/queue").json()["queue"] == []


def test_equal_priority_is_never_preempted(client: TestClient, orch: Orchestrator,
                                           runtime: FakeRuntime) -> None:
    client.post("/v2/apps", json=app("/a", 3))
    passes(orch)
    client.post("/v2/apps", json=app("/b", 3))
    passes(orch, 3)
    assert runtime.kills == []
    [wait] = client.get("/dromos/sharing").json()["waiting"]
    assert wait["kind"] == "capacity"
    assert len(client.get("/v2/queue").json()["queue"]) == 1


def test_a_critical_app_preempts_a_service_app_which_is_requeued(
        client: TestClient, orch: Orchestrator, runtime: FakeRuntime) -> None:
    client.post("/v2/apps", json=app("/svc", 3))
    passes(orch)
    [victim] = [t["id"] for t in client.get("/v2/apps/svc/tasks").json()["tasks"]]
    client.post("/v2/apps", json=app("/pay", 2, labels={"dromos.io/priority": "critical"}))
    passes(orch, 2)
    assert runtime.killed_ids() == [victim]
    passes(orch)
    assert len(client.get("/v2/apps/pay/tasks").json()["tasks"]) == 1
    # The preempted instance is queued again (it waits: the node is full of higher priority).
    [item] = client.get("/v2/queue").json()["queue"]
    assert item["app"]["id"] == "/svc" and item["count"] == 1
    assert set(item) == {"app", "count", "delay", "overdue", "since",
                         "processedOffersSummary", "lastUnusedOffers"}


def test_quota_resource_round_trip_and_422_paths(client: TestClient) -> None:
    r = client.put("/dromos/quotas/ml", json={"guaranteed": {"cpus": 2, "mem": 1024},
                                              "borrowingLimit": {"cpus": 1}})
    assert r.status_code == 200
    assert r.json() == {"team": "ml", "guaranteed": {"cpus": 2.0, "mem": 1024.0, "gpus": 0.0},
                        "borrowingLimit": {"cpus": 1.0, "mem": 0.0, "gpus": 0.0}}
    assert client.get("/dromos/quotas").json()["quotas"][0]["team"] == "ml"
    bad = client.put("/dromos/quotas/ml", json={"guaranteed": {"cpus": -1}})
    assert bad.status_code == 422
    assert [d["path"] for d in bad.json()["details"]] == ["/guaranteed/cpus"]
    assert client.put("/dromos/quotas/ml", json={"team": "web"}).json()["details"][0][
        "path"] == "/team"
    assert client.put("/dromos/quotas/Bad_Team", json={}).status_code == 422
    # nothing half-written: the stored quota is the first one
    assert client.get("/dromos/quotas/ml").json()["guaranteed"]["cpus"] == 2.0
    assert client.delete("/dromos/quotas/ml").status_code == 204
    assert client.get("/dromos/quotas/ml").status_code == 404
    assert client.delete("/dromos/quotas/ml").status_code == 404


def test_team_usage_shows_guarantee_and_borrowed(client: TestClient,
                                                  orch: Orchestrator) -> None:
    client.put("/dromos/quotas/ml", json={"guaranteed": {"cpus": 1, "mem": 1024}})
    client.post("/v2/apps", json=app("/ml/train", 1, instances=2))
    passes(orch)
    ml = client.get("/dromos/sharing").json()["teams"]["ml"]
    assert ml["used"]["cpus"] == 2.0
    assert ml["guaranteed"]["cpus"] == 1.0
    assert ml["borrowed"]["cpus"] == 1.0


def test_a_team_below_its_guarantee_reclaims_borrowed_capacity(
        client: TestClient, orch: Orchestrator, runtime: FakeRuntime) -> None:
    client.put("/dromos/quotas/ml", json={"guaranteed": {"cpus": 2, "mem": 2048}})
    client.post("/v2/apps", json=app("/web/front", 1, instances=4))  # borrows it all
    passes(orch)
    assert len(client.get("/v2/apps/web/front/tasks").json()["tasks"]) == 4
    client.post("/v2/apps", json=app("/ml/train", 1, instances=2))
    passes(orch, 2)
    events = preempted_events(orch)
    assert len(events) == 2
    assert {e["kind"] for e in events} == {"reclaim"}
    assert {e["victimTeam"] for e in events} == {"web"}
    passes(orch)
    assert len(client.get("/v2/apps/ml/train/tasks").json()["tasks"]) == 2


def test_a_team_at_its_borrowing_limit_waits_for_quota_and_says_so(
        client: TestClient, orch: Orchestrator, runtime: FakeRuntime) -> None:
    client.put("/dromos/quotas/ml", json={"guaranteed": {"cpus": 1, "mem": 1024},
                                          "borrowingLimit": {"cpus": 1, "mem": 1024}})
    client.post("/v2/apps", json=app("/ml/train", 1, instances=3))
    passes(orch, 2)
    assert len(client.get("/v2/apps/ml/train/tasks").json()["tasks"]) == 2  # 1 + 1 borrowed
    [item] = client.get("/v2/queue").json()["queue"]
    assert item["count"] == 1
    reasons = {r["reason"]: r["declined"]
               for r in item["processedOffersSummary"]["rejectSummaryLastOffers"]}
    assert reasons["InsufficientQuota"] == 1
    [wait] = client.get("/dromos/sharing").json()["waiting"]
    assert wait["kind"] == "quota" and "quota" in wait["reason"]
    assert runtime.kills == []  # room is free; the quota, not capacity, holds it back


def test_status_page_shows_teams_waits_and_preemptions(
        client: TestClient, orch: Orchestrator) -> None:
    client.put("/dromos/quotas/ml", json={"guaranteed": {"cpus": 1, "mem": 1024}})
    client.post("/v2/apps", json=app("/web/a", 3))
    passes(orch)
    state = build_state(orch)  # what /ui/state serves (uncached)
    assert state["sharing"]["teams"]["web"]["borrowed"]["cpus"] == 3.0
    client.post("/v2/apps", json=app("/ml/b", 2, labels={"dromos.io/priority": "critical"}))
    passes(orch, 2)
    state = build_state(orch)  # what /ui/state serves (uncached)
    [p] = state["sharing"]["preemptions"]
    assert (p["preemptor"], p["victim"]) == ("/ml/b", "/web/a")
    [row] = [a for a in state["apps"] if a["id"] == "/ml/b"]
    assert row["waiting"]["reason"].startswith("preempting 1 task on n1 for app:/ml/b#0")
    page = client.get("/").text
    assert "<h2>Teams</h2>" in page and "<td>ml</td>" in page
    assert "/ml/b preempted /web/a" in page
