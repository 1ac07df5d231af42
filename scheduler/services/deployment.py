"""Pure deployment logic: which steps a change needs, and whether an app has converged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from scheduler.model.app import AppSpec
from scheduler.model.deployment import Action
from scheduler.model.task import Task
from scheduler.services.reconciler import is_current, task_is_healthy


def steps_for_change(
    old: AppSpec | None, new: AppSpec | None, scaling_only: bool, restart: bool = False
) -> tuple[tuple[tuple[Action, str], ...], ...]:
    """Marathon's steps: create → Start then Scale; delete → Stop; instances only → Scale;
    any other change (or an explicit restart) → Restart."""
    if new is None:
        assert old is not None
        return (((Action.STOP, old.id),),)
    if old is None:
        return (((Action.START, new.id),), ((Action.SCALE, new.id),))
    if scaling_only and not restart:
        return (((Action.SCALE, new.id),),)
    return (((Action.RESTART, new.id),),)


def app_converged(
    spec: AppSpec | None,
    config_version: str,
    tasks: Sequence[Task],
    health: Mapping[str, bool | None],
    ready: Mapping[str, bool],
) -> bool:
    """Whether an app has reached its desired state.

    ``spec`` ``None`` (deleted): converged once no task of it is left at all. Otherwise: no
    task of an older configuration and none being killed remains, and exactly ``instances``
    current tasks run, healthy (when the app has health checks) and ready (when it has a
    readiness check; ``ready`` maps task id → passed).
    """
    alive = [t for t in tasks if not t.state.terminal]
    if spec is None:
        return not alive
    if any(t.kill_requested_at is not None for t in alive):
        return False
    if any(not is_current(t, config_version) for t in alive):
        return False
    if len(alive) != spec.instances:
        return False
    for t in alive:
        if not task_is_healthy(t, spec, health):
            return False
        if spec.readinessChecks and not ready.get(t.id, False):
            return False
    return True
