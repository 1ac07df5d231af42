"""Chronos job definitions (desired state of a batch job) and job runs (observed).

A job is triggered either by a ``schedule`` or by ``parents`` (exactly one of the two).
``schedule`` is an ISO-8601 repeating interval (``R5/2026-01-01T00:00:00Z/PT1H``) or a cron
expression written ``cron: 0 2 * * *``: one field for every time trigger, so existing Chronos
clients, which pass ``schedule`` through as a string, carry cron jobs too.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import isodate
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from scheduler.model.constraints import Constraint, Operator, parse_constraint
from scheduler.model.limits import (
    MAX_ARGS,
    MAX_CPUS,
    MAX_DURATION_SECONDS,
    MAX_ENV,
    MAX_MIB,
    MAX_TIME_ZONE_LENGTH,
    EnvName,
    EnvValue,
    Float,
    Int,
    Launchable,
    bounded_delta,
    non_finite_details,
)
from scheduler.model.priority import GANG_MAX, parse_priority
from scheduler.model.resources import Resources
from scheduler.model.timefmt import iso, parse_iso
from scheduler.model.validation import SpecError, errors_from_pydantic

if TYPE_CHECKING:
    from scheduler.batch.schedule import Schedule

JOB_NAME = re.compile(r"[\w.-]+")
"""A job name (matched whole, with ``fullmatch``); names of dots only are refused."""
CRON_PREFIX = "cron:"

# Counters and timestamps Chronos returns and clients send back: accepted, ignored on writes.
JOB_READ_ONLY_FIELDS = frozenset(
    {"successCount", "errorCount", "lastSuccess", "lastError", "errorsSinceLastSuccess",
     "softErrorCount"}
)


def _job_constraint(v: Any) -> Constraint:
    if isinstance(v, Constraint):
        return v
    # Chronos's EQUALS is Marathon's IS; the other Marathon operators are accepted as well.
    if isinstance(v, list) and len(v) >= 2 and isinstance(v[1], str) and v[1].upper() == "EQUALS":
        v = [v[0], Operator.IS.value, *v[2:]]
    return parse_constraint(v)


def _job_constraint_json(c: Constraint) -> list[str]:
    op = "EQUALS" if c.operator is Operator.IS else c.operator.value
    return [c.field, op, *([c.value] if c.value is not None else [])]


JobConstraint = Annotated[
    Constraint,
    BeforeValidator(_job_constraint),
    PlainSerializer(_job_constraint_json, return_type=list[str]),
    WithJsonSchema({"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 3,
                    "description": "[attribute, EQUALS|LIKE|UNLIKE|<Marathon operator>, value]"}),
]


class EnvVar(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    name: EnvName
    value: EnvValue = ""


class JobContainer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    type: str = Field(default="DOCKER", pattern="^(DOCKER|MESOS|docker|mesos)$")
    image: str = Field(min_length=1)
    network: str = "BRIDGE"
    forcePullImage: bool = False
    volumes: list[dict[str, Any]] = Field(default_factory=list)
    parameters: list[dict[str, str]] = Field(default_factory=list)


class MissedRunPolicy(StrEnum):
    """What happens to occurrences that came due while Dromos was down.

    ``latest`` (default): the latest missed occurrence runs once if it is at most ``epsilon``
    late; every other missed occurrence is recorded as skipped. ``skip``: all are skipped.
    """

    LATEST = "latest"
    SKIP = "skip"


def _duration(text: str) -> timedelta:
    try:
        d = isodate.parse_duration(text)
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration") from None
    if not isinstance(d, timedelta):
        # Years/months have no fixed length; epsilon and delays must.
        raise ValueError(f"{text!r} must be a fixed duration such as PT5M (no years or months)")
    return d


def _stored_duration(text: str, default: str) -> timedelta:
    """A duration of a stored job, clamped into ``[0, MAX_DURATION_SECONDS]``; the field's
    default when it does not parse. Validation refuses both cases, but a job that bypassed it
    must not make the control loop raise."""
    try:
        d = _duration(text)
    except (isodate.ISO8601Error, ValueError, OverflowError, TypeError):
        d = _duration(default)
    return bounded_delta(d)


class JobSpec(BaseModel):
    """A validated Chronos job. Construct with :func:`parse_job`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=200)
    command: Launchable = ""
    shell: bool = True
    arguments: list[Launchable] = Field(default_factory=list, max_length=MAX_ARGS)
    schedule: str | None = Field(default=None, max_length=1000)
    scheduleTimeZone: str = Field(default="", max_length=MAX_TIME_ZONE_LENGTH)
    parents: list[str] | None = None
    epsilon: str = "PT1M"
    retries: Int = Field(default=2, ge=0, le=100)
    retryDelay: str = "PT5S"
    missedRunPolicy: MissedRunPolicy = MissedRunPolicy.LATEST
    disabled: bool = False
    concurrent: bool = False
    softError: bool = False
    highPriority: bool = False
    # Chronos counts it in milliseconds.
    maxCompletionTime: Int = Field(default=0, ge=0, le=MAX_DURATION_SECONDS * 1000)
    owner: str = ""
    ownerName: str = ""
    description: str = ""
    runAsUser: str = ""
    cpus: Float = Field(default=0.1, gt=0, le=MAX_CPUS)
    mem: Float = Field(default=128, ge=0, le=MAX_MIB)
    disk: Float = Field(default=256, ge=0, le=MAX_MIB)
    container: JobContainer | None = None
    environmentVariables: list[EnvVar] = Field(default_factory=list, max_length=MAX_ENV)
    constraints: list[JobConstraint] = Field(default_factory=list)
    uris: list[str] = Field(default_factory=list)
    fetch: list[dict[str, Any]] = Field(default_factory=list)
    executor: str = ""
    executorFlags: str = ""
    dataProcessingJobType: bool = False
    # Chronos 2.x field; kept for clients that send it.
    async_: bool = Field(default=False, alias="async")
    # Dromos-only sharing fields (scheduler/model/priority.py says why fields, not labels):
    # written back only when set, so Chronos clients never see them unasked.
    priority: str | int | None = None
    gangSize: Int | None = Field(default=None, ge=1, le=GANG_MAX)
    team: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$",
                             max_length=63)
    gpus: Float | None = Field(default=None, ge=0, le=MAX_CPUS)
    # (schedule text, time zone, parsed schedule), set by validation; see parsed_schedule.
    _parsed: tuple[str, str, Any] | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not JOB_NAME.fullmatch(v):
            raise ValueError("name may only hold letters, digits, '_', '.' and '-'")
        if not v.strip("."):
            raise ValueError("name must not consist of dots only")
        return v

    @field_validator("priority")
    @classmethod
    def _priority(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_priority(v)
        return v

    @field_validator("scheduleTimeZone")
    @classmethod
    def _tz(cls, v: str) -> str:
        if v:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError, OSError):
                # OSError: a name the file system refuses (too long, bad characters).
                raise ValueError(f"unknown IANA time zone {v!r}") from None
        return v

    @field_validator("epsilon", "retryDelay")
    @classmethod
    def _fixed_duration(cls, v: str) -> str:
        try:
            d = _duration(v)
        except (isodate.ISO8601Error, ValueError) as e:
            raise ValueError(f"{v!r} is not an ISO-8601 duration: {e}") from None
        if d < timedelta(0):
            raise ValueError("must not be negative")
        if d > timedelta(seconds=MAX_DURATION_SECONDS):
            raise ValueError(f"must be at most {MAX_DURATION_SECONDS} seconds (P365D)")
        return v

    @model_validator(mode="after")
    def _trigger(self, info: ValidationInfo) -> JobSpec:
        has_schedule = bool(self.schedule)
        has_parents = bool(self.parents)
        if has_schedule == has_parents:
            raise ValueError("a job needs exactly one of 'schedule' or 'parents'")
        if not self.shell and not self.command and not self.arguments and self.container is None:
            raise ValueError("a job without a shell command needs 'arguments' or a container")
        if self.shell and not self.command.strip() and self.container is None:
            raise ValueError("command must not be empty")
        if self.parents and self.name in self.parents:
            raise ValueError("a job cannot be its own parent")
        if self.schedule and not (info.context or {}).get("schedule_checked"):
            # Kept (keyed by text and zone, so a model_copy that changes either re-parses):
            # the job book, the API and the status page read it instead of parsing again.
            self._parsed = (self.schedule, self.time_zone,
                            _check_schedule(self.schedule, self.scheduleTimeZone))
        return self

    @property
    def parsed_schedule(self) -> Schedule | None:
        """The parsed ``schedule`` (``None`` for a dependent job), parsed once."""
        if not self.schedule:
            return None
        cached = self._parsed
        if cached is None or cached[0] != self.schedule or cached[1] != self.time_zone:
            cached = (self.schedule, self.time_zone,
                      _check_schedule(self.schedule, self.time_zone))
            self._parsed = cached
        return cast("Schedule", cached[2])

    # --- derived views -------------------------------------------------------------------

    @property
    def epsilon_delta(self) -> timedelta:
        """``epsilon``; never raises (see :func:`_stored_duration`)."""
        return _stored_duration(self.epsilon, "PT1M")

    @property
    def retry_delay(self) -> timedelta:
        """``retryDelay``; never raises (see :func:`_stored_duration`)."""
        return _stored_duration(self.retryDelay, "PT5S")

    @property
    def time_zone(self) -> str:
        return self.scheduleTimeZone or "UTC"

    @property
    def resources(self) -> Resources:
        return Resources(self.cpus, self.mem, self.disk, self.gpus or 0.0)

    @property
    def env(self) -> dict[str, str]:
        return {e.name: e.value for e in self.environmentVariables}

    def to_chronos(self) -> dict[str, Any]:
        """The definition as Chronos returns it (read-only counters are added by the API)."""
        out = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        out.setdefault("parents", [])
        if out.get("schedule") is None:
            out["schedule"] = ""
        return out


def _check_schedule(schedule: str, tz: str) -> Schedule:
    """The parsed schedule; ``ValueError`` when it is bad."""
    # Imported here: schedule parsing lives in batch/, which depends on this module.
    from scheduler.batch.schedule import parse_schedule

    return parse_schedule(schedule, tz or "UTC")


def _schedule_errors(data: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """A bad ``schedule`` reported at ``/schedule`` (a model validator could only say ``/``).
    Not judged when the time zone itself is bad: that is reported at ``/scheduleTimeZone``."""
    schedule, tz = data.get("schedule"), data.get("scheduleTimeZone") or ""
    if not isinstance(schedule, str) or not schedule or not isinstance(tz, str):
        return []
    try:
        ZoneInfo(tz or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return []
    try:
        _check_schedule(schedule, tz)
    except ValueError as e:
        return [("/schedule", [str(e)])]
    return []


def parse_job(data: Any) -> JobSpec:
    """Validate a decoded JSON job. Raises :class:`SpecError` with a detail per bad field
    (``/schedule`` for a schedule that does not parse, ``/scheduleTimeZone`` for an unknown
    zone)."""
    if not isinstance(data, dict):
        raise SpecError("Job is not valid", [("", ["must be a JSON object"])])
    cleaned = {k: v for k, v in data.items() if k not in JOB_READ_ONLY_FIELDS}
    non_finite = non_finite_details(cleaned)
    if non_finite:
        raise SpecError("Job is not valid", non_finite)
    if cleaned.get("parents") == []:
        cleaned.pop("parents")
    if cleaned.get("schedule") == "":
        cleaned.pop("schedule")
    schedule_errors = _schedule_errors(cleaned)
    try:
        job = JobSpec.model_validate(cleaned, context={"schedule_checked": True})
    except ValidationError as e:
        raise SpecError("Job is not valid", schedule_errors + errors_from_pydantic(e)) from None
    if schedule_errors:
        raise SpecError("Job is not valid", schedule_errors)
    return job


class RunStatus(StrEnum):
    """A run's lifecycle: queued (written, not yet launched) → running → a final status."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    KILLED = "killed"

    @property
    def final(self) -> bool:
        return self in (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.SKIPPED, RunStatus.KILLED)


class Trigger(StrEnum):
    """What made a run. ``marked``: no run at all, a success recorded by ``PUT
    /scheduler/job/success/{name}`` (status ``success``, no start, no duration, no task)."""

    SCHEDULE = "schedule"
    MANUAL = "manual"
    DEPENDENCY = "dependency"
    MARKED = "marked"


def scheduled_run_id(job: str, scheduled_for: datetime) -> str:
    """``etl:20261201T010000Z``: the same occurrence always gets the same id."""
    return f"{job}:{scheduled_for.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def manual_run_id(job: str) -> str:
    return f"{job}:manual-{uuid.uuid4()}"


def dependency_run_id(job: str) -> str:
    return f"{job}:dep-{uuid.uuid4()}"


def marked_run_id(job: str) -> str:
    return f"{job}:marked-{uuid.uuid4()}"


def attempt_task_id(run_id: str, attempt: int) -> str:
    """The runtime task id of one attempt; a task id runs at most once, so retries differ."""
    return run_id if attempt == 0 else f"{run_id}.retry{attempt}"


@dataclass(frozen=True)
class JobRun:
    """One run of a job (all its attempts). Persisted *before* anything is launched.

    ``scheduled_for`` is the occurrence a scheduled run belongs to, the time a manual run was
    requested (what the run sees as ``DROMOS_SCHEDULED_TIME``), ``None`` for dependency runs
    and marked successes. ``attempt`` counts retries (0 = first try); ``task_id`` is the current
    attempt's runtime id. ``not_before`` holds a retry back until its delay has passed.
    """

    id: str
    job: str
    trigger: Trigger
    status: RunStatus
    created_at: datetime
    scheduled_for: datetime | None = None
    attempt: int = 0
    task_id: str | None = None
    host: str | None = None
    handle: Mapping[str, Any] | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    message: str = ""
    not_before: datetime | None = None
    kill_requested_at: datetime | None = None

    def with_(self, **changes: Any) -> JobRun:
        return replace(self, **changes)

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        def ts(d: datetime | None) -> str | None:
            return iso(d) if d else None

        return {
            "id": self.id, "job": self.job, "trigger": self.trigger.value,
            "status": self.status.value, "created_at": ts(self.created_at),
            "scheduled_for": ts(self.scheduled_for), "attempt": self.attempt,
            "task_id": self.task_id, "host": self.host,
            "handle": dict(self.handle) if self.handle else None,
            "started_at": ts(self.started_at), "finished_at": ts(self.finished_at),
            "exit_code": self.exit_code, "message": self.message,
            "not_before": ts(self.not_before), "kill_requested_at": ts(self.kill_requested_at),
        }

    @staticmethod
    def from_json(d: Mapping[str, Any]) -> JobRun:
        def ts(key: str) -> datetime | None:
            v = d.get(key)
            return parse_iso(v) if v else None

        created = ts("created_at")
        assert created is not None
        return JobRun(
            id=d["id"], job=d["job"], trigger=Trigger(d["trigger"]),
            status=RunStatus(d["status"]), created_at=created,
            scheduled_for=ts("scheduled_for"), attempt=int(d.get("attempt", 0)),
            task_id=d.get("task_id"), host=d.get("host"), handle=d.get("handle"),
            started_at=ts("started_at"), finished_at=ts("finished_at"),
            exit_code=d.get("exit_code"), message=d.get("message", ""),
            not_before=ts("not_before"), kill_requested_at=ts("kill_requested_at"),
        )
