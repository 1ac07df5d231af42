"""Deployments: the pure decision (deployment_transitions) and the orchestrator applying it
(success events, timeout, automatic rollback); a fake runtime and a frozen clock."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from scheduler.clock import FakeClock
from scheduler.events import Subscription
from scheduler.model.app import AppSpec
from scheduler.model.deployment import Action, Deployment
from scheduler.model.task import TaskState
from scheduler.orchestrator import Orchestrator
from scheduler.services.deployment import Outcome, deployment_transitions
from tests.factories import T0, V1, V2, make_app, make_task
from tests.support.fake_runtime import FakeRuntime


def deployment(target: str | None = V2, timeout: float = 60, rollback: bool = False,
               app_id: str = "/web") -> Deployment:
    return Deployment(id="d1", version=target or V1, started_at=T0,
                      steps=(((Action.RESTART, app_id),),), original={app_id: V1},
                      target={app_id: target}, timeout_at=T0 + timedelta(seconds=timeout),
                      auto_rollback=rollback)


def decide(d: Deployment, app: AppSpec | None, tasks: list[Any], now_s: float = 0,
           ready: dict[str, bool] | None = None) -> list[tuple[Outcome, bool]]:
    apps = {app.id: app} if app is not None else {}
    out = deployment_transitions([d], apps, {"/web": app.version or ""} if app else {},
                                 {"/web": tasks}, {}, ready or {},
                                 T0 + timedelta(seconds=now_s))
    return [(t.outcome, t.rollback) for t in out]


def test_a_deployment_succeeds_once_its_app_runs_the_target_configuration() -> None:
    app = make_app(version=V2, instances=2)
    current = [make_task(app, version=V2), make_task(app, version=V2)]
    assert decide(deployment(), app, current) == [(Outcome.SUCCEEDED, False)]
    old = [make_task(app, version=V2), make_task(app, version=V1)]
    assert decide(deployment(), app, old) == []


def test_readiness_gates_the_step_until_every_task_is_ready() -> None:
    app = make_app(version=V2, instances=1,
                   portDefinitions=[{"port": 0, "name": "http"}],
                   readinessChecks=[{"name": "r", "portName": "http", "path": "/ready"}])
    task = make_task(app, version=V2)
    assert decide(deployment(), app, [task], ready={task.id: False}) == []
    assert decide(deployment(), app, [task], ready={task.id: True}) == \
        [(Outcome.SUCCEEDED, False)]


def test_a_deployment_open_at_its_timeout_fails_and_rolls_back_when_asked() -> None:
    app = make_app(version=V2, instances=1)
    starting = [make_task(app, version=V2, state=TaskState.STAGING)]
    assert decide(deployment(rollback=True), app, starting, now_s=59) == []
    assert decide(deployment(rollback=True), app, starting, now_s=60) == \
        [(Outcome.FAILED, True)]
    assert decide(deployment(rollback=False), app, starting, now_s=60) == \
        [(Outcome.FAILED, False)]


def test_an_app_that_moved_on_no_longer_holds_its_deployment_open() -> None:
    newer = make_app(version="2026-01-01T02:00:00.000Z", instances=1)
    assert decide(deployment(), newer, []) == [(Outcome.SUCCEEDED, False)]


def test_a_delete_deployment_succeeds_once_no_task_is_left() -> None:
    app = make_app(version=V1)
    assert decide(deployment(target=None), None, [make_task(app)]) == []
    assert decide(deployment(target=None), None, []) == [(Outcome.SUCCEEDED, False)]


# ---------------------------------------------------------------- the orchestrator applies


def drain(sub: Subscription) -> list[str]:
    out = []
    while (e := sub.get(timeout=0)) is not None:
        out.append(e.event_type)
    return out


def test_the_orchestrator_finishes_a_converged_deployment(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    sub = orch.bus.subscribe()
    orch.create_app(make_app(instances=1).model_copy(update={"version": None}))
    assert len(orch.deployments()) == 1
    orch.run_once(clock.now())  # launched: starting
    assert len(orch.deployments()) == 1
    assert "deployment_success" not in drain(sub)
    orch.run_once(clock.advance(1))  # running: converged
    assert orch.deployments() == []
    seen = drain(sub)
    assert seen.count("deployment_step_success") == 2  # Start, then Scale
    assert seen[-1] == "deployment_success"


def test_a_timed_out_update_rolls_back_to_the_previous_version(
        orch: Orchestrator, runtime: FakeRuntime, clock: FakeClock) -> None:
    strategy = {"upgradeStrategy": {"deploymentTimeoutSeconds": 30, "autoRollback": True}}
    first = orch.create_app(make_app(instances=1, **strategy).model_copy(
        update={"version": None}))
    orch.run_once(clock.now())
    orch.run_once(clock.advance(1))
    assert orch.deployments() == []
    # The new configuration's task never starts: its launch fails each time.
    orch.update_app(first.model_copy(update={"cmd": "exit 1", "version": None}))
    runtime.node_list = []  # nothing can be placed any more
    orch.run_once(clock.advance(1))
    assert len(orch.deployments()) == 1
    orch.run_once(clock.advance(31))
    (rollback,) = orch.deployments()
    assert orch.app("/web").cmd == first.cmd  # the previous configuration is back
    assert rollback.target == {"/web": orch.app("/web").version}
