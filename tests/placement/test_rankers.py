"""Rankers: what each one prefers, score range, tie-breaks, and the scalar/vector twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.node import Node
from scheduler.placement.checkers import ClusterState, resource_vector
from scheduler.placement.rankers import BinPack, Ranker, Spread, ranker_for
from scheduler.placement.results import PlacedTask, Strategy
from tests.placement.factories import make_node, make_request, make_task, snapshot


def best(ranker: Ranker, nodes: list[Node], tasks: list[PlacedTask], cpus: float,
         mem: float) -> str:
    state = ClusterState(snapshot(nodes, tasks))
    need = resource_vector(make_request(cpus=cpus, mem=mem).resources).tolist()
    chosen = ranker.select(state, need, np.ones(state.n, dtype=np.bool_))
    assert chosen is not None
    return state.hostnames[chosen]


def test_binpack_prefers_the_fuller_node() -> None:
    nodes = [make_node("a"), make_node("b")]
    tasks = [make_task("a", cpus=1, mem=1024), make_task("b", cpus=2, mem=2048)]
    assert best(BinPack(), nodes, tasks, 1, 1024) == "b"


def test_binpack_prefers_an_occupied_node_over_a_bigger_empty_one() -> None:
    nodes = [make_node("a", cpus=64, mem=65536), make_node("b", cpus=4, mem=4096)]
    assert best(BinPack(), nodes, [make_task("b", cpus=0.1, mem=10)], 1, 1024) == "b"


def test_binpack_opens_the_largest_empty_node() -> None:
    nodes = [make_node("a", cpus=4, mem=4096), make_node("b", cpus=16, mem=16384),
             make_node("c", cpus=8, mem=8192)]
    assert best(BinPack(), nodes, [], 1, 1024) == "b"


def test_binpack_prefers_the_node_left_level_over_a_lopsided_one() -> None:
    # Same dominant utilisation after placement (90 %), but "lop" would keep 60 % of its
    # cpus for 90 % of its memory: 30 % of it stranded.
    nodes = [make_node("lop", cpus=10, mem=1000), make_node("level", cpus=10, mem=1000)]
    tasks = [make_task("lop", cpus=5, mem=800), make_task("level", cpus=8, mem=800)]
    assert best(BinPack(), nodes, tasks, 1, 100) == "level"


def test_spread_prefers_the_emptiest_node() -> None:
    nodes = [make_node("a"), make_node("b"), make_node("c")]
    tasks = [make_task("a", cpus=2), make_task("c", cpus=1)]
    assert best(Spread(), nodes, tasks, 1, 128) == "b"


def test_spread_prefers_the_bigger_of_two_empty_nodes() -> None:
    nodes = [make_node("a", cpus=2, mem=2048), make_node("b", cpus=8, mem=8192)]
    assert best(Spread(), nodes, [], 1, 128) == "b"


@pytest.mark.parametrize("ranker", [BinPack(), Spread()], ids=["binpack", "spread"])
def test_ties_go_to_the_lowest_hostname(ranker: Ranker) -> None:
    nodes = [make_node("node-c"), make_node("node-a"), make_node("node-b")]
    assert best(ranker, nodes, [], 1, 128) == "node-a"


@pytest.mark.parametrize("ranker", [BinPack(), Spread()], ids=["binpack", "spread"])
def test_select_ignores_infeasible_nodes(ranker: Ranker) -> None:
    state = ClusterState(snapshot([make_node("a"), make_node("b")]))
    need = [1.0, 128.0, 0.0, 0.0]
    assert ranker.select(state, need, np.array([False, True])) == 1
    assert ranker.select(state, need, np.array([False, False])) is None


def test_scores_of_known_states() -> None:
    state = ClusterState(snapshot(
        [make_node("empty", cpus=4, mem=4000), make_node("half", cpus=4, mem=4000)],
        [make_task("half", cpus=2, mem=2000)],
    ))
    need = [2.0, 1000.0, 0.0, 0.0]
    # empty: dominant after = 0.5 -> 50 * 0.5; half: dominant 1.0, stranded 0.25.
    assert BinPack().scores(state, need).tolist() == pytest.approx(
        [25.0, 50 + 50 * (1.0 + 8 * 0.75) / 9])
    assert Spread().scores(state, need).tolist() == pytest.approx([50.0, 0.0])


def test_ranker_for_strategy() -> None:
    assert isinstance(ranker_for(Strategy.BINPACK), BinPack)
    assert isinstance(ranker_for(Strategy.SPREAD), Spread)
    with pytest.raises(ValueError, match="unknown placement strategy"):
        ranker_for("fastest")  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------

amounts = st.sampled_from([0.0, 0.1, 0.25, 1.0, 3.0, 100.0, 1000.0])


@st.composite
def ranked_states(draw: st.DrawFn) -> tuple[ClusterState, list[float]]:
    n = draw(st.integers(1, 6))
    nodes = [
        make_node(
            f"n{i}",
            cpus=draw(st.sampled_from([0.0, 1.0, 4.0, 6.0])),
            mem=draw(st.sampled_from([0.0, 1000.0, 4096.0])),
            disk=draw(st.sampled_from([0.0, 500.0])),
            gpus=draw(st.sampled_from([0.0, 2.0])),
        )
        for i in range(n)
    ]
    tasks = draw(st.lists(
        st.builds(make_task, host=st.sampled_from([f"n{i}" for i in range(n)]),
                  cpus=amounts, mem=amounts, disk=amounts, gpus=st.sampled_from([0.0, 1.0])),
        max_size=6,
    ))
    need = [draw(amounts), draw(amounts), draw(amounts), draw(st.sampled_from([0.0, 1.0]))]
    return ClusterState(snapshot(nodes, tasks)), need


@settings(max_examples=200, deadline=None)
@given(ranked_states(), st.sampled_from([BinPack(), Spread()]))
def test_scalar_score_is_bit_identical_to_vector_score(
    case: tuple[ClusterState, list[float]], ranker: Ranker
) -> None:
    state, need = case
    vector = ranker.scores(state, need)
    scalar = [ranker.score_of(state, need, i) for i in range(state.n)]
    assert vector.tolist() == scalar


@settings(max_examples=200, deadline=None)
@given(ranked_states(), st.sampled_from([BinPack(), Spread()]))
def test_scores_stay_within_0_and_100(
    case: tuple[ClusterState, list[float]], ranker: Ranker
) -> None:
    state, need = case
    # Only nodes the task fits on are ever ranked; overcommitted ones may score anything.
    fits = (state.free >= np.array(need)[:, None] - 1e-9).all(axis=0)
    scores = ranker.scores(state, need)[fits]
    assert ((scores >= 0) & (scores <= 100)).all()


@settings(max_examples=200, deadline=None)
@given(ranked_states())
def test_binpack_ranks_every_occupied_node_above_every_empty_one_it_fits(
    case: tuple[ClusterState, list[float]]
) -> None:
    state, need = case
    fits = (state.free >= np.array(need)[:, None] - 1e-9).all(axis=0)
    scores = BinPack().scores(state, need)
    occupied, empty = scores[fits & state.occupied], scores[fits & ~state.occupied]
    if occupied.size and empty.size:
        assert occupied.min() > empty.max()
