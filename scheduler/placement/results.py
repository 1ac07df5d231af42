"""The values placement consumes and produces: requests, snapshots, placements, rejections."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from scheduler.model.app import AppSpec
from scheduler.model.constraints import Constraint
from scheduler.model.node import Node
from scheduler.model.resources import Resources


class Strategy(StrEnum):
    """How feasible nodes are ranked: fill the fullest first, or the emptiest first."""

    BINPACK = "binpack"
    SPREAD = "spread"


# Marathon's reject reasons (processedOffersSummary.rejectSummaryLastOffers[].reason), in the
# order Marathon lists them. Checkers use these codes so strict clients recognise them.
MARATHON_REASONS = (
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
)


@dataclass(frozen=True)
class PlacementRequest:
    """What one new task of an app needs.

    ``ports`` has one slot per host port the task needs, in the app's port order: ``0`` means
    any free port from the node's ranges, any other number means exactly that port.
    """

    app_id: str
    resources: Resources
    ports: tuple[int, ...] = ()
    constraints: tuple[Constraint, ...] = ()

    @property
    def dynamic_ports(self) -> int:
        return sum(1 for p in self.ports if p == 0)

    @property
    def fixed_ports(self) -> tuple[int, ...]:
        return tuple(p for p in self.ports if p != 0)

    @staticmethod
    def for_app(spec: AppSpec) -> PlacementRequest:
        fixed = set(spec.fixed_host_ports)
        return PlacementRequest(
            app_id=spec.id,
            resources=spec.resources,
            ports=tuple(p.port if p.port in fixed else 0 for p in spec.port_definitions),
            constraints=tuple(spec.constraints),
        )


@dataclass(frozen=True)
class PlacedTask:
    """A task that holds resources on a node (running, starting, or being killed)."""

    app_id: str
    host: str
    resources: Resources
    ports: tuple[int, ...] = ()


@dataclass(frozen=True)
class ClusterSnapshot:
    """Nodes and the tasks that hold resources on them, at one moment."""

    nodes: tuple[Node, ...]
    tasks: tuple[PlacedTask, ...] = ()


@dataclass(frozen=True)
class Placement:
    """Where a task goes and its host ports, one per slot of ``PlacementRequest.ports``."""

    host: str
    ports: tuple[int, ...]


@dataclass(frozen=True)
class Rejection:
    """One node turned down by one checker: ``reason`` is a Marathon code, ``detail`` is what
    a person reads (``insufficient mem``, ``UNIQUE hostname``)."""

    host: str
    reason: str
    detail: str


@dataclass(frozen=True)
class StageCount:
    """One stage of the feasibility funnel: how many nodes reached it, how many it declined."""

    reason: str
    detail: str
    processed: int
    declined: int


@dataclass(frozen=True)
class RejectionSummary:
    """Why a task could not be placed: the funnel of checkers over all nodes.

    ``nodes`` is the number of nodes considered. Stages appear in pipeline order; a node is
    counted as declined by the first stage that rejected it.
    """

    nodes: int
    stages: tuple[StageCount, ...] = field(default=())

    def describe(self) -> str:
        """``3 nodes: insufficient mem; 2 nodes: UNIQUE hostname`` (declining stages only)."""
        if self.nodes == 0:
            return "no nodes"
        parts = [
            f"{s.declined} node{'s' if s.declined != 1 else ''}: {s.detail}"
            for s in self.stages
            if s.declined
        ]
        return "; ".join(parts) if parts else "no node declined"

    def to_marathon(self) -> list[dict[str, Any]]:
        """``rejectSummaryLastOffers``: one entry per Marathon reason, stages merged by reason.

        ``processed`` is what reached the first stage carrying that reason.
        """
        merged: OrderedDict[str, list[int]] = OrderedDict((r, [0, 0]) for r in MARATHON_REASONS)
        first_seen: set[str] = set()
        for s in self.stages:
            slot = merged.setdefault(s.reason, [0, 0])
            if s.reason not in first_seen:
                slot[1] = s.processed
                first_seen.add(s.reason)
            slot[0] += s.declined
        return [
            {"reason": r, "declined": d, "processed": p} for r, (d, p) in merged.items()
        ]
