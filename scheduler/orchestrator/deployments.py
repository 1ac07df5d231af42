"""Deployment bookkeeping: which deployments lock which apps, how a change becomes a
deployment, how they are persisted and announced. What finishes them is decided purely by
:func:`scheduler.services.deployment.deployment_transitions`; the control loop applies it."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from scheduler.model.app import AppSpec
from scheduler.model.deployment import Deployment
from scheduler.model.timefmt import iso
from scheduler.orchestrator.applier import Applier
from scheduler.orchestrator.core import Conflict
from scheduler.services.deployment import DeploymentTransition, Outcome, steps_for_change


class DeploymentBook(Applier):
    """The active deployments (see module docstring)."""

    def deployments(self) -> list[Deployment]:
        with self._lock:
            return sorted(self._deployments.values(), key=lambda d: (d.version, d.id))

    def deployments_of(self, app_id: str) -> list[Deployment]:
        return [d for d in self.deployments() if app_id in d.affected_apps]

    def _check_lock(self, app_id: str, force: bool) -> set[str]:
        """The deployments locking ``app_id``; raise :class:`Conflict` unless ``force``."""
        locking = {d.id for d in self._deployments.values() if app_id in d.affected_apps}
        if locking and not force:
            raise Conflict(
                "App is locked by one or more deployments. Override with the option "
                "'?force=true'. View details at '/v2/deployments/<DEPLOYMENT_ID>'.",
                sorted(locking),
            )
        return locking

    def _new_deployment(self, old: AppSpec | None, new: AppSpec | None, scaling_only: bool,
                        restart: bool, now: datetime) -> Deployment:
        spec = new or old
        assert spec is not None
        timeout = spec.upgradeStrategy.timeout_seconds
        return Deployment(
            id=str(uuid.uuid4()), version=(new.version if new else None) or iso(now),
            started_at=now, steps=steps_for_change(old, new, scaling_only, restart),
            original={spec.id: old.version if old else None},
            target={spec.id: new.version if new else None},
            timeout_at=now + timedelta(seconds=timeout),
            auto_rollback=bool(spec.upgradeStrategy.autoRollback),
        )

    def _save_deployments(self, deployments: dict[str, Deployment]) -> None:
        """Persist the active deployments (call inside the transaction that changes apps)."""
        self.store.put_meta("deployments", [d.to_json() for d in deployments.values()])
        self._deployments = dict(deployments)

    def _deployment_started(self, d: Deployment, now: datetime) -> None:
        self.bus.publish("deployment_info", now, plan=self._plan_json(d),
                         currentStep={"actions": d.to_marathon()["currentActions"]})
        self.wake()

    def _plan_json(self, d: Deployment) -> dict[str, Any]:
        m = d.to_marathon()
        return {"id": d.id, "version": d.version, "steps": m["steps"],
                "original": {"apps": [{"id": a, "version": v} for a, v in d.original.items()]},
                "target": {"apps": [{"id": a, "version": v} for a, v in d.target.items()
                                    if v is not None]}}

    def _finish_deployments(self, transitions: list[DeploymentTransition],
                            now: datetime) -> list[Deployment]:
        """Drop finished deployments (one transaction) and announce them; returns those to
        roll back."""
        if not transitions:
            return []
        finished = {t.deployment.id for t in transitions}
        with self.store.atomic():
            self._save_deployments({k: v for k, v in self._deployments.items()
                                    if k not in finished})
        rollback = []
        # Successes are announced before failures (a failure may start a rollback).
        for t in sorted(transitions, key=lambda t: t.outcome is not Outcome.SUCCEEDED):
            d = t.deployment
            if t.outcome is Outcome.SUCCEEDED:
                for i, step in enumerate(d.steps):
                    self.bus.publish("deployment_step_success", now, plan=self._plan_json(d),
                                     currentStep={"actions": [{"action": a.value, "app": app}
                                                              for a, app in step]},
                                     step=i + 1)
                self.bus.publish("deployment_success", now, id=d.id, plan=self._plan_json(d))
                continue
            self.bus.publish("deployment_step_failure", now, plan=self._plan_json(d),
                             currentStep={"actions": d.to_marathon()["currentActions"]})
            self.bus.publish("deployment_failed", now, id=d.id, plan=self._plan_json(d),
                             reason=t.reason)
            if t.rollback:
                rollback.append(d)
        return rollback
