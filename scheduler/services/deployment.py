"""Pure deployment logic: which steps a change needs, whether an app has converged, and which
deployments finish (succeed, time out, roll back) at a given moment."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from scheduler.model.app import AppSpec
from scheduler.model.deployment import Action, Deployment
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


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class DeploymentTransition:
    """Decided for one deployment at ``now``: it ``succeeded`` (every affected app converged:
    its steps all succeeded) or ``failed`` (timed out; ``rollback`` when the app asks for an
    automatic rollback). Deployments without a transition stay as they are."""

    deployment: Deployment
    outcome: Outcome
    rollback: bool = False
    reason: str = ""


def deployment_transitions(
    deployments: Iterable[Deployment],
    apps: Mapping[str, AppSpec],
    config_versions: Mapping[str, str],
    tasks_by_app: Mapping[str, Sequence[Task]],
    health: Mapping[str, bool | None],
    ready: Mapping[str, bool],
    now: datetime,
) -> list[DeploymentTransition]:
    """Which deployments finish at ``now``, and how. Pure: the orchestrator applies them.

    An affected app counts once it has converged (:func:`app_converged`: the right number of
    current tasks, healthy, and ready where it has a readiness check; readiness gates a step
    as in Marathon), or once it moved on to a version other than the deployment's target (a
    forced update superseded it). A deployment still open at its ``timeout_at`` fails, with a
    rollback when ``auto_rollback``. ``config_versions`` maps an app id to its
    lastConfigChangeAt.
    """
    out: list[DeploymentTransition] = []
    for d in deployments:
        converged = True
        for app_id in d.affected_apps:
            spec = apps.get(app_id)
            if app_id in d.target and (spec.version if spec else None) != d.target[app_id]:
                continue  # superseded for this app
            cfg = config_versions.get(app_id) or (spec.version if spec else "") or ""
            if not app_converged(spec, cfg, tasks_by_app.get(app_id, ()), health, ready):
                converged = False
        if converged:
            out.append(DeploymentTransition(d, Outcome.SUCCEEDED))
        elif d.timeout_at is not None and now >= d.timeout_at:
            out.append(DeploymentTransition(d, Outcome.FAILED, rollback=d.auto_rollback,
                                            reason="timed out"))
    return out
