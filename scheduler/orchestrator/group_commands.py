"""GroupManager: Marathon's ``/v2/groups`` over the orchestrator's apps.

A group is not stored as an object of its own: its apps are ordinary apps (written through
:meth:`Orchestrator.update_app`, so every app change gets its own version and deployment),
and the tree is rebuilt from the app ids. What apps cannot carry lives in metadata:

``groups``
    The ids of the groups defined explicitly (through this API), so that empty groups and
    group-level dependencies survive. Other groups exist implicitly while apps live under
    them (an app ``/prod/web`` created through ``/v2/apps`` puts group ``/prod`` in the tree).
``group:<id>``
    ``{"dependencies": [...], "version": v, "apps": {app id: {"declared": [...],
    "effective": [...]}}}``: the group's own (declared) dependencies, the version of its last
    change through this API, and for each of its direct apps the dependencies as written in
    the definition and as stored on the app.
``group:<id>:versions`` and ``group:<id>:version:<v>``
    The group's versions, newest first, and the definition of its whole subtree at each one
    (what ``PUT {"version": v}`` restores). Kept one key per version so that recording a
    version never rewrites the older ones. Removed with the group.
``groups:pending``
    The app writes and deletes of a group change under way (see *Crash safety*).

Effective dependencies
    Each stored app's ``dependencies`` are its *effective* ones: its own plus those of every
    enclosing group, expanded to concrete app ids (the reconciler holds an app's launches
    until those apps have converged). The declared form is kept in ``group:<id>`` so that a
    later merge or replace starts from what the user wrote, not from the expansion; it is
    used only while the stored app still carries the effective list recorded with it (an app
    since changed through ``/v2/apps`` is taken as it is now). When a group change adds or
    removes apps, the dependents elsewhere whose dependencies were expanded by a group are
    expanded again, so none keeps waiting for an app that is gone or misses a new one.

Versions
    Every change through this API stamps one version (UTC timestamp, strictly after the
    previous one of every group involved) on the group written and on each group of its
    subtree, and records a snapshot for each. A group's ``version`` as shown is the newest
    of that stamp and of the versions of the apps and groups inside it (its last change, by
    any route); an implicit group has no recorded versions. A rollback re-applies the
    snapshot as a full replacement and is itself a new version.

Deployment id
    A group change touches several apps and the orchestrator starts one deployment per app.
    The change answers with the deployment of the *last* app written: apps are written in
    start order (dependencies first), so that is an app that waits for the others, and its
    deployment is the one likely to finish last; a client waiting for that id to leave
    ``/v2/deployments`` thus waits for the group. A group delete answers with the last app
    stopped (a dependency, stopped after its dependents). With no app write or delete, a
    fresh id that names no deployment (there is nothing to wait for).

Crash safety
    Validation (ids, app definitions, dependencies, cycles, id clashes, deployment locks)
    happens before anything is written: an invalid change stores nothing. The group metadata
    and the list of app writes and deletes (``groups:pending``) are then committed in one
    transaction; the app writes follow, each idempotent; the marker is cleared last. A
    manager created after a crash finishes the pending change (:meth:`GroupManager.resume`).
    App writes are not wrapped in one store transaction with the metadata: the orchestrator
    takes its own lock inside, and holding the store across it could deadlock with the
    control loop.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from scheduler.model.app import AppSpec, parse_app
from scheduler.model.group import (
    ROOT,
    Group,
    ancestors,
    is_under,
    parent_of,
    parse_group,
    resolve_path,
)
from scheduler.model.timefmt import iso, parse_iso
from scheduler.model.validation import SpecError
from scheduler.orchestrator import Conflict, NotFound, Orchestrator
from scheduler.services import group_plan as logic
from scheduler.services import service_ports

log = logging.getLogger("dromos.groups")

INDEX_KEY = "groups"
PENDING_KEY = "groups:pending"
EPOCH = "1970-01-01T00:00:00.000Z"
"""The version of a root group that holds nothing (Marathon's empty group has timestamp 0)."""


def _meta_key(group_id: str) -> str:
    return f"group:{group_id}"


def _versions_key(group_id: str) -> str:
    return f"group:{group_id}:versions"


def _version_key(group_id: str, version: str) -> str:
    return f"group:{group_id}:version:{version}"


def _within(path_id: str, group_id: str) -> bool:
    """``path_id`` is ``group_id`` or lies under it."""
    return path_id == group_id or is_under(path_id, group_id)


def _config(spec: AppSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude={"version"})


@dataclass(frozen=True)
class GroupChange:
    """What a group write did: Marathon's deployment result, plus the group's id."""

    group_id: str
    deployment_id: str
    version: str
    created: bool = False

    def to_marathon(self) -> dict[str, str]:
        return {"deploymentId": self.deployment_id, "version": self.version}


@dataclass
class _Plan:
    """A validated change, ready to commit."""

    scope: str
    record: Group | None  # the declared tree to record (None: the group is being deleted)
    writes: list[AppSpec]  # in start order
    deletes: list[str]  # in stop order
    effective: dict[str, list[str]]  # app id -> effective dependencies, for the record
    removed_groups: list[str] = field(default_factory=list)
    meta_updates: dict[str, dict[str, Any]] = field(default_factory=dict)


class GroupReader:
    """The read side of groups: the tree rebuilt from app ids and group metadata, and the
    recorded versions. Uses only the orchestrator's public methods and its store."""

    def __init__(self, orchestrator: Orchestrator) -> None:
        self._o = orchestrator
        self._store = orchestrator.store

    # ------------------------------------------------------------------ queries

    def group(self, group_id: str) -> Group:
        """The group ``group_id`` (``/`` for the root) as stored: apps with their effective
        dependencies, nested groups, the group's declared dependencies and its version."""
        apps = self._o.apps()
        explicit = self._explicit()
        if not self._exists(group_id, apps, explicit):
            raise NotFound(f"Group '{group_id}' does not exist")
        return self._tree(group_id, apps, explicit, declared=False)

    def versions(self, group_id: str) -> list[str]:
        """Recorded versions of the group, newest first (empty for an implicit group)."""
        self.group(group_id)
        return list(self._store.get_meta(_versions_key(group_id)) or [])

    def group_version(self, group_id: str, version: str) -> Group:
        """The group's subtree as recorded at ``version`` (declared definitions)."""
        snapshot = self._store.get_meta(_version_key(group_id, version))
        if snapshot is None:
            raise NotFound(f"Group '{group_id}' has no version '{version}'")
        return _stamped(parse_group(snapshot, group_id), version)

    # ------------------------------------------------------------------ the tree

    def _explicit(self) -> list[str]:
        return list(self._store.get_meta(INDEX_KEY) or [])

    def _meta(self, group_id: str) -> dict[str, Any]:
        return dict(self._store.get_meta(_meta_key(group_id)) or {})

    @staticmethod
    def _exists(group_id: str, apps: Iterable[AppSpec], explicit: Iterable[str]) -> bool:
        return (group_id == ROOT or group_id in set(explicit)
                or any(is_under(a.id, group_id) for a in apps))

    def _tree(self, group_id: str, apps: list[AppSpec], explicit: list[str], *,
              declared: bool) -> Group:
        """Rebuild the group from app ids and group metadata. ``declared``: apps with the
        dependencies as written (where still valid) instead of the effective ones."""
        inside = [a for a in apps if is_under(a.id, group_id)]
        group_ids = {g for g in explicit if is_under(g, group_id)}
        for a in inside:
            group_ids.update(g for g in ancestors(a.id) if is_under(g, group_id))
        children: dict[str, list[str]] = {}
        for g in group_ids:
            children.setdefault(parent_of(g), []).append(g)
        by_parent: dict[str, list[AppSpec]] = {}
        for a in inside:
            by_parent.setdefault(parent_of(a.id), []).append(a)

        def build(gid: str) -> Group:
            meta = self._meta(gid)
            records = meta.get("apps") or {}
            members = by_parent.get(gid, [])
            if declared:
                members = [_declared(a, records.get(a.id)) for a in members]
            subgroups = [build(c) for c in sorted(children.get(gid, []))]
            stamps = [meta.get("version"), *(a.version for a in members),
                      *(s.version for s in subgroups)]
            return Group(id=gid, apps=tuple(members), groups=tuple(subgroups),
                         dependencies=tuple(meta.get("dependencies") or ()),
                         version=max((s for s in stamps if s), default=EPOCH))

        return build(group_id)


class GroupManager(GroupReader):
    """Groups over an :class:`Orchestrator`, using only its public methods and its store.

    Thread-safe: group changes are serialised by the manager's lock; each app write takes
    the orchestrator's. Errors: :class:`SpecError` (422) for invalid input, :class:`NotFound`
    (404) for an unknown group or version, :class:`Conflict` (409) for an existing group on
    create, an id clash with an app, or apps locked by deployments (unless ``force``).
    """

    def __init__(self, orchestrator: Orchestrator) -> None:
        super().__init__(orchestrator)
        self._lock = threading.RLock()
        self.resume()

    # ------------------------------------------------------------------ commands

    def create(self, body: Any, base: str = ROOT, force: bool = False) -> GroupChange:
        """``POST /v2/groups[/{base}]``: a new group (its id resolved against ``base``).

        :class:`Conflict` if the group (or an app with its id) exists.
        """
        if isinstance(body, dict) and base == ROOT and body.get("id") is None:
            raise SpecError("Object is not valid", [("/id", ["is required"])])
        target = parse_group(body, base)
        with self._lock:
            if target.id == ROOT or self._exists(target.id, self._o.apps(), self._explicit()):
                raise Conflict(f"Group {target.id} is already created. "
                               "Use PUT to change this group.")
            return self._commit(self._plan(target), force, created=True)

    def update(self, group_id: str, body: Any, force: bool = False) -> GroupChange:
        """``PUT /v2/groups/{id}``, Marathon's three forms:

        * ``{"scaleBy": f}``: :meth:`scale` (nothing else may be given);
        * ``{"version": v}`` alone: :meth:`rollback`;
        * otherwise a definition. Each of ``apps``, ``groups``, ``dependencies`` that is
          given replaces the current one (apps and groups left out of a given list are
          deleted; a given subgroup that exists is updated by the same rule); keys not given
          keep their current value. Creates the group when it does not exist.

        A body ``id`` is resolved against ``group_id`` (Marathon's rule).
        """
        if not isinstance(body, dict):
            raise SpecError("Object is not valid", [("", ["must be a JSON object"])])
        gid = _effective_id(body, group_id)
        others = set(body) - {"id"}
        if "scaleBy" in body:
            if others != {"scaleBy"}:
                raise SpecError("Object is not valid", [
                    ("/scaleBy", ["cannot be combined with other changes in one request"])])
            return self.scale(gid, body["scaleBy"], force)
        if others == {"version"}:
            return self.rollback(gid, body["version"], force)
        with self._lock:
            apps, explicit = self._o.apps(), self._explicit()
            current = (self._tree(gid, apps, explicit, declared=True).to_definition()
                       if self._exists(gid, apps, explicit) else None)
            doc = _replace_fields(current, body, gid)
            return self._commit(self._plan(parse_group(doc, gid)), force,
                                created=current is None)

    def patch(self, group_id: str, body: Any, force: bool = False) -> GroupChange:
        """``PATCH /v2/groups/{id}``: merge ``body`` into the group. Apps are matched by id
        and their fields merged (like ``PATCH /v2/apps``), subgroups merged recursively,
        ``dependencies`` replaced when given; nothing is deleted. 404 for a missing group."""
        if not isinstance(body, dict):
            raise SpecError("Object is not valid", [("", ["must be a JSON object"])])
        gid = _effective_id(body, group_id)
        with self._lock:
            apps, explicit = self._o.apps(), self._explicit()
            if not self._exists(gid, apps, explicit):
                raise NotFound(f"Group '{gid}' does not exist")
            current = self._tree(gid, apps, explicit, declared=True).to_definition()
            doc = _merge_definition(current, body, gid)
            return self._commit(self._plan(parse_group(doc, gid)), force)

    def scale(self, group_id: str, factor: Any, force: bool = False) -> GroupChange:
        """Multiply the instances of every app in the group's subtree by ``factor``
        (rounded up, as Marathon does: :func:`scheduler.services.group_plan.scaled_instances`).
        Only ``instances`` change: the apps scale, no task is restarted."""
        with self._lock:
            apps, explicit = self._o.apps(), self._explicit()
            if not self._exists(group_id, apps, explicit):
                raise NotFound(f"Group '{group_id}' does not exist")
            inside = [a for a in apps if is_under(a.id, group_id)]
            scaled = logic.scale_by(inside, factor)
            counts = {a.id: a.instances for a in scaled}
            declared = _with_instances(self._tree(group_id, apps, explicit, declared=True),
                                       counts)
            changed = {s.id for s, a in zip(scaled, inside, strict=True)
                       if s.instances != a.instances}
            writes = [s.model_copy(update={"version": None}) for s in scaled if s.id in changed]
            plan = _Plan(scope=group_id, record=declared,
                         writes=_in_order(scaled, writes, stop=False), deletes=[],
                         effective={a.id: list(a.dependencies) for a in inside})
            return self._commit(plan, force)

    def rollback(self, group_id: str, version: Any, force: bool = False) -> GroupChange:
        """Restore the group's subtree as it was at ``version`` (a full replacement: apps
        added since are deleted). A new version; 404 when ``version`` is unknown."""
        if not isinstance(version, str):
            raise SpecError("Object is not valid", [("/version", ["must be a version string"])])
        with self._lock:
            snapshot = self._store.get_meta(_version_key(group_id, version))
            if snapshot is None:
                raise NotFound(f"Group '{group_id}' has no version '{version}'")
            return self._commit(self._plan(parse_group(snapshot, group_id)), force)

    def delete(self, group_id: str, force: bool = False) -> GroupChange:
        """Delete the group, every app under it (dependents first) and its versions. The
        root group (``/``) deletes everything."""
        with self._lock:
            apps, explicit = self._o.apps(), self._explicit()
            if not self._exists(group_id, apps, explicit):
                raise NotFound(f"Group '{group_id}' does not exist")
            doomed = [a for a in apps if is_under(a.id, group_id)]
            remaining = [a for a in apps if not is_under(a.id, group_id)]
            removed = sorted(g for g in explicit if _within(g, group_id))
            if group_id == ROOT:
                removed.append(ROOT)
            refreshed, meta_updates = self._refresh_dependents(
                remaining, [g for g in explicit if g not in removed])
            plan = _Plan(scope=group_id, record=None,
                         writes=_in_order(_replace(remaining, refreshed), refreshed,
                                          stop=False),
                         deletes=[i for wave in _waves(doomed, stop=True) for i in wave],
                         effective={}, removed_groups=removed, meta_updates=meta_updates)
            return self._commit(plan, force)

    def resume(self) -> None:
        """Finish a group change interrupted by a crash (its plan was committed; some app
        writes may be missing). Idempotent; safe to call at any time."""
        with self._lock:
            pending = self._store.get_meta(PENDING_KEY)
            if not pending:
                return
            try:
                # The change was accepted (locks checked) before the crash: finish it.
                self._execute(pending, force=True)
            except Exception:
                log.exception("could not finish the pending change of group %s",
                              pending.get("group"))
                return
            self._store.put_meta(PENDING_KEY, None)

    # ------------------------------------------------------------------ planning

    def _plan(self, target: Group) -> _Plan:
        """Validate ``target`` as the new content of its group against everything stored
        and work out the app writes and deletes. Raises before anything is written."""
        apps = self._o.apps()
        stored = {a.id: a for a in apps}
        explicit = self._explicit()
        scope = target.id
        for path in [scope, *ancestors(scope)]:
            if path in stored:
                raise Conflict(f"An app with the path {path} already exists.")
        inside = [a for a in apps if is_under(a.id, scope)]
        outside = [a for a in apps if not is_under(a.id, scope)]
        explicit_outside = [g for g in explicit if not _within(g, scope)]
        inherited = [d for g in ancestors(scope) for d in self._meta(g).get("dependencies", [])]
        effective = logic.effective_apps(target, [a.id for a in outside], explicit_outside,
                                         inherited)
        new_ids = {a.id for a in effective}
        refreshed, meta_updates = self._refresh_dependents(
            outside + effective, explicit_outside)
        refreshed = [a for a in refreshed if a.id not in new_ids]
        universe = _replace(outside, refreshed) + effective
        logic.check_acyclic(universe, target.pointers())
        deletes = [a for a in inside if a.id not in new_ids]
        doomed = {a.id for a in deletes}
        writes = self._with_service_ports(
            _in_order(universe, effective + refreshed, stop=False), stored,
            [a for a in apps if a.id not in doomed], target.pointers())
        removed = [g for g in explicit if _within(g, scope) and target.find(g) is None]
        return _Plan(
            scope=scope, record=target,
            writes=writes,
            deletes=[i for wave in _waves(deletes, stop=True) for i in wave],
            effective={a.id: list(a.dependencies) for a in effective},
            removed_groups=removed, meta_updates=meta_updates,
        )

    def _with_service_ports(self, specs: list[AppSpec], stored: Mapping[str, AppSpec],
                            kept: list[AppSpec], pointers: Mapping[str, str]) -> list[AppSpec]:
        """``specs`` (in write order) with their service ports chosen as the orchestrator
        will choose them, leaving out those that would not change at all.

        Done up front so that a port clash (with another app, or between two apps of the
        definition) is a 422 before anything is written, at the app's path, not an error
        half way through the writes. The writes then carry these ports, so the
        orchestrator keeps them and a replay after a crash writes exactly the same thing.
        ``kept``: the apps that exist while the writes happen (their ports are taken).
        """
        taken = service_ports.taken_ports(kept)
        port_range = self._o.service_ports.port_range
        out: list[AppSpec] = []
        for spec in specs:
            previous = stored.get(spec.id)
            try:
                chosen = service_ports.assign(spec, taken, previous, port_range)
            except SpecError as e:
                prefix = pointers.get(spec.id, "")
                raise SpecError(e.message, [(prefix + p, m) for p, m in e.details]) from None
            for port in service_ports.held_ports(chosen):
                taken.setdefault(port, spec.id)
            if previous is None or _config(previous) != _config(chosen):
                out.append(chosen.model_copy(update={"version": None}))
        return out

    def _refresh_dependents(self, universe: list[AppSpec], groups: Iterable[str]
                            ) -> tuple[list[AppSpec], dict[str, dict[str, Any]]]:
        """Apps of the explicit ``groups`` whose group-expanded dependencies change over
        ``universe`` (the apps that will exist): the updated specs and group metadata.

        Only apps still carrying the effective list their group recorded are touched (one
        since changed through ``/v2/apps`` owns its dependencies). Dependencies that match
        nothing any more are dropped: there is nothing left to wait for.
        """
        by_id = {a.id: a for a in universe}
        ids = set(by_id)
        writes: list[AppSpec] = []
        updates: dict[str, dict[str, Any]] = {}
        for gid in sorted(groups):
            meta = self._meta(gid)
            records: dict[str, Any] = dict(meta.get("apps") or {})
            inherited = [d for g in [gid, *ancestors(gid)]
                         for d in self._meta(g).get("dependencies", [])]
            changed = False
            for app_id, rec in sorted(records.items()):
                app = by_id.get(app_id)
                if app is None or list(app.dependencies) != rec.get("effective"):
                    continue
                deps = logic.resolve_dependencies(
                    app_id, [*rec.get("declared", []), *inherited], ids)
                if deps != list(app.dependencies):
                    writes.append(app.model_copy(update={"dependencies": deps,
                                                         "version": None}))
                    records[app_id] = {**rec, "effective": deps}
                    changed = True
            if changed:
                updates[gid] = {**meta, "apps": records}
        return writes, updates

    # ------------------------------------------------------------------ committing

    def _commit(self, plan: _Plan, force: bool, created: bool = False) -> GroupChange:
        self._check_locks([*(a.id for a in plan.writes), *plan.deletes], force)
        now = self._o.clock.now()
        recorded = [g.id for g in plan.record.walk()] if plan.record is not None else []
        version = self._next_version([plan.scope, *recorded], now)
        pending = {
            "group": plan.scope,
            "version": version,
            "deletes": plan.deletes,
            "writes": [_config(a) for a in plan.writes],
            # Deleting a group: first point its dependents elsewhere, then stop its apps.
            # Changing one: stop what goes first, then write in start order.
            "writes_first": plan.record is None,
        }
        with self._store.atomic():
            index = set(self._explicit())
            for gid in plan.removed_groups:
                index.discard(gid)
                for v in self._store.get_meta(_versions_key(gid)) or []:
                    self._store.put_meta(_version_key(gid, v), None)
                self._store.put_meta(_versions_key(gid), None)
                self._store.put_meta(_meta_key(gid), None)
            for gid, meta in plan.meta_updates.items():
                self._store.put_meta(_meta_key(gid), meta)
            if plan.record is not None:
                for g in plan.record.walk():
                    self._record(g, version, plan.effective)
                    if g.id != ROOT:
                        index.add(g.id)
            self._store.put_meta(INDEX_KEY, sorted(index))
            self._store.put_meta(PENDING_KEY, pending)
        try:
            deployment_id = self._execute(pending, force)
        except Exception:
            # An error (say an app locked between the check and its write) is the caller's
            # to see; a marker left behind would replay the change, forced, at the next
            # start. Only a crash (or the process being stopped) leaves it for resume().
            self._store.put_meta(PENDING_KEY, None)
            raise
        self._store.put_meta(PENDING_KEY, None)
        self._o.bus.publish("group_change_success", self._o.clock.now(),
                            groupId=plan.scope, version=version)
        return GroupChange(plan.scope, deployment_id, version, created)

    def _record(self, g: Group, version: str, effective: Mapping[str, list[str]]) -> None:
        """Store one group's metadata and its snapshot at ``version``."""
        self._store.put_meta(_meta_key(g.id), {
            "dependencies": list(g.dependencies),
            "version": version,
            "apps": {a.id: {"declared": list(a.dependencies),
                            "effective": effective.get(a.id, list(a.dependencies))}
                     for a in g.apps},
        })
        versions = list(self._store.get_meta(_versions_key(g.id)) or [])
        if version not in versions:
            versions.insert(0, version)
        self._store.put_meta(_versions_key(g.id), versions)
        self._store.put_meta(_version_key(g.id, version), g.to_definition())

    def _execute(self, pending: Mapping[str, Any], force: bool) -> str:
        """Apply a committed plan's app deletes and writes (skipping what is already done)
        and return the group's deployment id (see the module docstring)."""
        last: str | None = None

        def deletes() -> None:
            nonlocal last
            for app_id in pending.get("deletes", []):
                if self._current(app_id) is not None:
                    last = self._o.delete_app(app_id, force=force)

        def writes() -> None:
            nonlocal last
            for data in pending.get("writes", []):
                spec = parse_app(data)
                current = self._current(spec.id)
                if current is None or _config(current) != _config(spec):
                    _, last, _ = self._o.update_app(spec, force=force, check_ids=False)

        for step in ((writes, deletes) if pending.get("writes_first") else (deletes, writes)):
            step()
        return last or str(uuid.uuid4())

    def _current(self, app_id: str) -> AppSpec | None:
        try:
            return self._o.app(app_id)
        except NotFound:
            return None

    def _check_locks(self, app_ids: Iterable[str], force: bool) -> None:
        """Conflict (409) naming the deployments that lock any of ``app_ids``, unless
        ``force``: checked for all apps before the first write, so a locked app cannot
        leave a group half changed."""
        if force:
            return
        locking = sorted({d.id for i in app_ids for d in self._o.deployments_of(i)})
        if locking:
            raise Conflict(
                "App is locked by one or more deployments. Override with the option "
                "'?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
                locking,
            )

    def _next_version(self, group_ids: Iterable[str], now: datetime) -> str:
        """A timestamp after every recorded version of ``group_ids`` (clocks can repeat)."""
        version = iso(now)
        heads = [vs[0] for g in group_ids if (vs := self._store.get_meta(_versions_key(g)))]
        if heads and version <= max(heads):
            version = iso(parse_iso(max(heads)) + timedelta(milliseconds=1))
        return version


# ---------------------------------------------------------------------- helpers


def _effective_id(body: Mapping[str, Any], group_id: str) -> str:
    """The group a PUT/PATCH body addresses: its ``id`` resolved against the URL's group."""
    raw = body.get("id")
    if raw is None:
        return group_id
    try:
        return resolve_path(raw, group_id, allow_root=True)
    except ValueError as e:
        raise SpecError("Object is not valid", [("/id", [str(e)])]) from None


def _declared(app: AppSpec, record: Any) -> AppSpec:
    """The app with its declared dependencies, if it still carries the recorded expansion."""
    if isinstance(record, dict) and list(app.dependencies) == record.get("effective"):
        return app.model_copy(update={"dependencies": list(record.get("declared") or [])})
    return app


def _stamped(group: Group, version: str) -> Group:
    """The tree with ``version`` on every group (a snapshot was recorded at that version
    for each of them)."""
    return group.model_copy(update={
        "version": version, "groups": tuple(_stamped(g, version) for g in group.groups)})


def _with_instances(group: Group, counts: Mapping[str, int]) -> Group:
    return group.model_copy(update={
        "apps": tuple(a.model_copy(update={"instances": counts.get(a.id, a.instances)})
                      for a in group.apps),
        "groups": tuple(_with_instances(g, counts) for g in group.groups),
    })


def _replace(apps: list[AppSpec], updated: list[AppSpec]) -> list[AppSpec]:
    new = {a.id: a for a in updated}
    return [new.get(a.id, a) for a in apps]


def _waves(apps: list[AppSpec], *, stop: bool) -> list[list[str]]:
    """Start or stop waves; plain id order if the stored apps already form a cycle (which
    only ``/v2/apps`` writes could have made): never refuse to stop or scale because of it."""
    try:
        return logic.stop_order(apps) if stop else logic.start_order(apps)
    except SpecError:
        return [sorted(a.id for a in apps)]


def _in_order(universe: list[AppSpec], subset: list[AppSpec], *, stop: bool) -> list[AppSpec]:
    """``subset`` ordered by the waves of ``universe`` (dependencies through apps outside
    the subset still count)."""
    by_id = {a.id: a for a in subset}
    ordered = [by_id[i] for wave in _waves(universe, stop=stop) for i in wave if i in by_id]
    return ordered + [a for a in subset if a.id not in {o.id for o in ordered}]


def _replace_fields(current: dict[str, Any] | None, body: Mapping[str, Any],
                    group_id: str) -> dict[str, Any]:
    """Marathon's group update: keys given replace, keys not given keep the current value;
    a given subgroup that exists is updated by the same rule. Ids are made absolute first
    so that matching subgroups to current ones is by id."""
    if current is None:
        return {**body, "id": group_id}
    out = {**current, **{k: v for k, v in body.items() if k != "groups"}, "id": group_id}
    groups = body.get("groups")
    if "groups" in body:
        if not isinstance(groups, list):
            out["groups"] = groups  # invalid: parse_group reports it at /groups
            return out
        existing = {g["id"]: g for g in current.get("groups", [])}
        merged: list[Any] = []
        for child in groups:
            child_id = _child_id(child, group_id)
            if child_id is None:
                merged.append(child)
            else:
                merged.append(_replace_fields(existing.get(child_id), child, child_id))
        out["groups"] = merged
    return out


def _merge_definition(current: dict[str, Any], body: Mapping[str, Any],
                      group_id: str) -> dict[str, Any]:
    """PATCH: apps merged field by field by id, subgroups merged recursively by id,
    other keys replaced. The body's entries come first (so error paths match the body),
    then the current ones it did not mention."""
    out = {**current, **{k: v for k, v in body.items() if k not in ("apps", "groups")},
           "id": group_id}
    for key in ("apps", "groups"):
        if key not in body:
            continue
        given = body[key]
        if not isinstance(given, list):
            out[key] = given
            continue
        existing = {item["id"]: item for item in current.get(key, [])}
        merged: list[Any] = []
        for item in given:
            item_id = _child_id(item, group_id)
            old = existing.pop(item_id, None) if item_id is not None else None
            if old is None or not isinstance(item, dict):
                merged.append(item)
            elif key == "apps":
                merged.append({**old, **item, "id": item_id})
            else:
                assert item_id is not None
                merged.append(_merge_definition(old, item, item_id))
        out[key] = merged + list(existing.values())
    return out


def _child_id(item: Any, group_id: str) -> str | None:
    """The absolute id of a child entry of ``group_id``, or None when it has no valid id
    (parse_group then reports it)."""
    if not isinstance(item, dict):
        return None
    try:
        return resolve_path(item.get("id"), group_id)
    except ValueError:
        return None
