"""Garbage collection of ended tasks' sandboxes (the local runtime's ``tasks/<id>/``).

Like a Mesos agent's ``--gc_delay``, a sandbox outlives its task for a while so its output
and files can still be read, then it goes. Two bounds, whichever comes first:

- ``delay_seconds`` (``--sandbox-gc-delay``, default one hour; Mesos keeps a week, but its
  agents have a disk of their own, Dromos shares the state directory): a sandbox whose task
  ended longer ago than that is removed;
- ``keep_per_app`` (``--sandbox-keep``, default 5): of one app's (or job's) ended tasks only
  the most recent ones are kept, so a crash-looping app cannot fill the disk within the
  delay.

A sandbox whose task ended less than ``min_age_seconds`` (60 s) ago is always kept, so the
control loop has observed how the task ended before its records go. A task that runs, or
whose end is not recorded, is never touched.

:func:`sandboxes_to_remove` decides (pure: the list and ``now`` in, ids out);
:class:`SandboxCollector` scans the directory and removes, at most once per interval.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scheduler.runtimes.executor import EXIT_FILE, LAUNCH_FILE, read_json

log = logging.getLogger(__name__)

GC_INTERVAL_SECONDS = 30.0
"""How often the collector looks at the sandboxes (it is cheap, but not free)."""


@dataclass(frozen=True)
class SandboxGcPolicy:
    """When ended tasks' sandboxes are removed (module docstring)."""

    delay_seconds: float = 3600.0
    keep_per_app: int = 5
    min_age_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.delay_seconds < 0 or self.keep_per_app < 0 or self.min_age_seconds < 0:
            raise ValueError("sandbox GC delay, keep count and minimum age must not be "
                             "negative")


@dataclass(frozen=True)
class EndedSandbox:
    """A sandbox whose task ended at ``ended_at`` (seconds since the epoch)."""

    task_id: str
    app_id: str
    ended_at: float


def sandboxes_to_remove(ended: Iterable[EndedSandbox], now: float,
                        policy: SandboxGcPolicy) -> list[str]:
    """The task ids whose sandboxes go at ``now``, sorted. Pure."""
    by_app: dict[str, list[EndedSandbox]] = {}
    for s in ended:
        by_app.setdefault(s.app_id, []).append(s)
    remove: list[str] = []
    for sandboxes in by_app.values():
        newest_first = sorted(sandboxes, key=lambda s: (-s.ended_at, s.task_id))
        for rank, s in enumerate(newest_first):
            age = now - s.ended_at
            if age < policy.min_age_seconds:
                continue
            if age >= policy.delay_seconds or rank >= policy.keep_per_app:
                remove.append(s.task_id)
    return sorted(remove)


def scan(tasks_dir: Path) -> list[EndedSandbox]:
    """The sandboxes under ``tasks_dir`` whose task's end is recorded (``exit.json``), with
    the app id the launch recorded (else the task id up to its last ``.``, as app task ids
    are built). Unreadable ones are skipped: they are left alone."""
    found: list[EndedSandbox] = []
    try:
        entries = list(os.scandir(tasks_dir))
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        try:
            ended = read_json(path / EXIT_FILE)
            if ended is None:
                continue
            launch = read_json(path / LAUNCH_FILE) or {}
            app_id = str(launch.get("app_id") or entry.name.rsplit(".", 1)[0])
            found.append(EndedSandbox(entry.name, app_id, float(ended["finished_at"])))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return found


class SandboxCollector:
    """Removes ended tasks' sandboxes under ``tasks_dir`` by ``policy``, at most once per
    :data:`GC_INTERVAL_SECONDS`. Thread-safe; a run already under way is not waited for."""

    def __init__(self, tasks_dir: Path, policy: SandboxGcPolicy) -> None:
        self.tasks_dir = tasks_dir
        self.policy = policy
        self._lock = threading.Lock()
        self._next_run = 0.0  # time.monotonic()

    def maybe_run(self) -> list[str]:
        """Collect if the interval has passed; the task ids removed."""
        if time.monotonic() < self._next_run or not self._lock.acquire(blocking=False):
            return []
        try:
            self._next_run = time.monotonic() + GC_INTERVAL_SECONDS
            return self.run(time.time())
        finally:
            self._lock.release()

    def run(self, now: float) -> list[str]:
        """Collect now (``now``: seconds since the epoch); the task ids removed."""
        removed: list[str] = []
        for task_id in sandboxes_to_remove(scan(self.tasks_dir), now, self.policy):
            try:
                # rmtree removes links, never what they point to.
                shutil.rmtree(self.tasks_dir / task_id)
                removed.append(task_id)
            except OSError as e:
                log.warning("cannot remove the sandbox of ended task %s: %s", task_id, e)
        if removed:
            log.info("removed %d ended tasks' sandboxes", len(removed))
        return removed
