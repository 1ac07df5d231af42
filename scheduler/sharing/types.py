"""The values the sharing decisions take and return: running tasks, pending requests, intents.

Everything is frozen data. Time is a ``datetime`` argument; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from scheduler.model.resources import Resources
from scheduler.placement.results import PlacedTask, PlacementRequest


@dataclass(frozen=True)
class RunningTask:
    """A task that holds resources on a node, as sharing sees it.

    ``owner`` is the app id or job name (the key constraints count by); ``team`` the quota
    team; ``grace_seconds`` the SIGTERM → SIGKILL gap a preemption must honour. ``killing``
    marks a task already asked to stop: it still holds its resources until it exits, and is
    never chosen as a victim again. ``preempted_for`` names the pending request a preemption
    was issued for (``None`` for any other kill). ``gang`` groups the members of one gang:
    preempting one member preempts them all (a gang runs whole or not at all).
    """

    id: str
    owner: str
    team: str
    host: str
    resources: Resources
    priority: int
    started_at: datetime
    grace_seconds: float = 3.0
    ports: tuple[int, ...] = ()
    gpu_devices: tuple[int, ...] = ()
    gang: str | None = None
    killing: bool = False
    preempted_for: str | None = None

    def placed(self) -> PlacedTask:
        """What the task holds, in the placement pipeline's terms."""
        return PlacedTask(self.owner, self.host, self.resources, self.ports)


@dataclass(frozen=True)
class PendingRequest:
    """Something waiting to be placed: one task, or a gang of ``gang_size`` identical members
    placed all or none.

    ``id`` is stable across passes (an app's queue entry, a job run id). ``nominated`` is set
    by the caller when an earlier plan preempted tasks for this request: such requests are
    considered first, so the capacity freed for them is not taken by others.
    """

    id: str
    placement: PlacementRequest
    team: str
    priority: int
    submitted_at: datetime
    gang_size: int = 1
    nominated: bool = False

    @property
    def demand(self) -> Resources:
        """All the request needs at once (every gang member)."""
        r = self.placement.resources
        n = float(self.gang_size)
        return Resources(r.cpus * n, r.mem * n, r.disk * n, r.gpus * n)


class PreemptionKind(StrEnum):
    """Why a victim may be taken: it has a lower priority (in the preemptor's team, or on
    capacity its own team borrowed), or its team borrowed capacity the preemptor's team is
    guaranteed and now needs back (Kueue's reclaim; any priority)."""

    PRIORITY = "priority"
    RECLAIM = "reclaim"


@dataclass(frozen=True)
class Victim:
    """One task chosen for preemption, and why (data the API and events can show)."""

    task_id: str
    host: str
    owner: str
    team: str
    priority: int
    grace_seconds: float
    kind: PreemptionKind


@dataclass(frozen=True)
class Launch:
    """Place member ``rank`` of ``request_id`` on ``host`` with these host ports, GPU devices
    and extra environment (gang variables, ``CUDA_VISIBLE_DEVICES``). ``borrowing`` marks a
    task admitted above its team's guarantee (reclaimable first)."""

    request_id: str
    rank: int
    host: str
    ports: tuple[int, ...]
    gpu_devices: tuple[int, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    borrowing: bool = False


@dataclass(frozen=True)
class Preempt:
    """Stop ``victim.task_id`` within ``victim.grace_seconds`` so ``preemptor`` can be placed.
    ``detail`` is the sentence the queue, status page and event stream show."""

    victim: Victim
    preemptor: str
    preemptor_priority: int
    detail: str


class WaitKind(StrEnum):
    QUOTA = "quota"
    CAPACITY = "capacity"
    PREEMPTING = "preempting"
    INVALID = "invalid"


@dataclass(frozen=True)
class Wait:
    """``request_id`` stays pending this pass; ``reason`` says why in a person's words."""

    request_id: str
    kind: WaitKind
    reason: str


@dataclass(frozen=True)
class SharingPlan:
    """One pass's decisions, in the order they were made (highest priority first)."""

    launches: tuple[Launch, ...] = ()
    preemptions: tuple[Preempt, ...] = ()
    waits: tuple[Wait, ...] = ()
