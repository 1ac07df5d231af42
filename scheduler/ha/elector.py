"""The acting half of leader election: read the Lease, apply :func:`lease.decide`, write it back.

Why not ``kubernetes.leaderelection``: the Python client's elector never maintains
``leaseTransitions`` (Dromos's fencing epoch), reads the wall clock inside its loop (untestable
without sleeping) and keeps renewing from a thread it cannot stop before the renew deadline.
This one is small, takes its clocks as arguments and exposes :meth:`LeaderElector.fence`, the
check every write makes first.

Contract:
- :meth:`step` makes one attempt (one read, at most one write) and is what :meth:`run` repeats
  every ``retry_s``. ``on_started(epoch)`` is called when this candidate becomes leader;
  ``on_stopped()`` when it stops (lost the Lease, or could not renew within the renew deadline,
  or abdicated). Both are called from the elector's thread.
- :meth:`fence` returns the fence token while this process may write, and raises
  :class:`NotLeader` otherwise: in particular once ``renew_deadline_s`` has passed since the
  last successful renewal, whether or not the elector's thread has run since (a process paused
  by the OS checks the clock, not its own flag, when it wakes up).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from scheduler.ha.lease import (
    Create,
    LeaseRecord,
    LeaseTimings,
    Observed,
    Update,
    Wait,
    decide,
    fence_token,
    observe,
    released,
)

log = logging.getLogger("dromos.election")


class LeaseConflict(Exception):
    """The Lease changed since it was read (409), or was created by someone else."""


class LeaseUnavailable(Exception):
    """The Lease could not be read or written (API server unreachable, timeout, 5xx)."""


class NotLeader(Exception):
    """This process may not write: it is a standby, or its lease may have expired."""


class LeaseApi(Protocol):
    """Reads and optimistic writes of one Lease (the seam a fake and the API server share)."""

    def get(self) -> tuple[LeaseRecord, str] | None:
        """The record and its ``resourceVersion``; ``None`` if there is no Lease."""

    def create(self, record: LeaseRecord) -> str:
        """Create the Lease; its ``resourceVersion``. Raises :class:`LeaseConflict` if it exists."""

    def replace(self, record: LeaseRecord, resource_version: str) -> str:
        """Replace the record if the Lease is still at ``resource_version`` (else
        :class:`LeaseConflict`); the new ``resourceVersion``."""


@dataclass(frozen=True)
class LeaderState:
    """What /v2/info and /v2/leader say."""

    me: str
    leading: bool
    leader: str | None
    epoch: int | None = None


class LeaderElector:
    """One candidate (see the module docstring)."""

    def __init__(self, api: LeaseApi, me: str, timings: LeaseTimings,
                 on_started: Callable[[int], None], on_stopped: Callable[[], None], *,
                 mono: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.api = api
        self.me = me
        self.timings = timings
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._mono = mono
        self._wall = wall
        self._seen: Observed | None = None
        self._leading = False
        self._epoch: int | None = None
        self._last_renew = float("-inf")
        # After abdicating, stay out of the race for one lease so another replica wins it.
        self._sit_out_until = float("-inf")
        self._expires_at = float("-inf")  # of the lease a standby waits on
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ what others read
    def state(self) -> LeaderState:
        with self._lock:
            holder = self._seen.record.holder if self._seen else None
            return LeaderState(self.me, self._leading_now(self._mono()), holder,
                               self._epoch if self._leading else None)

    def fence(self) -> str:
        """The fence token for a write now, or :class:`NotLeader`."""
        with self._lock:
            if not self._leading_now(self._mono()) or self._epoch is None:
                raise NotLeader(f"{self.me} is not the leader")
            return fence_token(self.me, self._epoch)

    def _leading_now(self, mono_now: float) -> bool:
        return self._leading and mono_now - self._last_renew < self.timings.renew_deadline_s

    # ------------------------------------------------------------------ acting
    def step(self) -> None:
        """One attempt to acquire or renew (see the module docstring)."""
        mono, wall = self._mono(), self._wall()
        if mono < self._sit_out_until:
            return
        try:
            got = self.api.get()
            with self._lock:
                self._seen = None if got is None else observe(self._seen, got[0], got[1], mono)
                seen = self._seen
            intent = decide(self.me, seen, mono_now=mono, wall_now=wall,
                            lease_s=int(self.timings.lease_s))
            if isinstance(intent, Wait):
                self._expires_at = intent.expires_at
                self._not_renewed(mono, lost_to=intent.holder)
                return
            if isinstance(intent, Create):
                rv = self.api.create(intent.record)
            else:
                assert isinstance(intent, Update)
                rv = self.api.replace(intent.record, intent.resource_version)
        except (LeaseConflict, LeaseUnavailable) as e:
            log.debug("lease attempt failed: %s", e)
            self._not_renewed(mono, lost_to=None)
            return
        self._renewed(intent.record, rv, mono)

    def _renewed(self, record: LeaseRecord, rv: str, mono: float) -> None:
        with self._lock:
            self._seen = Observed(record, rv, mono)
            self._last_renew = mono
            started = not self._leading
            self._leading = True
            self._epoch = record.transitions
        if started:
            log.info("%s is the leader (epoch %d)", self.me, record.transitions)
            self._on_started(record.transitions)

    def _not_renewed(self, mono: float, lost_to: str | None) -> None:
        with self._lock:
            if not self._leading:
                return
            if lost_to is None and mono - self._last_renew < self.timings.renew_deadline_s:
                return  # a failed renewal, still inside the deadline: try again
            self._leading = False
            self._epoch = None
        log.warning("%s stopped leading (%s)", self.me,
                    f"{lost_to} holds the lease" if lost_to else "renew deadline passed")
        self._on_stopped()

    def abdicate(self) -> bool:
        """Give the Lease up now (``DELETE /v2/leader``); ``False`` if not leading."""
        with self._lock:
            if not self._leading or self._seen is None:
                return False
            seen = self._seen
            self._leading = False
            self._epoch = None
            self._sit_out_until = self._mono() + self.timings.lease_s
        self._on_stopped()
        try:
            self.api.replace(released(seen.record, self._wall()), seen.resource_version)
        except (LeaseConflict, LeaseUnavailable) as e:
            # Not released: the others take over when it expires, as after a crash.
            log.warning("could not release the lease: %s", e)
        return True

    def next_step_in(self) -> float:
        """Seconds until the next :meth:`step`. A leader renews every ``retry_s``. A standby
        reads four times as often, so it sees the leader's last renewal at most
        ``retry_s / 4`` late (expiry counts from when it saw it), and it tries at the very
        moment the lease it waits on expires: takeover comes about ``lease_s`` after the
        leader's last renewal, not up to ``lease_s + 2 * retry_s`` (client-go's worst case)."""
        retry = self.timings.retry_s
        if self.state().leading:
            return retry
        until_expiry = self._expires_at - self._mono()
        return max(0.0, min(retry / 4, until_expiry)) if until_expiry > 0 else retry / 4

    def run(self, stop: threading.Event) -> None:
        """Repeat :meth:`step` (see :meth:`next_step_in`) until ``stop`` is set; then release
        the lease."""
        while not stop.is_set():
            self.step()
            stop.wait(self.next_step_in())
        if self.state().leading:
            self.abdicate()

