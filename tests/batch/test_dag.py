"""Dependency graph: validation paths, Chronos readiness semantics, deletion, DOT and CSV."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

import networkx as nx  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.batch.dag import (
    DOT_COLOURS,
    DependencyError,
    after_child_started,
    build_graph,
    children_of,
    counters_from_json,
    last_state_of,
    on_parent_finished,
    ready_to_run,
    record_parent_success,
    remove_job,
    to_csv,
    to_dot,
    validate_job,
)
from scheduler.model.job import JobSpec, parse_job

HOURLY = "R/2026-01-01T00:00:00Z/PT1H"


# --------------------------------------------------------------------------- factories


def dep(name: str, *parents: str, **fields: Any) -> JobSpec:
    """A dependent job, validated like an API submission."""
    return parse_job({"name": name, "command": "true", "parents": list(parents), **fields})


def root(name: str, schedule: str = HOURLY, **fields: Any) -> JobSpec:
    """A scheduled job. Built without validation: the graph never reads the schedule, and
    this keeps these tests independent of the schedule parser."""
    return JobSpec.model_construct(name=name, command="true", schedule=schedule, **fields)


def raw(name: str, parents: list[str]) -> JobSpec:
    """A dependent job that skips validation (names or self-references the API refuses)."""
    return JobSpec.model_construct(name=name, command="true", parents=parents)


def jobs_of(*specs: JobSpec) -> dict[str, JobSpec]:
    return {s.name: s for s in specs}


# --------------------------------------------------------------------------- graph


def test_build_graph_points_edges_from_parent_to_child() -> None:
    g = build_graph([root("etl"), root("features"), dep("train", "etl", "features")])
    assert set(g.edges) == {("etl", "train"), ("features", "train")}
    assert set(g.nodes) == {"etl", "features", "train"}


def test_build_graph_marks_disabled_jobs() -> None:
    g = build_graph([root("a", disabled=True), dep("b", "a")])
    assert g.nodes["a"]["disabled"] is True
    assert g.nodes["b"]["disabled"] is False


def test_build_graph_ignores_unknown_parents_and_duplicates() -> None:
    g = build_graph([root("a"), raw("b", ["a", "a", "ghost"])])
    assert list(g.edges) == [("a", "b")]
    assert "ghost" not in g


def test_children_of_is_sorted_and_empty_for_unknown_names() -> None:
    g = build_graph([root("p"), dep("zeta", "p"), dep("alpha", "p"), dep("mid", "p")])
    assert children_of(g, "p") == ["alpha", "mid", "zeta"]
    assert children_of(g, "zeta") == []
    assert children_of(g, "nobody") == []


# --------------------------------------------------------------------------- validation


CHAIN = [root("a"), dep("b", "a"), dep("c", "b"), dep("d", "c"), dep("e", "d")]

VALID_CASES = {
    "new job with known parents": (CHAIN, dep("f", "a", "e")),
    "diamond": ([root("a"), dep("b", "a"), dep("c", "a")], dep("d", "b", "c")),
    "replacing a leaf with other parents": (CHAIN, dep("e", "a", "b")),
    "replacing a dependent job with a scheduled one": (CHAIN, root("c")),
    "replacing a root by a child of an unrelated job": ([root("a"), root("x"), dep("b", "a")],
                                                        dep("a", "x")),
    "scheduled job needs no checks": ([], root("solo")),
}


@pytest.mark.parametrize(("existing", "job"), VALID_CASES.values(), ids=VALID_CASES.keys())
def test_valid_dependencies_pass(existing: list[JobSpec], job: JobSpec) -> None:
    validate_job(job, jobs_of(*existing))


INVALID_CASES = {
    "unknown second parent": ([root("a")], dep("x", "a", "ghost"), "/parents/1",
                              "unknown parent 'ghost'"),
    "first of two unknown parents": ([root("a")], dep("x", "nope", "a", "ghost"), "/parents/0",
                                     "unknown parent 'nope'"),
    "self-loop on a new job": ([root("a")], raw("x", ["a", "x"]), "/parents",
                               "would create a cycle: x -> x"),
    "self-loop via replacement": (CHAIN, raw("c", ["b", "c"]), "/parents",
                                  "would create a cycle: c -> c"),
    "two-cycle via replacement": ([root("a"), dep("b", "a")], dep("a", "b"), "/parents",
                                  "would create a cycle: a -> b -> a"),
    "long cycle via replacement": (CHAIN, dep("a", "e"), "/parents",
                                   "would create a cycle: a -> b -> c -> d -> e -> a"),
    "cycle through the middle of a chain": (CHAIN, dep("b", "a", "d"), "/parents",
                                            "would create a cycle: b -> c -> d -> b"),
    "the shortest cycle is named": ([root("a"), dep("b", "a"), dep("c", "b", "a")],
                                    dep("a", "c"), "/parents", "would create a cycle: a -> c -> a"),
}


@pytest.mark.parametrize(("existing", "job", "path", "message"), INVALID_CASES.values(),
                         ids=INVALID_CASES.keys())
def test_invalid_dependencies_name_the_path(existing: list[JobSpec], job: JobSpec, path: str,
                                            message: str) -> None:
    with pytest.raises(DependencyError) as exc:
        validate_job(job, jobs_of(*existing))
    assert (exc.value.path, exc.value.message) == (path, message)
    assert str(exc.value) == message


def test_dependency_error_is_a_value_error_with_a_spec_error_body() -> None:
    err = DependencyError("/parents/1", "unknown parent 'x'")
    assert isinstance(err, ValueError)
    assert err.to_json() == {"message": "unknown parent 'x'",
                             "details": [{"path": "/parents/1",
                                          "errors": ["unknown parent 'x'"]}]}


# --------------------------------------------------------------------------- readiness


@dataclass
class Scheduler:
    """A tiny driver: counters kept only as stored JSON, as the orchestrator keeps them."""

    jobs: dict[str, JobSpec]
    stored: dict[str, str] = field(default_factory=dict)

    def counters(self, child: str) -> dict[str, int]:
        return counters_from_json(json.loads(self.stored.get(child, "{}")))

    def finish(self, parent: str, ok: bool = True, final_failure: bool = True) -> list[str]:
        graph = build_graph(self.jobs.values())
        before = {c: self.counters(c) for c in children_of(graph, parent)}
        new, trigger = on_parent_finished(graph, self.jobs, parent, ok,
                                          not ok and final_failure, before)
        for child, counters in new.items():
            self.stored[child] = json.dumps(counters)
        return trigger


# Each step: (job that finished, "ok" | "fail" | "retrying", children expected to trigger).
Step = tuple[str, str, list[str]]

READINESS_CASES: dict[str, tuple[list[JobSpec], list[Step]]] = {
    "single parent fires on every success": (
        [root("a"), dep("b", "a")],
        [("a", "ok", ["b"]), ("a", "ok", ["b"]), ("a", "ok", ["b"])]),
    "single parent failure fires nothing": (
        [root("a"), dep("b", "a")],
        [("a", "fail", []), ("a", "ok", ["b"])]),
    "several parents wait for all": (
        [root("a"), root("b"), dep("c", "a", "b")],
        [("a", "ok", []), ("a", "ok", []), ("b", "ok", ["c"])]),
    "successes before the child started are consumed, not queued": (
        [root("a"), root("b"), dep("c", "a", "b")],
        [("a", "ok", []), ("a", "ok", []), ("a", "ok", []), ("b", "ok", ["c"]),
         ("b", "ok", []), ("a", "ok", ["c"])]),
    "three parents in any order": (
        [root("a"), root("b"), root("x"), dep("c", "x", "a", "b")],
        [("b", "ok", []), ("x", "ok", []), ("b", "ok", []), ("a", "ok", ["c"])]),
    "a failure does not erase a counted success": (
        [root("a"), root("b"), dep("c", "a", "b")],
        [("a", "ok", []), ("a", "fail", []), ("b", "ok", ["c"])]),
    "disabled child is never triggered": (
        [root("a"), dep("b", "a", disabled=True)],
        [("a", "ok", []), ("a", "ok", [])]),
    "softError parent that exhausted its retries fires its children": (
        [root("a", softError=True), dep("b", "a")],
        [("a", "fail", ["b"])]),
    "softError parent with retries left fires nothing": (
        [root("a", softError=True), dep("b", "a")],
        [("a", "retrying", [])]),
    "failure without softError fires nothing": (
        [root("a", softError=False), dep("b", "a")],
        [("a", "fail", [])]),
    "softError counts as that parent's success among several": (
        [root("a", softError=True), root("b"), dep("c", "a", "b")],
        [("a", "fail", []), ("b", "ok", ["c"])]),
    "one parent, children with different needs, sorted triggers": (
        [root("a"), root("b"), dep("z", "a"), dep("m", "a", "b"), dep("k", "a")],
        [("b", "ok", []), ("a", "ok", ["k", "m", "z"]), ("a", "ok", ["k", "z"])]),
    "dependent parents chain": (
        [root("a"), dep("b", "a"), dep("c", "b")],
        [("a", "ok", ["b"]), ("b", "ok", ["c"])]),
}


@pytest.mark.parametrize(("jobs", "steps"), READINESS_CASES.values(), ids=READINESS_CASES.keys())
def test_children_trigger_like_chronos(jobs: list[JobSpec], steps: list[Step]) -> None:
    s = Scheduler(jobs_of(*jobs))
    for i, (parent, outcome, expected) in enumerate(steps):
        got = s.finish(parent, ok=outcome == "ok", final_failure=outcome == "fail")
        assert got == expected, f"step {i}: {parent} {outcome}"


def test_counters_persist_across_a_restart() -> None:
    jobs = jobs_of(root("a"), root("b"), dep("c", "a", "b"))
    before = Scheduler(jobs)
    assert before.finish("a") == []
    # A new process sees only what was stored: the progress towards c survives.
    after = Scheduler(jobs, stored=dict(before.stored))
    assert after.counters("c") == {"a": 1}
    assert after.finish("b") == ["c"]
    assert after.counters("c") == {}  # stored as zeros, read back as "no progress"
    assert json.loads(after.stored["c"]) == {"a": 0, "b": 0}


def test_triggered_child_counters_are_returned_reset() -> None:
    jobs = jobs_of(root("a"), root("b"), dep("c", "a", "b"))
    graph = build_graph(jobs.values())
    new, trigger = on_parent_finished(graph, jobs, "b", True, False, {"c": {"a": 3}})
    assert (new, trigger) == ({"c": {"a": 0, "b": 0}}, ["c"])


def test_disabled_child_counters_are_left_untouched() -> None:
    jobs = jobs_of(root("a"), root("b"), dep("c", "a", "b", disabled=True))
    s = Scheduler(jobs)
    s.finish("a")
    s.finish("b")
    assert "c" not in s.stored
    # Re-enabled: the parent runs it ignored do not count.
    s.jobs["c"] = s.jobs["c"].model_copy(update={"disabled": False})
    assert s.finish("a") == []
    assert s.finish("b") == ["c"]


def test_manual_start_of_a_child_consumes_its_parents_successes() -> None:
    s = Scheduler(jobs_of(root("a"), root("b"), dep("c", "a", "b")))
    s.finish("a")
    s.stored["c"] = json.dumps(after_child_started(s.counters("c"), ["a", "b"]))
    assert s.finish("b") == []
    assert s.finish("a") == ["c"]


def test_stale_graph_edges_are_ignored() -> None:
    old = jobs_of(root("a"), root("b"), dep("c", "a"))
    graph = build_graph(old.values())
    now = dict(old, c=dep("c", "b"))  # c was re-parented after the graph was built
    assert on_parent_finished(graph, now, "a", True, False, {}) == ({}, [])


def test_unknown_parent_finishing_with_soft_error_fires_nothing() -> None:
    graph = build_graph([dep("c", "a")])
    assert on_parent_finished(graph, {}, "a", False, True, {}) == ({}, [])


READY_CASES = {
    "all parents succeeded": (dep("c", "a", "b"), {"a": 1, "b": 2}, True),
    "one parent missing": (dep("c", "a", "b"), {"a": 1}, False),
    "one parent at zero": (dep("c", "a", "b"), {"a": 1, "b": 0}, False),
    "single parent": (dep("c", "a"), {"a": 1}, True),
    "stale keys do not count": (dep("c", "a"), {"old": 5}, False),
    "disabled": (dep("c", "a", disabled=True), {"a": 1}, False),
    "scheduled job": (root("c"), {"a": 1}, False),
}


@pytest.mark.parametrize(("child", "counters", "ready"), READY_CASES.values(),
                         ids=READY_CASES.keys())
def test_ready_to_run(child: JobSpec, counters: dict[str, int], ready: bool) -> None:
    assert ready_to_run(child, counters) is ready


def test_record_parent_success_returns_a_new_mapping() -> None:
    counters = {"a": 1}
    assert record_parent_success(counters, "a") == {"a": 2}
    assert record_parent_success(counters, "b") == {"a": 1, "b": 1}
    assert counters == {"a": 1}


def test_after_child_started_resets_to_zero_and_drops_stale_parents() -> None:
    assert after_child_started({"a": 3, "b": 1, "old": 7}, ["a", "b", "a"]) == {"a": 0, "b": 0}


COUNTER_JSON_CASES = {
    "plain": ({"a": 2, "b": 1}, {"a": 2, "b": 1}),
    "zeros mean no progress": ({"a": 0}, {}),
    "not a mapping": ([1, 2], {}),
    "null": (None, {}),
    "bad values dropped": ({"a": "2", "b": True, "c": -1, "d": 1.5, "e": 1}, {"e": 1}),
}


@pytest.mark.parametrize(("stored", "counters"), COUNTER_JSON_CASES.values(),
                         ids=COUNTER_JSON_CASES.keys())
def test_counters_from_json(stored: Any, counters: dict[str, int]) -> None:
    assert counters_from_json(stored) == counters


# --------------------------------------------------------------------------- deletion


def parents_after_removal(jobs: list[JobSpec], name: str) -> dict[str, list[str] | None]:
    return {n: s.parents for n, s in remove_job(jobs_of(*jobs), name).items()}


REMOVE_CASES: dict[str, tuple[list[JobSpec], str, dict[str, list[str] | None]]] = {
    "middle of a chain hands its parent down": (
        [root("a"), dep("x", "a"), dep("b", "x")], "x", {"b": ["a"]}),
    "replaced in place, order kept": (
        [root("p"), root("q"), root("r"), dep("x", "p", "q"), dep("b", "r", "x")], "x",
        {"b": ["r", "p", "q"]}),
    "duplicates dropped, first occurrence kept": (
        [root("p"), root("q"), root("r"), dep("x", "p", "q"), dep("b", "q", "x", "r")], "x",
        {"b": ["q", "p", "r"]}),
    "every child is updated, others untouched": (
        [root("a"), dep("x", "a"), dep("b", "x"), dep("c", "x"), dep("d", "a")], "x",
        {"b": ["a"], "c": ["a"]}),
    "leaf removal changes nothing": ([root("a"), dep("x", "a")], "x", {}),
    "scheduled parent dropped when others remain": (
        [root("x"), root("y"), dep("b", "x", "y")], "x", {"b": ["y"]}),
}


@pytest.mark.parametrize(("jobs", "name", "expected"), REMOVE_CASES.values(),
                         ids=REMOVE_CASES.keys())
def test_remove_job_hands_children_the_parents(jobs: list[JobSpec], name: str,
                                               expected: dict[str, list[str] | None]) -> None:
    assert parents_after_removal(jobs, name) == expected


def test_removing_the_only_scheduled_parent_leaves_a_disabled_scheduled_child() -> None:
    x = root("x", schedule="R5/2026-03-01T02:00:00/P1D", scheduleTimeZone="Europe/Berlin")
    child = dep("b", "x", retries=5, description="keeps its own fields")
    updated = remove_job(jobs_of(x, child), "x")["b"]
    assert updated.parents is None
    assert (updated.schedule, updated.scheduleTimeZone) == (x.schedule, "Europe/Berlin")
    assert updated.disabled is True
    assert (updated.retries, updated.description) == (5, "keeps its own fields")


def test_removed_children_still_validate_as_api_submissions() -> None:
    jobs = jobs_of(root("a"), root("c"), dep("x", "a", "c"), dep("b", "x", "c"))
    for spec in remove_job(jobs, "x").values():
        again = parse_job(spec.model_dump(mode="json", by_alias=True, exclude_none=True))
        assert again == spec


def test_remove_unknown_job_raises_key_error() -> None:
    with pytest.raises(KeyError):
        remove_job(jobs_of(root("a")), "ghost")


# --------------------------------------------------------------------------- DOT and CSV

QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def dot_strings(line: str) -> list[str]:
    """The quoted strings of a DOT line, unescaped as Graphviz reads them."""
    return [re.sub(r"\\(.)", r"\1", s) for s in QUOTED.findall(line)]


def test_dot_has_nodes_edges_and_a_fill_per_state() -> None:
    g = build_graph([root("etl"), root("features"), dep("train", "etl", "features")])
    dot = to_dot(g, {"etl": "success", "features": "failure"}, {"train": "running"})
    lines = dot.splitlines()
    assert lines[0] == "digraph G {" and lines[-1] == "}" and dot.endswith("}\n")
    assert '  "etl" [label="etl", fillcolor="palegreen", tooltip="success, idle"];' in lines
    assert ('  "features" [label="features", fillcolor="lightcoral", '
            'tooltip="failure, idle"];') in lines
    assert ('  "train" [label="train", fillcolor="lightskyblue", '
            'tooltip="fresh, running"];') in lines
    assert lines.index('  "etl" -> "train";') < lines.index('  "features" -> "train";')


COLOUR_CASES = {
    "fresh by default": ({}, {}, "lightgrey"),
    "success": ({"j": "success"}, {}, "palegreen"),
    "failure": ({"j": "failure"}, {"j": "idle"}, "lightcoral"),
    "running beats last result": ({"j": "failure"}, {"j": "running"}, "lightskyblue"),
    "queued beats last result": ({"j": "success"}, {"j": "queued"}, "lightskyblue"),
    "combined mapping saying running": ({"j": "running"}, {}, "lightskyblue"),
}


@pytest.mark.parametrize(("state", "status", "colour"), COLOUR_CASES.values(),
                         ids=COLOUR_CASES.keys())
def test_dot_fill_colour(state: dict[str, str], status: dict[str, str], colour: str) -> None:
    dot = to_dot(build_graph([root("j")]), state, status)
    assert f'fillcolor="{colour}"' in dot
    assert colour in DOT_COLOURS.values()


@pytest.mark.parametrize("name", ["etl.v2-daily", "2026-report", "graph", "node", "a_b.c-d",
                                  'say "hi"', "back\\slash\\", "two\nlines", "naïve"])
def test_dot_quotes_and_escapes_names(name: str) -> None:
    g = build_graph([root("p"), raw(name, ["p"])])
    dot = to_dot(g, {name: "success"})
    node_line = next(ln for ln in dot.splitlines() if "label=" in ln and "palegreen" in ln)
    assert dot_strings(node_line)[:2] == [_graphviz_text(name)] * 2
    edge_line = next(ln for ln in dot.splitlines() if "->" in ln)
    assert dot_strings(edge_line) == ["p", _graphviz_text(name)]
    assert "\n" not in node_line


def _graphviz_text(name: str) -> str:
    # Newlines travel as the two characters \n (a line break in a label); all else is exact.
    return name.replace("\n", "n")


def test_dot_marks_disabled_jobs_dashed() -> None:
    dot = to_dot(build_graph([root("off", disabled=True)]), {})
    assert 'style="filled,dashed"' in dot


def test_dot_is_deterministic() -> None:
    jobs = [root("b"), root("a"), dep("d", "b", "a"), dep("c", "a")]
    assert to_dot(build_graph(jobs), {}) == to_dot(build_graph(list(reversed(jobs))), {})


@pytest.mark.parametrize(("state", "status"), [({"j": "ok"}, {}), ({}, {"j": "busy"})],
                         ids=["unknown state", "unknown status"])
def test_views_reject_unknown_states(state: dict[str, str], status: dict[str, str]) -> None:
    g = build_graph([root("j")])
    with pytest.raises(ValueError, match="unknown"):
        to_dot(g, state, status)
    with pytest.raises(ValueError, match="unknown"):
        to_csv(g, state, status)


def test_csv_lists_nodes_then_links_like_chronos() -> None:
    g = build_graph([root("etl"), root("features"), dep("train", "etl", "features")])
    text = to_csv(g, {"etl": "success", "features": "failure"}, {"train": "queued"})
    assert text == (
        "node,etl,success,idle\n"
        "node,features,failure,idle\n"
        "node,train,fresh,queued\n"
        "link,etl,train\n"
        "link,features,train\n"
    )


def test_csv_accepts_one_combined_status_mapping() -> None:
    g = build_graph([root("a"), dep("b", "a")])
    assert to_csv(g, {"a": "running", "b": "failure"}) == (
        "node,a,fresh,running\nnode,b,failure,idle\nlink,a,b\n")


def test_csv_of_an_empty_graph_is_empty() -> None:
    assert to_csv(build_graph([]), {}) == ""


T1 = datetime(2026, 1, 1, 1, tzinfo=UTC)
T2 = datetime(2026, 1, 1, 2, tzinfo=UTC)

LAST_STATE_CASES = {
    "never finished": (None, None, "fresh"),
    "only successes": (T1, None, "success"),
    "only errors": (None, T1, "failure"),
    "success after error": (T2, T1, "success"),
    "error after success": (T1, T2, "failure"),
    "tie counts as failure": (T1, T1, "failure"),
}


@pytest.mark.parametrize(("success", "error", "state"), LAST_STATE_CASES.values(),
                         ids=LAST_STATE_CASES.keys())
def test_last_state_of(success: datetime | None, error: datetime | None, state: str) -> None:
    assert last_state_of(success, error) == state


# --------------------------------------------------------------------------- properties


@st.composite
def dags(draw: st.DrawFn, min_size: int = 1, max_size: int = 8) -> dict[str, JobSpec]:
    """Random DAGs of valid jobs: job i may only have parents among jobs 0..i-1."""
    n = draw(st.integers(min_size, max_size))
    names = [f"j{i}" for i in range(n)]
    jobs: dict[str, JobSpec] = {}
    for i, name in enumerate(names):
        parents = draw(st.lists(st.sampled_from(names[:i]), unique=True)) if i else []
        jobs[name] = dep(name, *parents) if parents else root(name)
    return jobs


def graph_of(jobs: Mapping[str, JobSpec]) -> nx.DiGraph:
    return build_graph(jobs.values())


@settings(max_examples=150, deadline=None)
@given(dags())
def test_jobs_of_a_dag_validate_in_topological_order(jobs: dict[str, JobSpec]) -> None:
    seen: dict[str, JobSpec] = {}
    for name, spec in jobs.items():
        validate_job(spec, seen)
        seen[name] = spec


@settings(max_examples=300, deadline=None)
@given(dags(min_size=2), st.data())
def test_validation_never_accepts_a_cycle(jobs: dict[str, JobSpec], data: st.DataObject) -> None:
    names = sorted(jobs)
    target = data.draw(st.sampled_from(names))
    parents = data.draw(st.lists(st.sampled_from([n for n in names if n != target]),
                                 min_size=1, unique=True))
    replacement = dep(target, *parents)
    after = dict(jobs, **{target: replacement})
    acyclic = nx.is_directed_acyclic_graph(graph_of(after))
    try:
        validate_job(replacement, jobs)
    except DependencyError as e:
        assert not acyclic
        assert e.path == "/parents"
        cycle = e.message.removeprefix("would create a cycle: ").split(" -> ")
        assert cycle[0] == cycle[-1] == target
        assert all(graph_of(after).has_edge(a, b) for a, b in pairwise(cycle))
    else:
        assert acyclic


def reachable_pairs(jobs: Mapping[str, JobSpec], among: Sequence[str]) -> set[tuple[str, str]]:
    closure = nx.transitive_closure_dag(graph_of(jobs))
    return {(a, b) for a, b in closure.edges if a in among and b in among}


@settings(max_examples=200, deadline=None)
@given(dags(min_size=2), st.data())
def test_remove_job_preserves_reachability(jobs: dict[str, JobSpec],
                                           data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(sorted(jobs)))
    rest = [n for n in jobs if n != gone]
    after = {n: s for n, s in jobs.items() if n != gone}
    after.update(remove_job(jobs, gone))
    # a -> gone -> b before means a -> b after, and no new paths appear.
    assert reachable_pairs(after, rest) == reachable_pairs(jobs, rest)
    assert nx.is_directed_acyclic_graph(graph_of(after))
    for spec in after.values():
        assert bool(spec.parents) != bool(spec.schedule)
        assert gone not in (spec.parents or [])
