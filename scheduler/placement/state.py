"""The per-node state placement reads: free resources, ports, and per-app counts per value.

:class:`ClusterState` is the mutable bookkeeping behind the checkers (:mod:`.checkers`) and
rankers (:mod:`.rankers`): free resources, free ports, and how many tasks of each app sit on
each value of each field, as numpy arrays over all nodes (plus Python mirrors of the per-node
values the per-task paths read).

Node order inside :class:`ClusterState` is hostname order. Rankers rely on that: the first
index among equal scores is the lexicographically smallest hostname, which makes every
tie-break deterministic without a second sort key.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from scheduler.model.node import HOSTNAME_FIELD, Node
from scheduler.model.resources import EPSILON, PortRange, Resources

from .results import ClusterSnapshot

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

# Scalar dimensions, in the order of the rows of ClusterState's (4, N) arrays, with the
# Marathon reject reason and the human detail of the stage that checks each one.
DIMENSIONS: tuple[tuple[str, str, str], ...] = (
    ("cpus", "InsufficientCpus", "insufficient cpus"),
    ("mem", "InsufficientMemory", "insufficient mem"),
    ("disk", "InsufficientDisk", "insufficient disk"),
    ("gpus", "InsufficientGpus", "insufficient gpus"),
)
# Bound on cached per-amount share arrays (each one float per node).
_SHARE_CACHE_SIZE = 512


def resource_vector(r: Resources) -> FloatArray:
    """``r`` as a length-4 array in :data:`DIMENSIONS` order."""
    return np.array([r.cpus, r.mem, r.disk, r.gpus], dtype=np.float64)





@dataclass
class FieldIndex:
    """One constraint field encoded as integer codes per node.

    ``values`` are the field's distinct values, sorted; ``codes[i]`` is the index of node
    ``i``'s value in ``values``, or ``len(values)`` (the *missing* slot) when the node lacks
    the field. Putting "missing" in its own slot lets every per-value table carry one extra
    entry and be gathered with a single ``take`` — no branch per node.

    ``identity`` is true for ``hostname``: every node has its own value and ``codes`` is
    ``0..N-1``, so per-value arrays already are per-node arrays and the gather is skipped.
    Static masks (``IS``, ``LIKE``...) depend only on node attributes, never on tasks, so they
    are computed once per field and cached here.
    """

    name: str
    values: tuple[str, ...]
    codes: IntArray
    code_of: dict[str, int]
    identity: bool
    _static: dict[tuple[str, str], BoolArray] = field(default_factory=dict)
    _nodes_of: dict[int, IntArray] = field(default_factory=dict)
    _by_value: tuple[IntArray, IntArray] | None = None

    @property
    def missing(self) -> int:
        """The code of "node lacks this field" (one past the last value)."""
        return len(self.values)

    def gather(self, per_value: BoolArray) -> BoolArray:
        """Per-node mask from a per-value table of ``len(values) + 1`` entries (last =
        missing). The result may share memory with ``per_value``: callers must not mutate it."""
        if self.identity:
            return per_value[: len(self.codes)]
        return per_value.take(self.codes)

    def any_per_value(self, mask: BoolArray) -> BoolArray:
        """For each value (not the missing slot): whether some node of that value is set in
        ``mask``. Nodes are grouped by value once (a stable sort of ``codes``); then this is
        one gather and one segmented OR, a few times cheaper than counting with bincount."""
        if self._by_value is None:
            order = np.argsort(self.codes, kind="stable")
            present = order[self.codes[order] != self.missing]
            starts = np.searchsorted(self.codes[present], np.arange(len(self.values)))
            self._by_value = (present, starts.astype(np.intp))
        present, starts = self._by_value
        if not len(self.values):
            return np.zeros(0, dtype=np.bool_)
        found: BoolArray = np.logical_or.reduceat(mask.take(present), starts)
        return found

    def nodes_with(self, code: int) -> IntArray:
        """Indices of the nodes whose value has ``code`` (cached; do not mutate)."""
        if self.identity:
            return np.array([code], dtype=np.intp)
        nodes = self._nodes_of.get(code)
        if nodes is None:
            nodes = np.flatnonzero(self.codes == code)
            self._nodes_of[code] = nodes
        return nodes

    def has_field(self) -> BoolArray:
        """Nodes that have the field (cached; do not mutate)."""
        key = ("has", "")
        m = self._static.get(key)
        if m is None:
            m = self.codes != self.missing
            self._static[key] = m
        return m

    def equals(self, value: str) -> BoolArray:
        """Nodes whose field is exactly ``value`` (cached; do not mutate)."""
        key = ("eq", value)
        m = self._static.get(key)
        if m is None:
            code = self.code_of.get(value)
            m = np.zeros(len(self.codes), dtype=np.bool_) if code is None else self.codes == code
            self._static[key] = m
        return m

    def full_match(self, pattern: re.Pattern[str], *, negate: bool) -> BoolArray:
        """Nodes whose field fully matches ``pattern`` (``negate``: does not fully match).

        A node lacking the field fails the positive form and passes the negated one — that
        is Marathon's LIKE / UNLIKE asymmetry. The regex runs once per distinct value, not
        once per node. Cached; do not mutate.
        """
        key = ("unlike" if negate else "like", pattern.pattern)
        m = self._static.get(key)
        if m is None:
            table = np.empty(len(self.values) + 1, dtype=np.bool_)
            for code, value in enumerate(self.values):
                table[code] = (pattern.fullmatch(value) is not None) != negate
            table[self.missing] = negate
            m = self.gather(table).copy()
            self._static[key] = m
        return m


@dataclass
class AppTasks:
    """The tasks of one app the state knows about (snapshot tasks, then placed ones).

    ``order`` lists the node index of every task, oldest first — CLUSTER without a value pins
    to the value of the oldest task. ``per_field`` caches, per field, how many of the app's
    tasks sit on each value (``len(values) + 1`` entries, last = nodes lacking the field);
    it is built on first use and then kept current by every reserve and release.
    """

    order: list[int] = field(default_factory=list)
    per_field: dict[str, IntArray] = field(default_factory=dict)


class ClusterState:
    """A private, mutable view of one :class:`ClusterSnapshot`.

    Resources live in ``(4, N)`` float arrays (rows in :data:`DIMENSIONS` order, columns in
    hostname order). ``free`` may be negative where the snapshot itself overcommits a node;
    such a node then fails every request on that dimension, including zero requests.

    Ports: ``port_free[i]`` counts free ports inside node ``i``'s ranges and is all the
    feasibility check reads. The exact sets (``used_ports``) are only touched for the node a
    task actually lands on. Fixed-port requests use a per-port availability mask that is
    built on first use and updated in place afterwards.

    Snapshot tasks whose host is not a snapshot node are ignored: they hold nothing this view
    can give out, and their attribute values are unknown.
    """

    def __init__(self, snapshot: ClusterSnapshot) -> None:
        nodes = sorted(snapshot.nodes, key=lambda n: n.hostname)
        for a, b in itertools.pairwise(nodes):
            if a.hostname == b.hostname:
                raise ValueError(f"duplicate hostname {a.hostname!r} in snapshot")
        self.nodes: tuple[Node, ...] = tuple(nodes)
        self.n = len(nodes)
        self.hostnames: tuple[str, ...] = tuple(n.hostname for n in nodes)
        self.index: dict[str, int] = {h: i for i, h in enumerate(self.hostnames)}

        self.capacity: FloatArray = np.zeros((4, self.n), dtype=np.float64)
        for i, node in enumerate(nodes):
            self.capacity[:, i] = resource_vector(node.resources)
        # 1 / capacity, 0 where a node has none of a dimension: utilisation of an absent
        # dimension is 0, and a request for it is already refused by the fit stage.
        self.inv_capacity: FloatArray = np.divide(
            1.0,
            self.capacity,
            out=np.zeros_like(self.capacity),
            where=self.capacity > 0,
        )
        # Per-node Python copies for the scalar updates of reserve/release: reading numpy
        # scalars one by one costs more than the arithmetic.
        self._capacity_of: list[tuple[float, ...]] = [
            tuple(float(x) for x in self.capacity[:, i]) for i in range(self.n)
        ]
        self.inverse_capacity_of: list[tuple[float, ...]] = [
            tuple(float(x) for x in self.inv_capacity[:, i]) for i in range(self.n)
        ]
        self.free: FloatArray = self.capacity.copy()
        self.tasks_on_node: IntArray = np.zeros(self.n, dtype=np.intp)
        # Fraction used per dimension, and its maximum over dimensions (the node's dominant
        # utilisation). Rankers read these; keeping them current costs a few scalar writes
        # per placement instead of a (4, N) recomputation per request.
        self.used_fraction: FloatArray = np.zeros((4, self.n), dtype=np.float64)
        self.dominant_used: FloatArray = np.zeros(self.n, dtype=np.float64)
        self.occupied: BoolArray = np.zeros(self.n, dtype=np.bool_)

        # Sorted, so "lowest free port first" is a single ascending scan.
        self.port_ranges: list[tuple[PortRange, ...]] = [tuple(sorted(n.ports)) for n in nodes]
        self.used_ports: list[set[int]] = [set() for _ in nodes]
        self.port_free: IntArray = np.array(
            [sum(hi - lo + 1 for lo, hi in n.ports) for n in nodes], dtype=np.intp
        )
        # Lower bound of the lowest free port per node: dynamic ports are taken lowest
        # first, so scanning from here keeps port choice O(ports taken), not O(ports used).
        self._port_hint: list[int] = [0] * self.n
        self._port_masks: dict[int, BoolArray] = {}
        # All ranges flattened (first, last, node) so a per-port mask is built in one pass.
        flat = [(lo, hi, i) for i, n in enumerate(nodes) for lo, hi in n.ports]
        self._range_lo: IntArray = np.array([r[0] for r in flat], dtype=np.intp)
        self._range_hi: IntArray = np.array([r[1] for r in flat], dtype=np.intp)
        self._range_node: IntArray = np.array([r[2] for r in flat], dtype=np.intp)
        # Every node whose resources or ports changed, in order. A compiled request remembers
        # how far it has read, and refreshes only those nodes of its node-local stages
        # instead of recomputing them over all nodes (see pipeline._Plan).
        self.touched: list[int] = []

        self._shares: dict[tuple[int, float], FloatArray] = {}
        self._fields: dict[str, FieldIndex] = {}
        self.apps: dict[str, AppTasks] = {}

        known = [t for t in snapshot.tasks if t.host in self.index]
        if known:
            idx = np.array([self.index[t.host] for t in known], dtype=np.intp)
            demand = np.array(
                [[t.resources.cpus, t.resources.mem, t.resources.disk, t.resources.gpus]
                 for t in known],
                dtype=np.float64,
            )
            for d in range(4):
                np.subtract.at(self.free[d], idx, demand[:, d])
            np.add.at(self.tasks_on_node, idx, 1)
            for t, i in zip(known, idx.tolist(), strict=True):
                self.apps.setdefault(t.app_id, AppTasks()).order.append(i)
                self._take_ports(i, t.ports)
            for i in np.unique(idx).tolist():
                self._refresh_node(i)
        # Python mirrors of node i's free amounts, used fractions and task count, so reserve
        # and release do their scalar arithmetic on floats and the per-node paths (admits,
        # score_of) read floats instead of numpy scalars; the arrays above get only writes.
        # The same IEEE operations on the same values: the two stay identical. Read only.
        self.free_of: list[list[float]] = self.free.T.tolist()
        self.used_of: list[list[float]] = self.used_fraction.T.tolist()
        self.tasks_of: list[int] = self.tasks_on_node.tolist()
        # Set only here: placements never push free below -EPSILON, so a dimension that starts
        # non-negative stays so and a zero request on it needs no check at all.
        self.overcommitted: tuple[bool, ...] = tuple(
            bool(self.n and self.free[d].min() < -EPSILON) for d in range(4)
        )

    def share(self, dimension: int, amount: float) -> FloatArray:
        """``amount`` as a fraction of each node's capacity of ``dimension`` (0 where the node
        has none). Cached per amount: workloads repeat a handful of sizes, and rankers need
        this for every request. Do not mutate."""
        key = (dimension, amount)
        share = self._shares.get(key)
        if share is None:
            if len(self._shares) >= _SHARE_CACHE_SIZE:
                self._shares.clear()
            share = self.inv_capacity[dimension] * amount
            self._shares[key] = share
        return share

    # --- fields and per-app counts ------------------------------------------------------

    def field_index(self, name: str) -> FieldIndex:
        """The encoding of field ``name`` (built on first use)."""
        fi = self._fields.get(name)
        if fi is not None:
            return fi
        if name == HOSTNAME_FIELD:
            fi = FieldIndex(
                name=name,
                values=self.hostnames,
                codes=np.arange(self.n, dtype=np.intp),
                code_of=dict(self.index),
                identity=True,
            )
        else:
            raw = [n.attributes.get(name) for n in self.nodes]
            values = tuple(sorted({v for v in raw if v is not None}))
            code_of = {v: c for c, v in enumerate(values)}
            missing = len(values)
            codes = np.array(
                [missing if v is None else code_of[v] for v in raw], dtype=np.intp
            )
            fi = FieldIndex(name=name, values=values, codes=codes, code_of=code_of,
                            identity=False)
        self._fields[name] = fi
        return fi

    def app(self, app_id: str) -> AppTasks:
        """The task record of ``app_id`` (empty if the app has no task here)."""
        a = self.apps.get(app_id)
        if a is None:
            a = AppTasks()
            self.apps[app_id] = a
        return a

    def value_counts(self, app_id: str, field_name: str) -> IntArray:
        """Tasks of ``app_id`` per value of ``field_name`` (last entry: nodes lacking it).

        The returned array is live state: read it, do not mutate it.
        """
        a = self.app(app_id)
        counts = a.per_field.get(field_name)
        if counts is None:
            fi = self.field_index(field_name)
            codes = fi.codes[np.array(a.order, dtype=np.intp)]
            counts = np.bincount(codes, minlength=len(fi.values) + 1).astype(np.intp)
            a.per_field[field_name] = counts
        return counts

    # --- reserve / release ---------------------------------------------------------------

    def reserve(self, i: int, app_id: str, resources: Resources, ports: Sequence[int]) -> None:
        """Book ``resources`` and ``ports`` on node ``i`` for one task of ``app_id``."""
        self._book(i, resources, -1.0, 1)
        self.touched.append(i)
        self._take_ports(i, ports)
        a = self.app(app_id)
        a.order.append(i)
        for name, counts in a.per_field.items():
            counts[self._fields[name].codes[i]] += 1

    def unreserve(self, i: int, app_id: str, resources: Resources, ports: Sequence[int]) -> None:
        """Undo one :meth:`reserve` of ``app_id`` on node ``i``.

        Raises ``ValueError`` when no task of ``app_id`` is recorded on that node, so a double
        release cannot push free resources above capacity.
        """
        a = self.apps.get(app_id)
        if a is None or i not in a.order:
            raise ValueError(f"no task of {app_id!r} is recorded on {self.hostnames[i]!r}")
        # Any task of the app on this node will do: they share every field value, so the
        # per-value counts and the CLUSTER pin come out the same whichever one is removed.
        a.order.remove(i)
        for name, counts in a.per_field.items():
            counts[self._fields[name].codes[i]] -= 1
        self._book(i, resources, 1.0, -1)
        self.touched.append(i)
        self._give_ports(i, ports)

    def _book(self, i: int, r: Resources, sign: float, tasks: int) -> None:
        """Add ``sign`` times ``r`` to node ``i``'s free resources and ``tasks`` to its task
        count, and bring its used fractions, dominant utilisation and occupancy up to date.
        Only the dimensions ``r`` asks for change; the others keep their fractions."""
        free = self.free_of[i]
        used = self.used_of[i]
        cap = self._capacity_of[i]
        inv = self.inverse_capacity_of[i]
        for d, amount in enumerate((r.cpus, r.mem, r.disk, r.gpus)):
            if amount:
                f = free[d] + sign * amount
                free[d] = f
                self.free[d, i] = f
                u = (cap[d] - f) * inv[d]
                used[d] = u
                self.used_fraction[d, i] = u
        self.dominant_used[i] = max(0.0, used[0], used[1], used[2], used[3])
        count = self.tasks_of[i] + tasks
        self.tasks_of[i] = count
        self.tasks_on_node[i] = count
        self.occupied[i] = count > 0

    def _refresh_node(self, i: int) -> None:
        cap = self._capacity_of[i]
        inv = self.inverse_capacity_of[i]
        free = self.free
        used = self.used_fraction
        dominant = 0.0
        for d in range(4):
            u = (cap[d] - float(free[d, i])) * inv[d]
            used[d, i] = u
            dominant = max(dominant, u)
        self.dominant_used[i] = dominant
        self.occupied[i] = self.tasks_on_node[i] > 0

    # --- ports -----------------------------------------------------------------------------

    def in_port_ranges(self, i: int, port: int) -> bool:
        """Whether ``port`` lies inside one of node ``i``'s ranges."""
        for lo, hi in self.port_ranges[i]:  # noqa: SIM110 - a loop: no generator per call
            if lo <= port <= hi:
                return True
        return False

    def _take_ports(self, i: int, ports: Iterable[int]) -> None:
        used = self.used_ports[i]
        masks = self._port_masks
        taken = 0
        for p in ports:
            if p in used:
                continue
            used.add(p)
            if self.in_port_ranges(i, p):
                taken += 1
            if masks:
                mask = masks.get(p)
                if mask is not None:
                    mask[i] = False
        if taken:
            self.port_free[i] -= taken

    def _give_ports(self, i: int, ports: Iterable[int]) -> None:
        used = self.used_ports[i]
        for p in ports:
            if p not in used:
                continue
            used.discard(p)
            inside = self.in_port_ranges(i, p)
            if inside:
                self.port_free[i] += 1
                self._port_hint[i] = min(self._port_hint[i], p)
            mask = self._port_masks.get(p)
            if mask is not None:
                mask[i] = inside

    def port_available(self, port: int) -> BoolArray:
        """Nodes where ``port`` is inside the ranges and free (live; do not mutate).

        Built once per port number, then kept current by every reserve and release, so a
        fixed-port request costs one AND per port.
        """
        mask = self._port_masks.get(port)
        if mask is None:
            mask = np.zeros(self.n, dtype=np.bool_)
            inside = (self._range_lo <= port) & (port <= self._range_hi)
            mask[self._range_node[inside]] = True
            for i in np.flatnonzero(mask).tolist():
                if port in self.used_ports[i]:
                    mask[i] = False
            self._port_masks[port] = mask
        return mask

    def choose_ports(self, i: int, slots: Sequence[int]) -> tuple[int, ...]:
        """Host ports for ``slots`` on node ``i``, in slot order.

        A fixed slot keeps its number; each ``0`` slot gets the lowest free port of the node's
        ranges not already given to an earlier slot (ascending, so the result is
        deterministic). The caller has checked feasibility; an impossible choice raises
        ``ValueError`` rather than handing out a port twice.
        """
        wanted = list(slots).count(0)
        if wanted == 0:
            return tuple(slots)
        fixed = {p for p in slots if p != 0} if wanted < len(slots) else set()
        used = self.used_ports[i]
        hint = self._port_hint[i]
        chosen: list[int] = []
        for lo, hi in self.port_ranges[i]:
            if hi < hint:
                continue
            p = max(lo, hint)
            while p <= hi and len(chosen) < wanted:
                if p not in used and p not in fixed:
                    chosen.append(p)
                p += 1
            if len(chosen) == wanted:
                break
        if len(chosen) < wanted:
            raise ValueError(f"node {self.hostnames[i]!r} has fewer than {wanted} free ports")
        # Every in-range port below the last chosen one is now used or chosen.
        self._port_hint[i] = chosen[-1] + 1
        if wanted == len(slots):
            return tuple(chosen)
        it = iter(chosen)
        return tuple(next(it) if p == 0 else p for p in slots)
