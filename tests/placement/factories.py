"""Small factories for placement tests: nodes, requests, constraints, snapshots."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from scheduler.model.constraints import Constraint, parse_constraint
from scheduler.model.node import Node
from scheduler.model.resources import PortRange, Resources
from scheduler.placement.results import ClusterSnapshot, PlacedTask, PlacementRequest


def make_node(
    hostname: str,
    cpus: float = 4.0,
    mem: float = 4096.0,
    disk: float = 0.0,
    gpus: float = 0.0,
    ports: Sequence[PortRange] = ((31000, 31009),),
    **attributes: str,
) -> Node:
    return Node(
        hostname=hostname,
        resources=Resources(cpus, mem, disk, gpus),
        ports=tuple(ports),
        attributes=dict(attributes),
    )


def con(*raw: str) -> Constraint:
    """``con("rack", "MAX_PER", "2")``, validated like API input."""
    return parse_constraint(list(raw))


def make_request(
    app_id: str = "/app",
    cpus: float = 1.0,
    mem: float = 128.0,
    disk: float = 0.0,
    gpus: float = 0.0,
    ports: Sequence[int] = (),
    constraints: Iterable[Constraint] = (),
) -> PlacementRequest:
    return PlacementRequest(
        app_id=app_id,
        resources=Resources(cpus, mem, disk, gpus),
        ports=tuple(ports),
        constraints=tuple(constraints),
    )


def make_task(
    host: str,
    app_id: str = "/app",
    cpus: float = 1.0,
    mem: float = 128.0,
    disk: float = 0.0,
    gpus: float = 0.0,
    ports: Sequence[int] = (),
) -> PlacedTask:
    return PlacedTask(
        app_id=app_id, host=host, resources=Resources(cpus, mem, disk, gpus), ports=tuple(ports)
    )


def snapshot(nodes: Iterable[Node], tasks: Iterable[PlacedTask] = ()) -> ClusterSnapshot:
    return ClusterSnapshot(nodes=tuple(nodes), tasks=tuple(tasks))
