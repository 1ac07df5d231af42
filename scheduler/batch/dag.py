"""The job dependency graph: validation, readiness of children, deletion, DOT and CSV views.

Pure: no I/O and no clocks. The orchestrator owns the state and persists it; this module
only computes.

Edges point from parent to child (``etl -> train``: ``train`` lists ``etl`` in ``parents``).

Dependency progress is kept per child as :data:`EdgeCounters`, a JSON-friendly mapping
``{parent: successes since the child last started}``, which the orchestrator stores (one meta
key per child) so that a restart or failover cannot lose it, unlike Chronos, which kept it in
memory.

Semantics (Chronos's, made exact):

* One parent: the child runs after *every* successful run of the parent.
* Several parents: the child runs once every parent has succeeded at least once since the
  child last started. Extra successes of one parent while waiting for another do not queue
  extra runs: starting the child resets every counter to zero (not a decrement), so the child
  always runs on its parents' newest results and a fast parent cannot build a backlog.
* Triggering a child counts as starting it: :func:`on_parent_finished` returns the counters of
  a triggered child already reset, so a parent success arriving while that run is still
  queued cannot trigger a twin. Resetting again when the run really starts
  (:func:`after_child_started`) is consistent with "since the child last started": successes
  that arrive between trigger and start are consumed by that start.
* A single parent is the same rule with one counter, so one code path serves both cases.
* Disabled children are never triggered, and their counters are left untouched while they are
  disabled: parent runs the user asked to ignore do not make the child fire the moment it
  is re-enabled.
* ``softError``: when a parent with ``softError=true`` fails for the last time (no retries
  left), its children are fed as if it had succeeded. Earlier failed attempts and plain
  failures change nothing; a failure never erases a success already counted.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TypeAlias

import networkx as nx  # type: ignore[import-untyped]

from scheduler.model.job import JobSpec

EdgeCounters: TypeAlias = Mapping[str, int]
"""Per child: ``{parent name: successes of that parent since the child last started}``.

An absent parent means zero. Keys for parents the child no longer has are ignored.
"""

LAST_STATES: Final = ("fresh", "success", "failure")
"""Chronos's ``state`` of a job: its last final result (``fresh`` = never ran)."""

STATUSES: Final = ("idle", "queued", "running")
"""Chronos's ``status`` of a job: what it is doing now."""

# Fill colours of the DOT view. Light shades of green/red/blue/grey so black labels stay
# readable. A queued or running job is blue whatever its last result was.
DOT_COLOURS: Final[Mapping[str, str]] = {
    "success": "palegreen",
    "failure": "lightcoral",
    "running": "lightskyblue",
    "queued": "lightskyblue",
    "fresh": "lightgrey",
}


class DependencyError(ValueError):
    """A job's dependencies are invalid (the API answers 422).

    ``path`` is a JSON pointer into the submitted job (``/parents/1`` for the second parent,
    ``/parents`` for the list as a whole); ``message`` says what is wrong.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

    def to_json(self) -> dict[str, object]:
        """The body shape :class:`scheduler.model.validation.SpecError` uses."""
        return {"message": self.message, "details": [{"path": self.path,
                                                      "errors": [self.message]}]}


# --------------------------------------------------------------------------- the graph


def build_graph(jobs: Iterable[JobSpec]) -> nx.DiGraph:
    """A directed graph with a node per job and an edge ``parent -> child`` per dependency.

    Every node carries ``disabled`` (bool). Edges to parents that are not among ``jobs`` are
    left out: the graph describes only jobs that exist (submission rejects unknown parents, so
    this only matters for inconsistent input). Duplicate parents give one edge.
    """
    specs = list(jobs)
    graph = nx.DiGraph()
    for job in specs:
        graph.add_node(job.name, disabled=job.disabled)
    for job in specs:
        for parent in job.parents or ():
            if parent in graph:
                graph.add_edge(parent, job.name)
    return graph


def children_of(graph: nx.DiGraph, name: str) -> list[str]:
    """The direct children of ``name``, sorted; ``[]`` if ``name`` is not in the graph."""
    if name not in graph:
        return []
    return sorted(str(child) for child in graph.successors(name))


def validate_job(job: JobSpec, existing: Mapping[str, JobSpec]) -> None:
    """Check that ``job`` may be added to ``existing`` or replace its namesake there.

    Raises :class:`DependencyError`:

    * ``/parents/<i>`` ``unknown parent 'x'`` for the first parent (index ``i`` in
      ``job.parents``) that is neither in ``existing`` nor ``job`` itself;
    * ``/parents`` ``would create a cycle: a -> b -> a`` when the new edges close a cycle,
      naming the shortest such cycle through ``job`` (a job listing itself gives
      ``a -> a``).

    A job without parents cannot close a cycle (nothing points into it), so it always passes.
    """
    parents = job.parents or []
    for parent in parents:
        # A self-reference is a cycle, not an unknown name, even for a brand-new job.
        if parent == job.name:
            raise DependencyError("/parents", f"would create a cycle: {job.name} -> {job.name}")
    for i, parent in enumerate(parents):
        if parent not in existing:
            raise DependencyError(f"/parents/{i}", f"unknown parent {parent!r}")
    if not parents:
        return
    # The graph as it would be, minus the job's own new edges: a cycle exists exactly when
    # one of its new parents is already reachable from the job (through its children).
    others = [spec for name, spec in existing.items() if name != job.name]
    graph = build_graph([*others, job.model_copy(update={"parents": None})])
    best: list[str] | None = None
    for parent in dict.fromkeys(parents):
        if nx.has_path(graph, job.name, parent):
            path = [str(n) for n in nx.shortest_path(graph, job.name, parent)]
            if best is None or len(path) < len(best):
                best = path
    if best is not None:
        cycle = " -> ".join([*best, job.name])
        raise DependencyError("/parents", f"would create a cycle: {cycle}")


# --------------------------------------------------------------------------- readiness


def counters_from_json(value: Any) -> dict[str, int]:
    """Read stored counters back; anything malformed counts as no progress (``{}``).

    Stored state outlives code versions; a bad entry must not stop the scheduler, and losing
    progress only delays a child until its parents succeed again.
    """
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for k, v in value.items():
        if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v > 0:
            out[k] = v
    return out


def record_parent_success(counters: EdgeCounters, parent: str) -> dict[str, int]:
    """``counters`` with one more success of ``parent`` (a new dict; the input is untouched)."""
    out = dict(counters)
    out[parent] = out.get(parent, 0) + 1
    return out


def ready_to_run(child: JobSpec, counters: EdgeCounters) -> bool:
    """Whether a dependent job should be triggered now.

    True when ``child`` is enabled, has parents, and every parent has at least one success
    in ``counters``. A scheduled job (no parents) is never "ready" here: its schedule drives
    it.
    """
    if child.disabled or not child.parents:
        return False
    return all(counters.get(parent, 0) >= 1 for parent in child.parents)


def after_child_started(counters: EdgeCounters, parents: Sequence[str]) -> dict[str, int]:
    """The counters once the child has started: every parent back to zero.

    Reset, not decrement (see the module docstring): the child consumed all successes seen so
    far. Entries for parents the child no longer has are dropped.
    """
    del counters  # Everything is consumed; kept in the signature to make the call explicit.
    return dict.fromkeys(parents, 0)


def on_parent_finished(
    graph: nx.DiGraph,
    jobs: Mapping[str, JobSpec],
    parent: str,
    succeeded: bool,
    soft_error_exhausted: bool,
    counters_by_child: Mapping[str, EdgeCounters],
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """Feed a parent's *final* result to its children.

    ``succeeded``: the run succeeded (or was marked successful). ``soft_error_exhausted``:
    the run failed and has no retries left; it counts as a success only if the parent's spec
    (``jobs[parent]``) has ``softError=true``. Call this once per finished run, never per
    failed attempt that will be retried. ``counters_by_child`` holds the stored counters of
    the parent's children (a missing child means no progress).

    Returns ``(new counters, children to trigger now)``: new counters only for children whose
    counters changed, which the caller persists in the same transaction as the runs it
    creates for the triggered children (sorted by name). A triggered child's counters are
    already reset (see the module docstring). A failure that does not count as success
    returns ``({}, [])``.
    """
    spec = jobs.get(parent)
    counts_as_success = succeeded or (
        soft_error_exhausted and spec is not None and spec.softError
    )
    if not counts_as_success:
        return {}, []
    updated: dict[str, dict[str, int]] = {}
    trigger: list[str] = []
    for child in children_of(graph, parent):
        child_spec = jobs.get(child)
        # The specs are the truth; a graph built from older specs may hold stale edges.
        if child_spec is None or parent not in (child_spec.parents or ()):
            continue
        if child_spec.disabled:
            continue
        counters = record_parent_success(counters_by_child.get(child, {}), parent)
        if ready_to_run(child_spec, counters):
            counters = after_child_started(counters, child_spec.parents or [])
            trigger.append(child)
        updated[child] = counters
    return updated, trigger


# --------------------------------------------------------------------------- deletion


def remove_job(jobs: Mapping[str, JobSpec], name: str) -> dict[str, JobSpec]:
    """The children of ``name`` as they must be stored once ``name`` is deleted.

    Returns only the changed specs (built with ``model_copy``); the caller deletes ``name``
    and writes these in one transaction. Raises :class:`KeyError` if ``name`` is unknown.

    * Deleted job had parents: in each child's ``parents``, ``name`` is replaced in place by
      the deleted job's parents, duplicates dropped (first occurrence kept), so every ancestor
      still reaches the child.
    * Deleted job was scheduled: ``name`` is dropped from each child's parents. A child left
      with no parent takes the deleted job's ``schedule`` and ``scheduleTimeZone`` (Chronos
      does the same, so the spec stays valid: a job needs a schedule or parents) **and is
      disabled**. Dromos will not start running a job on a clock the user never gave it;
      re-enabling it is a deliberate act. Chronos instead kept such children running and
      also turned children with other parents into scheduled jobs; Dromos keeps their
      remaining parents.

    Dependency counters of a child keyed by ``name`` become meaningless; they are ignored by
    :func:`ready_to_run` and dropped by the next :func:`after_child_started`.
    """
    deleted = jobs[name]
    handed = list(deleted.parents or [])
    out: dict[str, JobSpec] = {}
    for child in jobs.values():
        if child.name == name or name not in (child.parents or ()):
            continue
        new_parents: list[str] = []
        for p in child.parents or []:
            for q in handed if p == name else [p]:
                # A child never becomes its own parent (only possible if the input had a cycle).
                if q not in new_parents and q != child.name:
                    new_parents.append(q)
        if new_parents:
            out[child.name] = child.model_copy(update={"parents": new_parents})
        else:
            out[child.name] = child.model_copy(update={
                "parents": None,
                "schedule": deleted.schedule,
                "scheduleTimeZone": deleted.scheduleTimeZone,
                "disabled": True,
            })
    return out


# --------------------------------------------------------------------------- views


def last_state_of(last_success: datetime | None, last_error: datetime | None) -> str:
    """Chronos's ``state``: ``fresh`` (never finished), ``success`` or ``failure``.

    With both timestamps, the later wins; on a tie the job counts as failed (the cautious
    reading).
    """
    if last_success is None and last_error is None:
        return "fresh"
    if last_error is None:
        return "success"
    if last_success is None:
        return "failure"
    return "success" if last_success > last_error else "failure"


def _node_view(
    last_state: Mapping[str, str], status: Mapping[str, str] | None, name: str
) -> tuple[str, str]:
    """``(state, status)`` of one node, with defaults and checks (see :func:`to_dot`)."""
    state = last_state.get(name, "fresh")
    now = (status or {}).get(name)
    if state in ("queued", "running"):
        # The combined form: one mapping saying "running" instead of a state. The last
        # result is then unknown here; pass ``status`` separately to keep both.
        state, now = "fresh", now or state
    if state not in LAST_STATES:
        raise ValueError(f"unknown state {state!r} for job {name!r}; expected {LAST_STATES}")
    now = now or "idle"
    if now not in STATUSES:
        raise ValueError(f"unknown status {now!r} for job {name!r}; expected {STATUSES}")
    return state, now


def _dot_id(text: str) -> str:
    # A DOT quoted string ends at the first unescaped '"', and labels read backslash escapes
    # (\n, \N...), so escape backslashes and quotes; a raw newline would split the statement.
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def to_dot(
    graph: nx.DiGraph,
    last_state: Mapping[str, str],
    status: Mapping[str, str] | None = None,
) -> str:
    """The graph as Graphviz DOT text, as served at ``/scheduler/graph/dot``.

    ``last_state`` maps job names to ``fresh | success | failure`` and ``status`` to
    ``idle | queued | running`` (missing names: ``fresh``, ``idle``; other values raise
    :class:`ValueError`). ``last_state`` may also hold ``queued``/``running`` directly (one
    combined "last status" mapping); the state then shows as ``fresh``.

    Output: ``digraph G { ... }`` with one node per job, labelled with its name and filled
    by :data:`DOT_COLOURS` (a queued or running job is blue, otherwise its last state
    decides), disabled jobs dashed; then the edges. Nodes and edges are sorted so equal
    graphs render equal text.

    Chronos numbers its nodes and labels them; Dromos uses the quoted names as node ids,
    which any DOT reader accepts and keeps the text readable.
    """
    lines = ["digraph G {", '  node [shape=box, style=filled, fontname="Helvetica"];']
    for name in sorted(str(n) for n in graph.nodes):
        state, now = _node_view(last_state, status, name)
        colour = DOT_COLOURS[now if now != "idle" else state]
        style = ' style="filled,dashed",' if graph.nodes[name].get("disabled") else ""
        lines.append(f"  {_dot_id(name)} [label={_dot_id(name)},{style} "
                     f'fillcolor="{colour}", tooltip="{state}, {now}"];')
    for parent, child in sorted((str(a), str(b)) for a, b in graph.edges):
        lines.append(f"  {_dot_id(parent)} -> {_dot_id(child)};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_csv(
    graph: nx.DiGraph,
    last_state: Mapping[str, str],
    status: Mapping[str, str] | None = None,
) -> str:
    """The graph as Chronos's ``/scheduler/graph/csv`` text.

    One line per job, ``node,<name>,<state>,<status>`` (state ``fresh | success | failure``,
    status ``idle | queued | running``, same defaults and checks as :func:`to_dot`), then one
    line per edge, ``link,<parent>,<child>``. Nodes sorted by name, links by (parent, child);
    Chronos's order was arbitrary. Job names cannot hold commas or quotes, so the output is
    Chronos's plain format; the csv module would quote anything odd all the same.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for name in sorted(str(n) for n in graph.nodes):
        writer.writerow(["node", name, *_node_view(last_state, status, name)])
    for parent, child in sorted((str(a), str(b)) for a, b in graph.edges):
        writer.writerow(["link", parent, child])
    return buf.getvalue()
