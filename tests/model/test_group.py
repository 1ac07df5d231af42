"""Group definitions: path resolution, validation paths, the tree."""

from __future__ import annotations

from typing import Any

import pytest

from scheduler.model.group import (
    ROOT,
    ancestors,
    is_under,
    parent_of,
    parse_group,
    resolve_path,
)
from scheduler.model.validation import SpecError


def app(app_id: str, **fields: Any) -> dict[str, Any]:
    return {"id": app_id, "cmd": "sleep 600", "cpus": 0.1, "mem": 16, **fields}


def details(e: pytest.ExceptionInfo[SpecError]) -> dict[str, list[str]]:
    return dict(e.value.details)


# ------------------------------------------------------------------ paths


@pytest.mark.parametrize(("raw", "base", "expected"), [
    ("web", "/prod", "/prod/web"),
    ("/other/web", "/prod", "/other/web"),
    ("../database", "/product/service", "/product/database"),
    ("specific/../../database", "/product/service", "/product/database"),
    ("./a/./b/", "/", "/a/b"),
    ("a", "/", "/a"),
])
def test_resolve_path_is_marathons_canonical_path(raw: str, base: str, expected: str) -> None:
    assert resolve_path(raw, base) == expected


def test_resolve_path_rejects_climbing_above_root_and_bad_segments() -> None:
    with pytest.raises(ValueError, match="above the root"):
        resolve_path("../../x", "/a")
    with pytest.raises(ValueError, match="segment"):
        resolve_path("Web", "/a")
    with pytest.raises(ValueError, match="reserved"):
        resolve_path("versions", "/a")
    with pytest.raises(ValueError):
        resolve_path(3, "/a")
    with pytest.raises(ValueError):
        resolve_path("..", "/a")  # the root is not an app id
    assert resolve_path("..", "/a", allow_root=True) == ROOT


def test_path_helpers() -> None:
    assert parent_of("/a/b/c") == "/a/b"
    assert parent_of("/a") == ROOT
    assert parent_of(ROOT) == ROOT
    assert ancestors("/a/b/c") == ["/a/b", "/a", ROOT]
    assert ancestors(ROOT) == []
    assert is_under("/a/b", "/a") and is_under("/a", ROOT)
    assert not is_under("/ab", "/a") and not is_under("/a", "/a") and not is_under(ROOT, ROOT)


# ------------------------------------------------------------------ parsing


def test_relative_ids_resolve_against_the_parent_group() -> None:
    g = parse_group({"id": "product", "groups": [
        {"id": "database", "apps": [app("mongo"), app("/product/database/mysql")]},
        {"id": "service", "dependencies": ["../database"],
         "apps": [app("rails", dependencies=["play", "../database/mongo"]), app("play")]},
    ]})
    assert g.id == "/product"
    assert [s.id for s in g.groups] == ["/product/database", "/product/service"]
    assert [a.id for a in g.transitive_apps()] == [
        "/product/database/mongo", "/product/database/mysql",
        "/product/service/rails", "/product/service/play"]
    service = g.find("/product/service")
    assert service is not None
    assert service.dependencies == ("/product/database",)
    assert service.apps[0].dependencies == ["/product/service/play", "/product/database/mongo"]


def test_top_level_id_defaults_to_and_resolves_against_the_base() -> None:
    assert parse_group({"apps": [app("web")]}, "/prod").apps[0].id == "/prod/web"
    assert parse_group({"id": "eu"}, "/prod").id == "/prod/eu"
    assert parse_group({}, ROOT).id == ROOT


def test_app_validation_errors_carry_their_path_in_the_group() -> None:
    with pytest.raises(SpecError) as e:
        parse_group({"id": "/g", "apps": [app("a", cpus=-1)], "groups": [
            {"id": "x", "apps": []},
            {"id": "y", "apps": [app("ok"), app("b", mem="lots")]},
        ]})
    got = details(e)
    assert set(got) == {"/apps/0/cpus", "/groups/1/apps/1/mem"}


def test_whole_app_errors_point_at_the_app() -> None:
    with pytest.raises(SpecError) as e:
        parse_group({"id": "/g", "apps": [{"id": "a"}, "not an app"]})
    got = details(e)
    assert "cmd" in " ".join(got["/apps/0"])
    assert got["/apps/1"] == ["must be a JSON object"]


def test_apps_and_groups_must_be_direct_children() -> None:
    with pytest.raises(SpecError) as e:
        parse_group({"id": "/g", "apps": [app("/other/web"), app("deep/web")],
                     "groups": [{"id": "/g/x", "apps": []}, {"id": "/g/x/y"}]})
    got = details(e)
    assert set(got) == {"/apps/0/id", "/apps/1/id", "/groups/1/id"}
    assert "not a direct child of group /g" in got["/apps/0/id"][0]


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(SpecError) as e:
        parse_group({"id": "/g", "apps": [app("a"), app("/g/a"), app("x")],
                     "groups": [{"id": "x"}, {"id": "y"}, {"id": "/g/y"}]})
    got = details(e)
    assert set(got) == {"/apps/1/id", "/groups/0/id", "/groups/2/id"}
    assert "used twice" in got["/apps/1/id"][0]


def test_missing_and_invalid_ids_and_dependencies() -> None:
    with pytest.raises(SpecError) as e:
        parse_group({"id": "/g", "dependencies": ["../../x", "Bad"],
                     "apps": [{"cmd": "x"}, app("a", dependencies=["../../up"])],
                     "groups": [{"apps": []}]})
    got = details(e)
    assert set(got) == {"/dependencies/0", "/dependencies/1", "/apps/0/id",
                        "/apps/1/dependencies/0", "/groups/0/id"}


def test_unknown_fields_and_pods_are_rejected_read_only_fields_ignored() -> None:
    with pytest.raises(SpecError) as e:
        parse_group({"id": "/g", "colour": "red", "pods": [{"id": "p"}],
                     "groups": [{"id": "x", "scaleBy": 2}]})
    assert set(details(e)) == {"/colour", "/pods", "/groups/0/scaleBy"}
    g = parse_group({"id": "/g", "version": "2020-01-01T00:00:00.000Z", "pods": [],
                     "enforceRole": False,
                     "apps": [app("a", version="x", tasksRunning=3, deployments=[])]})
    assert g.version is None and g.apps[0].version is None


def test_not_an_object() -> None:
    with pytest.raises(SpecError) as e:
        parse_group([1, 2])
    assert details(e) == {"": ["must be a JSON object"]}


def test_self_dependency_is_an_app_error() -> None:
    with pytest.raises(SpecError) as e:
        parse_group({"id": "/g", "apps": [app("a", dependencies=["a"])]})
    assert "itself" in details(e)["/apps/0"][0]


def test_definition_round_trips_and_pointers() -> None:
    g = parse_group({"id": "/p", "dependencies": ["/db"], "apps": [app("a", instances=3)],
                     "groups": [{"id": "s", "apps": [app("b", dependencies=["../a"])]}]})
    again = parse_group(g.to_definition(), "/p")
    assert again == g
    assert g.pointers() == {"/p": "", "/p/a": "/apps/0", "/p/s": "/groups/0",
                            "/p/s/b": "/groups/0/apps/0"}
    assert [x.id for x in g.walk()] == ["/p", "/p/s"]
    assert g.find("/nope") is None
