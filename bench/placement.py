"""Placement benchmark: throughput and packing of the Placer vs a naive first-fit loop.

    .venv/bin/python bench/placement.py            # readable table (about 90 s)
    .venv/bin/python bench/placement.py --json     # ... and one JSON object as the last line
    .venv/bin/python bench/placement.py --no-baseline --sizes 5000   # Placer only, seconds

Cluster (seeded, so every run sees the same one): general-purpose node families with the same
4 GiB of memory per cpu in four sizes (8, 16, 32, 64 cpus; 40/30/20/10 % of the nodes, sizes
shuffled over hostnames), 1001 ports each, 40 nodes per rack, racks spread over three zones.

Workload: apps arrive in random order and each asks for all its instances at once
(``place_many``). Task shapes range from 0.25 cpu / 512 MiB to 8 cpus / 48 GiB; memory per
cpu is 2, 4, 4 or 6 GiB, so the workload as a whole asks for the fleet's 4 GiB per cpu while
individual apps do not. Constraints: 45 % of apps none, 20 % ``UNIQUE hostname`` (a fifth of
those also pin a fixed host port), 20 % ``MAX_PER rack n`` (n = 2..4), 15 % ``GROUP_BY
zone``; most apps want one or two dynamic ports. Apps are generated until demand reaches 70 %
of the fleet's cpus, so a good packer leaves ~30 % of the fleet as whole empty nodes. Nothing
is sorted by size: this is online placement, as the reconciler does it.

Packing is ``nodes used / L1 lower bound``: for each dimension, the fewest nodes whose largest
capacities add up to the demand placed; the bound is the maximum over dimensions (no packing
can use fewer nodes, and it ignores that cpus and mem must fit *together* on each node). The
"4GiB/cpu" row replays the same workload with every task at the fleet's ratio: the gap between
the two rows is what mixing task shapes costs.

Placement ranks with ``Strategy.BINPACK``'s ranker (``Balanced``); the "binpack (old)" row
replays the mixed workload with the previous ranker (``BinPack``, which only prefers the node
left most level) to show what refusing to skew nodes buys, in the same run.

The baseline is first-fit: a plain Python loop over nodes in hostname order with the same
feasibility semantics for everything this workload uses (resources with EPSILON, fixed and
dynamic ports, UNIQUE / MAX_PER / GROUP_BY per value of the same app, a node lacking the
field fails), taking the first feasible node.

Throughput is placements per second of *CPU time* of this (single-threaded) process, so a
busy shared machine does not distort it; wall-clock throughput is in the JSON as well, and
the two agree on an idle machine. The Placer figure is the best of ``--repeat`` runs and
counts placing only; building the Placer from the snapshot is reported apart.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.model.constraints import Constraint, Operator
from scheduler.model.node import Node
from scheduler.model.resources import EPSILON, Resources
from scheduler.placement.pipeline import Placer
from scheduler.placement.rankers import BinPack, Ranker
from scheduler.placement.results import (
    ClusterSnapshot,
    Placement,
    PlacementRequest,
)

GIB = 1024.0
PORT_RANGE = (31000, 32000)
FAMILIES = ((8, 0.4), (16, 0.3), (32, 0.2), (64, 0.1))  # cpus, share of nodes
SHAPES = (0.25, 0.5, 1.0, 1.0, 2.0, 2.0, 4.0, 8.0)  # cpus per task
MEM_PER_CPU = (2 * GIB, 4 * GIB, 4 * GIB, 6 * GIB)  # average 4 GiB per cpu, like the fleet
FILL = 0.70


def make_cluster(n: int, seed: int) -> list[Node]:
    rng = random.Random(seed)
    sizes: list[int] = []
    for cpus, share in FAMILIES:
        sizes += [cpus] * round(n * share)
    sizes = (sizes + [FAMILIES[0][0]] * n)[:n]
    rng.shuffle(sizes)
    nodes = []
    for i, cpus in enumerate(sizes):
        rack = i // 40
        nodes.append(
            Node(
                hostname=f"node-{i:05d}",
                resources=Resources(cpus=cpus, mem=cpus * 4 * GIB, disk=cpus * 20 * GIB),
                ports=(PORT_RANGE,),
                attributes={"rack": f"rack-{rack:03d}", "zone": f"zone-{'abc'[rack % 3]}"},
            )
        )
    return nodes


@dataclass(frozen=True)
class App:
    request: PlacementRequest
    instances: int


def make_workload(nodes: Sequence[Node], seed: int) -> list[App]:
    rng = random.Random(seed)
    budget = FILL * sum(n.resources.cpus for n in nodes)
    apps: list[App] = []
    demand = 0.0
    k = 0
    while demand < budget:
        cpus = rng.choice(SHAPES)
        res = Resources(cpus=cpus, mem=cpus * rng.choice(MEM_PER_CPU), disk=cpus * 2 * GIB)
        kind = rng.random()
        constraints: tuple[Constraint, ...] = ()
        ports: tuple[int, ...] = (0,) * rng.choice((0, 1, 1, 2))
        if kind < 0.45:
            instances = rng.randint(1, 40)
        elif kind < 0.65:
            instances = rng.randint(2, 30)
            constraints = (Constraint("hostname", Operator.UNIQUE),)
            if rng.random() < 0.2:
                ports = (31000 + rng.randint(0, 50), *ports)
        elif kind < 0.85:
            per = rng.randint(2, 4)
            instances = rng.randint(2, 40)
            constraints = (Constraint("rack", Operator.MAX_PER, str(per)),)
        else:
            instances = rng.randint(3, 30)
            constraints = (Constraint("zone", Operator.GROUP_BY),)
        instances = max(1, min(instances, int((budget - demand) / cpus) + 1))
        apps.append(App(PlacementRequest(f"/bench/app-{k}", res, ports, constraints), instances))
        demand += instances * cpus
        k += 1
    return apps


def l1_bound(nodes: Sequence[Node], demand: Sequence[float]) -> int:
    """Max over dimensions of the fewest nodes whose largest capacities cover the demand."""
    bound = 0
    for d, total in enumerate(demand):
        if total <= 0:
            continue
        caps = sorted((_dims(n.resources)[d] for n in nodes), reverse=True)
        acc, k = 0.0, 0
        while acc < total - EPSILON and k < len(caps):
            acc += caps[k]
            k += 1
        bound = max(bound, k)
    return bound


def _dims(r: Resources) -> tuple[float, float, float, float]:
    return (r.cpus, r.mem, r.disk, r.gpus)


class FirstFit:
    """The naive baseline: for each task, walk the nodes in hostname order and take the first
    one that passes every check. Same semantics as the pipeline (resources with EPSILON,
    fixed and dynamic ports, UNIQUE / MAX_PER / GROUP_BY per value of the same app, a node
    lacking the field fails), written the obvious way."""

    def __init__(self, nodes: Sequence[Node]) -> None:
        self.nodes = sorted(nodes, key=lambda n: n.hostname)
        self.free = [list(_dims(n.resources)) for n in self.nodes]
        self.port_free = [sum(hi - lo + 1 for lo, hi in n.ports) for n in self.nodes]
        self.used_ports: list[set[int]] = [set() for _ in self.nodes]
        self.counts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.tasks = [0] * len(self.nodes)

    def _base_ok(self, i: int, req: PlacementRequest, need: tuple[float, ...]) -> bool:
        # need holds the request minus EPSILON; written out rather than any(...) so the
        # baseline is naive in algorithm, not slowed down by generator overhead.
        f = self.free[i]
        if f[0] < need[0] or f[1] < need[1] or f[2] < need[2] or f[3] < need[3]:
            return False
        if self.port_free[i] < len(req.ports):
            return False
        node = self.nodes[i]
        for p in req.fixed_ports:
            if p in self.used_ports[i] or not any(lo <= p <= hi for lo, hi in node.ports):
                return False
        for c in req.constraints:
            if c.operator is Operator.GROUP_BY:
                continue
            value = node.attribute(c.field)
            if value is None:
                return False
            n = self.counts[(req.app_id, c.field)][value]
            if c.operator is Operator.UNIQUE and n >= 1:
                return False
            if c.operator is Operator.MAX_PER and n >= c.int_value:
                return False
        return True

    def place(self, req: PlacementRequest) -> Placement | None:
        need = tuple(x - EPSILON for x in _dims(req.resources))
        group_by = [c for c in req.constraints if c.operator is Operator.GROUP_BY]
        chosen: int | None = None
        if not group_by:
            for i in range(len(self.nodes)):
                if self._base_ok(i, req, need):
                    chosen = i
                    break
        else:
            field = group_by[0].field
            counts = self.counts[(req.app_id, field)]
            first_by_value: dict[str, int] = {}
            for i, node in enumerate(self.nodes):
                value = node.attribute(field)
                if value is None or value in first_by_value:
                    continue
                if self._base_ok(i, req, need):
                    first_by_value[value] = i
            if first_by_value:
                least = min(counts[v] for v in first_by_value)
                chosen = min(i for v, i in first_by_value.items() if counts[v] == least)
        if chosen is None:
            return None
        node = self.nodes[chosen]
        fixed = set(req.fixed_ports)
        dynamic: list[int] = []
        for lo, hi in node.ports:
            for p in range(lo, hi + 1):
                if len(dynamic) == req.dynamic_ports:
                    break
                if p not in self.used_ports[chosen] and p not in fixed:
                    dynamic.append(p)
        it = iter(dynamic)
        ports = tuple(next(it) if p == 0 else p for p in req.ports)
        for d, x in enumerate(_dims(req.resources)):
            self.free[chosen][d] -= x
        self.used_ports[chosen].update(ports)
        self.port_free[chosen] -= len(ports)
        self.tasks[chosen] += 1
        for c in req.constraints:
            value = node.attribute(c.field)
            if value is not None:
                self.counts[(req.app_id, c.field)][value] += 1
        return Placement(node.hostname, ports)


@dataclass
class RunResult:
    placements: int
    failures: int
    seconds: float  # CPU time of this process spent placing (build excluded)
    nodes_used: int
    bound: int
    build_seconds: float = 0.0  # CPU time building the Placer from the snapshot
    wall_seconds: float = 0.0  # wall-clock time spent placing

    @property
    def per_s(self) -> float:
        return self.placements / self.seconds if self.seconds else 0.0

    @property
    def over_bound(self) -> float:
        return self.nodes_used / self.bound if self.bound else 0.0


def run_placer(
    nodes: Sequence[Node], apps: Sequence[App], ranker: Ranker | None = None
) -> RunResult:
    t0 = time.process_time()
    placer = Placer(ClusterSnapshot(tuple(nodes)), ranker=ranker)
    t1, w1 = time.process_time(), time.perf_counter()
    results = [placer.place_many(app.request, app.instances) for app in apps]
    seconds, wall = time.process_time() - t1, time.perf_counter() - w1
    used: set[str] = set()
    demand = [0.0] * 4
    placed = failed = 0
    for app, (got, summary) in zip(apps, results, strict=True):
        placed += len(got)
        failed += summary is not None
        used.update(p.host for p in got)
        for d, x in enumerate(_dims(app.request.resources)):
            demand[d] += x * len(got)
    return RunResult(
        placed, failed, seconds, len(used), l1_bound(nodes, demand), t1 - t0, wall)


def best_of(repeat: int, nodes: Sequence[Node], apps: Sequence[App]) -> RunResult:
    """The fastest of ``repeat`` identical runs (placement is deterministic, so only the
    timing differs; the machine's other load only ever slows a run down)."""
    runs = [run_placer(nodes, apps) for _ in range(repeat)]
    assert len({(r.placements, r.nodes_used) for r in runs}) == 1, "non-deterministic run"
    return min(runs, key=lambda r: r.seconds)


def run_first_fit(nodes: Sequence[Node], apps: Sequence[App]) -> RunResult:
    t0, w0 = time.process_time(), time.perf_counter()
    ff = FirstFit(nodes)
    demand = [0.0] * 4
    placed = failed = 0
    for app in apps:
        for _ in range(app.instances):
            if ff.place(app.request) is None:
                failed += 1
                break
            placed += 1
            for d, x in enumerate(_dims(app.request.resources)):
                demand[d] += x
    seconds, wall = time.process_time() - t0, time.perf_counter() - w0
    used = sum(1 for t in ff.tasks if t)
    return RunResult(placed, failed, seconds, used, l1_bound(nodes, demand), 0.0, wall)


def uniform_ratio(apps: Sequence[App]) -> list[App]:
    """The same workload with every task at the fleet's 4 GiB per cpu: isolates how much of
    the gap to the bound comes from tasks of different shapes sharing nodes."""
    out = []
    for app in apps:
        r = app.request.resources
        res = Resources(cpus=r.cpus, mem=r.cpus * 4 * GIB, disk=r.disk, gpus=r.gpus)
        out.append(App(replace(app.request, resources=res), app.instances))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    parser.add_argument("--sizes", default="1000,5000", help="comma-separated node counts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3, help="Placer runs per size (best)")
    parser.add_argument("--no-baseline", action="store_true", help="skip first-fit (slow)")
    args = parser.parse_args(argv)

    report: dict[str, dict[str, float | int]] = {}
    header = (
        f"{'nodes':>6} {'runner':>14} {'tasks':>7} {'fail':>5} {'cpu s':>8} "
        f"{'place/s':>9} {'used':>6} {'bound':>6} {'used/bound':>10}"
    )
    print(header)
    print("-" * len(header))

    def row(n: int, name: str, r: RunResult) -> None:
        print(
            f"{n:>6} {name:>14} {r.placements:>7} {r.failures:>5} {r.seconds:>8.2f} "
            f"{r.per_s:>9.0f} {r.nodes_used:>6} {r.bound:>6} {r.over_bound:>10.3f}"
        )

    for n in (int(x) for x in args.sizes.split(",")):
        nodes = make_cluster(n, args.seed)
        apps = make_workload(nodes, args.seed + n)
        ours = best_of(args.repeat, nodes, apps)
        row(n, "placer", ours)
        uniform = run_placer(nodes, uniform_ratio(apps))
        row(n, "placer 4GiB/cpu", uniform)
        old = run_placer(nodes, apps, BinPack())
        row(n, "binpack (old)", old)
        entry: dict[str, float | int] = {
            "placements_per_s": round(ours.per_s, 1),
            "nodes_used_over_bound": round(ours.over_bound, 4),
            "placements": ours.placements,
            "failures": ours.failures,
            "nodes_used": ours.nodes_used,
            "bound": ours.bound,
            "build_seconds": round(ours.build_seconds, 3),
            "wall_placements_per_s": round(ours.placements / ours.wall_seconds, 1),
            "uniform_ratio_nodes_used_over_bound": round(uniform.over_bound, 4),
            "old_binpack_nodes_used_over_bound": round(old.over_bound, 4),
            "old_binpack_placements_per_s": round(old.per_s, 1),
        }
        if not args.no_baseline:
            base = run_first_fit(nodes, apps)
            row(n, "first-fit", base)
            speedup = ours.per_s / base.per_s if base.per_s else 0.0
            print(
                f"{n:>6} {'vs first-fit':>14}  x{speedup:.1f} placements/s, "
                f"packing {ours.over_bound:.3f} vs {base.over_bound:.3f} "
                f"({len(apps)} apps, Placer built in {ours.build_seconds * 1000:.0f} ms)"
            )
            entry.update({
                "baseline_placements_per_s": round(base.per_s, 1),
                "baseline_nodes_used_over_bound": round(base.over_bound, 4),
                "speedup": round(speedup, 2),
                "baseline_nodes_used": base.nodes_used,
                "baseline_failures": base.failures,
            })
        report[str(n)] = entry
    if args.json:
        print(json.dumps({"nodes": report}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
