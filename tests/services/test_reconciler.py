"""The reconciler on plain data: scale, replace, roll, back off, and say why not."""

from __future__ import annotations

from datetime import timedelta

from scheduler.model.task import Task, TaskState
from scheduler.placement.pipeline import Placer
from scheduler.placement.results import ClusterSnapshot, PlacedTask
from scheduler.services.backoff import Backoff
from scheduler.services.reconciler import ReconcileResult, reconcile
from tests.factories import T0, V1, V2, make_app, make_node, make_task

NODES = (make_node("n1"), make_node("n2", ports="31100-31199"),
         make_node("n3", ports="31200-31299"))


NO_BACKOFF = Backoff()


def run(app, tasks: list[Task], *, health=None, unhealthy=None, backoff=NO_BACKOFF,
        now=T0, config_version=None, nodes=NODES) -> ReconcileResult:
    placed = tuple(PlacedTask(t.app_id, t.host, app.resources, t.ports) for t in tasks)
    placer = Placer(ClusterSnapshot(nodes, placed))
    return reconcile(app, config_version or app.version, tasks, health or {}, unhealthy or {},
                     backoff, placer, now)


def test_scale_up_from_zero_places_every_instance_on_distinct_hosts_with_unique() -> None:
    app = make_app(instances=3, constraints=[["hostname", "UNIQUE"]])
    result = run(app, [])
    assert len(result.launches) == 3
    assert len({p.host for p in result.launches}) == 3
    assert result.waiting == 0 and result.rejection is None


def test_unplaceable_instances_wait_with_a_reason() -> None:
    app = make_app(instances=4, constraints=[["hostname", "UNIQUE"]])
    result = run(app, [])
    assert len(result.launches) == 3
    assert result.waiting == 1
    assert result.rejection is not None
    assert "UNIQUE hostname" in result.rejection.describe()


def test_nothing_to_do_when_converged() -> None:
    app = make_app(instances=2)
    tasks = [make_task(app, "n1"), make_task(app, "n2", ports=(31100,))]
    result = run(app, tasks)
    assert result.launches == () and result.kills == () and result.waiting == 0


def test_scale_down_youngest_first_by_default() -> None:
    app = make_app(instances=1)
    old = make_task(app, "n1", staged_offset=0)
    young = make_task(app, "n2", staged_offset=10, ports=(31100,))
    result = run(app, [old, young])
    assert [k.task_id for k in result.kills] == [young.id]


def test_scale_down_oldest_first_when_asked() -> None:
    app = make_app(instances=1, killSelection="OLDEST_FIRST")
    old = make_task(app, "n1", staged_offset=0)
    young = make_task(app, "n2", staged_offset=10, ports=(31100,))
    result = run(app, [old, young])
    assert [k.task_id for k in result.kills] == [old.id]


def test_scale_down_kills_unhealthy_before_healthy() -> None:
    app = make_app(instances=1, healthChecks=[{"protocol": "TCP"}])
    sick = make_task(app, "n1", staged_offset=0)
    well = make_task(app, "n2", staged_offset=10, ports=(31100,))
    result = run(app, [sick, well], health={sick.id: False, well.id: True})
    assert [k.task_id for k in result.kills] == [sick.id]


def test_unhealthy_task_is_killed_and_replaced_in_the_same_pass() -> None:
    app = make_app(instances=1)
    t = make_task(app, "n1")
    result = run(app, [t], unhealthy={t.id: "HTTP 503"})
    assert [k.task_id for k in result.kills] == [t.id]
    assert "HTTP 503" in result.kills[0].reason
    assert len(result.launches) == 1


def test_failed_tasks_are_not_counted() -> None:
    app = make_app(instances=1)
    dead = make_task(app, "n1", state=TaskState.FAILED)
    result = run(app, [dead])
    assert len(result.launches) == 1


def test_backoff_holds_launches_until_the_delay_passed() -> None:
    app = make_app(instances=1, backoffSeconds=10, backoffFactor=2)
    bo = Backoff().after_failure(T0, V1).after_failure(T0, V1)  # second failure: 20 s
    held = run(app, [], backoff=bo, now=T0 + timedelta(seconds=19))
    assert held.launches == () and held.waiting == 1
    assert held.delayed_until == T0 + timedelta(seconds=20)
    go = run(app, [], backoff=bo, now=T0 + timedelta(seconds=20))
    assert len(go.launches) == 1


def test_backoff_resets_on_a_new_configuration() -> None:
    app = make_app(instances=1, version=V2, backoffSeconds=100)
    bo = Backoff().after_failure(T0, V1)
    assert len(run(app, [], backoff=bo, now=T0).launches) == 1


def test_backoff_is_capped() -> None:
    app = make_app(backoffSeconds=1, backoffFactor=10, maxLaunchDelaySeconds=30)
    bo = Backoff()
    for _ in range(5):
        bo = bo.after_failure(T0, V1)
    assert bo.delay_seconds(app) == 30


def test_rolling_restart_keeps_minimum_health_capacity() -> None:
    # n=3, mHC=1, mOC=0 → min healthy 3 = max capacity 3 → surge of one: launch 1, kill 0.
    app = make_app(instances=3, version=V2,
                   upgradeStrategy={"minimumHealthCapacity": 1, "maximumOverCapacity": 0})
    old = [make_task(app, h, version=V1, ports=(p,))
           for h, p in (("n1", 31000), ("n2", 31100), ("n3", 31200))]
    result = run(app, old)
    assert result.kills == ()
    assert len(result.launches) == 1


def test_rolling_restart_with_half_capacity_kills_and_launches_in_parallel() -> None:
    # n=4, mHC=0.5, mOC=0 → keep 2 healthy, max 4 tasks: kill 2 old, launch 2 new.
    app = make_app(instances=4, version=V2, cpus=0.5,
                   upgradeStrategy={"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0})
    old = [make_task(app, "n1", version=V1, ports=(31000 + i,)) for i in range(4)]
    result = run(app, old)
    assert len(result.kills) == 2
    assert len(result.launches) == 2


def test_new_configuration_tasks_count_as_current() -> None:
    app = make_app(instances=1, version=V2)
    t = make_task(app, "n1", version=V2)
    assert run(app, [t]).launches == ()
