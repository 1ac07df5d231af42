"""Pure group logic: effective dependencies, the dependency graph, start/stop waves, scaleBy.

No I/O: :class:`scheduler.orchestrator.group_commands.GroupManager` reads the store and
applies what this module computes.

Dependency semantics (Marathon's):

* A dependency is an app id or a group id; a group id stands for every app under it.
* A group's ``dependencies`` are inherited by every app in the group and in its nested
  groups.
* The *effective* dependencies of an app are its own plus the inherited ones, expanded to
  concrete app ids. An app never depends on itself through expansion (a group that depends
  on a path containing its own apps gives those apps the *other* apps there).
* Dependencies start and upgrade first and stop last. Orders are returned as *waves*: lists
  of app ids that have no dependency between them (so a wave can be acted on at once), each
  wave sorted for determinism.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

import networkx as nx  # type: ignore[import-untyped]

from scheduler.model.app import AppSpec
from scheduler.model.group import Group, is_under
from scheduler.model.validation import SpecError

MAX_INSTANCES = 2**31 - 1
"""Marathon keeps instances in a 32-bit int; a scaleBy that would exceed it is rejected."""


def expand(path: str, app_ids: Collection[str]) -> list[str]:
    """The app ids ``path`` stands for: itself if it is an app, else every app under it."""
    if path in app_ids:
        return [path]
    return sorted(a for a in app_ids if is_under(a, path))


def resolve_dependencies(owner: str, deps: Iterable[str], app_ids: Collection[str]) -> list[str]:
    """The concrete app ids ``deps`` stand for over ``app_ids``: first-seen order, no
    duplicates, never ``owner`` itself. Dependencies that match nothing are skipped."""
    out: list[str] = []
    for dep in deps:
        for target in expand(dep, app_ids):
            if target != owner and target not in out:
                out.append(target)
    return out


def effective_apps(group: Group, known_apps: Collection[str],
                   known_groups: Collection[str] = (),
                   inherited: Sequence[str] = ()) -> list[AppSpec]:
    """Every app of ``group`` with its effective dependencies (see the module docstring).

    ``known_apps``/``known_groups`` are the ids that exist besides the tree (the tree's own
    apps and groups are always known). ``inherited`` are dependencies of groups *above*
    ``group``. A dependency in the definition that names no app and no group raises
    :class:`SpecError` (422) at its path; one naming an existing but empty group expands to
    nothing, and so does an inherited one that no longer matches anything.
    Apps come back in document order; each dependency list keeps the first-seen order.
    """
    apps = group.transitive_apps()
    app_ids = set(known_apps) | {a.id for a in apps}
    group_ids = set(known_groups) | {g.id for g in group.walk()}
    errors: list[tuple[str, list[str]]] = []
    out: list[AppSpec] = []

    def resolve(dep: str, where: str | None, owner: str) -> list[str]:
        found = expand(dep, app_ids)
        # Dependencies inherited from groups above the definition (where is None) are not the
        # submitter's to fix: one that no longer matches anything is skipped, not an error.
        if not found and dep not in group_ids and where is not None:
            errors.append((where, [f"unknown dependency {dep}: no app or group has this id"]))
        return [a for a in found if a != owner]

    def visit(g: Group, pointer: str, above: list[tuple[str, str | None]]) -> None:
        # ``above``: (dependency, pointer where it was declared) inherited from enclosing groups
        here = above + [(d, f"{pointer}/dependencies/{k}") for k, d in enumerate(g.dependencies)]
        for i, app in enumerate(g.apps):
            deps: list[str] = []
            own: list[tuple[str, str | None]] = [
                (d, f"{pointer}/apps/{i}/dependencies/{k}") for k, d in enumerate(app.dependencies)]
            for dep, where in own + here:
                for target in resolve(dep, where, app.id):
                    if target not in deps:
                        deps.append(target)
            out.append(app.model_copy(update={"dependencies": deps}))
        for j, child in enumerate(g.groups):
            visit(child, f"{pointer}/groups/{j}", here)

    visit(group, "", [(d, None) for d in inherited])
    if errors:
        raise SpecError("Object is not valid", _dedupe(errors))
    return out


def dependency_graph(apps: Iterable[AppSpec]) -> Any:
    """A ``networkx.DiGraph`` over the apps' ids with an edge ``a → b`` when ``a`` depends
    on ``b``. Dependencies are expanded by prefix over the given apps; ones that match none
    of them add no edge (they are outside the set considered)."""
    specs = list(apps)
    ids = {a.id for a in specs}
    graph = nx.DiGraph()
    graph.add_nodes_from(sorted(ids))
    for app in specs:
        for dep in app.dependencies:
            for target in expand(dep, ids):
                if target != app.id:
                    graph.add_edge(app.id, target)
    return graph


def find_cycle(apps: Iterable[AppSpec]) -> list[str] | None:
    """A dependency cycle as ``[a, b, ..., a]`` (``a`` depends on ``b``...), rotated to start
    at its smallest id; ``None`` when the graph is acyclic."""
    graph = dependency_graph(apps)
    try:
        edges = nx.find_cycle(graph)
    except nx.NetworkXNoCycle:
        return None
    cycle = [u for u, _ in edges]
    start = cycle.index(min(cycle))
    cycle = cycle[start:] + cycle[:start]
    return [*cycle, cycle[0]]


def check_acyclic(apps: Iterable[AppSpec], pointers: Mapping[str, str] | None = None) -> None:
    """Raise :class:`SpecError` (422) naming a cycle, ``"/a -> /b -> /a"``, if there is one.

    The error's path is the ``dependencies`` of the first app of the cycle found in
    ``pointers`` (app id → JSON pointer into the submitted definition), else ``/``.
    """
    cycle = find_cycle(apps)
    if cycle is None:
        return
    where = next((pointers[a] for a in cycle if pointers and a in pointers), None)
    path = f"{where}/dependencies" if where is not None else ""
    raise SpecError("Object is not valid",
                    [(path, ["dependency cycle: " + " -> ".join(cycle)])])


def start_order(apps: Iterable[AppSpec]) -> list[list[str]]:
    """Waves to start (or upgrade) ``apps`` in: every app comes after the apps it depends on.

    Only dependencies among ``apps`` count. Raises :class:`SpecError` on a cycle.
    """
    specs = list(apps)
    check_acyclic(specs)
    graph = dependency_graph(specs)
    return [sorted(w) for w in nx.topological_generations(graph.reverse(copy=False))]


def stop_order(apps: Iterable[AppSpec]) -> list[list[str]]:
    """Waves to stop ``apps`` in: every app comes after the apps that depend on it (each
    dependency stops as soon as its last dependent is gone). Raises on a cycle."""
    specs = list(apps)
    check_acyclic(specs)
    return [sorted(w) for w in nx.topological_generations(dependency_graph(specs))]


def scale_factor(value: Any) -> Decimal:
    """Validate a ``scaleBy`` value: a finite number ≥ 0. Raises :class:`SpecError`.

    Returned as the decimal the client wrote (``1.1``, not the binary float nearest to it),
    so that ``scaled_instances`` does exact arithmetic.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError("Object is not valid", [("/scaleBy", ["must be a number"])])
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError("Object is not valid", [("/scaleBy", ["must be a finite number"])])
    if value < 0:
        raise SpecError("Object is not valid", [("/scaleBy", ["must not be negative"])])
    try:
        # repr() gives the shortest decimal that round-trips: what the client sent.
        return Decimal(repr(value))
    except InvalidOperation:  # pragma: no cover - finite ints and floats always convert
        raise SpecError("Object is not valid", [("/scaleBy", ["must be a number"])]) from None


def scaled_instances(instances: int, factor: Decimal) -> int:
    """Marathon's rule: ``ceil(instances * factor)`` (GroupApiService: ``(app.instances *
    scale).ceil.toInt``), so scaling never rounds an app down to fewer than asked and a
    factor > 0 keeps every running app running. Computed in decimal, so 10 * 0.3 is 3
    (binary floats, as in Marathon, would give 4)."""
    return math.ceil(instances * factor)


def scale_by(apps: Iterable[AppSpec], factor: Any) -> list[AppSpec]:
    """Every app with ``instances`` multiplied by ``factor`` (see :func:`scaled_instances`).

    Raises :class:`SpecError` (422) for an invalid factor or a result above
    :data:`MAX_INSTANCES`.
    """
    f = scale_factor(factor)
    out = []
    for app in apps:
        n = scaled_instances(app.instances, f)
        if n > MAX_INSTANCES:
            raise SpecError("Object is not valid", [
                ("/scaleBy", [f"would give {app.id} {n} instances (at most {MAX_INSTANCES})"])])
        out.append(app if n == app.instances else app.model_copy(update={"instances": n}))
    return out


def _dedupe(errors: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    merged: dict[str, list[str]] = {}
    for path, msgs in errors:
        bucket = merged.setdefault(path, [])
        bucket.extend(m for m in msgs if m not in bucket)
    return list(merged.items())
