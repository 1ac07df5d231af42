"""Regression (issue 10): a kill asked for while the runtime is unavailable is recorded and
sent once the runtime is back, for app tasks and job runs alike."""

from __future__ import annotations

from scheduler.clock import FakeClock
from scheduler.model.app import parse_app
from scheduler.model.job import RunStatus, parse_job
from scheduler.model.task import TaskState
from scheduler.orchestrator import Orchestrator
from tests.support.fake_runtime import FakeRuntime


def test_job_run_kill_while_unavailable_reaches_the_runtime(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    orch.put_job(parse_job({"name": "etl", "command": "sleep 100", "cpus": 0.1, "mem": 16,
                             "schedule": "R1/2099-01-01T00:00:00Z/PT1H"}))
    run = orch.run_job("etl")
    orch.run_once(clock.now())
    assert orch.store.get_run(run.id) is not None
    assert orch.store.get_run(run.id).status is RunStatus.RUNNING  # type: ignore[union-attr]
    task_id = run.task_id
    assert task_id is not None and [s.task_id for s in runtime.launches] == [task_id]

    runtime.fail_kills = 1
    orch.kill_job("etl")  # recorded; the runtime refuses it
    assert runtime.kills == []
    for _ in range(3):
        clock.advance(1)
        orch.run_once(clock.now())

    assert runtime.killed_ids() == [task_id]
    final = orch.store.get_run(run.id)
    assert final is not None and final.status is RunStatus.KILLED


def test_app_task_kill_while_unavailable_reaches_the_runtime(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    orch.create_app(parse_app({"id": "/web", "cmd": "sleep 100", "cpus": 0.1, "mem": 16,
                               "instances": 1}))
    orch.run_once(clock.now())
    (task,) = orch.tasks("/web")
    assert task.state is not TaskState.STAGING

    runtime.fail_kills = 1
    orch.kill_tasks("/web", [task.id])
    assert runtime.kills == []
    for _ in range(3):
        clock.advance(1)
        orch.run_once(clock.now())

    assert task.id in runtime.killed_ids()
    assert orch.store.get_task(task.id) is None  # killed and expunged
