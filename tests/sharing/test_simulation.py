"""Three teams on 300 simulated nodes over simulated hours, frozen clock, no runtime:
services, ETL jobs, best-effort backfills and training gangs contending for one cluster."""

from __future__ import annotations

import pytest

from scheduler.sharing.plan import SharingPolicy
from scheduler.sharing.simulation import (
    Kind,
    SimResult,
    generate_workload,
    percentile,
    simulate,
)

STEP_S = 120.0


@pytest.fixture(scope="module")
def result() -> tuple[SimResult, dict[Kind, int], float]:
    workload = generate_workload(300, seed=1, day_s=6 * 3600, load=1.5)
    counts = {k: sum(1 for a in workload.arrivals if a.kind is k) for k in Kind}
    max_grace = max(a.grace_s for a in workload.arrivals)
    return simulate(workload, SharingPolicy(), step_s=STEP_S, drain_s=6 * 3600), counts, max_grace


def test_the_cluster_was_contended(result: tuple[SimResult, dict[Kind, int], float]) -> None:
    res, _, _ = result
    assert res.preemptions > 0
    assert percentile(res.waits[Kind.JOB], 99) > 0  # batch did queue
    assert res.utilisation > 0.7


def test_no_deadlock_and_everything_ran(result: tuple[SimResult, dict[Kind, int], float]) -> None:
    res, counts, _ = result
    assert res.deadlocks == 0
    assert res.left_pending == 0
    assert {k: len(v) for k, v in res.waits.items()} == counts  # every gang too


def test_guarantees_honoured(result: tuple[SimResult, dict[Kind, int], float]) -> None:
    res, _, _ = result
    assert res.guarantee_violations == 0, res.violation_examples


def test_priority_never_takes_equal_or_higher(
    result: tuple[SimResult, dict[Kind, int], float],
) -> None:
    assert result[0].equal_or_higher_for_priority == 0


def test_services_never_wait_on_batch(result: tuple[SimResult, dict[Kind, int], float]) -> None:
    # At worst a service waits for its victims' grace period and the pass after it.
    res, _, max_grace = result
    assert max(res.waits[Kind.SERVICE]) <= max_grace + 2 * STEP_S
