"""Marathon group definitions: ``{id, apps, groups, dependencies}`` parsed into a tree.

A group is a folder of apps and nested groups. Parsing follows Marathon's path rules:

* Ids are paths. A relative id (no leading ``/``) is resolved against the enclosing group's
  id, and ``.``/``..`` segments are applied (Marathon's ``canonicalPath``): inside group
  ``/prod``, ``web`` is ``/prod/web`` and ``../db`` is ``/db``. The top-level id is resolved
  against the ``base`` the caller passes (the URL's group, ``/`` for ``POST /v2/groups``).
* Every app and nested group must be a *direct* child of its group (Marathon's "not a child
  of" rule): ``/prod`` may hold ``/prod/web`` but not ``/prod/eu/web``. That is what makes a
  group tree reconstructable from the app ids alone.
* ``dependencies`` (the group's and each app's) are resolved against the group's id, so
  ``"../database"`` in group ``/product/service`` means ``/product/database``.
* An id used twice anywhere in the tree (two apps, two groups, an app and a group) is
  rejected.

Errors come out as one :class:`SpecError` with every problem found, each at its JSON pointer
into the submitted document (``/apps/0/cpus``, ``/groups/1/apps/0/id``).

The result, :class:`Group`, holds *declared* definitions: each app's own dependencies, with
absolute ids, before group-level dependencies are inherited (services/group_plan.py does that).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from scheduler.model.app import AppSpec, normalize_app_id, parse_app
from scheduler.model.validation import SpecError, errors_from_pydantic

ROOT = "/"

Details = list[tuple[str, list[str]]]


def parent_of(path_id: str) -> str:
    """``/a/b/c`` → ``/a/b``; ``/a`` → ``/``; ``/`` → ``/``."""
    head = path_id.rstrip("/").rsplit("/", 1)[0]
    return head or ROOT


def ancestors(path_id: str) -> list[str]:
    """Proper ancestors, nearest first, ending with the root: ``/a/b/c`` → ``/a/b, /a, /``."""
    out: list[str] = []
    current = path_id
    while current != ROOT:
        current = parent_of(current)
        out.append(current)
    return out


def is_under(path_id: str, group_id: str) -> bool:
    """Whether ``path_id`` lies strictly inside ``group_id`` (every id is under the root)."""
    if group_id == ROOT:
        return path_id != ROOT
    return path_id.startswith(group_id + "/")


def resolve_path(raw: Any, base: str, *, allow_root: bool = False) -> str:
    """Marathon's ``canonicalPath``: ``raw`` made absolute against group ``base``.

    Absolute ids are taken as given; relative ones are appended to ``base``. ``.`` and
    ``..`` segments are then applied. The result is canonical (``/a/b``, no trailing slash),
    or ``/`` when ``allow_root``. Raises ``ValueError`` for a non-string, a path that climbs
    above the root, or a segment that breaks Marathon's naming rules.
    """
    if not isinstance(raw, str):
        raise ValueError("must be a string path such as /prod/web or web")
    text = raw.strip()
    start = [] if text.startswith("/") else [s for s in base.split("/") if s]
    segments: list[str] = list(start)
    for seg in text.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if not segments:
                raise ValueError(f"{raw!r} climbs above the root group")
            segments.pop()
            continue
        segments.append(seg)
    if not segments:
        if allow_root:
            return ROOT
        raise ValueError("id must be a non-empty path such as /prod/web")
    return normalize_app_id("/" + "/".join(segments))


def app_group_overlap(app_id: str, app_ids: Iterable[str],
                      group_ids: Iterable[str]) -> str | None:
    """Why ``app_id`` cannot be an app beside the apps ``app_ids`` and the declared groups
    ``group_ids`` (Marathon's rule: one path is an app or a group, never both), or ``None``.

    It clashes when it is a group -- a declared one, or the parent path of an app -- or when
    one of its ancestors is an app (which cannot hold anything). ``app_id`` itself among
    ``app_ids`` is no clash (the app being replaced)."""
    groups = set(group_ids)
    up = set(ancestors(app_id))
    for other in app_ids:
        if other in up:
            return f"{app_id} would be inside app {other}, and an app cannot hold others"
        if is_under(other, app_id):
            return f"{app_id} is a group (it holds app {other}); an app cannot have its id"
    if app_id in groups:
        return f"{app_id} is a group; an app cannot have its id"
    return None


class _GroupShell(BaseModel):
    """The JSON shape of a group definition, before ids are resolved.

    ``version`` is read-only (clients PUT back what they fetched) and ignored. ``pods`` is
    accepted only empty: Dromos has no pods, and Marathon lists ``pods: []`` in every group.
    ``enforceRole`` (Marathon 1.9+) is accepted and ignored: Dromos has no per-group roles.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str | None = None
    apps: list[Any] | None = None
    groups: list[_GroupShell] | None = None
    dependencies: list[str] | None = None
    version: str | None = None
    pods: list[Any] | None = Field(default=None, max_length=0)
    enforceRole: bool | None = None


class Group(BaseModel):
    """A validated group tree. Ids are absolute; apps carry their *declared* dependencies.

    ``version`` is the stored group's version when the tree comes from the store; ``None``
    for a definition parsed from a request.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    apps: tuple[AppSpec, ...] = ()
    groups: tuple[Group, ...] = ()
    dependencies: tuple[str, ...] = ()
    version: str | None = None

    def walk(self) -> Iterator[Group]:
        """This group and every nested group, parents before children."""
        yield self
        for g in self.groups:
            yield from g.walk()

    def transitive_apps(self) -> list[AppSpec]:
        """Every app in the tree, in document order."""
        return [a for g in self.walk() for a in g.apps]

    def find(self, group_id: str) -> Group | None:
        """The group with ``group_id`` in this tree, or ``None``."""
        return next((g for g in self.walk() if g.id == group_id), None)

    def pointers(self, prefix: str = "") -> dict[str, str]:
        """Id → JSON pointer of every app and group in the tree (``/groups/0/apps/1``)."""
        out = {self.id: prefix}
        for i, app in enumerate(self.apps):
            out[app.id] = f"{prefix}/apps/{i}"
        for j, g in enumerate(self.groups):
            out.update(g.pointers(f"{prefix}/groups/{j}"))
        return out

    def to_definition(self) -> dict[str, Any]:
        """The tree as a group definition :func:`parse_group` accepts back (absolute ids,
        every key present, app versions left out)."""
        return {
            "id": self.id,
            "apps": [a.model_dump(mode="json", exclude={"version"}) for a in self.apps],
            "groups": [g.to_definition() for g in self.groups],
            "dependencies": list(self.dependencies),
        }


def parse_group(data: Any, base: str = ROOT) -> Group:
    """Validate a decoded JSON group definition into a :class:`Group`.

    The top-level ``id`` is resolved against ``base`` (and defaults to ``base`` when absent,
    as Marathon's ``PUT /v2/groups/{id}`` does); nested ids against their parent group.
    Raises :class:`SpecError` listing every problem, each at its path in ``data``.
    """
    if not isinstance(data, dict):
        raise SpecError("Object is not valid", [("", ["must be a JSON object"])])
    try:
        shell = _GroupShell.model_validate(data)
    except ValidationError as e:
        raise SpecError("Object is not valid", errors_from_pydantic(e)) from None
    errors: Details = []
    try:
        top_id = resolve_path(shell.id if shell.id is not None else base, base,
                              allow_root=True)
    except ValueError as e:
        raise SpecError("Object is not valid", [("/id", [str(e)])]) from None
    seen: dict[str, str] = {}
    group = _build(shell, top_id, "", errors, seen)
    if errors:
        raise SpecError("Object is not valid", _merge(errors))
    return group


def _build(shell: _GroupShell, group_id: str, pointer: str, errors: Details,
           seen: dict[str, str]) -> Group:
    """Resolve ids and parse apps of one group (recursively); problems go to ``errors``."""
    seen.setdefault(group_id, f"group {group_id}")
    deps: list[str] = []
    for k, raw in enumerate(shell.dependencies or []):
        try:
            deps.append(resolve_path(raw, group_id))
        except ValueError as e:
            errors.append((f"{pointer}/dependencies/{k}", [str(e)]))
    apps: list[AppSpec] = []
    for i, raw_app in enumerate(shell.apps or []):
        app = _parse_member_app(raw_app, group_id, f"{pointer}/apps/{i}", errors)
        if app is None:
            continue
        if app.id in seen:
            errors.append((f"{pointer}/apps/{i}/id",
                           [f"{app.id} is used twice (also by {seen[app.id]})"]))
            continue
        seen[app.id] = f"app {app.id}"
        apps.append(app)
    groups: list[Group] = []
    for j, child in enumerate(shell.groups or []):
        child_pointer = f"{pointer}/groups/{j}"
        if child.id is None:
            errors.append((f"{child_pointer}/id", ["is required for a nested group"]))
            continue
        try:
            child_id = resolve_path(child.id, group_id)
        except ValueError as e:
            errors.append((f"{child_pointer}/id", [str(e)]))
            continue
        if parent_of(child_id) != group_id:
            errors.append((f"{child_pointer}/id", [_not_child(child_id, group_id)]))
            continue
        if child_id in seen:
            errors.append((f"{child_pointer}/id",
                           [f"{child_id} is used twice (also by {seen[child_id]})"]))
            continue
        groups.append(_build(child, child_id, child_pointer, errors, seen))
    return Group(id=group_id, apps=tuple(apps), groups=tuple(groups), dependencies=tuple(deps))


def _parse_member_app(raw: Any, group_id: str, pointer: str, errors: Details) -> AppSpec | None:
    """One app of a group: id and dependencies resolved against the group, then validated
    like ``POST /v2/apps`` would (error paths prefixed with the app's pointer)."""
    if not isinstance(raw, dict):
        errors.append((pointer, ["must be a JSON object"]))
        return None
    if "id" not in raw:
        errors.append((f"{pointer}/id", ["is required"]))
        return None
    try:
        app_id = resolve_path(raw["id"], group_id)
    except ValueError as e:
        errors.append((f"{pointer}/id", [str(e)]))
        return None
    if parent_of(app_id) != group_id:
        errors.append((f"{pointer}/id", [_not_child(app_id, group_id)]))
        return None
    data = dict(raw, id=app_id)
    raw_deps = raw.get("dependencies")
    if isinstance(raw_deps, list):
        # Resolve relative dependencies here: the app model only knows absolute ids.
        resolved: list[Any] = []
        for k, dep in enumerate(raw_deps):
            try:
                resolved.append(resolve_path(dep, group_id))
            except ValueError as e:
                # Reported here, at its index; left out so the app's own check of the list
                # does not report it a second time.
                errors.append((f"{pointer}/dependencies/{k}", [str(e)]))
        data["dependencies"] = resolved
    try:
        return parse_app(data)
    except SpecError as e:
        errors.extend((pointer + path, msgs) for path, msgs in e.details)
        return None


def _not_child(child_id: str, group_id: str) -> str:
    return (f"{child_id} is not a direct child of group {group_id} "
            "(hint: use an id relative to the group, such as 'web')")


def _merge(errors: Details) -> Details:
    """One entry per path, messages in the order found."""
    merged: dict[str, list[str]] = {}
    for path, msgs in errors:
        bucket = merged.setdefault(path, [])
        bucket.extend(m for m in msgs if m not in bucket)
    return list(merged.items())
