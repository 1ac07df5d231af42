"""Marathon's launch backoff: how long an app waits before its next launch after failures."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.model.app import AppSpec
from scheduler.model.limits import add_seconds, bounded_seconds
from scheduler.model.timefmt import iso, parse_iso


def backoff_delay(base: float, factor: float, cap: float, failures: int) -> float:
    """``base * factor**(failures-1)`` capped at ``cap``, in ``[0, MAX_DURATION_SECONDS]``,
    without overflow: a factor below 1 or NaN counts as 1."""
    cap = bounded_seconds(cap)
    base = bounded_seconds(base)
    if base == 0.0:
        return 0.0
    if math.isnan(factor) or factor < 1.0:
        factor = 1.0
    try:
        delay = base * factor ** (failures - 1)
    except OverflowError:
        return cap
    return min(bounded_seconds(delay), cap)


@dataclass(frozen=True)
class Backoff:
    """Per-app backoff state.

    After the k-th consecutive failure (a task that FAILED or FINISHED; kills do not count)
    the next launch waits ``backoffSeconds * backoffFactor**(k-1)``, capped at
    ``maxLaunchDelaySeconds``, counted from that failure. A new app version starts fresh.

    Never raises, whatever numbers the definition holds (validation bounds them, but a
    stored object that bypassed it must not stop the control loop): the delay is always in
    ``[0, MAX_DURATION_SECONDS]`` and the launch time at most the last representable instant.
    """

    failures: int = 0
    last_failure_at: datetime | None = None
    version: str | None = None

    def delay_seconds(self, spec: AppSpec) -> float:
        """The current delay; 0 when there were no failures."""
        if self.failures <= 0:
            return 0.0
        return backoff_delay(spec.backoffSeconds, spec.backoffFactor,
                             spec.maxLaunchDelaySeconds, self.failures)

    def launch_allowed_at(self, spec: AppSpec) -> datetime | None:
        """When the next launch may happen; ``None`` means right away."""
        if self.failures == 0 or self.last_failure_at is None:
            return None
        return add_seconds(self.last_failure_at, self.delay_seconds(spec))

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
