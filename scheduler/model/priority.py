"""Priorities and gang size of apps and jobs, read from where strict clients never see them.

Where the values live (the compatibility choice):

- **Apps** carry them as labels, ``dromos.io/priority`` and ``dromos.io/gang``. A strict Marathon
  client accepts exactly the documented app keys (``/work/shared/reference/marathon.md``,
  "Response objects a strict client accepts"): a new top-level field would crash it, while
  ``labels`` is a free-form string map every client already round-trips untouched.
- **Jobs** carry them as Dromos-only fields (``priority``, ``gangSize``, ``team``, ``gpus``),
  emitted only when set. Chronos has no ``labels``; its clients pass job objects through as
  plain maps, and Dromos already returns Dromos-only job fields (``missedRunPolicy``). Chronos's
  own ``highPriority`` keeps its old meaning (the front of the queue within its class) and
  does not change the preemption priority.

A priority is a named class or an integer; higher wins. The classes are spaced so an integer
can sit between them (``450`` preempts batch but not services).
"""

from __future__ import annotations

from collections.abc import Mapping

PRIORITY_LABEL = "dromos.io/priority"
GANG_LABEL = "dromos.io/gang"

CRITICAL = 1000
SERVICE = 500
BATCH = 100
BEST_EFFORT = 0

PRIORITY_CLASSES: Mapping[str, int] = {
    "critical": CRITICAL,
    "service": SERVICE,
    "batch": BATCH,
    "best-effort": BEST_EFFORT,
}
# An integer priority outside this range is a typo, not a policy.
PRIORITY_MIN = -1_000_000
PRIORITY_MAX = 1_000_000
# A gang larger than this cannot be placed "all at once" in any cluster Dromos targets.
GANG_MAX = 10_000


def parse_priority(raw: str | int) -> int:
    """A class name (``critical``, ``service``, ``batch``, ``best-effort``, any case) or an
    integer (as int or decimal text) → its integer priority.

    Raises ``ValueError`` naming the allowed values for anything else.
    """
    if isinstance(raw, bool):
        raise ValueError("priority must be a class name or an integer, not a boolean")
    if isinstance(raw, int):
        value = raw
    else:
        text = raw.strip().lower()
        if text in PRIORITY_CLASSES:
            return PRIORITY_CLASSES[text]
        try:
            value = int(text)
        except ValueError:
            known = ", ".join(PRIORITY_CLASSES)
            raise ValueError(
                f"unknown priority {raw!r}; expected one of {known} or an integer"
            ) from None
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise ValueError(f"priority {value} must be between {PRIORITY_MIN} and {PRIORITY_MAX}")
    return value


def priority_name(value: int) -> str:
    """``service`` for 500, ``"450"`` for an integer that names no class (for reasons)."""
    for name, v in PRIORITY_CLASSES.items():
        if v == value:
            return name
    return str(value)


def parse_gang_size(raw: str | int) -> int:
    """A gang size: an integer >= 1 (1 = no gang). Raises ``ValueError`` otherwise."""
    if isinstance(raw, bool):
        raise ValueError("gang size must be an integer")
    try:
        value = int(raw.strip()) if isinstance(raw, str) else int(raw)
    except ValueError:
        raise ValueError(f"gang size {raw!r} must be an integer") from None
    if not 1 <= value <= GANG_MAX:
        raise ValueError(f"gang size {value} must be between 1 and {GANG_MAX}")
    return value


def _parse_gang_label(raw: str) -> int:
    return 0 if raw.strip().lower() == "true" else parse_gang_size(raw)


def label_errors(labels: Mapping[str, str]) -> list[tuple[str, list[str]]]:
    """Validation of the sharing labels of an app: ``(json pointer, messages)`` per bad label,
    empty when both are absent or valid. Pointers are ``/labels/dromos.io~1priority``
    (``/`` escaped as ``~1``, RFC 6901)."""
    out: list[tuple[str, list[str]]] = []
    for key, parse in ((PRIORITY_LABEL, parse_priority), (GANG_LABEL, _parse_gang_label)):
        if key in labels:
            try:
                parse(labels[key])
            except ValueError as e:
                out.append((f"/labels/{key.replace('~', '~0').replace('/', '~1')}", [str(e)]))
    return out


def app_priority(labels: Mapping[str, str]) -> int:
    """An app's priority from its labels; ``service`` when unlabelled or invalid (invalid
    labels are rejected at submission by :func:`label_errors`, so this only guards stored
    data written before the label existed)."""
    raw = labels.get(PRIORITY_LABEL)
    if raw is None:
        return SERVICE
    try:
        return parse_priority(raw)
    except ValueError:
        return SERVICE


def app_gang_size(labels: Mapping[str, str]) -> int:
    """``1`` unless the app asks for all-or-none placement with ``dromos.io/gang``.

    The label's value is the gang size; ``"true"`` means the whole app (the caller passes its
    ``instances``) — see :func:`gang_size_for`."""
    raw = labels.get(GANG_LABEL)
    if raw is None or raw.strip().lower() == "true":
        return 1
    try:
        return parse_gang_size(raw)
    except ValueError:
        return 1


def gang_size_for(labels: Mapping[str, str], instances: int) -> int:
    """The gang size of an app of ``instances``: ``dromos.io/gang: "true"`` gangs all of them,
    an integer gangs that many, no label means 1 (each task placed on its own)."""
    raw = labels.get(GANG_LABEL)
    if raw is not None and raw.strip().lower() == "true":
        return max(1, instances)
    return app_gang_size(labels)


def job_priority(priority: str | int | None) -> int:
    """A job's priority: its ``priority`` field, ``batch`` when absent."""
    return BATCH if priority is None else parse_priority(priority)


def team_of_app(app_id: str) -> str:
    """The team of an app: its top-level group (``/ml/train/a`` → ``ml``); an app at the root
    (``/web``) belongs to the team named by its own id."""
    return app_id.strip("/").split("/", 1)[0]
