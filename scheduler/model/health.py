"""Health and readiness check definitions (Marathon field names and defaults) and results."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from scheduler.model.limits import MAX_COUNT, MAX_DURATION_SECONDS, Int
from scheduler.model.timefmt import iso


class HealthProtocol(StrEnum):
    HTTP = "HTTP"
    HTTPS = "HTTPS"
    TCP = "TCP"
    COMMAND = "COMMAND"
    # Mesos-executed variants behave the same here: Dromos runs every check itself.
    MESOS_HTTP = "MESOS_HTTP"
    MESOS_HTTPS = "MESOS_HTTPS"
    MESOS_TCP = "MESOS_TCP"

    @property
    def kind(self) -> str:
        """``HTTP``, ``HTTPS``, ``TCP`` or ``COMMAND`` (MESOS_ prefix dropped)."""
        return self.value.removeprefix("MESOS_")


class CommandCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    value: str = Field(min_length=1)


class HealthCheck(BaseModel):
    """One entry of ``healthChecks``.

    Pass means: HTTP(S) status 200-399 within ``timeoutSeconds`` (with ``ignoreHttp1xx`` a
    1xx answer is neither a pass nor a failure); TCP connect within the timeout; COMMAND
    exit status 0.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    protocol: HealthProtocol = HealthProtocol.HTTP
    path: str = "/"
    portIndex: Int | None = Field(default=None, ge=0, le=MAX_COUNT)
    port: Int | None = Field(default=None, ge=1, le=65535)
    command: CommandCheck | None = None
    gracePeriodSeconds: Int = Field(default=300, ge=0, le=MAX_DURATION_SECONDS)
    intervalSeconds: Int = Field(default=60, ge=1, le=MAX_DURATION_SECONDS)
    timeoutSeconds: Int = Field(default=20, ge=1, le=MAX_DURATION_SECONDS)
    maxConsecutiveFailures: Int = Field(default=3, ge=0, le=MAX_COUNT)
    ignoreHttp1xx: bool = False
    delaySeconds: Int = Field(default=15, ge=0, le=MAX_DURATION_SECONDS)

    @model_validator(mode="after")
    def _consistent(self) -> HealthCheck:
        if self.protocol.kind == "COMMAND":
            if self.command is None:
                raise ValueError("COMMAND health checks need command.value")
        elif self.command is not None:
            raise ValueError(f"command is only for COMMAND checks, not {self.protocol.value}")
        if self.port is not None and self.portIndex is not None:
            raise ValueError("give port or portIndex, not both")
        return self

    @property
    def effective_port_index(self) -> int:
        """The port index probed when no fixed ``port`` is given (Marathon's default: 0)."""
        return self.portIndex if self.portIndex is not None else 0

    def to_json(self) -> dict[str, Any]:
        out = self.model_dump(exclude_none=True, mode="json")
        if self.protocol.kind != "COMMAND":
            out.pop("command", None)
        if self.protocol.kind == "COMMAND" or self.port is not None:
            out.pop("portIndex", None)
        elif "portIndex" not in out:
            out["portIndex"] = 0
        if self.protocol.kind not in ("HTTP", "HTTPS"):
            out.pop("path", None)
            out.pop("ignoreHttp1xx", None)
        return out


class ReadinessCheck(BaseModel):
    """One entry of ``readinessChecks`` (Marathon allows at most one per app)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = "readinessCheck"
    protocol: str = Field(default="HTTP", pattern="^(HTTP|HTTPS)$")
    path: str = "/"
    portName: str = "http-api"
    intervalSeconds: Int = Field(default=30, ge=1, le=MAX_DURATION_SECONDS)
    timeoutSeconds: Int = Field(default=10, ge=1, le=MAX_DURATION_SECONDS)
    httpStatusCodesForReady: list[Int] = Field(default_factory=lambda: [200], min_length=1)
    preserveLastResponse: bool = False

    @model_validator(mode="after")
    def _codes(self) -> ReadinessCheck:
        # Dromos probes readiness with the health monitor's HTTP rule (ready = 200-399).
        bad = [c for c in self.httpStatusCodesForReady if not 200 <= c <= 399]
        if bad:
            raise ValueError(f"httpStatusCodesForReady outside 200-399 is not supported: {bad}")
        return self


@dataclass(frozen=True)
class HealthResult:
    """The health of one task for one check, as Marathon reports it.

    ``alive`` is False until the first success. ``consecutive_failures`` counts only failures
    that matter: those after the first success, or once the grace period is over.
    """

    task_id: str
    alive: bool = False
    consecutive_failures: int = 0
    first_success: datetime | None = None
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_failure_cause: str | None = None

    def to_json(self) -> dict[str, Any]:
        def ts(d: datetime | None) -> str | None:
            return iso(d) if d else None

        return {
            "alive": self.alive,
            "consecutiveFailures": self.consecutive_failures,
            "firstSuccess": ts(self.first_success),
            "lastFailure": ts(self.last_failure),
            "lastSuccess": ts(self.last_success),
            "lastFailureCause": self.last_failure_cause,
            "taskId": self.task_id,
            "instanceId": self.task_id,
        }
