"""Backfill over HTTP against a real orchestrator with the fake runtime and a frozen clock."""

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
from scheduler.events import EventBus
from scheduler.model.job import RunStatus
from scheduler.orchestrator import Orchestrator
from scheduler.store.memory import MemoryStore
from tests.support.fake_runtime import FakeRuntime

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def runtime() -> FakeRuntime:
    return FakeRuntime()


@pytest.fixture
def orch(runtime: FakeRuntime) -> Iterator[Orchestrator]:
    clock = FakeClock()
    clock.set(NOW)
    yield Orchestrator(MemoryStore(), runtime, EventBus(), clock)


@pytest.fixture
def client(orch: Orchestrator) -> TestClient:
    return TestClient(create_app(orch, Credentials()))


def daily(name: str = "etl") -> dict[str, Any]:
    return {"name": name, "command": "true", "schedule": "R/2026-01-01T02:00:00Z/P1D",
            "epsilon": "PT1H", "cpus": 0.5, "mem": 16}


def finish_running(o: Orchestrator, runtime: FakeRuntime) -> None:
    for t in o.store.list_tasks():
        if t.job is not None and not t.state.terminal:
            runtime.finish(t.id, 0)


def test_every_occurrence_runs_once_with_its_scheduled_id_within_concurrency(
        client: TestClient, orch: Orchestrator, runtime: FakeRuntime) -> None:
    assert client.post("/scheduler/iso8601", json=daily()).status_code == 204
    orch.run_once(orch.clock.now())
    assert orch.job_runs("etl") == []  # created now: the scheduler runs no past day itself
    r = client.post("/dromos/jobs/etl/backfill",
                    json={"from": "2026-01-01T00:00:00Z", "to": "2026-01-05T23:00:00Z",
                          "concurrency": 2})
    assert r.status_code == 202, r.text
    assert r.json()["total"] == 5
    peak = 0
    for _ in range(10):
        orch.run_once(orch.clock.now())
        running = [t for t in orch.store.list_tasks() if t.job == "etl"]
        peak = max(peak, len(running))
        finish_running(orch, runtime)
    assert peak == 2
    ids = sorted(r.id for r in orch.job_runs("etl"))
    assert ids == [f"etl:202601{d:02d}T020000Z" for d in range(1, 6)]
    assert all(r.status is RunStatus.SUCCESS for r in orch.job_runs("etl"))
    progress = client.get("/dromos/jobs/etl/backfill").json()
    assert progress | {"createdAt": None} == {
        "job": "etl", "from": "2026-01-01T00:00:00.000Z", "to": "2026-01-05T23:00:00.000Z",
        "concurrency": 2, "createdAt": None, "total": 5, "done": 5, "succeeded": 5,
        "failed": 0, "skipped": 0, "active": 0, "pending": 0, "status": "finished"}
    [shown] = build_state(orch)["sharing"]["backfills"]  # the status page's data
    assert (shown["job"], shown["done"], shown["total"]) == ("etl", 5, 5)
    assert "etl 2026-01-01T00:00:00.000Z → 2026-01-05T23:00:00.000Z: 5/5 done" \
        in client.get("/").text
    # Again over an overlapping range: the days that ran are skipped, not run twice.
    r = client.post("/dromos/jobs/etl/backfill",
                    json={"from": "2026-01-04T00:00:00Z", "to": "2026-01-06T23:00:00Z"})
    assert r.status_code == 202
    for _ in range(4):
        orch.run_once(orch.clock.now())
        finish_running(orch, runtime)
    progress = client.get("/dromos/jobs/etl/backfill").json()
    assert (progress["total"], progress["skipped"], progress["succeeded"]) == (3, 2, 1)
    assert len(orch.job_runs("etl")) == 6


def test_bad_input_is_422_with_pointers_and_stores_nothing(client: TestClient) -> None:
    client.post("/scheduler/iso8601", json=daily())
    cases = [
        ({"from": "yesterday", "to": "2026-01-02T00:00:00Z"}, "/from"),
        ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "/to"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"}, "/to"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "concurrency": 0},
         "/concurrency"),
        ({"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "x": 1}, "/x"),
    ]
    for body, pointer in cases:
        r = client.post("/dromos/jobs/etl/backfill", json=body)
        assert r.status_code == 422, body
        assert [d["path"] for d in r.json()["details"]] == [pointer], body
    assert client.get("/dromos/jobs/etl/backfill").status_code == 404
    assert client.post("/dromos/jobs/nope/backfill",
                       json={"from": "2026-01-01T00:00:00Z",
                             "to": "2026-01-02T00:00:00Z"}).status_code == 404
