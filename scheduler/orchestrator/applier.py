"""The one path every task takes, app task or job-run attempt: launch, kill, observe, and
re-send kills the runtime may not have received.

Crash safety: a task is written (STAGING) before its launch, so a crash re-launches the same
id (runtimes answer that idempotently); a kill is recorded on the task before it is sent and
re-sent after a restart or an outage until the task is gone. For job runs the stored run (with
its attempt's task id) is the launch intent, written first-writer-wins by the job book.
"""

from __future__ import annotations

import logging
from datetime import datetime

from scheduler.batch.engine import CloseRun
from scheduler.model.app import AppSpec
from scheduler.model.job import JobRun, JobSpec, RunStatus
from scheduler.model.task import Task, TaskState, task_of_run
from scheduler.model.timefmt import iso
from scheduler.orchestrator.core import DRAIN_SECONDS, OrchestratorCore, PassReport, meta_key
from scheduler.orchestrator.jobs import job_request
from scheduler.placement.pipeline import Placer
from scheduler.placement.results import RejectionSummary
from scheduler.runtimes.base import LaunchSpec, RuntimeUnavailable, launch_spec

log = logging.getLogger("dromos.orchestrator")

JOB_KILL_GRACE = 3.0
"""Seconds between SIGTERM and SIGKILL for a job run's attempt (Chronos has no setting)."""


class Applier(OrchestratorCore):
    """Applies launches, kills and observations for apps and job runs alike."""

    def _definition_of(self, task: Task) -> tuple[AppSpec | JobSpec, JobRun | None] | None:
        """What ``task`` runs: its app version, or its job and run (``None`` when gone, or
        when the run no longer wants this attempt)."""
        if task.job is None:
            spec = self._spec_at(task.app_id, task.version)
            return (spec, None) if spec is not None else None
        job = self.jobs.jobs().get(task.job)
        run = self.store.get_run(task.run_id or "")
        if job is None or run is None or run.status.final or run.task_id != task.id \
                or run.kill_requested_at is not None:
            return None
        return job, run

    def _grace(self, task: Task) -> float:
        if task.job is not None:
            return JOB_KILL_GRACE
        spec = self._spec_at(task.app_id, task.version)
        return spec.kill_grace_seconds if spec else 3.0

    def _launch(self, spec: LaunchSpec, task: Task, now: datetime) -> None:
        """Write ``task`` (STAGING), then launch it. Persist intent before acting: a crash
        after the write re-launches the same id."""
        self.store.put_task(task)
        self._status_event(task, now)
        try:
            handle = self.runtime.launch(spec)
        except RuntimeUnavailable as e:
            self._mark_unavailable(e)
            return
        except (ValueError, OSError) as e:
            failed = task.with_(state=TaskState.FAILED, message=f"launch failed: {e}")
            self._status_event(failed, now)
            self._task_ended(failed, now)
            return
        started = task.with_(state=TaskState.STARTING, handle=dict(handle))
        self.store.put_task(started)
        self._status_event(started, now)
        if started.job is not None:
            self.jobs.attempt_started(started, now)

    def _kill(self, task: Task, reason: str, now: datetime,
              grace: float | None = None) -> Task:
        """Record the kill on the task, then send it (or leave it to :meth:`_reissue_kills`
        when the runtime is unavailable or the task's connections are draining). ``grace``
        defaults to the task's own (its app version's, or a job run's)."""
        killing = task.with_(state=TaskState.KILLING, kill_requested_at=now, message=reason)
        self.store.put_task(killing)
        if self.balancer is not None and task.job is None:
            # Drain: no new connections now; the kill itself waits (in _reissue_kills) until
            # open connections finish or DRAIN_SECONDS pass, so steady clients see no error.
            self.balancer.stop_routing([task.id])
            if self.balancer.active_connections(task.id):
                self._draining.add(task.id)
                self._status_event(killing, now)
                return killing
        try:
            self.runtime.kill(task, self._grace(task) if grace is None else grace)
            self._kills_issued.add(task.id)
        except RuntimeUnavailable as e:
            self._mark_unavailable(e)
        self._status_event(killing, now)
        return killing

    def _observe(self, now: datetime, report: PassReport) -> None:
        tasks = [t for t in self.store.list_tasks() if not t.state.terminal]
        for t in tasks:
            if t.handle:
                continue
            # Written as STAGING before a launch that may not have completed (crash, outage).
            found = self._definition_of(t)
            if found is None or t.kill_requested_at is not None:
                self.store.delete_task(t.id)
                continue
            self._launch(launch_spec(found[0], t, found[1]), t, now)
        tasks = [t for t in self.store.list_tasks() if not t.state.terminal and t.handle]
        observations = self.runtime.observe(tasks)
        # One transaction for every change seen: one fsync per pass, not per task.
        with self.store.atomic():
            for t, obs in zip(tasks, observations, strict=True):
                if obs.ports_taken:  # placement avoids them on that node for a while
                    self.taken_ports.mark(t.host, obs.ports_taken, now)
                if obs.state == t.state or (
                    t.state is TaskState.KILLING and not obs.state.terminal
                ):
                    continue
                message = obs.message or t.message
                if t.job is not None and obs.state.terminal:
                    message = obs.message or obs.state.value
                updated = t.with_(
                    state=obs.state,
                    exit_code=obs.exit_code,
                    message=message,
                    started_at=t.started_at or obs.started_at or
                    (now if obs.state is TaskState.RUNNING else None),
                    finished_at=now if obs.state.terminal else None,
                )
                self._status_event(updated, now)
                if obs.state.terminal:
                    self._task_ended(updated, now)
                    report.finished.append(t.id)
                else:
                    self.store.put_task(updated)

    def _task_ended(self, task: Task, now: datetime) -> None:
        """Record why a task ended (an app's backoff and lastTaskFailure; a run's retry or
        result) and expunge it."""
        with self.store.atomic():
            if task.job is not None:
                self.jobs.attempt_ended(task, now)
            else:
                self._app_task_ended(task, now)
            self.store.delete_task(task.id)
        self._kills_issued.discard(task.id)

    def _app_task_ended(self, task: Task, now: datetime) -> None:
        if task.state in (TaskState.FAILED, TaskState.FINISHED, TaskState.LOST) and (
            task.kill_requested_at is None
        ):
            info = self.version_info(task.app_id)
            cfg = info.get("lastConfigChangeAt")
            bo = self.backoff(task.app_id).after_failure(now, cfg)
            self.store.put_meta(meta_key("backoff", task.app_id), bo.to_json())
        if task.state in (TaskState.FAILED, TaskState.LOST) and task.app_id in self._apps():
            self.store.put_meta(meta_key("lastTaskFailure", task.app_id), {
                "appId": task.app_id, "host": task.host, "message": task.message,
                "state": task.state.value, "taskId": task.id, "timestamp": iso(now),
                "version": task.version, "slaveId": task.host,
            })

    def _reissue_kills(self, now: datetime) -> None:
        # After a restart or an outage the runtime may not have the kills we asked for: ask
        # again with what is left of the grace period.
        for t in self.store.list_tasks():
            if t.kill_requested_at is None or t.state.terminal or t.id in self._kills_issued:
                continue
            waited = (now - t.kill_requested_at).total_seconds()
            if (self.balancer is not None and waited < DRAIN_SECONDS
                    and self.balancer.active_connections(t.id)):
                continue  # still draining
            grace = self._grace(t)
            # A kill deferred for draining gets its whole grace period from now.
            left = grace if t.id in self._draining else max(0.0, grace - waited)
            self._draining.discard(t.id)
            self.runtime.kill(t, left)
            self._kills_issued.add(t.id)

    # ------------------------------------------------------------------ job runs

    def _adopt_runs(self) -> None:
        """Running runs recorded without a task (written by a Dromos before job runs were
        tasks) get their attempt's task, so the one observe/kill path sees them."""
        known = {t.id for t in self.store.list_tasks()}
        for run in self.store.list_runs(statuses=frozenset({RunStatus.RUNNING})):
            task = task_of_run(run)
            if run.handle and task.id not in known:
                self.store.put_task(task)

    def _launch_runs(self, now: datetime, placer: Placer, report: PassReport) -> None:
        """Apply the job engine's launch decisions: close runs that will never start, place
        and launch the others' attempts on the one launch path."""
        staged = {t.id for t in self.store.list_tasks() if t.job is not None}
        intents = self.jobs.launch_intents(now, staged)
        if not intents:
            return
        # Each run (with its attempt's task id) was stored before this pass: it is the launch
        # intent, so the launches can share one transaction; a crash before it commits only
        # means the next pass launches the same task ids again (idempotent in runtimes).
        with self.store.atomic():
            for intent in intents:
                if isinstance(intent, CloseRun):
                    self.jobs.close(intent.run)
                    continue
                placed = placer.place(job_request(intent.job))
                if isinstance(placed, RejectionSummary):
                    self.jobs.not_placed(intent.job, intent.run, placed)
                    continue
                task = self.jobs.attempt_task(intent.run, placed.host, now)
                self._launch(launch_spec(intent.job, task, intent.run), task, now)
                report.launched.append(task.id)
                if not self.runtime_available:
                    break  # the backend went away: the rest wait for the next pass

    def _kill_runs(self, runs: list[JobRun], now: datetime) -> None:
        """Kill the running attempts of runs whose kill was just recorded."""
        for run in runs:
            if run.status is not RunStatus.RUNNING:
                continue  # a queued run never starts (see launch_intents)
            # A run stored without its task (by an older Dromos) gets one here; the run's own
            # mark is the request being applied, not a sign that the task's kill was sent.
            task = self.store.get_task(run.task_id or "") or \
                task_of_run(run).with_(kill_requested_at=None)
            if task.kill_requested_at is None and not task.state.terminal:
                self._kill(task, "killed by request", now)

    # ------------------------------------------------------------------ events

    def _status_event(self, task: Task, now: datetime) -> None:
        if task.job is not None:
            return  # job runs have their own events (job_run_*), not Marathon's
        self.bus.publish(
            "status_update_event", now,
            slaveId=task.host, taskId=task.id, taskStatus=task.state.value,
            message=task.message, appId=task.app_id, host=task.host,
            ipAddresses=[{"ipAddress": "127.0.0.1", "protocol": "IPv4"}],
            ports=list(task.ports), version=task.version,
        )

    def _mark_unavailable(self, e: Exception) -> None:
        if self.runtime_available:
            log.warning("runtime %s unavailable: %s", self.runtime.name, e)
        self.runtime_available = False
        self.runtime_error = str(e)
