"""A replica switches the control loop on when it leads and off when it stops, in order."""

from __future__ import annotations

from scheduler.ha.lease import LeaseTimings
from scheduler.ha.lease_api import MemoryLeaseApi
from scheduler.ha.replica import Replica


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def load(self) -> None:
        self.calls.append("load")

    def replay_journals(self) -> int:
        self.calls.append("replay")
        return 0


def test_leading_loads_replays_then_starts_the_loop_and_abdicating_stops_it() -> None:
    api, store = MemoryLeaseApi(), Recorder()
    seen_while_loading: list[bool] = []

    def lead() -> None:
        seen_while_loading.append(replica.leadership().leading)
        store.calls.append("lead")

    replica = Replica(api, "a:1", LeaseTimings(), store, lead=lead,
                      follow=lambda: store.calls.append("follow"),
                      refreshed=lambda: store.calls.append("refreshed"))
    other = Replica(api, "b:2", LeaseTimings(), Recorder(), lead=lambda: None,
                    follow=lambda: None, refreshed=lambda: None)
    assert replica.leadership().leading is False
    replica.elector.step()
    other.elector.step()
    assert store.calls == ["load", "replay", "refreshed", "lead"]
    assert seen_while_loading == [False]  # no writes taken before the loop runs
    assert replica.leadership().leading is True
    assert other.leadership().leading is False and other.leadership().leader == "a:1"

    assert replica.elector.abdicate()
    assert store.calls[-1] == "follow" and replica.leadership().leading is False
    other.elector.step()
    assert other.leadership().leading is True
