"""Marathon's launch backoff: how long an app waits before its next launch after failures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from scheduler.model.app import AppSpec
from scheduler.model.timefmt import iso, parse_iso


@dataclass(frozen=True)
class Backoff:
    """Per-app backoff state.

    After the k-th consecutive failure (a task that FAILED or FINISHED; kills do not count)
    the next launch waits ``backoffSeconds * backoffFactor**(k-1)``, capped at
    ``maxLaunchDelaySeconds``, counted from that failure. A new app version starts fresh.
    """

    failures: int = 0
    last_failure_at: datetime | None = None
    version: str | None = None

    def delay_seconds(self, spec: AppSpec) -> float:
        """The current delay; 0 when there were no failures."""
        if self.failures == 0:
            return 0.0
        delay = spec.backoffSeconds * spec.backoffFactor ** (self.failures - 1)
        return float(min(delay, spec.maxLaunchDelaySeconds))

    def launch_allowed_at(self, spec: AppSpec) -> datetime | None:
        """When the next launch may happen; ``None`` means right away."""
        if self.failures == 0 or self.last_failure_at is None:
            return None
        return self.last_failure_at + timedelta(seconds=self.delay_seconds(spec))

    def for_version(self, version: str | None) -> Backoff:
        """The state to use for ``version``: reset when the app changed since."""
        return self if version == self.version else Backoff(version=version)

    def after_failure(self, now: datetime, version: str | None) -> Backoff:
        base = self.for_version(version)
        return Backoff(failures=base.failures + 1, last_failure_at=now, version=version)

    def to_json(self) -> dict[str, Any]:
        return {
            "failures": self.failures,
            "last_failure_at": iso(self.last_failure_at) if self.last_failure_at else None,
            "version": self.version,
        }

    @staticmethod
    def from_json(d: dict[str, Any] | None) -> Backoff:
        if not d:
            return Backoff()
        at = d.get("last_failure_at")
        return Backoff(
            failures=int(d.get("failures", 0)),
            last_failure_at=parse_iso(at) if at else None,
            version=d.get("version"),
        )
