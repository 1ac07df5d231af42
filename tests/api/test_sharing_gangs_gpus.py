"""Gangs and GPUs through the API over the fake runtime and a frozen clock: a gang app is
placed all or none with its rendezvous environment, a failed member restarts the whole gang,
GPU tasks get their own declared devices."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from scheduler.clock import FakeClock
from scheduler.config import Credentials
from scheduler.events import EventBus
from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.orchestrator import Orchestrator
from scheduler.store.memory import MemoryStore
from tests.support.fake_runtime import FakeRuntime

T0 = datetime(2026, 1, 1, tzinfo=UTC)
GANG = {"dromos.io/gang": "true"}


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime(node_list=[
        Node("g1", Resources(4, 4096, 100_000, 2), ((31000, 31099),), {"gpu_model": "a100"}),
        Node("g2", Resources(4, 4096, 100_000, 2), ((31100, 31199),), {"gpu_model": "a100"}),
    ])


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


def app(app_id: str, cpus: float, instances: int = 1, gpus: float = 0,
        labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"id": app_id, "cmd": "sleep 100", "cpus": cpus, "mem": 16, "gpus": gpus,
            "instances": instances, "labels": labels or {}}


def envs(runtime: FakeRuntime, app_id: str) -> list[dict[str, str]]:
    return [dict(s.env) for s in runtime.launches if s.app_id == app_id]


def test_a_gang_is_launched_together_with_rank_world_size_and_master(
        client: TestClient, orch: Orchestrator, runtime: FakeRuntime) -> None:
    assert client.post("/v2/apps", json=app("/ml/train", 2, instances=3, labels=GANG)).status_code \
        == 201
    passes(orch, 2)
    launched = envs(runtime, "/ml/train")
    assert sorted(e["RANK"] for e in launched) == ["0", "1", "2"]
    assert {e["WORLD_SIZE"] for e in launched} == {"3"}
    [rank0] = [s for s in runtime.launches if s.env["RANK"] == "0"]
    assert {e["MASTER_ADDR"] for e in launched} == {"127.0.0.1"}  # the runtime's address
    assert {e["MASTER_PORT"] for e in launched} == {str(rank0.ports[0])}


def test_a_gang_that_does_not_fit_whole_holds_nothing(
        client: TestClient, orch: Orchestrator, runtime: FakeRuntime) -> None:
    client.post("/v2/apps", json=app("/ml/big", 2, instances=5, labels=GANG))  # 10 cpus > 8
    passes(orch, 3)
    assert runtime.launches == []
    [wait] = client.get("/dromos/sharing").json()["waiting"]
    assert wait["id"] == "app:/ml/big#gang0" and wait["kind"] == "capacity"
    client.post("/v2/apps", json=app("/web", 4, instances=2))  # the room is all free
    passes(orch)
    assert len(client.get("/v2/apps/web/tasks").json()["tasks"]) == 2


def test_when_one_member_fails_the_whole_gang_is_retried(
        client: TestClient, orch: Orchestrator, runtime: FakeRuntime) -> None:
    client.post("/v2/apps", json=app("/ml/train", 1, instances=3, labels=GANG))
    passes(orch, 2)
    first = [s.task_id for s in runtime.launches]
    assert len(first) == 3
    runtime.finish(first[1], exit_code=1)
    passes(orch, 2)  # the failure is seen; the two survivors are killed
    assert sorted(runtime.killed_ids()) == sorted([first[0], first[2]])
    assert isinstance(orch.clock, FakeClock)
    orch.clock.set(T0 + timedelta(minutes=10))  # past the app's launch backoff
    passes(orch, 3)
    again = [s for s in runtime.launches if s.task_id not in first]
    assert sorted(s.env["RANK"] for s in again) == ["0", "1", "2"]


def test_gpu_tasks_get_their_own_devices(client: TestClient, orch: Orchestrator,
                                         runtime: FakeRuntime) -> None:
    client.post("/v2/apps", json=app("/ml/infer", 1, instances=4, gpus=1))
    passes(orch, 2)
    launched = [s for s in runtime.launches if s.app_id == "/ml/infer"]
    assert len(launched) == 4
    per_host: dict[str, list[str]] = {}
    for s in launched:
        assert s.gpu_devices == (int(s.env["CUDA_VISIBLE_DEVICES"]),)
        per_host.setdefault(s.host, []).append(s.env["CUDA_VISIBLE_DEVICES"])
    assert {h: sorted(d) for h, d in per_host.items()} == {"g1": ["0", "1"], "g2": ["0", "1"]}
    client.post("/v2/apps", json=app("/ml/more", 1, gpus=1))
    passes(orch, 2)
    assert [s for s in runtime.launches if s.app_id == "/ml/more"] == []
    [wait] = client.get("/dromos/sharing").json()["waiting"]
    assert wait["id"] == "app:/ml/more#0"


def test_a_freed_device_is_given_again(client: TestClient, orch: Orchestrator,
                                       runtime: FakeRuntime) -> None:
    client.post("/v2/apps", json=app("/ml/a", 1, instances=4, gpus=1))
    passes(orch, 2)
    victim = next(s for s in runtime.launches if s.host == "g2")
    assert client.post("/v2/tasks/delete?scale=true",
                       json={"ids": [victim.task_id]}).status_code == 200
    assert runtime.killed_ids() == [victim.task_id]
    passes(orch)
    client.post("/v2/apps", json=app("/ml/b", 1, gpus=1))
    passes(orch, 3)
    [b] = [s for s in runtime.launches if s.app_id == "/ml/b"]
    assert (b.host, b.env["CUDA_VISIBLE_DEVICES"]) == ("g2", victim.env["CUDA_VISIBLE_DEVICES"])


def test_a_gpu_job_run_gets_a_device_and_a_higher_priority_job_preempts_a_lower_one(
        client: TestClient, orch: Orchestrator, runtime: FakeRuntime) -> None:
    def job(name: str, priority: str) -> dict[str, Any]:
        return {"name": name, "command": "sleep 100", "schedule": "R0/2027-01-01T00:00:00Z/PT1H",
                "cpus": 4, "mem": 16, "gpus": 2, "priority": priority, "team": "ml"}

    for name, priority in (("low-a", "best-effort"), ("low-b", "best-effort")):
        assert client.post("/scheduler/iso8601", json=job(name, priority)).status_code == 204
        assert client.put(f"/scheduler/job/{name}").status_code == 204
    passes(orch, 2)
    launched = {s.job_name: s for s in runtime.launches}
    assert sorted(launched) == ["low-a", "low-b"]
    assert {launched[n].env["CUDA_VISIBLE_DEVICES"] for n in launched} == {"0,1"}
    assert {launched[n].host for n in launched} == {"g1", "g2"}

    assert client.post("/scheduler/iso8601", json=job("urgent", "critical")).status_code == 204
    assert client.put("/scheduler/job/urgent").status_code == 204
    passes(orch, 2)
    [victim] = runtime.killed_ids()
    assert victim in {launched["low-a"].task_id, launched["low-b"].task_id}
    passes(orch)
    [urgent] = [s for s in runtime.launches if s.job_name == "urgent"]
    assert urgent.env["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert urgent.host == next(s.host for s in runtime.launches if s.task_id == victim)


def test_a_member_relaunched_after_a_crash_gets_its_gang_env_and_devices_again(
        client: TestClient, orch: Orchestrator, runtime: FakeRuntime) -> None:
    client.post("/v2/apps", json=app("/ml/train", 1, instances=2, gpus=1, labels=GANG))
    passes(orch, 2)
    first = {s.task_id: s for s in runtime.launches}
    assert len(first) == 2
    # As if Dromos died after writing the task (STAGING) and before the launch happened.
    victim = next(iter(first))
    task = orch.store.get_task(victim)
    assert task is not None
    orch.store.put_task(task.with_(handle={}))
    passes(orch)
    again = [s for s in runtime.launches[2:] if s.task_id == victim]
    assert len(again) == 1
    assert again[0].env["RANK"] == first[victim].env["RANK"]
    assert again[0].env["CUDA_VISIBLE_DEVICES"] == first[victim].env["CUDA_VISIBLE_DEVICES"]
    assert again[0].gpu_devices == first[victim].gpu_devices
