"""Deployments: a change to one or more apps, tracked until it converges, fails or is
cancelled. Marathon's shape (steps of actions) with what Marathon lacked: a failed state."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from scheduler.model.timefmt import iso, parse_iso


class Action(StrEnum):
    START = "StartApplication"
    STOP = "StopApplication"
    SCALE = "ScaleApplication"
    RESTART = "RestartApplication"


@dataclass(frozen=True)
class Deployment:
    """One deployment. ``steps`` are lists of ``(action, app id)``, run in order.

    ``original`` maps each affected app to its version before the deployment (``None`` for an
    app the deployment created): what a rollback restores. ``target`` maps each app to the
    version the deployment installs (``None``: the app is being deleted).
    ``timeout_at`` is when the deployment fails if it has not converged (``None``: never).
    """

    id: str
    version: str
    started_at: datetime
    steps: tuple[tuple[tuple[Action, str], ...], ...]
    original: dict[str, str | None] = field(default_factory=dict)
    target: dict[str, str | None] = field(default_factory=dict)
    current_step: int = 0
    timeout_at: datetime | None = None
    auto_rollback: bool = False

    @property
    def affected_apps(self) -> list[str]:
        return sorted({app for step in self.steps for _, app in step})

    def with_(self, **changes: Any) -> Deployment:
        return replace(self, **changes)

    def to_marathon(self, readiness: dict[str, list[Any]] | None = None) -> dict[str, Any]:
        """Marathon's deployment JSON (documented keys only)."""
        step = self.steps[min(self.current_step, len(self.steps) - 1)] if self.steps else ()
        return {
            "id": self.id,
            "version": self.version,
            "affectedApps": self.affected_apps,
            "affectedPods": [],
            "steps": [{"actions": [{"action": a.value, "app": app} for a, app in s]}
                      for s in self.steps],
            "currentActions": [
                {"action": a.value, "app": app,
                 "readinessCheckResults": (readiness or {}).get(app, [])}
                for a, app in step
            ],
            "currentStep": min(self.current_step + 1, len(self.steps)),
            "totalSteps": len(self.steps),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "version": self.version, "started_at": iso(self.started_at),
            "steps": [[[a.value, app] for a, app in s] for s in self.steps],
            "original": self.original, "target": self.target,
            "current_step": self.current_step,
            "timeout_at": iso(self.timeout_at) if self.timeout_at else None,
            "auto_rollback": self.auto_rollback,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Deployment:
        return Deployment(
            id=d["id"], version=d["version"], started_at=parse_iso(d["started_at"]),
            steps=tuple(tuple((Action(a), app) for a, app in s) for s in d["steps"]),
            original=dict(d.get("original") or {}), target=dict(d.get("target") or {}),
            current_step=int(d.get("current_step", 0)),
            timeout_at=parse_iso(d["timeout_at"]) if d.get("timeout_at") else None,
            auto_rollback=bool(d.get("auto_rollback", False)),
        )
