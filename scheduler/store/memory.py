"""An in-process :class:`~scheduler.store.base.StateStore` for tests and throwaway runs.

It is also the reference for how every store encodes what it keeps: the helpers at the top
(``encode_app``/``decode_app``, ``encode_task``/``decode_task``, ``encode_meta``/
``decode_meta`` and ``version_sort_key``) are shared with the SQLite store so that both
return identical values and order versions identically.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from scheduler.model.app import AppSpec, parse_app
from scheduler.model.task import Task
from scheduler.model.timefmt import parse_iso
from scheduler.store.base import AlreadyExists

__all__ = [
    "MemoryStore",
    "StoreClosed",
    "decode_app",
    "decode_meta",
    "decode_task",
    "encode_app",
    "encode_meta",
    "encode_task",
    "require_version",
    "task_sort_key",
    "version_sort_key",
]


class StoreClosed(RuntimeError):
    """A store method was called after :meth:`close`."""


# --- encoding shared by every store ----------------------------------------------------------
# Stores keep *text*, never live objects: pydantic's ``frozen`` does not freeze the dicts and
# lists inside a spec (``env``, ``labels``...) nor ``Task.handle``, so handing out or keeping a
# reference would let a caller change stored state without a write. Decoding on every read
# gives each caller its own copy, and makes the memory store lose exactly what SQLite loses
# (e.g. sub-millisecond timestamps in tasks).


def require_version(spec: AppSpec) -> str:
    """``spec.version``, or ``ValueError`` when it is ``None`` (a store cannot key it)."""
    if spec.version is None:
        raise ValueError(f"app {spec.id} has no version; the server must set one before storing")
    return spec.version


def encode_app(spec: AppSpec) -> str:
    """The spec as JSON text of ``spec.model_dump(mode="json")``."""
    return json.dumps(spec.model_dump(mode="json"), separators=(",", ":"))


def decode_app(text: str) -> AppSpec:
    """Inverse of :func:`encode_app`; the stored ``version`` is kept."""
    return parse_app(json.loads(text), keep_version=True)


def encode_task(task: Task) -> str:
    """The task as JSON text of :meth:`Task.to_json` (timestamps at millisecond precision)."""
    return json.dumps(task.to_json(), separators=(",", ":"))


def decode_task(text: str) -> Task:
    """Inverse of :func:`encode_task`."""
    return Task.from_json(json.loads(text))


def encode_meta(value: Any) -> str:
    """Strict JSON text of ``value``.

    Raises ``TypeError`` for values JSON cannot hold and ``ValueError`` for NaN/infinity
    (which ``json`` would otherwise write as non-standard tokens other readers reject).
    """
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def decode_meta(text: str) -> Any:
    """Inverse of :func:`encode_meta`."""
    return json.loads(text)


def version_sort_key(version: str) -> str:
    """A text key whose order is the versions' age: larger is newer.

    Versions are ISO-8601 timestamps (the server writes ``2026-01-01T00:00:00.000Z``); they are
    compared as instants, so offsets and precision do not matter. A version that is not a
    timestamp is compared by its text.
    """
    try:
        instant = parse_iso(version)
    except ValueError:
        return version
    # Fixed width, zero-padded year: lexicographic order equals chronological order.
    return instant.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


def task_sort_key(task: Task) -> tuple[str, str]:
    """``list_tasks`` order: ``staged_at``, then id (ms-precision UTC text sorts by time)."""
    return (task.to_json()["staged_at"], task.id)


# --- the store ---------------------------------------------------------------------------------


@dataclass
class _State:
    """Everything the store holds, as encoded text (immutable values: a copy is shallow)."""

    apps: dict[str, str] = field(default_factory=dict)  # app id -> current spec
    versions: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> version -> spec
    tasks: dict[str, str] = field(default_factory=dict)  # task id -> task
    meta: dict[str, str] = field(default_factory=dict)  # key -> JSON value

    def copy(self) -> _State:
        return _State(
            apps=dict(self.apps),
            versions={k: dict(v) for k, v in self.versions.items()},
            tasks=dict(self.tasks),
            meta=dict(self.meta),
        )


class MemoryStore:
    """The :class:`~scheduler.store.base.StateStore` contract, kept in memory (not durable).

    - Thread safety: one re-entrant lock guards every call. ``atomic()`` holds it for the
      whole block, so other threads neither see a block's uncommitted writes nor interleave
      their own; do not wait inside a block for another thread that uses the store.
    - ``atomic()`` nests like savepoints: an inner block that raises undoes only its own
      writes (the outer block may catch the exception and go on); the outermost block decides
      whether anything is kept.
    - Values are copied in and out, so mutating a returned or a passed-in object never changes
      stored state.
    - After :meth:`close` every method raises :class:`StoreClosed`.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state = _State()
        self._closed = False

    # --- transactions ----------------------------------------------------------------------

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """A transaction: all writes inside commit together, or none do. Re-entrant.

        Rollback restores a snapshot taken on entry; every nesting level takes its own.
        """
        with self._lock:
            self._check_open()
            snapshot = self._state.copy()
            try:
                yield
            except BaseException:
                self._state = snapshot
                raise

    # --- apps ------------------------------------------------------------------------------

    def create_app(self, spec: AppSpec) -> None:
        """Store a new app (its first version).

        Raises :class:`AlreadyExists` when the id is stored, ``ValueError`` without a version.
        """
        version = require_version(spec)
        text = encode_app(spec)
        with self._lock:
            self._check_open()
            if spec.id in self._state.apps:
                raise AlreadyExists(spec.id)
            self._state.apps[spec.id] = text
            self._state.versions[spec.id] = {version: text}

    def put_app(self, spec: AppSpec) -> None:
        """Make ``spec`` the app's current definition (creating the app) and keep its version.

        The current definition is the one last put, whatever its version's age. Putting a
        version that is already stored replaces that version. ``ValueError`` without a version.
        """
        version = require_version(spec)
        text = encode_app(spec)
        with self._lock:
            self._check_open()
            self._state.apps[spec.id] = text
            self._state.versions.setdefault(spec.id, {})[version] = text

    def get_app(self, app_id: str) -> AppSpec | None:
        """The current definition; ``None`` when no such app."""
        with self._lock:
            self._check_open()
            text = self._state.apps.get(app_id)
        return None if text is None else decode_app(text)

    def list_apps(self) -> list[AppSpec]:
        """Every app's current definition, ordered by id."""
        with self._lock:
            self._check_open()
            texts = [self._state.apps[k] for k in sorted(self._state.apps)]
        return [decode_app(t) for t in texts]

    def delete_app(self, app_id: str) -> bool:
        """Delete the app and all its versions (not its tasks). False when it did not exist."""
        with self._lock:
            self._check_open()
            if app_id not in self._state.apps:
                return False
            del self._state.apps[app_id]
            self._state.versions.pop(app_id, None)
            return True

    def list_app_versions(self, app_id: str) -> list[str]:
        """Stored versions, newest first (see :func:`version_sort_key`); empty when unknown."""
        with self._lock:
            self._check_open()
            versions = list(self._state.versions.get(app_id, {}))
        return sorted(versions, key=lambda v: (version_sort_key(v), v), reverse=True)

    def get_app_version(self, app_id: str, version: str) -> AppSpec | None:
        """The app as it was at ``version``; ``None`` when the app or version is unknown."""
        with self._lock:
            self._check_open()
            text = self._state.versions.get(app_id, {}).get(version)
        return None if text is None else decode_app(text)

    # --- tasks -----------------------------------------------------------------------------

    def put_task(self, task: Task) -> None:
        """Insert or replace the task with ``task.id``."""
        text = encode_task(task)
        with self._lock:
            self._check_open()
            self._state.tasks[task.id] = text

    def get_task(self, task_id: str) -> Task | None:
        """The task; ``None`` when unknown."""
        with self._lock:
            self._check_open()
            text = self._state.tasks.get(task_id)
        return None if text is None else decode_task(text)

    def list_tasks(self, app_id: str | None = None) -> list[Task]:
        """All tasks, or those of one app, ordered by ``staged_at`` then id."""
        with self._lock:
            self._check_open()
            texts = list(self._state.tasks.values())
        tasks = [decode_task(t) for t in texts]
        if app_id is not None:
            tasks = [t for t in tasks if t.app_id == app_id]
        return sorted(tasks, key=task_sort_key)

    def delete_task(self, task_id: str) -> bool:
        """Delete the task. False when there was no such task."""
        with self._lock:
            self._check_open()
            return self._state.tasks.pop(task_id, None) is not None

    # --- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any | None:
        """The JSON value stored under ``key``; ``None`` when absent."""
        with self._lock:
            self._check_open()
            text = self._state.meta.get(key)
        return None if text is None else decode_meta(text)

    def put_meta(self, key: str, value: Any) -> None:
        """Store a JSON value; ``None`` deletes the key (absent or not).

        ``TypeError``/``ValueError`` when ``value`` is not strict JSON; nothing is stored.
        """
        text = None if value is None else encode_meta(value)
        with self._lock:
            self._check_open()
            if text is None:
                self._state.meta.pop(key, None)
            else:
                self._state.meta[key] = text

    # --- lifecycle -------------------------------------------------------------------------

    def close(self) -> None:
        """Drop everything; later calls raise :class:`StoreClosed`. Idempotent."""
        with self._lock:
            self._closed = True
            self._state = _State()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")
