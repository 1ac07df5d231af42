"""The app path index answers the app/group overlap check as the list-walking rule does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from scheduler.model.app_paths import AppPaths
from scheduler.model.group import app_group_overlap

segment = st.sampled_from(["a", "b", "c"])
path = st.lists(segment, min_size=1, max_size=3).map(lambda s: "/" + "/".join(s))


@given(apps=st.lists(path, max_size=6), removed=st.lists(path, max_size=3),
       groups=st.lists(path, max_size=2), candidate=path)
def test_same_answer_as_app_group_overlap(apps: list[str], removed: list[str],
                                          groups: list[str], candidate: str) -> None:
    index = AppPaths(apps)
    for r in removed:
        index.remove(r)
    remaining = sorted(set(apps) - set(removed))
    assert len(index) == len(remaining)
    expected = app_group_overlap(candidate, remaining, groups)
    got = index.overlap(candidate, groups)
    assert (got is None) == (expected is None)
    if expected is not None and got is not None:
        # Which ancestor app is named may differ when the generated apps already overlap.
        assert ("inside app" in got) == ("inside app" in expected)


def test_messages_name_the_clash() -> None:
    index = AppPaths(["/prod/web", "/prod/db", "/solo"])
    assert index.overlap("/prod", []) == (
        "/prod is a group (it holds app /prod/db); an app cannot have its id")
    assert index.overlap("/solo/x", []) == (
        "/solo/x would be inside app /solo, and an app cannot hold others")
    assert index.overlap("/g", ["/g"]) == "/g is a group; an app cannot have its id"
    assert index.overlap("/prod/web", []) is None  # the app itself: a replacement
    index.remove("/prod/web")
    index.remove("/prod/db")
    assert index.overlap("/prod", []) is None
    assert "/prod/web" not in index
