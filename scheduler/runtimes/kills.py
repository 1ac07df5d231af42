"""Kill requests as every runtime records them (``kill.json`` beside the task's other records).

A kill is recorded *before* it is sent, with its deadline (when the task is forcibly stopped
if it has not exited), so that the task's end is reported KILLED and a restarted Dromos still
enforces the deadline. A second kill never extends an earlier deadline: ``kill(grace=60)``
after ``kill(grace=5)`` keeps the 5 s one; a shorter grace shortens it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.runtimes.executor import KILL_FILE, read_json, write_json_atomic

__all__ = ["KILL_FILE", "KillRequest", "kill_in_force", "read_kill", "record_kill"]


@dataclass(frozen=True)
class KillRequest:
    """A recorded kill: when it was asked for, with which grace, and its deadline (seconds
    since the epoch)."""

    requested_at: float
    grace_seconds: float
    deadline: float

    def overdue(self, now: float) -> bool:
        """Whether the task must be stopped by force now."""
        return now >= self.deadline

    def remaining(self, now: float) -> float:
        """Seconds of grace left (0 when overdue)."""
        return max(0.0, self.deadline - now)

    def to_json(self) -> dict[str, float]:
        return {"requested_at": self.requested_at, "grace_seconds": self.grace_seconds,
                "deadline": self.deadline}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> KillRequest | None:
        """The request a record holds; ``None`` for no record. A record without a deadline
        (written by hand, or cut short) counts as overdue."""
        if data is None:
            return None
        deadline = float(data.get("deadline", 0.0))
        return cls(float(data.get("requested_at", deadline)),
                   float(data.get("grace_seconds", 0.0)), deadline)


def kill_in_force(earlier: KillRequest | None, grace_seconds: float,
                  now: float) -> tuple[KillRequest, bool]:
    """The kill that holds after a request with ``grace_seconds`` at ``now``, and whether it
    is new (to be recorded): the earlier request when its deadline is no later, else this
    one. Pure."""
    grace = max(0.0, float(grace_seconds))
    deadline = now + grace
    if earlier is not None and earlier.deadline <= deadline:
        return earlier, False
    return KillRequest(now, grace, deadline), True


def read_kill(directory: Path) -> KillRequest | None:
    """The kill recorded in ``directory``, if any."""
    return KillRequest.from_json(read_json(directory / KILL_FILE))


def record_kill(directory: Path, grace_seconds: float, now: float) -> KillRequest:
    """Record a kill request in ``directory`` (created if missing) unless an earlier one
    holds (:func:`kill_in_force`); return the one in force. Atomic: a reader sees the old
    record or the new one."""
    request, new = kill_in_force(read_kill(directory), grace_seconds, now)
    if new:
        directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(directory / KILL_FILE, request.to_json())
    return request
