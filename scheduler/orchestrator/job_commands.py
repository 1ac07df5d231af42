"""Job commands (the Chronos side): define, delete, run now, mark a success, kill. Runs are
written here or by the job book; their attempts are launched, killed and observed by the
applier, on the same path as app tasks."""

from __future__ import annotations

from datetime import timedelta

from scheduler.batch import dag
from scheduler.batch.schedule import latest_at_or_before
from scheduler.events import DROMOS
from scheduler.model.job import JobRun, JobSpec
from scheduler.model.timefmt import iso
from scheduler.orchestrator.app_commands import AppCommands
from scheduler.orchestrator.core import NotFound


class JobCommands(AppCommands):
    """The job (Chronos) commands and reads; see module docstring."""

    def job(self, name: str) -> JobSpec:
        job = self.store.get_job(name)
        if job is None:
            raise NotFound(f"Job '{name}' does not exist")
        return job

    def list_jobs(self) -> list[JobSpec]:
        return self.store.list_jobs()

    def job_runs(self, name: str | None = None, limit: int | None = None) -> list[JobRun]:
        return self.store.list_runs(job=name, limit=limit)

    def put_job(self, job: JobSpec) -> JobSpec:
        """Create or replace a job. Unknown parents and cycles raise
        :class:`dag.DependencyError`; nothing is stored then.

        Occurrences before a new (or rescheduled) job existed are not missed runs: the job
        starts with its latest occurrence strictly before now as already handled.
        """
        with self._lock:
            now = self.clock.now()
            # The book's cached jobs (kept in sync by forget), not a re-read and
            # re-validation of every stored job on each write.
            existing = self.jobs.jobs()
            dag.validate_job(job, existing)
            old = existing.get(job.name)
            with self.store.atomic():
                self.store.put_job(job)
                schedule = job.parsed_schedule
                if schedule is not None and (old is None or old.schedule != job.schedule
                                             or old.scheduleTimeZone != job.scheduleTimeZone):
                    _, before = latest_at_or_before(schedule, now - timedelta(microseconds=1))
                    self.store.put_meta(f"job:{job.name}:last", iso(before) if before else None)
            self.jobs.forget(job.name)
            self.wake()
            return job

    def delete_job(self, name: str) -> None:
        """Delete a job, kill its runs, and hand its children its parents."""
        with self._lock:
            self.job(name)
            now = self.clock.now()
            self._kill_runs(self.jobs.mark_killed(name, now), now)
            updated = dag.remove_job(self.jobs.jobs(), name)
            with self.store.atomic():
                for child in updated.values():
                    self.store.put_job(child)
                self.store.delete_job(name)
                for kind in ("last", "edges", "counters"):
                    self.store.put_meta(f"job:{name}:{kind}", None)
            for changed in [name, *updated]:
                self.jobs.forget(changed)

    def run_job(self, name: str) -> JobRun:
        """A manual run, now (Chronos's ``PUT /scheduler/job/{name}``)."""
        with self._lock:
            run = self.jobs.run_now(self.job(name), self.clock.now())
            self.wake()
            return run

    def mark_job_success(self, name: str) -> list[str]:
        """Record a success without running (Chronos's ``PUT /job/success/{name}``): a run
        record with trigger ``marked`` and status ``success``, so the counters, the job's
        state, its history and the graph all say success; children whose parents have now
        all succeeded start. Returns those children."""
        with self._lock:
            job = self.job(name)
            now = self.clock.now()
            with self.store.atomic():
                run, ready = self.jobs.mark_success(job, now, self.jobs.jobs())
            self.bus.publish("job_run_finished", now, stream=DROMOS, job=run.job,
                             runId=run.id, status=run.status.value, exitCode=None,
                             attempt=0, message=run.message, trigger=run.trigger.value)
            self.wake()
            return ready

    def kill_job(self, name: str) -> list[JobRun]:
        """Kill every queued or running run of the job: the kills are recorded first, then
        sent (and re-sent by the control loop while the runtime is unavailable)."""
        with self._lock:
            self.job(name)
            now = self.clock.now()
            marked = self.jobs.mark_killed(name, now)
            self._kill_runs(marked, now)
            self.wake()
            return marked
