"""Backfill: run a job over a past range, each occurrence under the run id it would have had.

Pure: the request is validated here (JSON pointers on bad input), the occurrences are listed
from the job's schedule, and :func:`step` decides which runs to create now given how many of
the backfill's runs are still active. Idempotence comes from the run ids: an occurrence gets
:func:`~scheduler.model.job.scheduled_run_id`, the id the scheduler itself gives it, and the
store creates a run first-writer-wins, so an occurrence that already ran (or is running) is
counted as *skipped* and never runs twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, ValidationError

from scheduler.batch.schedule import Schedule, occurrences_between
from scheduler.model.timefmt import iso, parse_iso
from scheduler.model.validation import SpecError, errors_from_pydantic

MAX_OCCURRENCES = 10_000
"""A backfill longer than this is a typo in the range, not a plan."""
MAX_CONCURRENCY = 1_000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    from_: AwareDatetime = Field(alias="from")
    to: AwareDatetime
    concurrency: StrictInt = Field(default=1, ge=1, le=MAX_CONCURRENCY)


@dataclass(frozen=True)
class BackfillRequest:
    """``from``/``to`` (inclusive, both in the past) and how many runs may be active at once."""

    start: datetime
    end: datetime
    concurrency: int


def parse_request(data: Any, now: datetime) -> BackfillRequest:
    """Validate ``{"from": ISO, "to": ISO, "concurrency": n}``; :class:`SpecError` with JSON
    pointers (``/from``, ``/to``, ``/concurrency``) otherwise."""
    if not isinstance(data, dict):
        raise SpecError("Backfill is not valid", [("", ["must be a JSON object"])])
    try:
        doc = _Request.model_validate(data)
    except ValidationError as e:
        errors = [(p.replace("/from_", "/from"), m) for p, m in errors_from_pydantic(e)]
        raise SpecError("Backfill is not valid", errors) from None
    if doc.to < doc.from_:
        raise SpecError("Backfill is not valid", [("/to", ["must not be before from"])])
    if doc.to > now:
        raise SpecError("Backfill is not valid",
                        [("/to", [f"must not be in the future (now is {iso(now)})"])])
    return BackfillRequest(doc.from_, doc.to, doc.concurrency)


def occurrences(schedule: Schedule, request: BackfillRequest) -> list[datetime]:
    """The schedule's fire times in ``[from, to]``, ascending. :class:`SpecError` at ``/to``
    when there are more than :data:`MAX_OCCURRENCES`."""
    out: list[datetime] = []
    try:
        after = request.start - timedelta(microseconds=1)
    except OverflowError:
        raise SpecError("Backfill is not valid", [("/from", ["is too early"])]) from None
    for t in occurrences_between(schedule, after, request.end):
        out.append(t)
        if len(out) > MAX_OCCURRENCES:
            raise SpecError("Backfill is not valid", [(
                "/to", [f"the range holds more than {MAX_OCCURRENCES} occurrences"])])
    return out


@dataclass
class Backfill:
    """A backfill's stored state (meta ``job:<name>:backfill``): the occurrences not created
    yet (``cursor`` onwards), the runs created and still open, and the tallies."""

    job: str
    start: datetime
    end: datetime
    concurrency: int
    occurrences: list[datetime]
    created_at: datetime
    cursor: int = 0
    open: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0

    @property
    def finished(self) -> bool:
        return self.cursor >= len(self.occurrences) and not self.open

    def progress(self) -> dict[str, Any]:
        """What the API, the page and the CLI show."""
        total = len(self.occurrences)
        done = self.succeeded + self.failed + len(self.skipped)
        return {
            "job": self.job, "from": iso(self.start), "to": iso(self.end),
            "concurrency": self.concurrency, "createdAt": iso(self.created_at),
            "total": total, "done": done, "succeeded": self.succeeded, "failed": self.failed,
            "skipped": len(self.skipped), "active": len(self.open),
            "pending": total - self.cursor,
            "status": "finished" if self.finished else "running",
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job, "from": iso(self.start), "to": iso(self.end),
            "concurrency": self.concurrency, "createdAt": iso(self.created_at),
            "occurrences": [iso(t) for t in self.occurrences], "cursor": self.cursor,
            "open": list(self.open), "skipped": list(self.skipped),
            "succeeded": self.succeeded, "failed": self.failed,
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> Backfill:
        return Backfill(
            job=d["job"], start=parse_iso(d["from"]), end=parse_iso(d["to"]),
            concurrency=int(d["concurrency"]), created_at=parse_iso(d["createdAt"]),
            occurrences=[parse_iso(t) for t in d["occurrences"]], cursor=int(d["cursor"]),
            open=list(d["open"]), skipped=list(d["skipped"]),
            succeeded=int(d["succeeded"]), failed=int(d["failed"]))


def room(backfill: Backfill, still_open: Sequence[str]) -> int:
    """How many new runs the backfill may create now (``still_open``: its runs not final)."""
    left = len(backfill.occurrences) - backfill.cursor
    return max(0, min(left, backfill.concurrency - len(still_open)))
