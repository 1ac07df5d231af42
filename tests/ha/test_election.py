"""Leader election: the pure decision (a table) and electors over a shared in-memory Lease with
frozen clocks (no sleeps)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.ha.elector import LeaderElector, NotLeader
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
)
from scheduler.ha.lease_api import MemoryLeaseApi

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def rec(holder: str | None, transitions: int = 0, duration: int = 15) -> LeaseRecord:
    return LeaseRecord(holder, duration, T0, T0, transitions)


@pytest.mark.parametrize(("name", "seen", "mono", "expected"), [
    ("no lease: create it", None, 0.0, Create(LeaseRecord("me", 15, T0, T0, 0))),
    ("mine: renew, same epoch", Observed(rec("me", 3), "7", 0.0), 5.0,
     Update(LeaseRecord("me", 15, T0, T0, 3), "7")),
    ("other, fresh: wait", Observed(rec("other", 3), "7", 10.0), 24.9, Wait("other", 25.0)),
    ("other, expired: take over, epoch + 1", Observed(rec("other", 3), "7", 10.0), 25.0,
     Update(LeaseRecord("me", 15, T0, T0, 4), "7")),
    ("released: take over at once, epoch + 1", Observed(rec(None, 3, 1), "7", 10.0), 10.0,
     Update(LeaseRecord("me", 15, T0, T0, 4), "7")),
])
def test_decide(name: str, seen: Observed | None, mono: float, expected: object) -> None:
    assert decide("me", seen, mono_now=mono, wall_now=T0, lease_s=15) == expected, name


def test_expiry_counts_from_when_the_record_changed_not_from_rereads() -> None:
    first = observe(None, rec("other"), "1", 100.0)
    again = observe(first, rec("other"), "1", 110.0)  # unchanged: the clock does not restart
    assert again.changed_at == 100.0
    renewed = observe(again, LeaseRecord("other", 15, T0, T0 + timedelta(seconds=2), 0), "2",
                      112.0)
    assert renewed.changed_at == 112.0


def test_timings_must_leave_the_leader_time_to_stop() -> None:
    with pytest.raises(ValueError):
        LeaseTimings(lease_s=10, renew_deadline_s=10, retry_s=2)


@dataclass
class Clock:
    t: float = 0.0

    def mono(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.t)


@dataclass
class Candidate:
    name: str
    api: MemoryLeaseApi
    clock: Clock
    events: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.elector = LeaderElector(
            self.api, self.name, LeaseTimings(),
            on_started=lambda epoch: self.events.append(f"started {epoch}"),
            on_stopped=lambda: self.events.append("stopped"),
            mono=self.clock.mono, wall=self.clock.wall)


def test_one_leader_standby_takes_over_after_expiry_with_a_new_epoch() -> None:
    api, ca, cb = MemoryLeaseApi(), Clock(), Clock()
    a, b = Candidate("a", api, ca), Candidate("b", api, cb)
    a.elector.step()
    b.elector.step()
    assert a.events == ["started 0"] and b.events == []
    assert a.elector.fence() == fence_token("a", 0)
    with pytest.raises(NotLeader):
        b.elector.fence()
    assert b.elector.state().leader == "a"

    # a stops renewing (paused). Its own fence closes at the renew deadline, before the lease
    # can be taken: the gap is lease - renew deadline = 5 s.
    ca.t = 9.9
    a.elector.fence()
    ca.t = 10.0
    with pytest.raises(NotLeader):
        a.elector.fence()
    cb.t = 14.9
    b.elector.step()
    assert b.events == []
    cb.t = 15.0
    b.elector.step()
    assert b.events == ["started 1"] and b.elector.fence() == "b/1"

    # a wakes up: its next attempt sees b's lease and it stops, without ever writing.
    ca.t = 16.0
    a.elector.step()
    assert a.events == ["started 0", "stopped"]
    assert api.get() is not None and api.get()[0].holder == "b"  # type: ignore[index]


def test_outage_shorter_than_the_renew_deadline_keeps_the_leader() -> None:
    api, clock = MemoryLeaseApi(), Clock()
    a = Candidate("a", api, clock)
    a.elector.step()
    api.unavailable = True
    clock.t = 8.0
    a.elector.step()
    assert a.events == ["started 0"]
    api.unavailable = False
    clock.t = 9.0
    a.elector.step()
    assert a.events == ["started 0"] and a.elector.fence() == "a/0"
    api.unavailable = True
    clock.t = 19.0
    a.elector.step()
    assert a.events == ["started 0", "stopped"]


def test_abdicate_hands_over_at_once_and_sits_out_one_lease() -> None:
    api, ca, cb = MemoryLeaseApi(), Clock(), Clock()
    a, b = Candidate("a", api, ca), Candidate("b", api, cb)
    a.elector.step()
    b.elector.step()
    assert a.elector.abdicate() is True
    assert a.events == ["started 0", "stopped"]
    b.elector.step()
    assert b.events == ["started 1"]
    ca.t = 1.0
    a.elector.step()  # sits out: does not even compete
    assert a.events == ["started 0", "stopped"]
    assert b.elector.abdicate() is True
    assert a.elector.abdicate() is False


def test_a_standby_reads_often_and_tries_at_the_moment_of_expiry() -> None:
    api, ca, cb = MemoryLeaseApi(), Clock(), Clock()
    a, b = Candidate("a", api, ca), Candidate("b", api, cb)
    a.elector.step()
    assert a.elector.next_step_in() == 2.0  # a leader renews every retry period
    b.elector.step()  # sees a's lease at t=0: expires at 15
    assert b.elector.next_step_in() == 0.5  # a quarter of the retry period
    cb.t = 14.8
    assert b.elector.next_step_in() == pytest.approx(0.2)  # not past the expiry
    cb.t = 15.0
    b.elector.step()
    assert b.events == ["started 1"]
