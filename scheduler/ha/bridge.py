"""kubectl as a way in: what an App or Job object seen on the API server asks Dromos to do.

Pure: :func:`classify` takes the object and the record Dromos stored for it (``None`` when it
has none) and returns what the leader should do, with the same validation as the REST API:
- :class:`Echo`: the object holds what Dromos stored (its own write coming back): nothing.
- :class:`Apply`: a user created or changed it (``kubectl apply``): create or update the app
  or job from ``definition``, as ``POST``/``PUT`` would.
- :class:`Invalid`: it does not validate: report ``details`` (JSON pointers, as a 422 would) in
  ``status.conditions`` and as an Event; run nothing.
Deletion needs no classification: an object Dromos stored that disappears without Dromos
deleting it was deleted by a user, and the app or job is deleted with its tasks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from scheduler.model.app import parse_app
from scheduler.model.job import parse_job
from scheduler.model.validation import SpecError

Kind = Literal["App", "Job"]


@dataclass(frozen=True)
class Echo:
    key: str


@dataclass(frozen=True)
class Apply:
    key: str
    definition: dict[str, Any]


@dataclass(frozen=True)
class Invalid:
    key: str
    message: str
    details: list[tuple[str, list[str]]]

    def condition_message(self) -> str:
        return "; ".join(f"{path or '/'}: {', '.join(errs)}" for path, errs in self.details)


Decision = Echo | Apply | Invalid


def key_of(kind: Kind, obj: dict[str, Any]) -> str:
    """The app id or job name an object stands for: ``spec.id`` / ``spec.name`` when given,
    else derived from the object's name (``/<name>`` for apps)."""
    spec = obj.get("spec") or {}
    name = str(obj["metadata"]["name"])
    if kind == "App":
        given = spec.get("id")
        return str(given) if isinstance(given, str) and given else f"/{name}"
    given = spec.get("name")
    return str(given) if isinstance(given, str) and given else name


def classify(kind: Kind, obj: dict[str, Any], stored: str | None) -> Decision:
    """See the module docstring. ``stored`` is the record's stored JSON text."""
    key = key_of(kind, obj)
    spec = dict(obj.get("spec") or {})
    if stored is not None and json.loads(stored) == spec:
        return Echo(key)
    definition = {**spec, "id": key} if kind == "App" else {**spec, "name": key}
    try:
        if kind == "App":
            parse_app(definition)
        else:
            parse_job(definition)
    except SpecError as e:
        return Invalid(key, e.message, e.details)
    return Apply(key, definition)
