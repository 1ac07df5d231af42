"""Backfill commands and the pass step that feeds a backfill's runs to the job book, at most
``concurrency`` active at once (see :mod:`scheduler.batch.backfill` for the rules).

The backfill's state lives in the store (meta ``job:<name>:backfill``, and the index
``backfills``), so a restart resumes it; the runs themselves are ordinary queued runs,
launched, retried and reported by the job machinery like any scheduled run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from scheduler.batch.backfill import Backfill, occurrences, parse_request, room
from scheduler.events import DROMOS
from scheduler.model.job import JobRun, RunStatus, Trigger, attempt_task_id, scheduled_run_id
from scheduler.orchestrator.core import Conflict, NotFound
from scheduler.orchestrator.job_commands import JobCommands

INDEX = "backfills"


def _key(job: str) -> str:
    return f"job:{job}:backfill"


class BackfillCommands(JobCommands):
    """``POST/GET /dromos/jobs/{name}/backfill`` and the step each pass runs."""

    def start_backfill(self, name: str, body: Any) -> dict[str, Any]:
        """Validate and store a backfill of job ``name``; its runs start on the next pass.
        ``NotFound`` for an unknown job, ``Conflict`` while one runs for it, ``SpecError``
        (422) for a bad range; nothing is stored on error."""
        with self._lock:
            job = self.job(name)
            schedule = job.parsed_schedule
            if schedule is None:
                raise Conflict(f"Job '{name}' has no schedule to backfill")
            now = self.clock.now()
            request = parse_request(body, now)
            current = self._load_backfill(name)
            if current is not None and not current.finished:
                raise Conflict(f"Job '{name}' has a backfill running")
            b = Backfill(name, request.start, request.end, request.concurrency,
                         occurrences(schedule, request), now)
            with self.store.atomic():
                self.store.put_meta(_key(name), b.to_json())
                index = set(self.store.get_meta(INDEX) or [])
                self.store.put_meta(INDEX, sorted(index | {name}))
        self.wake()
        return b.progress()

    def backfill_progress(self, name: str) -> dict[str, Any]:
        b = self._load_backfill(name)
        if b is None:
            raise NotFound(f"Job '{name}' has no backfill")
        return b.progress()

    def backfills(self) -> list[dict[str, Any]]:
        """Every stored backfill's progress (finished ones too, until replaced)."""
        out = []
        for name in self.store.get_meta(INDEX) or []:
            b = self._load_backfill(name)
            if b is not None:
                out.append(b.progress())
        return out

    def _load_backfill(self, name: str) -> Backfill | None:
        raw = self.store.get_meta(_key(name))
        return Backfill.from_json(raw) if raw else None

    def _backfill_pass(self, now: datetime) -> None:
        """Tally the backfills' finished runs and create the next ones within concurrency."""
        for name in self.store.get_meta(INDEX) or []:
            b = self._load_backfill(name)
            if b is None or b.finished:
                continue
            before = b.to_json()
            still: list[str] = []
            for run_id in b.open:
                run = self.store.get_run(run_id)
                if run is None or run.status.final:
                    if run is not None and run.status is RunStatus.SUCCESS:
                        b.succeeded += 1
                    else:
                        b.failed += 1
                else:
                    still.append(run_id)
            b.open = still
            if name in self.jobs.jobs():
                for _ in range(room(b, still)):
                    t = b.occurrences[b.cursor]
                    b.cursor += 1
                    run_id = scheduled_run_id(name, t)
                    run = JobRun(id=run_id, job=name, trigger=Trigger.SCHEDULE,
                                 status=RunStatus.QUEUED, created_at=now, scheduled_for=t,
                                 task_id=attempt_task_id(run_id, 0),
                                 message="backfill")
                    existing = self.store.get_run(run_id)
                    if existing is not None and existing.status is RunStatus.SKIPPED:
                        # Recorded as missed (too late) but never run: now it runs.
                        self.store.put_run(run)
                        b.open.append(run_id)
                    elif self.store.create_run(run):
                        b.open.append(run_id)
                    else:  # that occurrence already has its run: never twice
                        b.skipped.append(run_id)
            else:  # the job was deleted: nothing more to run
                b.failed += len(b.occurrences) - b.cursor
                b.cursor = len(b.occurrences)
            if b.to_json() != before:
                self.store.put_meta(_key(name), b.to_json())
                if b.finished:
                    self.bus.publish("job_backfill_finished", now, stream=DROMOS, job=name,
                                     **{k: v for k, v in b.progress().items() if k != "job"})
