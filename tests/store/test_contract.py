"""The StateStore contract (scheduler/store/base.py), run against every implementation.

Every test takes the ``store`` fixture from conftest.py, which is parametrised over the
implementations; nothing here may depend on which one it gets.
"""

from __future__ import annotations

import threading
from datetime import UTC, timedelta, timezone
from typing import Any

import pytest

from scheduler.model.job import JobRun, RunStatus, Trigger, scheduled_run_id
from scheduler.model.task import TaskState
from scheduler.store.base import AlreadyExists, StateStore
from tests.store.conftest import (
    T0,
    make_app,
    make_job,
    make_rich_app,
    make_rich_job,
    make_run,
    make_scheduled_job,
    stored_task,
    version_at,
)


class Boom(Exception):
    """Raised by tests to abort an atomic block."""


# --- apps ----------------------------------------------------------------------------------


def test_unknown_app_reads_as_none_and_empty(store: StateStore) -> None:
    assert store.get_app("/nope") is None
    assert store.list_apps() == []
    assert store.list_app_versions("/nope") == []
    assert store.get_app_version("/nope", version_at(0)) is None


def test_create_app_round_trips_every_field(store: StateStore) -> None:
    spec = make_rich_app()
    store.create_app(spec)
    got = store.get_app("/prod/web")
    assert got == spec
    assert got is not None and got.version == version_at(0)
    assert store.list_app_versions("/prod/web") == [version_at(0)]
    assert store.get_app_version("/prod/web", version_at(0)) == spec


def test_create_app_twice_raises_already_exists_and_keeps_the_first(store: StateStore) -> None:
    store.create_app(make_app(instances=1))
    with pytest.raises(AlreadyExists):
        store.create_app(make_app(version=version_at(1), instances=5))
    got = store.get_app("/web")
    assert got is not None and got.instances == 1
    assert store.list_app_versions("/web") == [version_at(0)]


@pytest.mark.parametrize("method", ["create_app", "put_app"])
def test_storing_an_app_without_a_version_raises_value_error(
    store: StateStore, method: str
) -> None:
    spec = make_app().model_copy(update={"version": None})
    with pytest.raises(ValueError, match="version"):
        getattr(store, method)(spec)
    assert store.get_app("/web") is None
    assert store.list_app_versions("/web") == []


def test_put_app_creates_a_missing_app(store: StateStore) -> None:
    store.put_app(make_app())
    assert store.get_app("/web") == make_app()
    assert store.list_app_versions("/web") == [version_at(0)]


def test_put_app_replaces_current_and_keeps_every_version_newest_first(
    store: StateStore,
) -> None:
    store.create_app(make_app(version=version_at(0), instances=1))
    store.put_app(make_app(version=version_at(60), instances=2))
    store.put_app(make_app(version=version_at(120), instances=3))
    current = store.get_app("/web")
    assert current is not None and current.instances == 3
    assert store.list_app_versions("/web") == [version_at(120), version_at(60), version_at(0)]
    old = store.get_app_version("/web", version_at(60))
    assert old is not None and old.instances == 2 and old.version == version_at(60)


def test_versions_are_ordered_by_age_not_by_insertion(store: StateStore) -> None:
    for seconds in (60, 3600, 0, 86400 * 40, 1.5):
        store.put_app(make_app(version=version_at(seconds)))
    assert store.list_app_versions("/web") == [
        version_at(86400 * 40),
        version_at(3600),
        version_at(60),
        version_at(1.5),
        version_at(0),
    ]
    # The current definition is the last one put, even though it is not the newest version.
    current = store.get_app("/web")
    assert current is not None and current.version == version_at(1.5)


def test_versions_written_in_other_iso_forms_are_ordered_as_instants(store: StateStore) -> None:
    # Same instant or order as text would get these wrong: +01:00 is an hour *earlier* in UTC,
    # and a version without milliseconds sorts before one with them as text.
    store.put_app(make_app(version="2026-01-01T00:30:00.000Z"))
    store.put_app(make_app(version="2026-01-01T01:00:00+01:00"))  # 00:00 UTC
    store.put_app(make_app(version="2026-01-01T00:30:00.5Z"))
    store.put_app(make_app(version="2026-01-01T00:30:00Z"))
    assert store.list_app_versions("/web") == [
        "2026-01-01T00:30:00.5Z",
        "2026-01-01T00:30:00Z",  # the same instant as .000Z; ties go by text, descending
        "2026-01-01T00:30:00.000Z",
        "2026-01-01T01:00:00+01:00",
    ]


def test_putting_the_same_version_twice_overwrites_it(store: StateStore) -> None:
    store.put_app(make_app(version=version_at(0), instances=1))
    store.put_app(make_app(version=version_at(0), instances=7))
    assert store.list_app_versions("/web") == [version_at(0)]
    at_v0 = store.get_app_version("/web", version_at(0))
    assert at_v0 is not None and at_v0.instances == 7
    current = store.get_app("/web")
    assert current is not None and current.instances == 7


def test_get_app_version_of_an_unknown_version_is_none(store: StateStore) -> None:
    store.create_app(make_app())
    assert store.get_app_version("/web", version_at(5)) is None
    assert store.get_app_version("/other", version_at(0)) is None


def test_versions_belong_to_one_app(store: StateStore) -> None:
    store.create_app(make_app("/a", version_at(0)))
    store.create_app(make_app("/b", version_at(10)))
    assert store.list_app_versions("/a") == [version_at(0)]
    assert store.get_app_version("/a", version_at(10)) is None


def test_list_apps_is_ordered_by_id(store: StateStore) -> None:
    for app_id in ("/web", "/prod/db", "/a", "/prod/api"):
        store.create_app(make_app(app_id))
    assert [a.id for a in store.list_apps()] == ["/a", "/prod/api", "/prod/db", "/web"]


def test_list_apps_returns_current_definitions(store: StateStore) -> None:
    store.create_app(make_app("/a", version_at(0), instances=1))
    store.put_app(make_app("/a", version_at(1), instances=4))
    assert [(a.id, a.instances) for a in store.list_apps()] == [("/a", 4)]


def test_delete_app_removes_it_and_all_its_versions(store: StateStore) -> None:
    store.create_app(make_app("/web", version_at(0)))
    store.put_app(make_app("/web", version_at(1)))
    store.create_app(make_app("/keep", version_at(0)))
    assert store.delete_app("/web") is True
    assert store.get_app("/web") is None
    assert store.list_app_versions("/web") == []
    assert store.get_app_version("/web", version_at(0)) is None
    assert [a.id for a in store.list_apps()] == ["/keep"]
    assert store.list_app_versions("/keep") == [version_at(0)]
    assert store.delete_app("/web") is False


def test_an_app_created_again_after_delete_starts_a_fresh_history(store: StateStore) -> None:
    store.create_app(make_app(version=version_at(0)))
    store.put_app(make_app(version=version_at(1)))
    store.delete_app("/web")
    store.create_app(make_app(version=version_at(9)))
    assert store.list_app_versions("/web") == [version_at(9)]


def test_delete_of_an_unknown_app_is_false(store: StateStore) -> None:
    assert store.delete_app("/never") is False


def test_callers_cannot_change_stored_apps_by_mutating_objects(store: StateStore) -> None:
    # pydantic's frozen models still hold mutable dicts; a store must not share them.
    spec = make_app(env={"A": "1"})
    store.create_app(spec)
    spec.env["A"] = "changed-after-put"
    got = store.get_app("/web")
    assert got is not None
    got.env["A"] = "changed-after-get"
    again = store.get_app("/web")
    assert again is not None and again.env == {"A": "1"}
    at_v0 = store.get_app_version("/web", version_at(0))
    assert at_v0 is not None and at_v0.env == {"A": "1"}


# --- tasks ---------------------------------------------------------------------------------


def test_unknown_task_reads_as_none(store: StateStore) -> None:
    assert store.get_task("web.none") is None
    assert store.list_tasks() == []
    assert store.list_tasks("/web") == []


def test_put_task_round_trips_every_field(store: StateStore) -> None:
    task = stored_task(
        ports=(31000, 31001),
        started_at=T0 + timedelta(seconds=2),
        handle={"pid": 4242, "start_time": 12345.5, "nested": {"k": [1, 2]}},
        exit_code=None,
        message="started",
        kill_requested_at=T0 + timedelta(seconds=3),
        finished_at=T0 + timedelta(seconds=4),
        state=TaskState.KILLING,
    )
    store.put_task(task)
    assert store.get_task("web.1") == task


def test_put_task_replaces_the_task_with_the_same_id(store: StateStore) -> None:
    store.put_task(stored_task(state=TaskState.STAGING))
    store.put_task(stored_task(state=TaskState.FAILED, exit_code=3, staged_after=9))
    got = store.get_task("web.1")
    assert got is not None and got.state is TaskState.FAILED and got.exit_code == 3
    assert [t.id for t in store.list_tasks()] == ["web.1"]
    assert store.list_tasks()[0].staged_at == T0 + timedelta(seconds=9)


def test_list_tasks_orders_by_staged_at_then_id(store: StateStore) -> None:
    store.put_task(stored_task("web.c", staged_after=5))
    store.put_task(stored_task("web.b", staged_after=1))
    store.put_task(stored_task("web.a", staged_after=5))
    store.put_task(stored_task("web.z", staged_after=0.5))
    # Staged across a day boundary and before T0: ordered by time, not by text of the id.
    store.put_task(stored_task("web.y", staged_after=-86400))
    assert [t.id for t in store.list_tasks()] == ["web.y", "web.z", "web.b", "web.a", "web.c"]


def test_list_tasks_filters_by_app(store: StateStore) -> None:
    store.put_task(stored_task("web.2", "/web", staged_after=2))
    store.put_task(stored_task("db.1", "/db", staged_after=1))
    store.put_task(stored_task("web.1", "/web", staged_after=3))
    store.put_task(stored_task("web_x.1", "/web/x", staged_after=0))
    assert [t.id for t in store.list_tasks("/web")] == ["web.2", "web.1"]
    assert [t.id for t in store.list_tasks("/db")] == ["db.1"]
    assert store.list_tasks("/nope") == []
    assert len(store.list_tasks()) == 4


def test_a_task_moved_to_another_app_is_listed_under_the_new_one(store: StateStore) -> None:
    store.put_task(stored_task("t.1", "/a"))
    store.put_task(stored_task("t.1", "/b"))
    assert store.list_tasks("/a") == []
    assert [t.id for t in store.list_tasks("/b")] == ["t.1"]


def test_delete_task(store: StateStore) -> None:
    store.put_task(stored_task("web.1"))
    store.put_task(stored_task("web.2"))
    assert store.delete_task("web.1") is True
    assert store.get_task("web.1") is None
    assert [t.id for t in store.list_tasks()] == ["web.2"]
    assert store.delete_task("web.1") is False


def test_callers_cannot_change_stored_tasks_by_mutating_objects(store: StateStore) -> None:
    handle: dict[str, Any] = {"pid": 1}
    store.put_task(stored_task(handle=handle))
    handle["pid"] = 2
    got = store.get_task("web.1")
    assert got is not None and dict(got.handle) == {"pid": 1}
    assert isinstance(got.handle, dict)
    got.handle["pid"] = 3
    again = store.get_task("web.1")
    assert again is not None and dict(again.handle) == {"pid": 1}


# --- meta ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"leader": "node-1", "epoch": 3, "tags": ["a", "b"], "nested": {"x": None, "y": 1.5}},
        ["a", 1, 2.5, True, None],
        "text with \u00e9 and \u2603",
        0,
        -7,
        2.25,
        False,
        "",
        [],
        {},
    ],
    ids=repr,
)
def test_meta_round_trips_json_values(store: StateStore, value: Any) -> None:
    store.put_meta("k", value)
    assert store.get_meta("k") == value
    assert type(store.get_meta("k")) is type(value)


def test_absent_meta_is_none(store: StateStore) -> None:
    assert store.get_meta("missing") is None


def test_put_meta_overwrites(store: StateStore) -> None:
    store.put_meta("k", 1)
    store.put_meta("k", {"v": 2})
    assert store.get_meta("k") == {"v": 2}


def test_put_meta_none_deletes_the_key(store: StateStore) -> None:
    store.put_meta("k", {"v": 1})
    store.put_meta("other", 1)
    store.put_meta("k", None)
    assert store.get_meta("k") is None
    assert store.get_meta("other") == 1
    store.put_meta("never-set", None)  # deleting an absent key is not an error
    assert store.get_meta("never-set") is None


def test_meta_that_is_not_json_is_refused_and_nothing_stored(store: StateStore) -> None:
    store.put_meta("k", 1)
    with pytest.raises(TypeError):
        store.put_meta("k", object())
    assert store.get_meta("k") == 1


def test_callers_cannot_change_stored_meta_by_mutating_objects(store: StateStore) -> None:
    value: dict[str, Any] = {"list": [1]}
    store.put_meta("k", value)
    value["list"].append(2)
    got = store.get_meta("k")
    assert isinstance(got, dict)
    got["list"].append(3)
    assert store.get_meta("k") == {"list": [1]}


# --- jobs ----------------------------------------------------------------------------------


def test_unknown_jobs_and_runs_read_as_none_and_empty(store: StateStore) -> None:
    assert store.get_job("etl") is None
    assert store.list_jobs() == []
    assert store.get_run("etl:1") is None
    assert store.list_runs() == []
    assert store.list_runs("etl") == []
    assert store.delete_job("etl") is False


@pytest.mark.parametrize("factory", [make_job, make_rich_job], ids=["minimal", "rich"])
def test_put_job_round_trips_every_field(store: StateStore, factory: Any) -> None:
    job = factory("etl")
    store.put_job(job)
    assert store.get_job("etl") == job
    assert store.list_jobs() == [job]
    got = store.get_job("etl")
    assert got is not None and got.to_chronos() == job.to_chronos()


@pytest.mark.parametrize(
    "schedule, tz",
    [
        ("R/2026-01-01T00:00:00Z/PT1H", ""),
        ("R5/2026-03-29T02:30:00/P1D", "Europe/Berlin"),  # wall clock in the job's zone
        ("cron: 0 2 * * 1-5", "America/New_York"),
    ],
)
def test_scheduled_jobs_round_trip(store: StateStore, schedule: str, tz: str) -> None:
    job = make_scheduled_job("nightly", schedule, tz, epsilon="PT10M")
    store.put_job(job)
    got = store.get_job("nightly")
    assert got == job
    assert got is not None and got.schedule == schedule and got.parents is None
    assert got.scheduleTimeZone == tz and got.to_chronos() == job.to_chronos()


def test_jobs_of_both_kinds_list_together(store: StateStore) -> None:
    store.put_job(make_scheduled_job("b-nightly"))
    store.put_job(make_job("a-child", parents=["b-nightly"]))
    assert store.list_jobs() == [
        make_job("a-child", parents=["b-nightly"]),
        make_scheduled_job("b-nightly"),
    ]
    # A job may change its trigger kind on replace.
    store.put_job(make_scheduled_job("a-child"))
    got = store.get_job("a-child")
    assert got is not None and got.parents is None and got.schedule is not None


def test_put_job_replaces_the_job_and_keeps_its_runs(store: StateStore) -> None:
    store.put_job(make_job("etl", retries=1))
    store.create_run(make_run("etl:1"))
    store.put_job(make_job("etl", retries=4, command="echo v2"))
    got = store.get_job("etl")
    assert got is not None and got.retries == 4 and got.command == "echo v2"
    assert [j.name for j in store.list_jobs()] == ["etl"]
    assert [r.id for r in store.list_runs("etl")] == ["etl:1"]


def test_list_jobs_is_ordered_by_name(store: StateStore) -> None:
    for name in ("etl", "b.report", "a-load", "B", "etl_2"):
        store.put_job(make_job(name))
    assert [j.name for j in store.list_jobs()] == ["B", "a-load", "b.report", "etl", "etl_2"]


def test_delete_job_deletes_its_runs_and_nothing_else(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    store.put_job(make_job("report"))
    store.create_run(make_run("etl:1", "etl"))
    store.put_run(make_run("etl:2", "etl", created_after=1, status=RunStatus.SUCCESS))
    store.create_run(make_run("report:1", "report"))
    assert store.delete_job("etl") is True
    assert store.get_job("etl") is None
    assert store.get_run("etl:1") is None and store.get_run("etl:2") is None
    assert store.list_runs("etl") == []
    assert [r.id for r in store.list_runs()] == ["report:1"]
    assert [j.name for j in store.list_jobs()] == ["report"]
    assert store.delete_job("etl") is False
    # A job created again under the same name starts without history.
    store.put_job(make_job("etl"))
    assert store.list_runs("etl") == []


def test_a_job_that_strict_json_cannot_hold_is_refused_and_nothing_stored(
    store: StateStore,
) -> None:
    store.put_job(make_job("etl", cpus=1))
    with pytest.raises(ValueError):
        store.put_job(make_job("etl", cpus=float("inf")))
    got = store.get_job("etl")
    assert got is not None and got.cpus == 1


def test_callers_cannot_change_stored_jobs_by_mutating_objects(store: StateStore) -> None:
    job = make_job("etl", arguments=["a"], uris=["u1"], fetch=[{"uri": "f"}])
    store.put_job(job)
    job.arguments.append("changed-after-put")
    job.fetch[0]["uri"] = "changed-after-put"
    got = store.get_job("etl")
    assert got is not None
    got.uris.append("changed-after-get")
    assert got.parents is not None
    got.parents.append("changed-after-get")
    again = store.get_job("etl")
    assert again is not None
    assert (again.arguments, again.uris, again.fetch) == (["a"], ["u1"], [{"uri": "f"}])
    assert again.parents == ["root"]
    listed = store.list_jobs()[0]
    assert listed.arguments == ["a"]


# --- runs ----------------------------------------------------------------------------------


def test_create_run_round_trips_every_field(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    run = JobRun(
        id=scheduled_run_id("etl", T0 + timedelta(hours=1)),
        job="etl",
        trigger=Trigger.SCHEDULE,
        status=RunStatus.RUNNING,
        created_at=T0 + timedelta(seconds=1.5),
        scheduled_for=T0 + timedelta(hours=1),
        attempt=2,
        task_id="etl:20260101T010000Z.retry2",
        host="node-1",
        handle={"pid": 42, "nested": {"k": [1, 2.5, None, "x"]}},
        started_at=T0 + timedelta(seconds=2),
        finished_at=T0 + timedelta(seconds=3.25),
        exit_code=137,
        message="killed by \u2603",
        not_before=T0 + timedelta(seconds=10),
        kill_requested_at=T0 + timedelta(seconds=3),
    )
    assert store.create_run(run) is True
    assert store.get_run(run.id) == run
    assert store.list_runs() == [run]


def test_runs_keep_millisecond_precision_in_every_store(store: StateStore) -> None:
    # What SQLite keeps is what every store keeps: Task/JobRun JSON has milliseconds.
    store.put_job(make_job("etl"))
    store.create_run(make_run("etl:1", created_at=T0 + timedelta(seconds=1, microseconds=1999),
                                finished_at=T0))
    got = store.get_run("etl:1")
    assert got is not None
    assert got.created_at == T0 + timedelta(seconds=1.001)
    assert got.created_at.tzinfo is not None


def test_create_run_first_writer_wins(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    first = make_run("etl:1", status=RunStatus.QUEUED, message="first")
    assert store.create_run(first) is True
    assert store.create_run(make_run("etl:1", status=RunStatus.FAILED, message="second")) is False
    assert store.get_run("etl:1") == first
    assert store.list_runs(statuses=frozenset({RunStatus.FAILED})) == []


def test_a_run_for_an_unknown_job_raises_key_error_and_stores_nothing(
    store: StateStore,
) -> None:
    with pytest.raises(KeyError):
        store.create_run(make_run("ghost:1", "ghost"))
    with pytest.raises(KeyError):
        store.put_run(make_run("ghost:1", "ghost"))
    assert store.get_run("ghost:1") is None
    # Also when the id exists under a job that does: the job is checked first.
    store.put_job(make_job("etl"))
    store.create_run(make_run("etl:1", "etl"))
    with pytest.raises(KeyError):
        store.create_run(make_run("etl:1", "ghost"))
    with pytest.raises(KeyError):
        store.put_run(make_run("etl:1", "ghost", status=RunStatus.FAILED))
    assert store.get_run("etl:1") == make_run("etl:1", "etl")


def test_key_error_for_an_unknown_job_inside_atomic_aborts_the_block(store: StateStore) -> None:
    with pytest.raises(KeyError), store.atomic():
        store.put_meta("written-first", True)
        store.put_job(make_job("etl"))
        store.create_run(make_run("ghost:1", "ghost"))
    assert store.get_meta("written-first") is None
    assert store.get_job("etl") is None


def test_put_run_inserts_and_replaces(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    store.put_run(make_run("etl:1", status=RunStatus.QUEUED))
    updated = make_run(
        "etl:1", status=RunStatus.SUCCESS, created_after=5, exit_code=0,
        started_at=T0 + timedelta(seconds=6), finished_at=T0 + timedelta(seconds=7),
    )
    store.put_run(updated)
    assert store.get_run("etl:1") == updated
    assert store.list_runs() == [updated]
    # The columns list_runs filters by follow the update.
    assert store.list_runs(statuses=frozenset({RunStatus.QUEUED})) == []
    assert store.list_runs(statuses=frozenset({RunStatus.SUCCESS})) == [updated]
    assert store.create_run(make_run("etl:1")) is False


def test_put_run_can_move_a_run_to_another_job(store: StateStore) -> None:
    store.put_job(make_job("a"))
    store.put_job(make_job("b"))
    store.put_run(make_run("r", "a"))
    store.put_run(make_run("r", "b"))
    assert store.list_runs("a") == []
    assert [r.id for r in store.list_runs("b")] == ["r"]
    store.delete_job("a")
    assert store.get_run("r") is not None


def _ids(runs: list[JobRun]) -> list[str]:
    return [r.id for r in runs]


def test_list_runs_is_newest_first_then_id_descending(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    store.put_job(make_job("other"))
    for run_id, job, after in [
        ("etl:b", "etl", 5),
        ("etl:a", "etl", 5),
        ("etl:c", "etl", 5),
        ("other:1", "other", 3),
        ("etl:old", "etl", -86400),  # a day before T0
        ("etl:new", "etl", 86400 * 40),
        ("etl:ms1", "etl", 3.001),
        ("etl:sub", "etl", 3.0004),  # the same millisecond as 3.0 once stored
        ("etl:zero", "etl", 3.0),
    ]:
        store.create_run(make_run(run_id, job, created_after=after))
    assert _ids(store.list_runs()) == [
        "etl:new", "etl:c", "etl:b", "etl:a", "etl:ms1", "other:1", "etl:zero", "etl:sub",
        "etl:old",
    ]
    assert _ids(store.list_runs("etl"))[:2] == ["etl:new", "etl:c"]
    assert "other:1" not in _ids(store.list_runs("etl"))


def test_list_runs_compares_created_at_as_instants(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    plus_two = timezone(timedelta(hours=2))
    # 01:00+02:00 is 23:00 UTC the day before: older than T0 although its text is larger.
    store.create_run(make_run("etl:tz", created_at=(T0 + timedelta(hours=1)).astimezone(
        plus_two).replace(hour=1)))
    store.create_run(make_run("etl:utc", created_at=T0.astimezone(UTC)))
    assert _ids(store.list_runs()) == ["etl:utc", "etl:tz"]


def test_list_runs_filters_by_job_statuses_and_limit(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    store.put_job(make_job("etl2"))  # a name that "etl" is a prefix of
    statuses = list(RunStatus)
    for i in range(12):
        status = statuses[i % len(statuses)]
        store.create_run(make_run(f"etl:{i:02d}", "etl", created_after=i, status=status))
        store.create_run(make_run(f"etl2:{i:02d}", "etl2", created_after=i, status=status))
    active = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
    assert _ids(store.list_runs("etl", active)) == ["etl:07", "etl:06", "etl:01", "etl:00"]
    assert len(store.list_runs(statuses=active)) == 8
    assert _ids(store.list_runs("etl", frozenset({RunStatus.KILLED}))) == ["etl:11", "etl:05"]
    assert store.list_runs("etl", frozenset()) == []
    assert store.list_runs(statuses=frozenset()) == []
    assert _ids(store.list_runs("etl", limit=3)) == ["etl:11", "etl:10", "etl:09"]
    assert _ids(store.list_runs("etl", active, limit=1)) == ["etl:07"]
    assert store.list_runs("etl", limit=0) == []
    assert len(store.list_runs("etl", limit=100)) == 12
    assert len(store.list_runs(limit=5)) == 5
    assert _ids(store.list_runs(limit=2)) == ["etl:11", "etl2:11"]  # ":" sorts after "2"
    assert store.list_runs("nope") == []
    assert store.list_runs("etl:00") == []  # a run id is not a job name


def test_list_runs_accepts_status_strings_and_refuses_unknown_ones(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    store.create_run(make_run("etl:1", status=RunStatus.RUNNING))
    running: Any = frozenset({"running"})
    assert _ids(store.list_runs(statuses=running)) == ["etl:1"]
    bogus: Any = frozenset({"sleeping"})
    with pytest.raises(ValueError):
        store.list_runs(statuses=bogus)


def test_a_negative_limit_is_refused(store: StateStore) -> None:
    with pytest.raises(ValueError, match="limit"):
        store.list_runs(limit=-1)


def test_callers_cannot_change_stored_runs_by_mutating_objects(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    handle: dict[str, Any] = {"pid": 1, "nested": {"list": [1]}}
    store.create_run(make_run("etl:1", handle=handle))
    handle["pid"] = 2
    handle["nested"]["list"].append(2)
    got = store.get_run("etl:1")
    assert got is not None and isinstance(got.handle, dict)
    got.handle["pid"] = 3
    got.handle["nested"]["list"].append(3)
    listed = store.list_runs()[0]
    assert isinstance(listed.handle, dict)
    listed.handle["pid"] = 4
    again = store.get_run("etl:1")
    assert again is not None and again.handle == {"pid": 1, "nested": {"list": [1]}}


# --- atomic --------------------------------------------------------------------------------


def _write_one_of_everything(store: StateStore, suffix: str) -> None:
    store.create_app(make_app(f"/app-{suffix}"))
    store.put_task(stored_task(f"task.{suffix}", f"/app-{suffix}"))
    store.put_job(make_job(f"job-{suffix}"))
    assert store.create_run(make_run(f"job-{suffix}:c", f"job-{suffix}")) is True
    store.put_run(make_run(f"job-{suffix}:p", f"job-{suffix}", status=RunStatus.RUNNING))
    store.put_meta(f"meta-{suffix}", {"s": suffix})


def _assert_one_of_everything(store: StateStore, suffix: str, present: bool) -> None:
    assert (store.get_app(f"/app-{suffix}") is not None) is present
    assert (store.list_app_versions(f"/app-{suffix}") != []) is present
    assert (store.get_task(f"task.{suffix}") is not None) is present
    assert (store.get_job(f"job-{suffix}") is not None) is present
    assert (store.get_run(f"job-{suffix}:c") is not None) is present
    assert (store.get_run(f"job-{suffix}:p") is not None) is present
    assert len(store.list_runs(f"job-{suffix}")) == (2 if present else 0)
    assert (store.get_meta(f"meta-{suffix}") is not None) is present


def test_atomic_commits_all_writes_together(store: StateStore) -> None:
    with store.atomic():
        _write_one_of_everything(store, "x")
    _assert_one_of_everything(store, "x", present=True)


def test_reads_inside_atomic_see_the_block_s_own_writes(store: StateStore) -> None:
    store.create_app(make_app(version=version_at(0), instances=1))
    with store.atomic():
        store.put_app(make_app(version=version_at(1), instances=2))
        current = store.get_app("/web")
        assert current is not None and current.instances == 2
        assert store.list_app_versions("/web") == [version_at(1), version_at(0)]
        store.put_task(stored_task())
        assert [t.id for t in store.list_tasks("/web")] == ["web.1"]
        store.put_meta("k", 1)
        assert store.get_meta("k") == 1
        assert store.delete_app("/web") is True
        assert store.get_app("/web") is None
        assert store.list_apps() == []
        store.put_job(make_job("etl"))
        assert [j.name for j in store.list_jobs()] == ["etl"]
        assert store.create_run(make_run("etl:1")) is True
        assert store.create_run(make_run("etl:1")) is False
        store.put_run(make_run("etl:1", status=RunStatus.RUNNING))
        assert [r.status for r in store.list_runs("etl")] == [RunStatus.RUNNING]
        assert store.delete_job("etl") is True
        assert store.get_run("etl:1") is None


def test_an_exception_in_atomic_rolls_back_every_write(store: StateStore) -> None:
    # State before the block: an app with one version, a task, a meta key.
    store.create_app(make_app("/web", version_at(0), instances=1))
    store.put_task(stored_task("web.1", state=TaskState.RUNNING))
    store.put_meta("counter", 1)
    store.create_app(make_app("/doomed"))
    store.put_job(make_job("etl", retries=1))
    store.put_run(make_run("etl:1", "etl", status=RunStatus.RUNNING))
    store.put_job(make_job("doomed-job"))
    store.put_run(make_run("doomed-job:1", "doomed-job"))

    with pytest.raises(Boom), store.atomic():
        _write_one_of_everything(store, "new")
        store.put_app(make_app("/web", version_at(1), instances=9))
        store.put_task(stored_task("web.1", state=TaskState.KILLED))
        store.put_meta("counter", 2)
        store.delete_app("/doomed")
        store.delete_task("web.1")
        store.put_job(make_job("etl", retries=7))
        store.put_run(make_run("etl:1", "etl", status=RunStatus.FAILED))
        assert store.create_run(make_run("etl:2", "etl")) is True
        store.delete_job("doomed-job")
        raise Boom

    _assert_one_of_everything(store, "new", present=False)
    web = store.get_app("/web")
    assert web is not None and web.instances == 1
    assert store.list_app_versions("/web") == [version_at(0)]
    task = store.get_task("web.1")
    assert task is not None and task.state is TaskState.RUNNING
    assert store.get_meta("counter") == 1
    assert store.get_app("/doomed") is not None
    assert store.list_app_versions("/doomed") == [version_at(0)]
    assert [a.id for a in store.list_apps()] == ["/doomed", "/web"]
    etl = store.get_job("etl")
    assert etl is not None and etl.retries == 1
    assert [j.name for j in store.list_jobs()] == ["doomed-job", "etl"]
    run = store.get_run("etl:1")
    assert run is not None and run.status is RunStatus.RUNNING
    assert store.list_runs(statuses=frozenset({RunStatus.FAILED})) == []
    assert store.get_run("etl:2") is None
    assert store.get_run("doomed-job:1") == make_run("doomed-job:1", "doomed-job")
    # The rolled-back create_run left no trace: the occurrence can still be created once.
    assert store.create_run(make_run("etl:2", "etl")) is True


def test_already_exists_inside_atomic_aborts_the_whole_block(store: StateStore) -> None:
    store.create_app(make_app("/web"))
    with pytest.raises(AlreadyExists), store.atomic():
        store.put_meta("written-first", True)
        store.create_app(make_app("/web"))
    assert store.get_meta("written-first") is None


def test_the_store_is_usable_after_a_rollback(store: StateStore) -> None:
    with pytest.raises(Boom), store.atomic():
        store.put_meta("k", 1)
        raise Boom
    store.put_meta("k", 2)
    with store.atomic():
        store.put_meta("j", 3)
    assert (store.get_meta("k"), store.get_meta("j")) == (2, 3)


def test_nested_atomic_commits_with_the_outer_block(store: StateStore) -> None:
    with store.atomic():
        store.put_meta("outer", 1)
        with store.atomic():
            store.put_meta("inner", 2)
            with store.atomic():
                store.put_meta("innermost", 3)
        assert store.get_meta("inner") == 2
    assert [store.get_meta(k) for k in ("outer", "inner", "innermost")] == [1, 2, 3]


def test_an_outer_failure_rolls_back_inner_blocks_that_completed(store: StateStore) -> None:
    with pytest.raises(Boom), store.atomic():
        store.put_meta("outer", 1)
        with store.atomic():
            _write_one_of_everything(store, "inner")
        raise Boom
    assert store.get_meta("outer") is None
    _assert_one_of_everything(store, "inner", present=False)


def test_an_inner_failure_caught_by_the_outer_block_undoes_only_the_inner(
    store: StateStore,
) -> None:
    with store.atomic():
        store.put_meta("outer-before", 1)
        try:
            with store.atomic():
                _write_one_of_everything(store, "inner")
                raise Boom
        except Boom:
            pass
        _assert_one_of_everything(store, "inner", present=False)
        store.put_meta("outer-after", 2)
    assert store.get_meta("outer-before") == 1
    assert store.get_meta("outer-after") == 2
    _assert_one_of_everything(store, "inner", present=False)


def test_an_inner_failure_that_propagates_rolls_back_everything(store: StateStore) -> None:
    with pytest.raises(Boom), store.atomic():
        store.put_meta("outer", 1)
        with store.atomic():
            store.put_meta("inner", 2)
            raise Boom
    assert store.get_meta("outer") is None
    assert store.get_meta("inner") is None


def test_other_threads_never_see_uncommitted_writes(store: StateStore) -> None:
    # Thread B reads while thread A is inside a block that will roll back. Whether B waits or
    # not, it must never observe A's write (a dirty read).
    inside = threading.Event()
    seen: list[object] = []

    def reader() -> None:
        inside.wait(5)
        seen.append(store.get_app("/ghost"))
        seen.append(store.get_meta("ghost"))

    b = threading.Thread(target=reader)
    b.start()
    with pytest.raises(Boom), store.atomic():
        store.create_app(make_app("/ghost"))
        store.put_meta("ghost", 1)
        inside.set()
        b.join(0.3)  # let B try to read now; a correct store makes it wait
        raise Boom
    b.join(5)
    assert not b.is_alive()
    assert seen == [None, None]


# --- concurrency ---------------------------------------------------------------------------

THREADS = 8
WRITES_PER_THREAD = 25


def _run_threads(target: Any) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def run(n: int) -> None:
        try:
            start.wait(5)
            target(n)
        except BaseException as e:  # reported to the main thread below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_concurrent_writers_lose_nothing(store: StateStore) -> None:
    def writer(n: int) -> None:
        for i in range(WRITES_PER_THREAD):
            store.put_app(make_app(f"/t{n}/a{i}", version_at(i)))
            store.put_app(make_app("/shared", version_at(n * 1000 + i)))
            store.put_task(stored_task(f"t{n}.{i}", f"/t{n}/a{i}", staged_after=i))
            store.put_meta(f"t{n}-{i}", [n, i])

    _run_threads(writer)

    apps = {a.id for a in store.list_apps()}
    expected = {f"/t{n}/a{i}" for n in range(THREADS) for i in range(WRITES_PER_THREAD)}
    assert apps == expected | {"/shared"}
    assert len(store.list_tasks()) == THREADS * WRITES_PER_THREAD
    assert len(store.list_app_versions("/shared")) == THREADS * WRITES_PER_THREAD
    for n in range(THREADS):
        for i in range(WRITES_PER_THREAD):
            assert store.get_meta(f"t{n}-{i}") == [n, i]


def test_concurrent_read_modify_write_in_atomic_loses_no_update(store: StateStore) -> None:
    # The classic lost update: without isolation two threads read 5 and both write 6.
    store.put_meta("counter", 0)

    def incrementer(_: int) -> None:
        for _i in range(WRITES_PER_THREAD):
            with store.atomic():
                value = store.get_meta("counter")
                assert isinstance(value, int)
                store.put_meta("counter", value + 1)

    _run_threads(incrementer)
    assert store.get_meta("counter") == THREADS * WRITES_PER_THREAD


def test_concurrent_atomic_blocks_that_fail_leave_nothing(store: StateStore) -> None:
    def mixed(n: int) -> None:
        for i in range(WRITES_PER_THREAD):
            try:
                with store.atomic():
                    _write_one_of_everything(store, f"{n}-{i}")
                    if i % 2:
                        raise Boom
            except Boom:
                pass

    _run_threads(mixed)
    for n in range(THREADS):
        for i in range(WRITES_PER_THREAD):
            _assert_one_of_everything(store, f"{n}-{i}", present=i % 2 == 0)


def test_concurrent_create_run_of_one_id_has_exactly_one_winner(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    occurrence = scheduled_run_id("etl", T0)
    results: list[tuple[int, bool]] = []

    def creator(n: int) -> None:
        won = store.create_run(make_run(occurrence, message=f"thread {n}"))
        results.append((n, won))  # list.append is atomic

    _run_threads(creator)
    winners = [n for n, won in results if won]
    assert len(results) == THREADS and len(winners) == 1
    got = store.get_run(occurrence)
    assert got is not None and got.message == f"thread {winners[0]}"
    assert _ids(store.list_runs()) == [occurrence]


def test_concurrent_create_run_of_many_ids_has_one_winner_each(store: StateStore) -> None:
    store.put_job(make_job("etl"))
    wins: list[str] = []

    def creator(n: int) -> None:
        # Every thread tries every id, starting at a different one.
        for i in range(WRITES_PER_THREAD):
            run_id = f"etl:{(i + n) % WRITES_PER_THREAD:02d}"
            if store.create_run(make_run(run_id, created_after=i, message=str(n))):
                wins.append(run_id)

    _run_threads(creator)
    assert sorted(wins) == [f"etl:{i:02d}" for i in range(WRITES_PER_THREAD)]
    assert len(store.list_runs("etl")) == WRITES_PER_THREAD


# --- lifecycle -----------------------------------------------------------------------------


def test_close_is_idempotent_and_a_closed_store_refuses_calls(store: StateStore) -> None:
    store.put_meta("k", 1)
    store.close()
    store.close()
    with pytest.raises(RuntimeError):
        store.get_meta("k")
    with pytest.raises(RuntimeError):
        store.put_meta("k", 2)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.put_job(make_job()),
        lambda s: s.get_job("etl"),
        lambda s: s.list_jobs(),
        lambda s: s.delete_job("etl"),
        lambda s: s.create_run(make_run()),
        lambda s: s.put_run(make_run()),
        lambda s: s.get_run("etl:1"),
        lambda s: s.list_runs(),
        lambda s: s.list_runs("etl", frozenset(), 0),
    ],
)
def test_a_closed_store_refuses_job_and_run_calls(store: StateStore, call: Any) -> None:
    store.put_job(make_job())
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        call(store)
