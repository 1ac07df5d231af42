"""Rankers: what each one prefers, score range, tie-breaks, and the scalar/vector twins."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.node import Node
from scheduler.placement.checkers import ClusterState, resource_vector
from scheduler.placement.rankers import Balanced, BinPack, Ranker, Spread, ranker_for
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


# --- Balanced (Strategy.BINPACK): nodes 10 cpus / 1000 mem, so fractions read off directly ---

BALANCED_CASES = [
    # (case, used per occupied node {host: (cpus, mem)}, task (cpus, mem), Balanced's pick,
    #  BinPack's pick)
    # half: free after (0.4, 0.1), out of the 0.8..1.2 band and less level: opens "empty".
    ("opens a node rather than skew one", {"half": (5, 500)}, (1, 400), "empty", "half"),
    # lop: before (0.6, 0.1); after (0.65, 0.4), free (0.35, 0.6) is still out of the band,
    # but the node gets more level, which is never refused.
    ("levels a lopsided node", {"lop": (6, 100)}, (0.5, 300), "lop", "lop"),
    # full: after (0.95, 0.925), free (0.05, 0.075) exceeds 1.2 * 0.05 by less than the
    # slack (half the task's mean share, 0.01875): finishing off a nearly full node is fine.
    ("a small task may finish off a node", {"full": (9, 900)}, (0.5, 25), "full", "full"),
    # ... but one that would leave (0.05, 0.08) free is past the slack.
    ("the slack is bounded", {"full": (9, 900)}, (0.5, 20), "empty", "full"),
    # a: skewed (stranded 0.3 after); b: not (after (0.3, 0.5), free (0.7, 0.5) in band).
    ("skews nothing it need not", {"a": (5, 500), "b": (2, 100)}, (1, 400), "b", "b"),
    # Demand at the node's own ratio never skews: the fuller node wins, as in BinPack.
    ("matched demand is BinPack", {"a": (2, 200), "b": (6, 600)}, (1, 100), "b", "b"),
]


@pytest.mark.parametrize(
    ("used", "task", "balanced", "binpack"),
    [case[1:] for case in BALANCED_CASES],
    ids=[case[0] for case in BALANCED_CASES],
)
def test_balanced_picks(used: dict[str, tuple[float, float]], task: tuple[float, float],
                        balanced: str, binpack: str) -> None:
    hosts = [*used, "empty"]
    nodes = [make_node(h, cpus=10, mem=1000) for h in hosts]
    tasks = [make_task(h, cpus=c, mem=m) for h, (c, m) in used.items()]
    assert best(Balanced(), nodes, tasks, *task) == balanced
    assert best(BinPack(), nodes, tasks, *task) == binpack


def test_balanced_falls_back_to_the_least_lopsided_occupied_node() -> None:
    # No empty node: both placements skew; "b" ends less lopsided (0.2 vs 0.3 stranded).
    nodes = [make_node(h, cpus=10, mem=1000) for h in ("a", "b")]
    tasks = [make_task("a", cpus=5, mem=500), make_task("b", cpus=6, mem=500)]
    assert best(Balanced(), nodes, tasks, 1, 400) == "b"


def test_balanced_scores_of_known_states() -> None:
    state = ClusterState(snapshot(
        [make_node(h, cpus=10, mem=1000) for h in ("empty", "half", "lop")],
        [make_task("half", cpus=5, mem=500), make_task("lop", cpus=2, mem=100)],
    ))
    need = [1.0, 400.0, 0.0, 0.0]
    # empty: dominant 0.4 -> 25 + 25 * 0.6; half: skewed, stranded 0.3 -> 25 * 0.7;
    # lop: after (0.3, 0.5), in band -> 50 + 50 * (0.5 + 12 * 0.8) / 13.
    assert Balanced().scores(state, need).tolist() == pytest.approx(
        [40.0, 17.5, 50 + 50 * (0.5 + 12 * 0.8) / 13])


def test_spread_prefers_the_emptiest_node() -> None:
    nodes = [make_node("a"), make_node("b"), make_node("c")]
    tasks = [make_task("a", cpus=2), make_task("c", cpus=1)]
    assert best(Spread(), nodes, tasks, 1, 128) == "b"


def test_spread_prefers_the_bigger_of_two_empty_nodes() -> None:
    nodes = [make_node("a", cpus=2, mem=2048), make_node("b", cpus=8, mem=8192)]
    assert best(Spread(), nodes, [], 1, 128) == "b"


@pytest.mark.parametrize("ranker", [BinPack(), Balanced(), Spread()],
                         ids=["binpack", "balanced", "spread"])
def test_ties_go_to_the_lowest_hostname(ranker: Ranker) -> None:
    nodes = [make_node("node-c"), make_node("node-a"), make_node("node-b")]
    assert best(ranker, nodes, [], 1, 128) == "node-a"


@pytest.mark.parametrize("ranker", [BinPack(), Balanced(), Spread()],
                         ids=["binpack", "balanced", "spread"])
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
    assert isinstance(ranker_for(Strategy.BINPACK), Balanced)
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
@given(ranked_states(), st.sampled_from([BinPack(), Balanced(), Spread()]))
def test_scalar_score_is_bit_identical_to_vector_score(
    case: tuple[ClusterState, list[float]], ranker: Ranker
) -> None:
    state, need = case
    vector = ranker.scores(state, need)
    scalar = [ranker.score_of(state, need, i) for i in range(state.n)]
    assert vector.tolist() == scalar


@settings(max_examples=200, deadline=None)
@given(ranked_states(), st.sampled_from([BinPack(), Balanced(), Spread()]))
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


@settings(max_examples=200, deadline=None)
@given(ranked_states())
def test_balanced_ranks_occupied_nodes_above_empty_ones_unless_it_would_skew_them(
    case: tuple[ClusterState, list[float]]
) -> None:
    state, need = case
    fits = (state.free >= np.array(need)[:, None] - 1e-9).all(axis=0)
    scores = Balanced().scores(state, need)
    empty = scores[fits & ~state.occupied]
    occupied = scores[fits & state.occupied]
    if occupied.size and empty.size:
        # Every occupied node is either above every empty one (50..100) or skewed (0..25).
        assert ((occupied >= 50) | (occupied <= 25)).all()
        assert ((empty >= 25) & (empty <= 50)).all()
