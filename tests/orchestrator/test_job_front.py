"""Job runs on the orchestrator's one task path: fire, launch, retry, kill, restart; a fake
runtime and a frozen clock, no sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.clock import FakeClock
from scheduler.model.job import RunStatus, parse_job
from scheduler.model.task import TaskState, task_of_run
from scheduler.orchestrator import Orchestrator
from tests.support.fake_runtime import FakeRuntime

START = datetime(2030, 1, 1, tzinfo=UTC)


def scheduled(orch: Orchestrator, clock: FakeClock, **fields: Any) -> None:
    """Job ``etl`` firing hourly from START (the clock set an hour before it)."""
    clock.set(START - timedelta(hours=1))
    orch.put_job(parse_job({"name": "etl", "command": "run-etl", "cpus": 0.5, "mem": 16,
                            "schedule": "R/2030-01-01T00:00:00Z/PT1H", **fields}))


def test_a_due_occurrence_becomes_a_run_whose_attempt_is_a_task(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    scheduled(orch, clock)
    orch.run_once(clock.now())
    assert runtime.launches == []
    clock.set(START)
    orch.run_once(clock.now())
    (run,) = orch.job_runs("etl")
    assert run.id == "etl:20300101T000000Z" and run.status is RunStatus.RUNNING
    (spec,) = runtime.launches
    assert (spec.task_id, spec.job_name, spec.run_id) == (run.id, "etl", run.id)
    assert spec.env["CHRONOS_JOB_NAME"] == "etl" and spec.cmd == "run-etl"
    task = orch.store.get_task(run.id)
    assert task is not None and (task.job, task.run_id, task.attempt) == ("etl", run.id, 0)
    assert task.app_id == "job:etl"
    assert orch.tasks() == []  # the Marathon view lists app tasks only


def test_a_failed_attempt_is_retried_as_retry1_after_the_delay_then_succeeds(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    scheduled(orch, clock, retries=1, retryDelay="PT30S")
    clock.set(START)
    orch.run_once(clock.now())
    run_id = "etl:20300101T000000Z"
    runtime.finish(run_id, exit_code=1)
    orch.run_once(clock.advance(1))
    run = orch.store.get_run(run_id)
    assert run is not None and run.status is RunStatus.QUEUED and run.attempt == 1
    assert orch.store.get_task(run_id) is None
    orch.run_once(clock.advance(10))
    assert [s.task_id for s in runtime.launches] == [run_id]  # still waiting out the delay
    orch.run_once(clock.advance(30))
    assert [s.task_id for s in runtime.launches] == [run_id, f"{run_id}.retry1"]
    assert runtime.launches[1].env["DROMOS_ATTEMPT"] == "1"
    runtime.finish(f"{run_id}.retry1", exit_code=0)
    orch.run_once(clock.advance(1))
    run = orch.store.get_run(run_id)
    assert run is not None and run.status is RunStatus.SUCCESS
    assert orch.jobs.counters("etl")["successCount"] == 1
    assert orch.store.list_tasks() == []


def test_killing_a_queued_run_closes_it_without_a_launch(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    scheduled(orch, clock)
    run = orch.run_job("etl")
    (marked,) = orch.kill_job("etl")
    assert marked.id == run.id and marked.kill_requested_at == clock.now()
    orch.run_once(clock.now())
    closed = orch.store.get_run(run.id)
    assert closed is not None and closed.status is RunStatus.KILLED
    assert closed.message == "killed before it started"
    assert runtime.launches == [] and runtime.kills == []


def test_runs_hold_their_resources_so_a_second_waits_for_room(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    scheduled(orch, clock, cpus=5)  # the fake node has 8 cpus
    first = orch.run_job("etl")
    orch.run_once(clock.now())
    second = orch.run_job("etl")
    orch.run_once(clock.advance(1))
    waiting = orch.store.get_run(second.id)
    assert waiting is not None and waiting.status is RunStatus.QUEUED
    assert waiting.message.startswith("waiting: ")
    runtime.finish(first.id)
    orch.run_once(clock.advance(1))
    orch.run_once(clock.advance(1))
    started = orch.store.get_run(second.id)
    assert started is not None and started.status is RunStatus.RUNNING


def test_a_launch_during_an_outage_is_retried_once_under_the_runs_task_id(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    scheduled(orch, clock)
    run = orch.run_job("etl")
    orch.run_once(clock.now())
    runtime.launches.clear()
    runtime.unavailable = True
    orch.run_once(clock.advance(1))
    assert not orch.runtime_available
    runtime.unavailable = False
    orch.run_once(clock.advance(1))
    assert orch.store.get_run(run.id).status is RunStatus.RUNNING  # type: ignore[union-attr]
    assert runtime.launches == []  # it was running all along: nothing launched again


def test_a_restarted_orchestrator_observes_the_end_of_a_run_started_before(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    scheduled(orch, clock)
    run = orch.run_job("etl")
    orch.run_once(clock.now())
    runtime.finish(run.id, exit_code=0)
    again = Orchestrator(orch.store, runtime, orch.bus, clock)
    again.run_once(clock.advance(1))
    done = again.store.get_run(run.id)
    assert done is not None and done.status is RunStatus.SUCCESS
    assert len(runtime.launches) == 1


def test_a_running_run_stored_without_its_task_is_adopted(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    # A store written before attempts were tasks: the run alone knows its handle.
    scheduled(orch, clock)
    run = orch.run_job("etl")
    orch.run_once(clock.now())
    orch.store.delete_task(run.id)
    again = Orchestrator(orch.store, runtime, orch.bus, clock)
    again.kill_job("etl")
    assert runtime.killed_ids() == [run.id]
    again.run_once(clock.advance(1))
    done = again.store.get_run(run.id)
    assert done is not None and done.status is RunStatus.KILLED


def test_task_of_run_names_the_attempt() -> None:
    from scheduler.model.job import JobRun, Trigger

    run = JobRun(id="etl:x", job="etl", trigger=Trigger.MANUAL, status=RunStatus.RUNNING,
                 created_at=START, attempt=2, task_id="etl:x.retry2", host="n1")
    task = task_of_run(run)
    assert (task.id, task.app_id, task.host, task.attempt, task.state) == (
        "etl:x.retry2", "job:etl", "n1", 2, TaskState.RUNNING)
