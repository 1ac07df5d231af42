"""A slow, obvious reference for the placement pipeline, written independently of it.

Per node, in plain Python, it evaluates the same rules the vectorised pipeline does, and it
keeps its own bookkeeping from the placements the Placer reports. Property tests drive both
and demand they agree: same feasible set, same first rejection per node, ports chosen the
same way, and a chosen node whose score is the best.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from scheduler.model.constraints import Constraint, Operator
from scheduler.model.node import Node
from scheduler.model.resources import EPSILON, Resources
from scheduler.placement.results import PlacedTask, PlacementRequest


def dims(r: Resources) -> tuple[float, float, float, float]:
    return (r.cpus, r.mem, r.disk, r.gpus)


RESOURCE_STAGES = (
    ("InsufficientCpus", "insufficient cpus"),
    ("InsufficientMemory", "insufficient mem"),
    ("InsufficientDisk", "insufficient disk"),
    ("InsufficientGpus", "insufficient gpus"),
)


@dataclass
class Oracle:
    nodes: list[Node]
    tasks: list[PlacedTask] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = sorted(self.nodes, key=lambda n: n.hostname)
        known = {n.hostname for n in self.nodes}
        self.tasks = [t for t in self.tasks if t.host in known]

    # --- bookkeeping ------------------------------------------------------------------

    def node(self, host: str) -> Node:
        return next(n for n in self.nodes if n.hostname == host)

    def on(self, node: Node) -> list[PlacedTask]:
        return [t for t in self.tasks if t.host == node.hostname]

    def free(self, node: Node) -> list[float]:
        free = list(dims(node.resources))
        for t in self.on(node):
            for d, x in enumerate(dims(t.resources)):
                free[d] -= x
        return free

    def used_ports(self, node: Node) -> set[int]:
        return {p for t in self.on(node) for p in t.ports}

    def free_ports(self, node: Node) -> list[int]:
        used = self.used_ports(node)
        return [p for lo, hi in sorted(node.ports) for p in range(lo, hi + 1) if p not in used]

    def count(self, app_id: str, fld: str, value: str) -> int:
        return sum(
            1
            for t in self.tasks
            if t.app_id == app_id and self.node(t.host).attribute(fld) == value
        )

    def add(self, task: PlacedTask) -> None:
        self.tasks.append(task)

    def remove(self, task: PlacedTask) -> None:
        self.tasks.remove(task)

    # --- feasibility --------------------------------------------------------------------

    def _static_ok(self, c: Constraint, app_id: str, node: Node) -> bool:
        """Every operator but GROUP_BY, for one node."""
        value = node.attribute(c.field)
        if c.operator is Operator.UNLIKE:
            return value is None or re.fullmatch(c.value or "", value) is None
        if value is None:
            return False
        if c.operator is Operator.UNIQUE:
            return self.count(app_id, c.field, value) == 0
        if c.operator is Operator.MAX_PER:
            return self.count(app_id, c.field, value) < int(c.value or "0")
        if c.operator is Operator.LIKE:
            return re.fullmatch(c.value or "", value) is not None
        if c.operator is Operator.IS:
            return value == c.value
        if c.operator is Operator.CLUSTER:
            if c.value:
                return value == c.value
            for t in self.tasks:
                if t.app_id == app_id:
                    pinned = self.node(t.host).attribute(c.field)
                    if pinned is not None:
                        return value == pinned
            return True
        raise AssertionError(c)

    def _resource_failure(self, req: PlacementRequest, node: Node) -> tuple[str, str] | None:
        free = self.free(node)
        for d, x in enumerate(dims(req.resources)):
            if x > free[d] + EPSILON:
                return RESOURCE_STAGES[d]
        return None

    def _ports_ok(self, req: PlacementRequest, node: Node) -> bool:
        fixed = req.fixed_ports
        if len(set(fixed)) != len(fixed):
            return False
        free = self.free_ports(node)
        return len(free) >= len(req.ports) and all(p in free for p in fixed)

    def _passes_non_group_by(self, req: PlacementRequest, node: Node) -> bool:
        return (
            self._resource_failure(req, node) is None
            and self._ports_ok(req, node)
            and all(
                self._static_ok(c, req.app_id, node)
                for c in req.constraints
                if c.operator is not Operator.GROUP_BY
            )
        )

    def _group_by_ok(self, c: Constraint, req: PlacementRequest, node: Node) -> bool:
        value = node.attribute(c.field)
        if value is None:
            return False
        roomy = {
            v
            for n in self.nodes
            if (v := n.attribute(c.field)) is not None and self._passes_non_group_by(req, n)
        }
        if not roomy:
            return False
        least = min(self.count(req.app_id, c.field, v) for v in roomy)
        return self.count(req.app_id, c.field, value) == least

    def first_failure(self, req: PlacementRequest, node: Node) -> tuple[str, str] | None:
        """(reason, detail) of the first stage rejecting ``node``; ``None`` if feasible."""
        failure = self._resource_failure(req, node)
        if failure:
            return failure
        if not self._ports_ok(req, node):
            return ("InsufficientPorts", "insufficient ports")
        for c in req.constraints:
            ok = (
                self._group_by_ok(c, req, node)
                if c.operator is Operator.GROUP_BY
                else self._static_ok(c, req.app_id, node)
            )
            if not ok:
                return ("UnfulfilledConstraint", c.describe())
        return None

    def feasible(self, req: PlacementRequest) -> list[Node]:
        return [n for n in self.nodes if self.first_failure(req, n) is None]

    # --- ranking and ports ------------------------------------------------------------------

    def balanced_score(self, req: PlacementRequest, node: Node) -> float:
        """The Balanced ranker (Strategy.BINPACK): BinPack's score with weight 12 on occupied
        nodes, unless the task pushes the node's free mem:cpu out of 0.8..1.2 of its
        capacity's (with a slack of half the task's mean share) while making it less level;
        then 25 * (1 - stranded). Empty nodes: 25 + 25 * (1 - dominant)."""
        cap = dims(node.resources)
        free = self.free(node)
        need = dims(req.resources)
        before = [(cap[d] - free[d]) / cap[d] if cap[d] > 0 else 0.0 for d in range(4)]
        after = [before[d] + need[d] / cap[d] if cap[d] > 0 else 0.0 for d in range(4)]
        dominant = min(1.0, max(0.0, *after))
        if not self.on(node):
            return 25.0 + 25.0 * (1.0 - dominant)
        stranded = abs(after[0] - after[1])
        tol = 0.5 * ((after[0] - before[0]) + (after[1] - before[1])) / 2
        free_cpus, free_mem = 1.0 - after[0], 1.0 - after[1]
        out_of_band = free_mem < 0.8 * free_cpus - tol or free_mem > 1.2 * free_cpus + tol
        if out_of_band and stranded > abs(before[0] - before[1]):
            return 25.0 * max(0.0, 1.0 - stranded)
        return 50.0 + 50.0 * (dominant + 12.0 * (1.0 - stranded)) / 13.0

    def spread_score(self, req: PlacementRequest, node: Node) -> float:
        cap = dims(node.resources)
        free = self.free(node)
        need = dims(req.resources)
        after = [
            (cap[d] - free[d] + need[d]) / cap[d] if cap[d] > 0 else 0.0 for d in range(4)
        ]
        return 100.0 * (1.0 - min(1.0, max(0.0, *after)))

    def expected_ports(self, req: PlacementRequest, node: Node) -> tuple[int, ...]:
        fixed = set(req.fixed_ports)
        dynamic = iter([p for p in self.free_ports(node) if p not in fixed])
        return tuple(next(dynamic) if p == 0 else p for p in req.ports)
