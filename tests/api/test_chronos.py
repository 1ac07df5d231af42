"""The Chronos /scheduler surface over a real orchestrator: real processes, a fake clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from scheduler.clock import FakeClock
from scheduler.model.job import RunStatus
from scheduler.orchestrator import Orchestrator

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def clock_of(o: Orchestrator) -> FakeClock:
    assert isinstance(o.clock, FakeClock)
    return o.clock


def drive(o: Orchestrator, until: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Run passes (clock frozen) until ``until()`` holds; real processes run meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        o.run_once(o.clock.now())
        value = until()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def scheduled(name: str, command: str = "true", start: datetime = T0 + timedelta(seconds=10),
              period: str = "PT1M", **extra: Any) -> dict[str, Any]:
    return {"name": name, "command": command, "schedule": f"R/{start:%Y-%m-%dT%H:%M:%SZ}/{period}",
            "epsilon": "PT30S", "cpus": 0.1, "mem": 16, **extra}


def runs(o: Orchestrator, job: str) -> list[Any]:
    return o.job_runs(job)


@pytest.fixture(autouse=True)
def _start_clock(orchestrator: Orchestrator) -> None:
    clock_of(orchestrator).set(T0)


@pytest.mark.parametrize("prefix", ["/scheduler", "/v1/scheduler"])
def test_create_list_get_delete(client: TestClient, prefix: str) -> None:
    r = client.post(f"{prefix}/iso8601", json=scheduled("etl"))
    assert r.status_code == 204 and r.content == b""
    jobs = client.get(f"{prefix}/jobs").json()
    assert [j["name"] for j in jobs] == ["etl"]
    job = client.get(f"{prefix}/job/etl").json()
    assert job["successCount"] == 0 and job["errorCount"] == 0 and job["lastSuccess"] == ""
    assert job["retries"] == 2 and job["parents"] == []
    assert client.delete(f"{prefix}/job/etl").status_code == 204
    assert client.get(f"{prefix}/job/etl").status_code == 404
    assert client.get(f"{prefix}/job/etl").json() == {"message": "Job 'etl' does not exist"}


def test_a_scheduled_run_starts_on_time_and_succeeds(client: TestClient,
                                                     orchestrator: Orchestrator) -> None:
    client.post("/scheduler/iso8601", json=scheduled("etl"))
    orchestrator.run_once(T0 + timedelta(seconds=9))
    assert runs(orchestrator, "etl") == []
    clock_of(orchestrator).set(T0 + timedelta(seconds=10))
    done = drive(orchestrator, lambda: [r for r in runs(orchestrator, "etl")
                                        if r.status is RunStatus.SUCCESS])
    assert done[0].id == "etl:20260101T000010Z"
    assert done[0].scheduled_for == T0 + timedelta(seconds=10)
    job = client.get("/scheduler/job/etl").json()
    assert job["successCount"] == 1 and job["lastSuccess"]
    assert orchestrator.jobs.next_fire("etl") == T0 + timedelta(seconds=70)


def test_an_occurrence_more_than_epsilon_late_is_skipped_and_recorded(
        client: TestClient, orchestrator: Orchestrator) -> None:
    client.post("/scheduler/iso8601", json=scheduled("etl"))
    orchestrator.run_once(T0)
    clock_of(orchestrator).set(T0 + timedelta(seconds=45))  # 35 s late, epsilon 30 s
    orchestrator.run_once(orchestrator.clock.now())
    [run] = runs(orchestrator, "etl")
    assert run.status is RunStatus.SKIPPED
    assert "more than epsilon late" in run.message


def test_runs_are_never_created_twice_for_one_occurrence(client: TestClient,
                                                         orchestrator: Orchestrator) -> None:
    client.post("/scheduler/iso8601", json=scheduled("etl", command="sleep 5"))
    clock_of(orchestrator).set(T0 + timedelta(seconds=10))
    for _ in range(5):
        orchestrator.run_once(orchestrator.clock.now())
    assert len(runs(orchestrator, "etl")) == 1


def test_failed_runs_are_retried_then_fail(client: TestClient,
                                           orchestrator: Orchestrator) -> None:
    client.post("/scheduler/iso8601",
                json=scheduled("flaky", command="exit 3", retries=1, retryDelay="PT0S"))
    clock_of(orchestrator).set(T0 + timedelta(seconds=10))
    [run] = drive(orchestrator, lambda: [r for r in runs(orchestrator, "flaky")
                                         if r.status is RunStatus.FAILED])
    assert run.attempt == 1 and run.exit_code == 3
    job = client.get("/scheduler/job/flaky").json()
    assert job["errorCount"] == 1 and job["errorsSinceLastSuccess"] == 1


def test_finite_schedule_disables_itself(client: TestClient,
                                         orchestrator: Orchestrator) -> None:
    body = scheduled("twice")
    body["schedule"] = "R2/2026-01-01T00:00:10Z/PT10S"
    client.post("/scheduler/iso8601", json=body)
    for s in (10, 20, 30, 40):
        clock_of(orchestrator).set(T0 + timedelta(seconds=s))
        orchestrator.run_once(orchestrator.clock.now())
    assert len(runs(orchestrator, "twice")) == 2
    assert client.get("/scheduler/job/twice").json()["disabled"] is True


def test_children_run_after_all_parents_succeed(client: TestClient,
                                                orchestrator: Orchestrator) -> None:
    client.post("/scheduler/iso8601", json=scheduled("etl"))
    client.post("/scheduler/iso8601", json=scheduled("features"))
    r = client.post("/scheduler/dependency",
                    json={"name": "train", "command": "true", "parents": ["etl", "features"],
                          "cpus": 0.1, "mem": 16})
    assert r.status_code == 204
    assert client.put("/scheduler/job/success/etl").status_code == 204
    orchestrator.run_once(orchestrator.clock.now())
    assert runs(orchestrator, "train") == []
    client.put("/scheduler/job/success/features")
    done = drive(orchestrator, lambda: [r for r in runs(orchestrator, "train")
                                        if r.status is RunStatus.SUCCESS])
    assert done[0].trigger.value == "dependency"


def test_dependency_errors_are_422_with_paths(client: TestClient) -> None:
    client.post("/scheduler/iso8601", json=scheduled("a"))
    r = client.post("/scheduler/dependency", json={"name": "b", "command": "true",
                                                   "parents": ["a", "ghost"]})
    assert r.status_code == 422
    assert r.json()["details"][0]["path"] == "/parents/1"
    client.post("/scheduler/dependency", json={"name": "b", "command": "true",
                                               "parents": ["a"]})
    client.post("/scheduler/dependency", json={"name": "c", "command": "true",
                                               "parents": ["b"]})
    r = client.post("/scheduler/dependency", json={"name": "b", "command": "true",
                                                   "parents": ["c"]})
    assert r.status_code == 422 and "cycle" in r.text
    assert client.get("/scheduler/job/b").json()["parents"] == ["a"]


def test_bad_schedules_are_rejected_at_their_paths(client: TestClient) -> None:
    for bad in ("R/2026-01-01T00:00:00Z/PT0.5S", "R/nonsense/PT1M", "cron: 99 * * * *"):
        r = client.post("/scheduler/iso8601", json=scheduled("x") | {"schedule": bad})
        assert r.status_code == 422, bad
        assert [d["path"] for d in r.json()["details"]] == ["/schedule"], r.json()
    r = client.post("/scheduler/iso8601", json=scheduled("x") | {"scheduleTimeZone": "Mars/X"})
    assert r.status_code == 422
    assert [d["path"] for d in r.json()["details"]] == ["/scheduleTimeZone"], r.json()
    # With another bad field, both are named; nothing is stored.
    r = client.post("/scheduler/iso8601",
                    json=scheduled("x") | {"schedule": "R/nonsense/PT1M", "retries": -1})
    assert r.status_code == 422
    assert {d["path"] for d in r.json()["details"]} == {"/schedule", "/retries"}
    assert client.get("/scheduler/jobs").json() == []


def test_cron_schedules_are_accepted(client: TestClient, orchestrator: Orchestrator) -> None:
    body = scheduled("nightly") | {"schedule": "cron: 0 2 * * *",
                                   "scheduleTimeZone": "Europe/Berlin"}
    assert client.post("/scheduler/iso8601", json=body).status_code == 204
    orchestrator.run_once(orchestrator.clock.now())
    assert orchestrator.jobs.next_fire("nightly") == datetime(2026, 1, 1, 1, 0, tzinfo=UTC)


def test_manual_run_and_kill(client: TestClient, orchestrator: Orchestrator) -> None:
    client.post("/scheduler/iso8601", json=scheduled("long", command="sleep 30"))
    assert client.put("/scheduler/job/long").status_code == 204
    drive(orchestrator, lambda: [r for r in runs(orchestrator, "long")
                                 if r.status is RunStatus.RUNNING])
    assert client.delete("/scheduler/task/kill/long").status_code == 204
    [run] = drive(orchestrator, lambda: [r for r in runs(orchestrator, "long")
                                         if r.status is RunStatus.KILLED])
    assert run.trigger.value == "manual"


def test_deleting_a_job_hands_its_children_its_parents(client: TestClient) -> None:
    client.post("/scheduler/iso8601", json=scheduled("a"))
    client.post("/scheduler/dependency", json={"name": "b", "command": "true",
                                               "parents": ["a"]})
    client.post("/scheduler/dependency", json={"name": "c", "command": "true",
                                               "parents": ["b"]})
    assert client.delete("/scheduler/job/b").status_code == 204
    assert client.get("/scheduler/job/c").json()["parents"] == ["a"]


def test_stats_summary_graph(client: TestClient, orchestrator: Orchestrator) -> None:
    client.post("/scheduler/iso8601", json=scheduled("etl"))
    client.post("/scheduler/dependency", json={"name": "train", "command": "true",
                                               "parents": ["etl"]})
    clock_of(orchestrator).set(T0 + timedelta(seconds=10))
    drive(orchestrator, lambda: [r for r in runs(orchestrator, "train")
                                 if r.status is RunStatus.SUCCESS])
    stat = client.get("/scheduler/job/stat/etl").json()
    assert stat["histogram"]["count"] == 1
    assert stat["taskStatHistory"][0]["jobName"] == "etl"
    summary = {j["name"]: j for j in client.get("/scheduler/jobs/summary").json()["jobs"]}
    assert summary["etl"]["state"] == "success" and summary["train"]["parents"] == ["etl"]
    dot = client.get("/scheduler/graph/dot").text
    assert "digraph" in dot and "etl" in dot and "train" in dot
    ranking = client.get("/scheduler/stats/99thPercentile").json()
    assert {e["jobNameLabel"] for e in ranking} >= {"etl"}
    assert client.get("/scheduler/stats/nonsense").status_code == 422
    found = client.get("/scheduler/jobs/search?name=ET").json()
    assert [j["name"] for j in found] == ["etl"]


def test_mark_success_is_a_success_everywhere(client: TestClient,
                                              orchestrator: Orchestrator) -> None:
    """After PUT /job/success the run record, the counters, /jobs/summary, the graph's box
    and the page's timeline all say success, and say it was marked, not run."""
    client.post("/scheduler/iso8601", json=scheduled("features"))
    clock_of(orchestrator).set(T0 + timedelta(seconds=3))
    assert client.put("/scheduler/job/success/features").status_code == 204

    job = client.get("/scheduler/job/features").json()
    assert job["successCount"] == 1 and job["lastSuccess"] == "2026-01-01T00:00:03.000Z"
    [summary] = client.get("/scheduler/jobs/summary").json()["jobs"]
    assert (summary["state"], summary["status"]) == ("success", "idle")
    state = client.get("/ui/state").json()
    [row] = state["jobs"]
    assert row["state"] == "success" and row["successCount"] == 1
    [run] = row["runs"]
    assert (run["status"], run["trigger"]) == ("success", "marked")
    assert run["finishedAt"] == "2026-01-01T00:00:03.000Z"
    assert run["startedAt"] is None and run["duration"] is None and run["host"] is None
    [box] = state["dag"]["nodes"]
    assert box["state"] == "success"
    assert client.get(f"/ui/runs/{run['id']}").json()["run"]["trigger"] == "marked"
    # Nothing ran: no run time enters the duration statistics.
    assert row["durations"]["count"] == 0
    assert client.get("/scheduler/job/stat/features").json()["histogram"]["count"] == 0
    assert orchestrator.tasks() == []
    [event] = [e for e in orchestrator.bus.recent(50) if e.event_type == "job_run_finished"]
    assert event.to_json()["trigger"] == "marked" and event.to_json()["status"] == "success"


def test_a_manual_run_sees_the_time_it_was_requested(client: TestClient,
                                                     orchestrator: Orchestrator) -> None:
    client.post("/scheduler/iso8601",
                json=scheduled("etl", command='echo "extracting for $DROMOS_SCHEDULED_TIME"'))
    clock_of(orchestrator).set(T0 + timedelta(seconds=5))
    r = client.post("/ui/jobs/etl/run", json={})
    run_id = r.json()["run"]["id"]
    assert r.json()["run"]["scheduledFor"] == "2026-01-01T00:00:05.000Z"
    drive(orchestrator, lambda: orchestrator.store.get_run(run_id).status is RunStatus.SUCCESS)
    out = client.get(f"/ui/logs/{run_id}").json()["chunks"]
    stdout = next(c["text"] for c in out if c["stream"] == "stdout")
    assert stdout == "extracting for 2026-01-01T00:00:05.000Z\n"


def test_walkthrough_train_starts_when_its_last_parent_succeeds(
        client: TestClient, orchestrator: Orchestrator) -> None:
    """The README's jobs walkthrough: run etl (it takes a moment), mark features a success
    at once; train starts when etl's run succeeds, the later of its two parents."""
    client.post("/scheduler/iso8601", json=scheduled("etl", command="sleep 0.5"))
    client.post("/scheduler/iso8601", json=scheduled("features"))
    client.post("/scheduler/dependency",
                json={"name": "train", "command": "true", "parents": ["etl", "features"],
                      "cpus": 0.1, "mem": 16})
    assert client.put("/scheduler/job/etl").status_code == 204
    drive(orchestrator, lambda: [r for r in runs(orchestrator, "etl")
                                 if r.status is RunStatus.RUNNING])
    assert client.put("/scheduler/job/success/features").status_code == 204
    orchestrator.run_once(orchestrator.clock.now())
    assert runs(orchestrator, "train") == [], "train waits for etl's run"
    done = drive(orchestrator, lambda: [r for r in runs(orchestrator, "train")
                                        if r.status is RunStatus.SUCCESS])
    [etl] = runs(orchestrator, "etl")
    assert etl.status is RunStatus.SUCCESS
    assert done[0].trigger.value == "dependency"
