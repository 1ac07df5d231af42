"""App commands: create, update, restart, delete, kill tasks, reset the delay, cancel a
deployment (with its rollback). Each validates, writes the store in one transaction together
with the deployment it starts, and wakes the control loop, which does the rest."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from scheduler.model.app import AppSpec
from scheduler.model.deployment import Deployment
from scheduler.model.task import Task
from scheduler.model.timefmt import iso, parse_iso
from scheduler.model.validation import SpecError
from scheduler.orchestrator.core import Conflict, NotFound, meta_key
from scheduler.orchestrator.deployments import DeploymentBook
from scheduler.runtimes.users import user_problem
from scheduler.store.base import AlreadyExists


class AppCommands(DeploymentBook):
    """The app (Marathon) commands; see module docstring."""

    def _next_version(self, app_id: str, now: datetime) -> str:
        """A version timestamp strictly after every stored one of this app."""
        version = iso(now)
        versions = self.store.list_app_versions(app_id)
        if versions and version <= versions[0]:
            version = iso(parse_iso(versions[0]) + timedelta(milliseconds=1))
        return version

    def create_app(self, spec: AppSpec) -> AppSpec:
        """Store a new app; the control loop starts its tasks. Raises :class:`Conflict`, and
        :class:`SpecError` (422) when its id is or lies inside a group or an app
        (:meth:`AppPaths.overlap <scheduler.model.app_paths.AppPaths.overlap>`, the rule of
        :func:`~scheduler.model.group.app_group_overlap`) or the runtime cannot run its ``user``."""
        return self._create_app(spec, True)[0]

    def _check_ids(self, spec: AppSpec) -> None:
        """Marathon's rule that a path is an app or a group, checked under the lock so two
        concurrent requests cannot both pass it; and a ``user`` the runtime can tell it
        cannot run as (:mod:`scheduler.runtimes.users`)."""
        # The group index the group manager keeps (group_commands.INDEX_KEY; importing it
        # here would be circular).
        groups = self.store.get_meta("groups") or []
        why = self._app_paths().overlap(spec.id, groups)
        if why is not None:
            raise SpecError("Object is not valid", [("/id", [why])])
        why = user_problem(self.runtime, spec.user)
        if why is not None:
            raise SpecError("Object is not valid", [("/user", [why])])

    def _create_app(self, spec: AppSpec, check_ids: bool) -> tuple[AppSpec, Deployment]:
        with self._lock:
            if check_ids:
                self._check_ids(spec)
            now = self.clock.now()
            spec = self.service_ports.assign(spec, None)
            stored = spec.model_copy(update={"version": self._next_version(spec.id, now)})
            deployment = self._new_deployment(None, stored, False, False, now)
            try:
                with self.store.atomic():
                    self.store.create_app(stored)
                    self._put_version_info(spec.id, {"lastScalingAt": stored.version or "",
                                                     "lastConfigChangeAt": stored.version or ""})
                    self._save_deployments({**self._deployments, deployment.id: deployment})
                self._apps()[stored.id] = stored
                self._app_paths().add(stored.id)
            except AlreadyExists:
                self._vi_cache.pop(spec.id, None)  # the write above was rolled back
                raise Conflict(
                    f"An app with id [{spec.id}] already exists."
                ) from None
            self.bus.publish("api_post_event", now, clientIp=None, uri=f"/v2/apps{spec.id}",
                             appDefinition=stored.to_marathon())
            self._deployment_started(deployment, now)
            return stored, deployment

    def update_app(self, spec: AppSpec, force: bool = False, restart: bool = False,
                   check_ids: bool = True) -> tuple[AppSpec, str, bool]:
        """Store ``spec`` as the app's new definition (creating it if new).

        Returns (stored spec, deployment id, created). A change of ``instances`` only is a
        scaling (running tasks stay); any other change, or ``restart``, replaces tasks by a
        rolling restart. An app locked by a running deployment raises :class:`Conflict`
        unless ``force``, which supersedes that deployment. ``check_ids``: refuse (422) an id
        that is or lies inside a group or another app; the group manager, which checks a
        whole group's plan itself and may write an app before deleting what it replaces,
        passes ``False``.
        """
        with self._lock:
            if check_ids:
                self._check_ids(spec)
            now = self.clock.now()
            old = self._apps().get(spec.id)
            if old is None:
                created, deployment = self._create_app(spec, False)
                return created, deployment.id, True
            superseded = self._check_lock(spec.id, force)
            spec = self.service_ports.assign(spec, old)
            stored = spec.model_copy(update={"version": self._next_version(spec.id, now)})
            info = self.version_info(spec.id)
            scaling_only = _without(old) == _without(stored)
            info["lastScalingAt"] = stored.version or ""
            if restart or not scaling_only or "lastConfigChangeAt" not in info:
                info["lastConfigChangeAt"] = stored.version or ""
            deployment = self._new_deployment(old, stored, scaling_only, restart, now)
            remaining = {k: v for k, v in self._deployments.items() if k not in superseded}
            with self.store.atomic():
                self.store.put_app(stored)
                self._put_version_info(spec.id, info)
                self._save_deployments({**remaining, deployment.id: deployment})
            self._apps()[stored.id] = stored
            self._app_paths().add(stored.id)
            self.bus.publish("api_post_event", now, clientIp=None, uri=f"/v2/apps{spec.id}",
                             appDefinition=stored.to_marathon())
            self._deployment_started(deployment, now)
            return stored, deployment.id, False

    def restart_app(self, app_id: str, force: bool = False) -> tuple[AppSpec, str]:
        """Replace every task by a rolling restart (a new version, same configuration)."""
        with self._lock:
            stored, deployment_id, _ = self.update_app(self.app(app_id), force=force,
                                                       restart=True)
            return stored, deployment_id

    def delete_app(self, app_id: str, force: bool = False) -> str:
        """Delete the app and kill its tasks. Returns a deployment id."""
        with self._lock:
            old = self.app(app_id)
            superseded = self._check_lock(app_id, force)
            now = self.clock.now()
            deployment = self._new_deployment(old, None, False, False, now)
            remaining = {k: v for k, v in self._deployments.items() if k not in superseded}
            with self.store.atomic():
                self.store.delete_app(app_id)
                for kind in ("backoff", "lastTaskFailure"):
                    self.store.put_meta(meta_key(kind, app_id), None)
                self._put_version_info(app_id, None)
                self._save_deployments({**remaining, deployment.id: deployment})
            self._apps().pop(app_id, None)
            self._app_paths().remove(app_id)
            self._deployment_started(deployment, now)
            for t in self.tasks(app_id):
                # The app's versions are gone from the store now: its grace comes from here.
                self._kill(t, "app deleted", now, old.kill_grace_seconds)
            self._queue.pop(app_id, None)
            self.bus.publish("app_terminated_event", now, appId=app_id)
            return deployment.id

    def kill_tasks(self, app_id: str, task_ids: Sequence[str] | None = None,
                   host: str | None = None, scale: bool = False) -> list[Task]:
        """Kill some (or all) of an app's tasks. With ``scale`` the app's instances drop by the
        number killed, so they are not replaced. Unknown task ids raise :class:`NotFound`."""
        with self._lock:
            spec = self.app(app_id)
            tasks = self.tasks(app_id)
            if task_ids is not None:
                by_id = {t.id: t for t in tasks}
                missing = [i for i in task_ids if i not in by_id]
                if missing:
                    raise NotFound(f"Task '{missing[0]}' does not exist")
                tasks = [by_id[i] for i in task_ids]
            if host is not None:
                tasks = [t for t in tasks if t.host == host]
            tasks = [t for t in tasks if t.kill_requested_at is None]
            now = self.clock.now()
            if scale and tasks:
                self.update_app(spec.model_copy(
                    update={"instances": max(0, spec.instances - len(tasks))}), force=True)
            return [self._kill(t, "killed by request", now) for t in tasks]

    def reset_delay(self, app_id: str) -> None:
        with self._lock:
            self.app(app_id)
            self.store.put_meta(meta_key("backoff", app_id), None)

    def cancel_deployment(self, deployment_id: str, force: bool = False) -> Deployment | None:
        """Cancel a deployment. With ``force`` it just stops (apps stay as they are now);
        otherwise a rollback deployment restores every affected app's previous version (an
        app the deployment created is deleted). Returns the rollback deployment, if any."""
        with self._lock:
            d = self._deployments.get(deployment_id)
            if d is None:
                raise NotFound(f"Deployment '{deployment_id}' does not exist")
            now = self.clock.now()
            with self.store.atomic():
                self._save_deployments({k: v for k, v in self._deployments.items()
                                        if k != deployment_id})
            self.bus.publish("deployment_failed", now, id=d.id, plan=self._plan_json(d),
                             reason="cancelled")
            if force:
                return None
            return self._rollback(d)

    def _rollback(self, d: Deployment) -> Deployment | None:
        """Restore every app ``d`` affected to its version before ``d`` (delete the apps it
        created); returns the last deployment that starts."""
        last: Deployment | None = None
        for app_id, version in d.original.items():
            current = self._apps().get(app_id)
            if version is None:
                if current is not None:
                    dep_id = self.delete_app(app_id, force=True)
                    last = self._deployments[dep_id]
                continue
            previous = self.store.get_app_version(app_id, version)
            if previous is None:
                continue
            _, dep_id, _ = self.update_app(previous.model_copy(update={"version": None}),
                                           force=True)
            last = self._deployments[dep_id]
        return last



def _without(spec: AppSpec) -> dict[str, Any]:
    """The parts of a definition that make a *configuration*: everything but scale, version
    and dependencies (which only order starts and stops; changing them restarts nothing)."""
    return spec.model_dump(mode="json", exclude={"instances", "version", "dependencies"})
