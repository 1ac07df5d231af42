"""Pure group logic: inherited dependencies, cycles, start/stop waves, scaleBy."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.model.app import AppSpec
from scheduler.model.group import parse_group
from scheduler.model.validation import SpecError
from scheduler.services.group_plan import (
    MAX_INSTANCES,
    check_acyclic,
    effective_apps,
    expand,
    find_cycle,
    resolve_dependencies,
    scale_by,
    scale_factor,
    scaled_instances,
    start_order,
    stop_order,
)
from tests.factories import make_app


def app(app_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": app_id, "cmd": "sleep 600", "cpus": 0.1, "mem": 16, **fields}


def deps_of(apps: list[AppSpec]) -> dict[str, list[str]]:
    return {a.id: a.dependencies for a in apps}


PRODUCT = {"id": "/product", "groups": [
    {"id": "database", "apps": [app("mongo"), app("mysql")]},
    {"id": "service", "dependencies": ["../database"],
     "apps": [app("rails", dependencies=["play"]), app("play")],
     "groups": [{"id": "workers", "apps": [app("queue")]}]},
]}


def test_expand_an_app_or_a_group_path() -> None:
    ids = {"/db/a", "/db/b", "/dbx/c", "/web"}
    assert expand("/web", ids) == ["/web"]
    assert expand("/db", ids) == ["/db/a", "/db/b"]
    assert expand("/nothing", ids) == []
    assert resolve_dependencies("/db/a", ["/db", "/web", "/db/b"], ids) == ["/db/b", "/web"]


def test_group_dependencies_are_inherited_and_expanded_to_app_ids() -> None:
    apps = effective_apps(parse_group(PRODUCT), known_apps=[])
    assert deps_of(apps) == {
        "/product/database/mongo": [],
        "/product/database/mysql": [],
        # own dependencies first, then inherited ones, each expanded and deduplicated
        "/product/service/rails": ["/product/service/play", "/product/database/mongo",
                                   "/product/database/mysql"],
        "/product/service/play": ["/product/database/mongo", "/product/database/mysql"],
        # inherited through two levels
        "/product/service/workers/queue": ["/product/database/mongo",
                                           "/product/database/mysql"],
    }


def test_dependencies_outside_the_tree_and_from_groups_above() -> None:
    g = parse_group({"id": "/svc", "apps": [app("web", dependencies=["/db"])]})
    apps = effective_apps(g, known_apps=["/db/pg", "/cache/redis"], inherited=["/cache"])
    assert deps_of(apps) == {"/svc/web": ["/db/pg", "/cache/redis"]}


def test_a_group_depending_on_itself_gives_apps_their_siblings_never_themselves() -> None:
    g = parse_group({"id": "/g", "dependencies": ["/g/base"],
                     "groups": [{"id": "base", "apps": [app("a")]}], "apps": [app("b")]})
    assert deps_of(effective_apps(g, [])) == {"/g/b": ["/g/base/a"], "/g/base/a": []}


def test_unknown_dependencies_are_422_at_their_path() -> None:
    g = parse_group({"id": "/g", "dependencies": ["/nope"],
                     "groups": [{"id": "s", "apps": [app("a", dependencies=["/missing"])]}]})
    with pytest.raises(SpecError) as e:
        effective_apps(g, known_apps=["/other"])
    assert dict(e.value.details) == {
        "/dependencies/0": ["unknown dependency /nope: no app or group has this id"],
        "/groups/0/apps/0/dependencies/0": [
            "unknown dependency /missing: no app or group has this id"],
    }


def test_empty_known_groups_and_stale_inherited_dependencies_expand_to_nothing() -> None:
    g = parse_group({"id": "/g", "apps": [app("a", dependencies=["/empty"])]})
    apps = effective_apps(g, known_apps=[], known_groups=["/empty"], inherited=["/gone"])
    assert deps_of(apps) == {"/g/a": []}


def test_cycles_are_reported_readably_with_a_path() -> None:
    a = make_app("/a", dependencies=["/b"])
    b = make_app("/b", dependencies=["/c"])
    c = make_app("/c", dependencies=["/a"])
    assert find_cycle([b, c, a]) == ["/a", "/b", "/c", "/a"]
    assert find_cycle([a, b]) is None
    with pytest.raises(SpecError) as e:
        check_acyclic([a, b, c], {"/b": "/groups/0/apps/1"})
    assert e.value.details == [("/groups/0/apps/1/dependencies",
                                ["dependency cycle: /a -> /b -> /c -> /a"])]
    with pytest.raises(SpecError) as e:
        check_acyclic([a, b, c])
    assert e.value.details[0][0] == ""


def test_cycles_through_group_paths_are_found() -> None:
    a = make_app("/x/a", dependencies=["/y"])
    b = make_app("/y/b", dependencies=["/x"])
    assert find_cycle([a, b]) == ["/x/a", "/y/b", "/x/a"]


def test_start_and_stop_waves() -> None:
    # db <- api <- web, db <- worker; cache alone
    apps = [make_app("/db"), make_app("/cache"), make_app("/api", dependencies=["/db"]),
            make_app("/worker", dependencies=["/db"]),
            make_app("/web", dependencies=["/api", "/cache"])]
    assert start_order(apps) == [["/cache", "/db"], ["/api", "/worker"], ["/web"]]
    # each dependency stops as soon as its last dependent has stopped
    assert stop_order(apps) == [["/web", "/worker"], ["/api", "/cache"], ["/db"]]
    assert start_order([]) == []


def test_orders_only_count_dependencies_among_the_given_apps() -> None:
    apps = [make_app("/a", dependencies=["/elsewhere"]), make_app("/b", dependencies=["/a"])]
    assert start_order(apps) == [["/a"], ["/b"]]


def test_orders_refuse_cycles() -> None:
    with pytest.raises(SpecError, match="Object is not valid"):
        start_order([make_app("/a", dependencies=["/b"]), make_app("/b", dependencies=["/a"])])


@st.composite
def dags(draw: st.DrawFn) -> list[AppSpec]:
    n = draw(st.integers(1, 12))
    apps = []
    for i in range(n):
        deps = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        apps.append(make_app(f"/a{i}", dependencies=[f"/a{d}" for d in deps]))
    return draw(st.permutations(apps))


@given(dags())
@settings(max_examples=60, deadline=None)
def test_waves_respect_every_dependency_and_are_independent_inside(apps: list[AppSpec]) -> None:
    for order, reverse in ((start_order(apps), False), (stop_order(apps), True)):
        wave_of = {a: i for i, wave in enumerate(order) for a in wave}
        assert sorted(wave_of) == sorted(a.id for a in apps)
        for a in apps:
            for d in a.dependencies:
                if reverse:  # dependents stop strictly before their dependencies
                    assert wave_of[a.id] < wave_of[d]
                else:  # dependencies start strictly before their dependents
                    assert wave_of[d] < wave_of[a.id]


@pytest.mark.parametrize(("instances", "factor", "expected"), [
    (3, 1.5, 5),  # 4.5 rounds up (Marathon: ceil)
    (2, 2, 4),
    (10, 0.3, 3),  # exact decimal: binary floats would say 3.0000000000000004 -> 4
    (3, 1.1, 4),  # 3.3 -> 4
    (1, 0.5, 1),  # a running app never scales to zero unless the factor is 0
    (4, 0, 0),
    (0, 5, 0),
])
def test_scaled_instances_round_up(instances: int, factor: float, expected: int) -> None:
    assert scaled_instances(instances, scale_factor(factor)) == expected


def test_scale_by_changes_only_instances() -> None:
    a, b = make_app("/g/a", instances=2), make_app("/g/b", instances=3)
    out = scale_by([a, b], 1.5)
    assert [x.instances for x in out] == [3, 5]
    assert out[0].model_dump(exclude={"instances"}) == a.model_dump(exclude={"instances"})
    same = scale_by([a], 1)
    assert same[0] is a


@pytest.mark.parametrize("bad", [-1, "2", True, None, float("nan"), float("inf")])
def test_invalid_scale_factors_are_422(bad: Any) -> None:
    with pytest.raises(SpecError) as e:
        scale_by([make_app("/a")], bad)
    assert e.value.details[0][0] == "/scaleBy"


def test_scale_beyond_marathons_int_is_refused() -> None:
    with pytest.raises(SpecError, match="Object is not valid"):
        scale_by([make_app("/a", instances=2)], MAX_INSTANCES)
    assert scale_factor(10**30) == Decimal(10**30)
