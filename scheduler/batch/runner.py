"""Applies the job engine's decisions: creates runs, launches and observes them, feeds the
dependency graph. Owned and called by the orchestrator, inside its pass and its lock.

Persistent state per job (store meta): ``job:<name>:last`` (the newest occurrence handled),
``job:<name>:edges`` (per-parent successes since the job last started), and
``job:<name>:counters`` (Chronos's successCount, errorCount, lastSuccess, lastError...).
Everything else (next fire times, parsed schedules) is derived and rebuilt after a restart.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from scheduler.batch import dag
from scheduler.batch.engine import after_attempt, launchable, plan_occurrences
from scheduler.batch.schedule import Schedule, next_fire, parse_schedule
from scheduler.events import DROMOS, EventBus
from scheduler.model.job import (
    JobRun,
    JobSpec,
    RunStatus,
    Trigger,
    attempt_task_id,
    dependency_run_id,
    manual_run_id,
)
from scheduler.model.task import Task, TaskState
from scheduler.model.timefmt import iso, parse_iso
from scheduler.placement.pipeline import Placer
from scheduler.placement.plan import Placement, PlacementRequest, RejectionSummary
from scheduler.runtimes.base import LaunchSpec, Runtime, RuntimeUnavailable
from scheduler.store.base import StateStore

log = logging.getLogger("dromos.jobs")

ACTIVE = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})


def _key(kind: str, name: str) -> str:
    return f"job:{name}:{kind}"


def run_task(run: JobRun) -> Task:
    """The runtime's view of a run's current attempt."""
    return Task(
        id=run.task_id or attempt_task_id(run.id, run.attempt), app_id=run.job,
        host=run.host or "", version="", state=TaskState.RUNNING,
        staged_at=run.created_at, handle=dict(run.handle or {}),
        kill_requested_at=run.kill_requested_at, started_at=run.started_at,
    )


def job_request(job: JobSpec) -> PlacementRequest:
    # Runs are placed as their own "app" so UNIQUE/MAX_PER count this job's runs only.
    return PlacementRequest(app_id=f"job:{job.name}", resources=job.resources, ports=(),
                            constraints=tuple(job.constraints))


class JobRunner:
    """The acting half of the Chronos side (see module docstring)."""

    def __init__(self, store: StateStore, runtime: Runtime, bus: EventBus) -> None:
        self.store = store
        self.runtime = runtime
        self.bus = bus
        # Derived, rebuilt after a restart: the next fire time per job (None: never), a heap
        # of (time, name) over it with lazy deletion, and the jobs whose time is unknown.
        self._next: dict[str, datetime | None] = {}
        self._heap: list[tuple[datetime, str]] = []
        self._unknown: set[str] = set()
        self._all_unknown = True
        self._parsed: dict[str, tuple[str, str, Schedule]] = {}
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
        if not job.schedule:
            return None
        cached = self._parsed.get(job.name)
        if cached and cached[0] == job.schedule and cached[1] == job.time_zone:
            return cached[2]
        parsed = parse_schedule(job.schedule, job.time_zone)
        self._parsed[job.name] = (job.schedule, job.time_zone, parsed)
        return parsed

    def reload(self) -> None:
        """Forget every cached job and derived time (after writes that bypassed
        :meth:`forget`, e.g. a bulk import)."""
        self._jobs = None
        self._graph = None
        self._next.clear()
        self._heap.clear()
        self._unknown.clear()
        self._all_unknown = True
        self._parsed.clear()

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
        self._parsed.pop(name, None)
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

    # ------------------------------------------------------------------ the pass

    def run_once(self, now: datetime, placer: Placer) -> None:
        jobs = self.jobs()
        self._observe(now, jobs)
        self._fire_due(now, jobs)
        self._launch(now, jobs, placer)

    def _observe(self, now: datetime, jobs: Mapping[str, JobSpec]) -> None:
        running = [r for r in self.store.list_runs(statuses=frozenset({RunStatus.RUNNING}))
                   if r.handle]
        if not running:
            return
        observations = self.runtime.observe([run_task(r) for r in running])
        # One transaction for every run that ended: one fsync per pass, not per run.
        with self.store.atomic():
            for run, obs in zip(running, observations, strict=True):
                if not obs.state.terminal:
                    continue
                killed = obs.state is TaskState.KILLED or run.kill_requested_at is not None
                message = obs.message or obs.state.value
                self._attempt_ended(jobs.get(run.job), run, obs.exit_code, killed, message,
                                    now, jobs)

    def _attempt_ended(self, job: JobSpec | None, run: JobRun, exit_code: int | None,
                       killed: bool, message: str, now: datetime,
                       jobs: Mapping[str, JobSpec]) -> None:
        outcome = after_attempt(job, run, exit_code, killed, message, now)
        with self.store.atomic():
            self.store.put_run(outcome.run)
            if outcome.final and job is not None:
                self._record_final(job, outcome.run, outcome.succeeded, now, jobs)
        self.bus.publish("job_run_finished" if outcome.final else "job_run_retrying", now,
                         stream=DROMOS, job=run.job, runId=run.id,
                         status=outcome.run.status.value, exitCode=exit_code,
                         attempt=outcome.run.attempt, message=outcome.run.message)

    def _record_final(self, job: JobSpec, run: JobRun, succeeded: bool, now: datetime,
                      jobs: Mapping[str, JobSpec]) -> None:
        """Counters and the dependency graph; called inside the store transaction."""
        c = self.counters(job.name)
        if succeeded:
            c["successCount"] = int(c.get("successCount", 0)) + 1
            c["lastSuccess"] = iso(now)
            c["errorsSinceLastSuccess"] = 0
        elif run.status is RunStatus.FAILED:
            c["errorCount"] = int(c.get("errorCount", 0)) + 1
            c["lastError"] = iso(now)
            c["errorsSinceLastSuccess"] = int(c.get("errorsSinceLastSuccess", 0)) + 1
            if job.softError:
                c["softErrorCount"] = int(c.get("softErrorCount", 0)) + 1
        self.store.put_meta(_key("counters", job.name), c)
        if run.status is RunStatus.KILLED:
            return
        self.parent_finished(job.name, succeeded, now, jobs,
                             soft_error=(not succeeded and job.softError))

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
                       now: datetime) -> JobRun:
        run = JobRun(id=run_id, job=job.name, trigger=trigger, status=RunStatus.QUEUED,
                     created_at=now, task_id=attempt_task_id(run_id, 0))
        self.store.create_run(run)
        return run

    def _fire_due(self, now: datetime, jobs: Mapping[str, JobSpec]) -> None:
        if self._all_unknown:
            self._unknown.update(jobs)
            self._all_unknown = False
        # Jobs whose next fire time is unknown (new, changed, or after a restart): compute it
        # from the schedule and the last handled occurrence alone, without touching run
        # history, so a restart with thousands of jobs stays cheap.
        for name in sorted(self._unknown):
            job = jobs.get(name)
            if job is None or not job.schedule or job.disabled:
                self._next[name] = None
                continue
            schedule = self.schedule_of(job)
            assert schedule is not None
            self._set_next(name, next_fire(schedule, self.last_handled(name), now))
        self._unknown.clear()
        due: list[JobSpec] = []
        while self._heap and self._heap[0][0] <= now:
            when, name = heapq.heappop(self._heap)
            if self._next.get(name) != when:
                continue  # stale entry
            job = jobs.get(name)
            if job is None or not job.schedule or job.disabled:
                self._next[name] = None
                continue
            due.append(job)
        if not due:
            return
        # One transaction for all jobs due in this pass: the runs, the handled marks and the
        # disabling of used-up schedules commit together (one fsync however many fire).
        with self.store.atomic():
            for job in due:
                schedule = self.schedule_of(job)
                assert schedule is not None
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

    def _launch(self, now: datetime, jobs: Mapping[str, JobSpec], placer: Placer) -> None:
        queued = self.store.list_runs(statuses=frozenset({RunStatus.QUEUED}))
        ready = launchable(queued, now)
        if not ready:
            return
        # Each run and its task id were stored before this pass launches them; recording the
        # launches can share one transaction, since a crash before it commits only means the
        # next pass launches the same task ids again, which runtimes answer idempotently.
        with self.store.atomic():
            self._launch_ready(now, jobs, placer, ready)

    def _launch_ready(self, now: datetime, jobs: Mapping[str, JobSpec], placer: Placer,
                      ready: list[JobRun]) -> None:
        for run in ready:
            job = jobs.get(run.job)
            if job is None:
                self.store.put_run(run.with_(status=RunStatus.KILLED, finished_at=now,
                                             message="job deleted"))
                continue
            if run.kill_requested_at is not None:
                self.store.put_run(run.with_(status=RunStatus.KILLED, finished_at=now,
                                             message="killed before it started"))
                continue
            placed = placer.place(job_request(job))
            if isinstance(placed, RejectionSummary):
                self.waiting[job.name] = placed
                if run.message != placed.describe():
                    self.store.put_run(run.with_(message=f"waiting: {placed.describe()}"))
                continue
            self.waiting.pop(job.name, None)
            self._start(job, run, placed, now)

    def _start(self, job: JobSpec, run: JobRun, placed: Placement, now: datetime) -> None:
        task_id = run.task_id or attempt_task_id(run.id, run.attempt)
        spec = launch_spec_for(job, run, task_id, placed.host)
        # The run (with its task id) is already stored; a crash after launch re-launches the
        # same task id, which the runtime answers with the existing process.
        try:
            handle = self.runtime.launch(spec)
        except RuntimeUnavailable:
            raise
        except (ValueError, OSError) as e:
            self._attempt_ended(job, run, None, False, f"launch failed: {e}", now, self.jobs())
            return
        started = run.with_(status=RunStatus.RUNNING, handle=dict(handle), host=placed.host,
                            started_at=run.started_at or now, task_id=task_id,
                            message="")
        with self.store.atomic():
            self.store.put_run(started)
            if run.attempt == 0 and job.parents:
                # "since the child last started": the successes it consumed are spent.
                self.store.put_meta(_key("edges", job.name),
                                    dag.after_child_started(self.edges(job.name),
                                                            job.parents))
        self.bus.publish("job_run_started", now, stream=DROMOS, job=job.name, runId=run.id,
                         taskId=task_id, host=placed.host, attempt=run.attempt)

    # ------------------------------------------------------------------ commands

    def run_now(self, job: JobSpec, now: datetime) -> JobRun:
        return self._create_queued(job, Trigger.MANUAL, manual_run_id(job.name), now)

    def kill(self, name: str, now: datetime) -> list[JobRun]:
        """Kill every queued or running run of the job (SIGTERM, SIGKILL 3 s later)."""
        grace = 3.0
        out = []
        for run in self.store.list_runs(job=name, statuses=ACTIVE):
            if run.kill_requested_at is not None:
                continue
            marked = run.with_(kill_requested_at=now)
            self.store.put_run(marked)
            if run.status is RunStatus.RUNNING and run.handle:
                self.runtime.kill(run_task(run), grace)
            out.append(marked)
        return out


def launch_spec_for(job: JobSpec, run: JobRun, task_id: str, host: str) -> LaunchSpec:
    """How a run's attempt is started: Chronos's shell/arguments rules, env, image."""
    env = dict(job.env)
    env.update({
        "CHRONOS_JOB_NAME": job.name, "CHRONOS_JOB_OWNER": job.owner,
        "CHRONOS_RESOURCE_CPU": f"{job.cpus:g}", "CHRONOS_RESOURCE_MEM": f"{job.mem:g}",
        "CHRONOS_RESOURCE_DISK": f"{job.disk:g}", "MESOS_TASK_ID": task_id,
        "DROMOS_RUN_ID": run.id, "DROMOS_ATTEMPT": str(run.attempt), "HOST": host,
        "DROMOS_SCHEDULED_TIME": iso(run.scheduled_for) if run.scheduled_for else "",
    })
    cmd: str | None = None
    args: tuple[str, ...] | None = None
    if job.shell:
        cmd = job.command or None
    else:
        args = tuple(([job.command] if job.command else []) + list(job.arguments)) or None
    return LaunchSpec(
        task_id=task_id, app_id=f"job:{job.name}", version="", host=host, ports=(),
        resources=job.resources, env=env, labels={}, cmd=cmd, args=args,
        image=job.container.image if job.container else None,
        job_name=job.name, run_id=run.id,
        extra={"container": job.container.model_dump(mode="json")} if job.container else {},
    )
