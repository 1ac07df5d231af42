"""The applier's one task path for app tasks: launch (STAGING first), observe, kill, re-send;
a fake runtime and a frozen clock, no sleeps."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from scheduler.clock import FakeClock
from scheduler.model.app import parse_app
from scheduler.model.task import TaskState
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.base import LaunchSpec, RuntimeUnavailable
from tests.support.fake_runtime import FakeRuntime


def create(orch: Orchestrator, instances: int = 2, **fields: object) -> None:
    orch.create_app(parse_app({"id": "/web", "cmd": "sleep 100", "cpus": 0.1, "mem": 16,
                               "instances": instances, **fields}))


def test_a_pass_launches_the_missing_tasks_and_observes_them_running(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    create(orch)
    report = orch.run_once(clock.now())
    assert len(report.launched) == 2
    assert sorted(s.task_id for s in runtime.launches) == sorted(report.launched)
    assert {t.state for t in orch.tasks("/web")} == {TaskState.STARTING}
    orch.run_once(clock.advance(1))
    assert {t.state for t in orch.tasks("/web")} == {TaskState.RUNNING}
    assert len(runtime.launches) == 2  # nothing launched twice


def test_a_launch_refused_by_an_unavailable_runtime_is_retried_under_the_same_id(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    create(orch, instances=1)
    orch.runtime.launch = _refuse_once(runtime)  # type: ignore[method-assign]
    orch.run_once(clock.now())
    (staged,) = orch.tasks("/web")
    assert staged.state is TaskState.STAGING and not staged.handle  # written before launching
    assert not orch.runtime_available
    orch.run_once(clock.advance(1))
    (task,) = orch.tasks("/web")
    assert task.id == staged.id and task.handle
    assert [s.task_id for s in runtime.launches] == [staged.id]


def _refuse_once(runtime: FakeRuntime) -> Callable[[LaunchSpec], Mapping[str, Any]]:
    """``runtime.launch`` that raises RuntimeUnavailable on its first call only."""
    real = runtime.launch
    calls = []

    def launch(spec: LaunchSpec) -> Mapping[str, Any]:
        calls.append(spec.task_id)
        if len(calls) == 1:
            raise RuntimeUnavailable("down for a moment")
        return real(spec)

    return launch


def test_a_task_that_fails_records_the_last_failure_and_is_replaced(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    create(orch, instances=1)
    orch.run_once(clock.now())
    (first,) = orch.tasks("/web")
    runtime.finish(first.id, exit_code=3)
    orch.run_once(clock.advance(1))
    failure = orch.last_task_failure("/web")
    assert failure is not None and failure["taskId"] == first.id
    assert failure["state"] == TaskState.FAILED.value
    assert orch.store.get_task(first.id) is None
    assert orch.backoff("/web").failures == 1


def test_deleting_an_app_kills_its_tasks_with_the_apps_grace_period(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    create(orch, instances=2, taskKillGracePeriodSeconds=7)
    orch.run_once(clock.now())
    ids = sorted(t.id for t in orch.tasks("/web"))
    orch.delete_app("/web", force=True)
    assert sorted(runtime.kills) == [(i, 7.0) for i in ids]
    orch.run_once(clock.advance(1))
    assert orch.store.list_tasks() == []


def test_kills_pending_after_a_restart_are_sent_again_with_the_grace_left(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    create(orch, instances=1, taskKillGracePeriodSeconds=10)
    orch.run_once(clock.now())
    (task,) = orch.tasks("/web")
    runtime.fail_kills = 1
    orch.kill_tasks("/web", [task.id], scale=True)
    clock.advance(4)
    # A new orchestrator over the same store (a restart) re-sends the recorded kill.
    again = Orchestrator(orch.store, runtime, orch.bus, clock)
    again.run_once(clock.now())
    assert runtime.kills == [(task.id, 6.0)]
