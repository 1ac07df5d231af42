"""Names of what the Docker runtime creates: a task's container is found from its task id
alone (see the package docstring, "Identity")."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

NAME_PREFIX = "dromos-"
MAX_NAME_LENGTH = 128
"""Container names (and the record directories named after them) stay below this length."""

_UNSAFE_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_.-]")


def container_name(task_id: str) -> str:
    """The container name of ``task_id``: ``dromos-<task id>`` when the id only uses Docker's
    name characters, else the sanitised id (each other character becomes ``-``) followed by
    ``-`` and 12 hex digits of the id's SHA-256, so ids that sanitise alike (``etl:1`` and
    ``etl-1``) still get different names. Raises ``ValueError`` for an empty id."""
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("task id must be a non-empty string")
    safe = _UNSAFE_NAME_CHARS.sub("-", task_id)
    name = NAME_PREFIX + safe
    if safe != task_id or len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(task_id.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        name = f"{name[: MAX_NAME_LENGTH - len(digest) - 1]}-{digest}"
    return name


def safe_name(task_id: str) -> str | None:
    """The container name of ``task_id``, or ``None`` for an id that has none."""
    try:
        return container_name(task_id)
    except ValueError:
        return None


def is_safe_name(name: str) -> bool:
    """Whether ``name`` is safe as a record directory name."""
    return bool(name) and not name.startswith(".") and "/" not in name and "\0" not in name


def name_of(summary: Mapping[str, Any]) -> str:
    """The name of a container in a ``docker ps`` summary."""
    names = summary.get("Names") or [""]
    return str(names[0]).lstrip("/")
