"""The store side of the Chronos half: the job book applies the job engine's decisions
(scheduler/batch/engine.py) to the store; the orchestrator launches, kills and observes the
runs' attempts as tasks, on the same path as app tasks.

Persistent state per job (store meta): ``job:<name>:last`` (the newest occurrence handled),
``job:<name>:edges`` (per-parent successes since the job last started), and
``job:<name>:counters`` (Chronos's successCount, errorCount, lastSuccess, lastError...).
Everything else (next fire times, parsed schedules) is derived and rebuilt after a restart.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Set
from datetime import UTC, datetime
from typing import Any

from scheduler.batch import dag
from scheduler.batch.engine import (
    CloseRun,
    LaunchAttempt,
    after_attempt,
    counters_after,
    kill_marks,
    launch_intents,
    plan_occurrences,
)
from scheduler.batch.schedule import Schedule, next_fire
from scheduler.events import DROMOS, EventBus
from scheduler.model.job import (
    JobRun,
    JobSpec,
    RunStatus,
    Trigger,
    attempt_task_id,
    dependency_run_id,
    manual_run_id,
    marked_run_id,
)
from scheduler.model.task import Task, TaskState, job_app_id
from scheduler.model.timefmt import iso, parse_iso
from scheduler.placement.results import PlacementRequest, RejectionSummary
from scheduler.store.base import StateStore

ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})


def _key(kind: str, name: str) -> str:
    return f"job:{name}:{kind}"


def job_request(job: JobSpec) -> PlacementRequest:
    """A run's placement request: its own "app", so UNIQUE/MAX_PER count this job's runs."""
    return PlacementRequest(app_id=job_app_id(job.name), resources=job.resources, ports=(),
                            constraints=tuple(job.constraints))


class JobBook:
    """Jobs, their runs and counters in the store, and the derived fire times (see the
    module docstring). Owned by the orchestrator; called inside its lock."""

    def __init__(self, store: StateStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        # Derived, rebuilt after a restart: the next fire time per job (None: never), a heap
        # of (time, name) over it with lazy deletion, and the jobs whose time is unknown.
        self._next: dict[str, datetime | None] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._unknown: set[str] = set()
        self._all_unknown = True
        self._jobs: dict[str, JobSpec] | None = None
        self._graph: Any = None
        self.waiting: dict[str, RejectionSummary] = {}

    def jobs(self) -> dict[str, JobSpec]:
        """Every job, cached: all writes go through :meth:`forget` (the orchestrator calls it
        after each change), so re-reading and re-validating thousands of stored jobs every
        pass is not needed. The store stays the source of truth; a restart reloads it."""
        if self._jobs is None:
            self._jobs = {j.name: j for j in self.store.list_jobs()}
        return self._jobs

    # ------------------------------------------------------------------ derived state

    def schedule_of(self, job: JobSpec) -> Schedule | None:
        """The job's parsed schedule (parsed once, kept on the spec)."""
        return job.parsed_schedule

    def reload(self) -> None:
        """Forget every cached job and derived time (after writes that bypassed
        :meth:`forget`, e.g. a bulk import)."""
        self._jobs = None
        self._graph = None
        self._next.clear()
        self._heap.clear()
        self._unknown.clear()
        self._all_unknown = True

    def graph(self) -> Any:
        """The dependency graph of all jobs, cached until a job changes."""
        if self._graph is None:
            self._graph = dag.build_graph(self.jobs().values())
        return self._graph

    def _set_next(self, name: str, when: datetime | None) -> None:
        self._next[name] = when
        if when is not None:
            heapq.heappush(self._heap, (when, name))

    def forget(self, name: str) -> None:
        """Drop derived state for a job that changed or went away (re-read from the store)."""
        self._next.pop(name, None)
        self._unknown.add(name)
        self._graph = None
        self.waiting.pop(name, None)
        if self._jobs is not None:
            job = self.store.get_job(name)
            if job is None:
                self._jobs.pop(name, None)
            else:
                self._jobs[name] = job

    def last_handled(self, name: str) -> datetime | None:
        v = self.store.get_meta(_key("last", name))
        return parse_iso(v) if v else None

    def next_fire(self, name: str) -> datetime | None:
        return self._next.get(name)

    def next_wake(self) -> datetime | None:
        """The earliest moment any job needs attention (a fire time or a retry); the epoch
        when some job's next fire time is not computed yet (the next pass computes it)."""
        if self._all_unknown or self._unknown:
            return datetime.min.replace(tzinfo=UTC)
        while self._heap and self._next.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # stale entry: the job changed or fired since
        times = [self._heap[0][0]] if self._heap else []
        for r in self.store.list_runs(statuses=frozenset({RunStatus.QUEUED})):
            if r.not_before is not None:
                times.append(r.not_before)
        return min(times) if times else None

    def counters(self, name: str) -> dict[str, Any]:
        return dict(self.store.get_meta(_key("counters", name)) or {})

    def edges(self, name: str) -> dict[str, int]:
        return dict(dag.counters_from_json(self.store.get_meta(_key("edges", name))))

    # ------------------------------------------------------------------ firing

    def fire_due(self, now: datetime) -> None:
        """Create the runs of every occurrence due at ``now`` (queued or skipped), each
        first-writer-wins with its occurrence marked handled in the same transaction."""
        jobs = self.jobs()
        if self._all_unknown:
            self._unknown.update(jobs)
            self._all_unknown = False
        # Jobs whose next fire time is unknown (new, changed, or after a restart): compute it
        # from the schedule and the last handled occurrence alone, without touching run
        # history, so a restart with thousands of jobs stays cheap.
        for name in sorted(self._unknown):
            job = jobs.get(name)
            schedule = job.parsed_schedule if job is not None and not job.disabled else None
            if schedule is None:
                self._next[name] = None
                continue
            self._set_next(name, next_fire(schedule, self.last_handled(name), now))
        self._unknown.clear()
        due: list[tuple[JobSpec, Schedule]] = []
        while self._heap and self._heap[0][0] <= now:
            when, name = heapq.heappop(self._heap)
            if self._next.get(name) != when:
                continue  # stale entry
            job = jobs.get(name)
            schedule = job.parsed_schedule if job is not None and not job.disabled else None
            if job is None or schedule is None:
                self._next[name] = None
                continue
            due.append((job, schedule))
        if not due:
            return
        # One transaction for all jobs due in this pass: the runs, the handled marks and the
        # disabling of used-up schedules commit together (one fsync however many fire).
        with self.store.atomic():
            for job, schedule in due:
                active = self.store.list_runs(job=job.name, statuses=ACTIVE)
                plan = plan_occurrences(job, schedule, self.last_handled(job.name), active, now)
                for run in plan.runs:
                    if self.store.create_run(run) and run.status is RunStatus.SKIPPED:
                        self.bus.publish("job_run_skipped", now, stream=DROMOS, job=job.name,
                                         runId=run.id, message=run.message)
                if plan.last_handled is not None:
                    self.store.put_meta(_key("last", job.name), iso(plan.last_handled))
                if plan.exhausted:
                    disabled = job.model_copy(update={"disabled": True})
                    self.store.put_job(disabled)
                    if self._jobs is not None:
                        self._jobs[job.name] = disabled
                    self._graph = None
                self._set_next(job.name, None if plan.exhausted else plan.next_fire)

    def launch_intents(self, now: datetime,
                       staged: Set[str]) -> list[LaunchAttempt | CloseRun]:
        """The engine's decisions about the queued runs (see :func:`launch_intents`)."""
        queued = self.store.list_runs(statuses=frozenset({RunStatus.QUEUED}))
        if not queued:
            return []
        return launch_intents(queued, self.jobs(), now, staged)

    def close(self, run: JobRun) -> None:
        self.store.put_run(run)

    def not_placed(self, job: JobSpec, run: JobRun, rejection: RejectionSummary) -> None:
        """No node takes the run now: say why (the next pass tries again)."""
        self.waiting[job.name] = rejection
        if run.message != f"waiting: {rejection.describe()}":
            self.store.put_run(run.with_(message=f"waiting: {rejection.describe()}"))

    # ------------------------------------------------------------------ attempts

    def attempt_task(self, run: JobRun, host: str, now: datetime) -> Task:
        """The task of ``run``'s current attempt on ``host``, to be written as STAGING."""
        self.waiting.pop(run.job, None)
        return Task(id=run.task_id or attempt_task_id(run.id, run.attempt),
                    app_id=job_app_id(run.job), host=host, version="",
                    state=TaskState.STAGING, staged_at=now, job=run.job, run_id=run.id,
                    attempt=run.attempt)

    def attempt_started(self, task: Task, now: datetime) -> None:
        """The runtime took ``task``: its run is RUNNING (call inside a transaction or not)."""
        run = self.store.get_run(task.run_id or "")
        if run is None or run.status.final:
            return
        started = run.with_(status=RunStatus.RUNNING, handle=dict(task.handle), host=task.host,
                            started_at=run.started_at or now, task_id=task.id, message="")
        job = self.jobs().get(run.job)
        with self.store.atomic():
            self.store.put_run(started)
            if run.attempt == 0 and job is not None and job.parents:
                # "since the child last started": the successes it consumed are spent.
                self.store.put_meta(_key("edges", job.name),
                                    dag.after_child_started(self.edges(job.name),
                                                            job.parents))
        self.bus.publish("job_run_started", now, stream=DROMOS, job=run.job, runId=run.id,
                         taskId=task.id, host=task.host, attempt=run.attempt)

    def attempt_ended(self, task: Task, now: datetime) -> None:
        """``task`` (an attempt) ended: retry, or record the run's final result."""
        run = self.store.get_run(task.run_id or "")
        if run is None or run.status.final or (run.task_id or task.id) != task.id:
            return  # a stale attempt (the run moved on) changes nothing
        preempted = self.store.get_meta(f"sharing:preempted:{task.id}")
        if preempted is not None:
            self.store.put_meta(f"sharing:preempted:{task.id}", None)
            if run.kill_requested_at is None:
                self._requeue_preempted(run, str(preempted.get("reason", "")), now)
                return
        killed = task.state is TaskState.KILLED or task.kill_requested_at is not None \
            or run.kill_requested_at is not None
        jobs = self.jobs()
        job = jobs.get(run.job)
        outcome = after_attempt(job, run, task.exit_code, killed,
                                task.message or task.state.value, now)
        with self.store.atomic():
            self.store.put_run(outcome.run)
            if outcome.final and job is not None:
                self.store.put_meta(_key("counters", job.name),
                                    counters_after(self.counters(job.name), job, outcome.run,
                                                   outcome.succeeded, now))
                if outcome.run.status is not RunStatus.KILLED:
                    self.parent_finished(job.name, outcome.succeeded, now, jobs,
                                         soft_error=(not outcome.succeeded and job.softError))
        self.bus.publish("job_run_finished" if outcome.final else "job_run_retrying", now,
                         stream=DROMOS, job=run.job, runId=run.id,
                         status=outcome.run.status.value, exitCode=task.exit_code,
                         attempt=outcome.run.attempt, message=outcome.run.message)

    def _requeue_preempted(self, run: JobRun, reason: str, now: datetime) -> None:
        """A preempted attempt is not a failure: the run is queued again under a fresh task id
        (a task id runs once) with the same attempt number, so no retry is spent."""
        base, sep, num = (run.task_id or run.id).partition(".preempt")
        n = int(num) + 1 if sep and num.isdigit() else 1
        again = run.with_(status=RunStatus.QUEUED, task_id=f"{base}.preempt{n}", handle=None,
                          host=None, message=f"preempted ({reason}); queued again")
        self.store.put_run(again)
        self.bus.publish("job_run_retrying", now, stream=DROMOS, job=run.job, runId=run.id,
                         status=again.status.value, exitCode=None, attempt=again.attempt,
                         message=again.message, preempted=True)

    def parent_finished(self, parent: str, succeeded: bool, now: datetime,
                        jobs: Mapping[str, JobSpec], soft_error: bool = False) -> list[str]:
        """Feed a parent's final result to the graph; create runs for children now ready.
        Call inside a store transaction. Returns the triggered children."""
        graph = self.graph() if jobs is self._jobs else dag.build_graph(jobs.values())
        children = dag.children_of(graph, parent)
        if not children:
            return []
        counters = {child: self.edges(child) for child in children}
        new_counters, ready = dag.on_parent_finished(graph, jobs, parent, succeeded,
                                                     soft_error, counters)
        for child, edges in new_counters.items():
            self.store.put_meta(_key("edges", child), edges)
        for child in ready:
            self._create_queued(jobs[child], Trigger.DEPENDENCY, dependency_run_id(child), now)
        return ready

    def _create_queued(self, job: JobSpec, trigger: Trigger, run_id: str,
                       now: datetime, scheduled_for: datetime | None = None) -> JobRun:
        run = JobRun(id=run_id, job=job.name, trigger=trigger, status=RunStatus.QUEUED,
                     created_at=now, scheduled_for=scheduled_for,
                     task_id=attempt_task_id(run_id, 0))
        self.store.create_run(run)
        return run

    # ------------------------------------------------------------------ commands

    def run_now(self, job: JobSpec, now: datetime) -> JobRun:
        """A manual run; its scheduled time (``DROMOS_SCHEDULED_TIME``) is ``now``, when it
        was asked for."""
        return self._create_queued(job, Trigger.MANUAL, manual_run_id(job.name), now,
                                   scheduled_for=now)

    def mark_success(self, job: JobSpec, now: datetime,
                     jobs: Mapping[str, JobSpec]) -> tuple[JobRun, list[str]]:
        """Record a success of ``job`` without running it: a run record (trigger ``marked``,
        status ``success``, finished ``now``, never started), the counters, and the graph
        (children whose parents have now all succeeded get their runs). Call inside a store
        transaction. Returns the record and the triggered children."""
        run = JobRun(id=marked_run_id(job.name), job=job.name, trigger=Trigger.MARKED,
                     status=RunStatus.SUCCESS, created_at=now, finished_at=now,
                     message="marked successful without running")
        self.store.create_run(run)
        self.store.put_meta(_key("counters", job.name),
                            counters_after(self.counters(job.name), job, run, True, now))
        return run, self.parent_finished(job.name, True, now, jobs)

    def mark_killed(self, name: str, now: datetime) -> list[JobRun]:
        """Record a kill of every queued or running run of the job (not marked already),
        before any kill is sent; returns the marked runs."""
        marked = kill_marks(self.store.list_runs(job=name, statuses=ACTIVE), now)
        with self.store.atomic():
            for run in marked:
                self.store.put_run(run)
        return marked
