"""Marathon's rule that one path is an app or a group, never both, enforced by the app
commands under the orchestrator's lock (issue 11, item 7): two concurrent requests cannot
both pass it, whoever calls the orchestrator."""

from __future__ import annotations

import threading

import pytest

from scheduler.model.validation import SpecError
from scheduler.orchestrator import Orchestrator
from tests.factories import make_app


@pytest.mark.parametrize("first,second", [("/g", "/g/a"), ("/g/a", "/g")])
def test_an_app_id_that_is_or_lies_inside_another_app_is_refused(
        orch: Orchestrator, first: str, second: str) -> None:
    orch.create_app(make_app(first))
    with pytest.raises(SpecError) as err:
        orch.update_app(make_app(second))
    assert err.value.details[0][0] == "/id"
    with pytest.raises(SpecError):
        orch.create_app(make_app(second))
    assert [a.id for a in orch.apps()] == [first]


def test_a_declared_group_id_cannot_become_an_app(orch: Orchestrator) -> None:
    orch.store.put_meta("groups", ["/team"])
    with pytest.raises(SpecError):
        orch.create_app(make_app("/team"))
    orch.create_app(make_app("/team/web"))  # inside a group is fine


def test_concurrent_creates_of_an_app_and_one_inside_it_let_exactly_one_through(
        orch: Orchestrator) -> None:
    barrier = threading.Barrier(2)
    outcomes: dict[str, str] = {}

    def create(app_id: str) -> None:
        barrier.wait()
        try:
            orch.update_app(make_app(app_id))
            outcomes[app_id] = "stored"
        except SpecError:
            outcomes[app_id] = "refused"

    threads = [threading.Thread(target=create, args=(i,)) for i in ("/x", "/x/y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes.values()) == ["refused", "stored"]
    assert [a.id for a in orch.apps()] == [k for k, v in outcomes.items() if v == "stored"]
