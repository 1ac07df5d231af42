"""The group applier over the orchestrator: a group write becomes app writes (dependencies
first) and one deployment; scale and delete apply to every app of the group. Fake runtime,
frozen clock."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.clock import FakeClock
from scheduler.orchestrator import Conflict, Orchestrator
from scheduler.orchestrator.group_commands import GroupManager
from tests.support.fake_runtime import FakeRuntime


def app(name: str, **fields: Any) -> dict[str, Any]:
    return {"id": name, "cmd": "sleep 100", "cpus": 0.1, "mem": 16, "instances": 1, **fields}


@pytest.fixture
def groups(orch: Orchestrator) -> GroupManager:
    return GroupManager(orch)


def test_a_group_starts_its_apps_dependencies_first(
        orch: Orchestrator, groups: GroupManager, runtime: FakeRuntime,
        clock: FakeClock) -> None:
    change = groups.create({"id": "/stack", "apps": [app("db"), app("web",
                                                                   dependencies=["db"])]})
    assert change.group_id == "/stack" and change.deployment_id
    assert [a.id for a in orch.apps()] == ["/stack/db", "/stack/web"]
    orch.run_once(clock.now())
    assert [s.app_id for s in runtime.launches] == ["/stack/db"]
    orch.run_once(clock.advance(1))  # db running: converged
    orch.run_once(clock.advance(1))
    assert sorted(s.app_id for s in runtime.launches) == ["/stack/db", "/stack/web"]


def test_scaling_a_group_scales_every_app(
        orch: Orchestrator, groups: GroupManager, clock: FakeClock) -> None:
    groups.create({"id": "/stack", "apps": [app("a"), app("b", instances=2)]})
    for _ in range(3):
        orch.run_once(clock.advance(1))
    groups.scale("/stack", 2)
    assert {a.id: a.instances for a in orch.apps()} == {"/stack/a": 2, "/stack/b": 4}


def test_a_locked_group_refuses_a_second_write_unless_forced(
        orch: Orchestrator, groups: GroupManager, clock: FakeClock) -> None:
    groups.create({"id": "/stack", "apps": [app("a")]})
    with pytest.raises(Conflict):
        groups.update("/stack", {"id": "/stack", "apps": [app("a", instances=2)]})
    groups.update("/stack", {"id": "/stack", "apps": [app("a", instances=2)]}, force=True)
    assert orch.app("/stack/a").instances == 2


def test_deleting_a_group_kills_its_tasks(
        orch: Orchestrator, groups: GroupManager, runtime: FakeRuntime,
        clock: FakeClock) -> None:
    groups.create({"id": "/stack", "apps": [app("a"), app("b")]})
    for _ in range(3):
        orch.run_once(clock.advance(1))
    launched = sorted(s.task_id for s in runtime.launches)
    groups.delete("/stack", force=True)
    assert orch.apps() == []
    assert sorted(runtime.killed_ids()) == launched
