"""Gang placement (all or none, environment) and GPU device assignment."""

from __future__ import annotations

import pytest

from scheduler.placement.pipeline import Placer
from scheduler.placement.results import ClusterSnapshot, Placement
from scheduler.sharing.gang import gang_env, gang_request, place_gang
from scheduler.sharing.gpus import assign_devices, cuda_visible_devices, whole_gpus
from tests.placement.factories import con
from tests.sharing.factories import make_node, make_request


def test_gang_places_all_members_and_keeps_them() -> None:
    placer = Placer(ClusterSnapshot(tuple(make_node(f"n{i}", cpus=2) for i in range(3))))
    req = make_request(cpus=2, constraints=[con("hostname", "UNIQUE")])
    placed, summary = place_gang(placer, req, 3)
    assert summary is None
    assert sorted(p.host for p in placed) == ["n0", "n1", "n2"]
    assert all(placer.free(f"n{i}").cpus == 0 for i in range(3))


def test_gang_that_does_not_fit_holds_nothing() -> None:
    placer = Placer(ClusterSnapshot(tuple(make_node(f"n{i}", cpus=2) for i in range(3))))
    placed, summary = place_gang(placer, make_request(cpus=2), 4)
    assert summary is not None and len(placed) == 3  # the 4th member failed
    assert all(placer.free(f"n{i}").cpus == 2 for i in range(3))
    # and a second gang that fits is not blocked by the first
    again, summary2 = place_gang(placer, make_request("/other", cpus=2), 3)
    assert summary2 is None and len(again) == 3


def test_gang_env() -> None:
    placements = [Placement("n1", (31000,)), Placement("n2", (31005,))]
    assert gang_env(placements, 1) == {
        "RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "n1", "MASTER_PORT": "31000",
    }
    with pytest.raises(ValueError, match="MASTER_PORT"):
        gang_env([Placement("n1", ())], 0)


def test_gang_request_gets_a_rendezvous_port() -> None:
    assert gang_request(make_request()).ports == (0,)
    assert gang_request(make_request(ports=(8080,))).ports == (8080,)


def test_gpu_model_attribute_is_usable_in_constraints() -> None:
    nodes = (make_node("t4", gpus=4, gpu_model="t4"), make_node("a100", gpus=4, gpu_model="a100"))
    placer = Placer(ClusterSnapshot(nodes))
    got = placer.place(make_request(gpus=2, constraints=[con("gpu_model", "IS", "a100")]))
    assert isinstance(got, Placement) and got.host == "a100"


DEVICE_CASES = [
    ("empty node", 4, [], 2, (0, 1)),
    ("skips devices in use", 4, [(0,), (2,)], 2, (1, 3)),
    ("not enough free", 4, [(0, 1, 2)], 2, None),
    ("zero asked", 2, [(0, 1)], 0, ()),
    ("out-of-range indices ignored", 2, [(7,)], 2, (0, 1)),
]


@pytest.mark.parametrize(
    ("node_gpus", "in_use", "count", "expected"),
    [c[1:] for c in DEVICE_CASES],
    ids=[c[0] for c in DEVICE_CASES],
)
def test_assign_devices(
    node_gpus: float, in_use: list[tuple[int, ...]], count: int,
    expected: tuple[int, ...] | None,
) -> None:
    assert assign_devices(node_gpus, in_use, count) == expected


def test_whole_gpus_and_env_value() -> None:
    assert whole_gpus(2.0) == 2 and whole_gpus(0.5) is None
    assert cuda_visible_devices((0, 3)) == "0,3"
