"""Leader election on a ``coordination.k8s.io`` Lease: the pure decision, client-go's rules.

Contract of :func:`decide` (no I/O, time is an argument):
- No Lease yet: create it, held by me, ``leaseTransitions`` 0.
- Held by me: renew (``renewTime`` = now), keeping ``acquireTime`` and the transitions count.
- Held by another whose record last *changed*, as I observed it on my own monotonic clock, less
  than ``leaseDurationSeconds`` ago: wait. As in client-go, expiry is judged by when this
  process saw the record change, never by comparing the holder's wall-clock ``renewTime`` with
  mine, so clock skew between replicas cannot end a live lease early.
- Otherwise (expired, or released with an empty holder): take it over, incrementing
  ``leaseTransitions``. The transitions count is the **fencing epoch**: it grows by one at every
  change of holder, and every write Dromos makes carries ``<holder>/<epoch>``
  (:func:`fence_token`), which the API server checks against the Lease (see ``manifests/``).

Every write of the Lease is a replace with the ``resourceVersion`` that was read, so two
candidates that decide "take over" at the same moment cannot both succeed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

FENCE_ANNOTATION = "dromos.io/fence"


@dataclass(frozen=True)
class LeaseTimings:
    """client-go's defaults: 15 s lease, 10 s renew deadline, 2 s between attempts.

    A leader that has not renewed for ``renew_deadline_s`` stops leading (and writing) while
    its lease still has ``lease_s - renew_deadline_s`` to run, so it is gone before anyone may
    take over."""

    lease_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_s < self.renew_deadline_s < self.lease_s:
            raise ValueError("lease timings must satisfy 0 < retry < renew deadline < lease "
                             f"(got {self.retry_s}, {self.renew_deadline_s}, {self.lease_s})")


@dataclass(frozen=True)
class LeaseRecord:
    """The election fields of a Lease's spec."""

    holder: str | None
    duration_s: int
    acquire_time: datetime | None
    renew_time: datetime | None
    transitions: int


@dataclass(frozen=True)
class Observed:
    """A Lease as read: its record, its ``resourceVersion``, and the monotonic time at which this
    process first saw this record (it is not changed by re-reading an unchanged record)."""

    record: LeaseRecord
    resource_version: str
    changed_at: float


@dataclass(frozen=True)
class Create:
    record: LeaseRecord


@dataclass(frozen=True)
class Update:
    record: LeaseRecord
    resource_version: str


@dataclass(frozen=True)
class Wait:
    holder: str
    expires_at: float  # monotonic


Intent = Create | Update | Wait


def observe(previous: Observed | None, record: LeaseRecord, resource_version: str,
            mono_now: float) -> Observed:
    """Fold a fresh read into what was observed: the change time moves only when the record did."""
    if previous is not None and previous.record == record:
        return replace(previous, resource_version=resource_version)
    return Observed(record, resource_version, mono_now)


def decide(me: str, seen: Observed | None, *, mono_now: float, wall_now: datetime,
           lease_s: int) -> Intent:
    """What candidate ``me`` should do about the Lease (see the module docstring)."""
    if seen is None:
        return Create(LeaseRecord(me, lease_s, wall_now, wall_now, 0))
    rec = seen.record
    if rec.holder == me:
        return Update(replace(rec, duration_s=lease_s, renew_time=wall_now),
                      seen.resource_version)
    if rec.holder:
        expires = seen.changed_at + rec.duration_s
        if mono_now < expires:
            return Wait(rec.holder, expires)
    return Update(LeaseRecord(me, lease_s, wall_now, wall_now, rec.transitions + 1),
                  seen.resource_version)


def released(rec: LeaseRecord, wall_now: datetime) -> LeaseRecord:
    """The record a leader writes when it abdicates: no holder, a 1 s duration (client-go's
    ReleaseOnCancel), transitions unchanged (the next holder increments them)."""
    return replace(rec, holder=None, duration_s=1, renew_time=wall_now)


def fence_token(holder: str, epoch: int) -> str:
    """The value of :data:`FENCE_ANNOTATION` on every object a leader writes."""
    return f"{holder}/{epoch}"
