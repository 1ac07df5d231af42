"""Desired vs observed for one app: which tasks to launch, which to kill, and why not more.

Pure: takes the app, its tasks, health, backoff, a :class:`Placer` and ``now``; returns values.
The orchestrator applies them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from scheduler.model.app import AppSpec, KillSelection
from scheduler.model.task import Task, TaskState
from scheduler.placement.pipeline import Placer
from scheduler.placement.results import Placement, PlacementRequest, RejectionSummary
from scheduler.services.backoff import Backoff


@dataclass(frozen=True)
class Kill:
    task_id: str
    reason: str


@dataclass(frozen=True)
class ReconcileResult:
    """What to do for one app in this pass.

    ``waiting`` counts the instances that should exist but are neither running nor being
    launched now (because of backoff, or because placement failed: see ``rejection``).
    ``delayed_until`` is set while the launch backoff holds launches back.
    """

    launches: tuple[Placement, ...] = ()
    kills: tuple[Kill, ...] = ()
    waiting: int = 0
    rejection: RejectionSummary | None = None
    delayed_until: datetime | None = None
    notes: tuple[str, ...] = field(default=())


def is_current(task: Task, config_version: str) -> bool:
    """Whether ``task`` runs the app's current configuration (not only its current scale).

    Versions are Marathon timestamps in one fixed format, so string order is time order.
    """
    return task.version >= config_version


def task_is_healthy(task: Task, spec: AppSpec, health: Mapping[str, bool | None]) -> bool:
    """RUNNING and, when the app has health checks, passing all of them."""
    if task.state is not TaskState.RUNNING:
        return False
    if not spec.healthChecks:
        return True
    return health.get(task.id) is True


def _kill_order(tasks: Sequence[Task], spec: AppSpec,
                health: Mapping[str, bool | None]) -> list[Task]:
    """Tasks in the order they should go on scale-down: not-yet-healthy ones first, then by
    killSelection (YOUNGEST_FIRST: latest staged first)."""
    youngest_first = spec.killSelection is KillSelection.YOUNGEST_FIRST

    def key(t: Task) -> tuple[int, float]:
        ts = t.staged_at.timestamp()
        return (1 if task_is_healthy(t, spec, health) else 0, -ts if youngest_first else ts)

    return sorted(tasks, key=key)


def reconcile(
    spec: AppSpec,
    config_version: str,
    tasks: Sequence[Task],
    health: Mapping[str, bool | None],
    unhealthy: Mapping[str, str],
    backoff: Backoff,
    placer: Placer,
    now: datetime,
    hold_launches: bool = False,
) -> ReconcileResult:
    """Decide launches and kills for ``spec``.

    - ``tasks``: this app's tasks as stored (terminal ones are ignored).
    - ``health``: task id → all checks alive (``None``: no result yet).
    - ``unhealthy``: task id → cause, for tasks the health monitor says must be killed.
    - Tasks of an older configuration are replaced by a rolling restart that keeps
      ``ceil(n * minimumHealthCapacity)`` healthy tasks and at most
      ``floor(n * (1 + maximumOverCapacity))`` tasks (a surge of one when both are equal).
    - Launches respect ``backoff`` and are placed with ``placer`` (which reserves them).
    - ``hold_launches``: launch nothing yet (the app's dependencies have not converged);
      kills still happen.
    """
    kills: list[Kill] = []
    live = [t for t in tasks if t.state.active and t.kill_requested_at is None]
    for t in live:
        if t.id in unhealthy:
            kills.append(Kill(t.id, f"unhealthy: {unhealthy[t.id]}"))
    live = [t for t in live if t.id not in unhealthy]

    current = [t for t in live if is_current(t, config_version)]
    old = [t for t in live if not is_current(t, config_version)]
    n = spec.instances

    # Scale down: too many tasks of the current configuration.
    if len(current) > n:
        excess = _kill_order(current, spec, health)[: len(current) - n]
        kills.extend(Kill(t.id, "scaling down") for t in excess)
        gone = {t.id for t in excess}
        current = [t for t in current if t.id not in gone]

    # Rolling replacement of old-configuration tasks.
    if old:
        min_healthy = math.ceil(n * spec.upgradeStrategy.minimumHealthCapacity)
        max_capacity = math.floor(n * (1 + spec.upgradeStrategy.maximumOverCapacity))
        if min_healthy == max_capacity:
            max_capacity += 1
        healthy = sum(1 for t in current + old if task_is_healthy(t, spec, health))
        can_kill = max(0, healthy - min_healthy)
        # Unhealthy old tasks never count toward capacity we must keep: kill them first.
        for t in _kill_order(old, spec, health):
            if not task_is_healthy(t, spec, health):
                kills.append(Kill(t.id, "replaced by a new version"))
            elif can_kill > 0:
                kills.append(Kill(t.id, "replaced by a new version"))
                can_kill -= 1
        killed = {k.task_id for k in kills}
        remaining_old = [t for t in old if t.id not in killed]
        room = max(0, max_capacity - len(remaining_old) - len(current))
        want = min(max(0, n - len(current)), room)
    else:
        want = max(0, n - len(current))

    missing = max(0, n - len(current))
    if hold_launches and want > 0:
        return ReconcileResult(kills=tuple(kills), waiting=missing,
                               notes=("waiting for dependencies",))
    if want == 0:
        return ReconcileResult(kills=tuple(kills), waiting=missing - want if not old else 0)

    allowed_at = backoff.for_version(config_version).launch_allowed_at(spec)
    if allowed_at is not None and now < allowed_at:
        return ReconcileResult(kills=tuple(kills), waiting=missing, delayed_until=allowed_at)

    placements, rejection = placer.place_many(PlacementRequest.for_app(spec), want)
    return ReconcileResult(
        launches=tuple(placements),
        kills=tuple(kills),
        waiting=missing - len(placements),
        rejection=rejection,
    )
