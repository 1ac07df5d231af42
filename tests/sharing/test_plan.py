"""decide(): one pass of admission, placement, GPU devices, gangs and preemption."""

from __future__ import annotations

from dataclasses import replace

from scheduler.sharing.plan import FIFO, decide
from scheduler.sharing.types import PreemptionKind, WaitKind
from tests.sharing.factories import T0, make_node, pending, quota, running

NODES = [make_node("n1", cpus=4, mem=1e6), make_node("n2", cpus=4, mem=1e6)]


def test_service_preempts_batch_then_waits_then_launches() -> None:
    batch = [running("b1", "n1", cpus=4, grace=30), running("b2", "n2", cpus=4, grace=30)]
    svc = pending("svc", cpus=2, priority=500)
    plan = decide([svc], NODES, batch, {}, T0)
    assert plan.launches == ()
    (p,) = plan.preemptions
    assert (p.victim.task_id, p.victim.grace_seconds, p.preemptor) == ("b1", 30, "svc")
    assert p.victim.kind is PreemptionKind.PRIORITY
    assert plan.waits[0].kind is WaitKind.PREEMPTING and "b1" in plan.waits[0].reason

    # Next pass: the victim is still in its grace period. No second preemption.
    killing = [replace(batch[0], killing=True, preempted_for="svc"), batch[1]]
    plan2 = decide([svc], NODES, killing, {}, T0)
    assert plan2.preemptions == () and plan2.launches == ()
    assert plan2.waits[0].reason == "waiting for 1 preempted task(s) to exit (grace up to 30 s)"

    # The victim exited: the service is placed where it was freed.
    plan3 = decide([svc], NODES, [batch[1]], {}, T0)
    assert [(lch.request_id, lch.host) for lch in plan3.launches] == [("svc", "n1")]


def test_fifo_never_preempts() -> None:
    batch = [running("b1", "n1", cpus=4), running("b2", "n2", cpus=4)]
    plan = decide([pending("svc", cpus=2)], NODES, batch, {}, T0, FIFO)
    assert plan.preemptions == ()
    assert plan.waits[0].kind is WaitKind.CAPACITY


def test_priority_order_beats_submission_order() -> None:
    nodes = [make_node("n1", cpus=2, mem=1e6)]
    early_batch = pending("batch", cpus=2, priority=100, at_s=0)
    late_svc = pending("svc", cpus=2, priority=500, at_s=60)
    plan = decide([early_batch, late_svc], nodes, [], {}, T0)
    assert [lch.request_id for lch in plan.launches] == ["svc"]
    fifo = decide([early_batch, late_svc], nodes, [], {}, T0, FIFO)
    assert [lch.request_id for lch in fifo.launches] == ["batch"]


def test_gang_members_get_rank_world_size_master_and_devices() -> None:
    nodes = [make_node(f"g{i}", cpus=8, mem=1e6, gpus=4) for i in range(2)]
    gang = pending("train", cpus=4, gpus=2, priority=100, gang=4)
    plan = decide([gang], nodes, [], {}, T0)
    assert len(plan.launches) == 4
    master = plan.launches[0]
    for rank, lch in enumerate(plan.launches):
        assert lch.env["RANK"] == str(rank)
        assert lch.env["WORLD_SIZE"] == "4"
        assert lch.env["MASTER_ADDR"] == master.host
        assert lch.env["MASTER_PORT"] == str(master.ports[0])
    per_host: dict[str, list[int]] = {}
    for lch in plan.launches:
        assert lch.env["CUDA_VISIBLE_DEVICES"] == ",".join(map(str, lch.gpu_devices))
        per_host.setdefault(lch.host, []).extend(lch.gpu_devices)
    assert {h: sorted(d) for h, d in per_host.items()} == {"g0": [0, 1, 2, 3],
                                                           "g1": [0, 1, 2, 3]}


def test_devices_in_use_are_not_handed_out_again() -> None:
    nodes = [make_node("g0", cpus=8, mem=1e6, gpus=4)]
    busy = [running("t", "g0", cpus=1, gpus=2, gpu_devices=(0, 2))]
    plan = decide([pending("new", cpus=1, gpus=2)], nodes, busy, {}, T0)
    assert plan.launches[0].gpu_devices == (1, 3)


def test_gang_that_does_not_fit_waits_and_holds_nothing() -> None:
    gang = pending("train", cpus=4, priority=100, gang=3)
    small = pending("small", cpus=4, priority=100, at_s=10)
    plan = decide([gang, small], NODES, [], {}, T0)
    assert [lch.request_id for lch in plan.launches] == ["small"]
    assert plan.waits[0].request_id == "train"


def test_gang_preempts_on_several_nodes() -> None:
    low = [running("x1", "n1", cpus=4, priority=0), running("x2", "n2", cpus=4, priority=0)]
    plan = decide([pending("train", cpus=4, priority=100, gang=2)], NODES, low, {}, T0)
    assert sorted(p.victim.task_id for p in plan.preemptions) == ["x1", "x2"]


def test_quota_wait_and_borrowing_flag() -> None:
    quotas = {"a": quota("a", cpus=2, borrow=(2, 1e9, 0))}
    plan = decide([pending("r1", cpus=3, team="a"), pending("r2", cpus=3, team="a", at_s=1)],
                  NODES, [], quotas, T0)
    assert [(lch.request_id, lch.borrowing) for lch in plan.launches] == [("r1", True)]
    assert plan.waits[0].kind is WaitKind.QUOTA
    assert plan.waits[0].reason.startswith("waiting for quota: team a uses 3 of 2 cpus")


def test_fractional_gpus_are_refused() -> None:
    plan = decide([pending("r", gpus=0.5)], NODES, [], {}, T0)
    assert plan.waits[0].kind is WaitKind.INVALID


def test_lender_reclaims_from_borrower_of_higher_priority() -> None:
    quotas = {"a": quota("a", cpus=4), "b": quota("b", cpus=4)}
    # b runs 8 cpus (4 borrowed) of services; a's batch job wants its guarantee.
    b = [running("s1", "n1", cpus=4, team="b", priority=500, age_s=100),
         running("s2", "n2", cpus=4, team="b", priority=500, age_s=10)]
    plan = decide([pending("etl", cpus=4, team="a", priority=100)], NODES, b, quotas, T0)
    assert [(p.victim.task_id, p.victim.kind) for p in plan.preemptions] == [
        ("s2", PreemptionKind.RECLAIM)]


def test_requests_within_guarantee_go_before_borrowing_ones() -> None:
    # Kueue's order: b's batch job is within b's guarantee; a's service would borrow.
    nodes = [make_node("n1", cpus=4, mem=1e6)]
    quotas = {"a": quota("a", cpus=0), "b": quota("b", cpus=4)}
    svc = pending("svc", cpus=4, team="a", priority=500, at_s=0)
    etl = pending("etl", cpus=4, team="b", priority=100, at_s=60)
    plan = decide([svc, etl], nodes, [], quotas, T0)
    assert [lch.request_id for lch in plan.launches] == ["etl"]
    assert [lch.request_id for lch in decide([svc, etl], nodes, [], {}, T0).launches] == ["svc"]
