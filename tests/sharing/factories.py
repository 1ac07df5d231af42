"""Small factories for sharing tests: running tasks, pending requests, quotas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.model.quota import TeamQuota
from scheduler.model.resources import Resources
from scheduler.sharing.types import PendingRequest, RunningTask
from tests.placement.factories import make_node, make_request

T0 = datetime(2026, 12, 1, tzinfo=UTC)

__all__ = ["T0", "make_node", "make_request", "pending", "quota", "running"]


def running(
    task_id: str,
    host: str,
    *,
    cpus: float = 1.0,
    mem: float = 128.0,
    gpus: float = 0.0,
    priority: int = 100,
    team: str = "a",
    owner: str | None = None,
    age_s: float = 0.0,
    grace: float = 3.0,
    gang: str | None = None,
    killing: bool = False,
    preempted_for: str | None = None,
    gpu_devices: tuple[int, ...] = (),
) -> RunningTask:
    """A task started ``age_s`` seconds before ``T0`` + 1 day (older = larger age)."""
    return RunningTask(
        id=task_id,
        owner=owner or f"/{team}/{task_id}",
        team=team,
        host=host,
        resources=Resources(cpus, mem, 0.0, gpus),
        priority=priority,
        started_at=T0 + timedelta(days=1) - timedelta(seconds=age_s),
        grace_seconds=grace,
        gang=gang,
        killing=killing,
        preempted_for=preempted_for,
        gpu_devices=gpu_devices,
    )


def pending(
    request_id: str,
    *,
    cpus: float = 1.0,
    mem: float = 128.0,
    gpus: float = 0.0,
    priority: int = 500,
    team: str = "a",
    gang: int = 1,
    at_s: float = 0.0,
    app_id: str | None = None,
    ports: tuple[int, ...] = (),
    nominated: bool = False,
) -> PendingRequest:
    return PendingRequest(
        id=request_id,
        placement=make_request(app_id or f"/{team}/{request_id}", cpus=cpus, mem=mem, gpus=gpus,
                               ports=ports),
        team=team,
        priority=priority,
        submitted_at=T0 + timedelta(seconds=at_s),
        gang_size=gang,
        nominated=nominated,
    )


def quota(team: str, cpus: float, mem: float = 1e9, gpus: float = 0.0,
          borrow: tuple[float, float, float] | None = None) -> TeamQuota:
    limit = Resources(cpus=borrow[0], mem=borrow[1], gpus=borrow[2]) if borrow else None
    return TeamQuota(team, Resources(cpus=cpus, mem=mem, gpus=gpus), limit)
