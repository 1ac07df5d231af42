"""Ended tasks' sandboxes are garbage-collected (issue 11, defect 8: 680 directories after a
minute of churn, never removed): the pure decision, then the local runtime on real tasks."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scheduler.cli import build_parser
from scheduler.model.task import TaskState
from scheduler.runtimes.local import LocalRuntime
from scheduler.runtimes.sandbox_gc import (
    EndedSandbox,
    SandboxGcPolicy,
    sandboxes_to_remove,
    scan,
)
from tests.runtimes.conftest import (
    cleanup_local_state,
    launch,
    make_app,
    make_task,
    wait_for_state,
)

POLICY = SandboxGcPolicy(delay_seconds=3600, keep_per_app=2, min_age_seconds=60)


def ended(task_id: str, app_id: str, ago: float, now: float = 10_000.0) -> EndedSandbox:
    return EndedSandbox(task_id, app_id, now - ago)


def test_a_sandbox_goes_after_the_delay() -> None:
    sandboxes = [ended("a.1", "/a", 3599), ended("a.2", "/a", 3600), ended("b.1", "/b", 7200)]
    assert sandboxes_to_remove(sandboxes, 10_000.0, POLICY) == ["a.2", "b.1"]


def test_only_the_most_recent_per_app_are_kept_within_the_delay() -> None:
    sandboxes = [ended(f"a.{i}", "/a", 100 + i) for i in range(5)] + [
        ended("b.1", "/b", 500), ended("b.2", "/b", 600)]
    assert sandboxes_to_remove(sandboxes, 10_000.0, POLICY) == ["a.2", "a.3", "a.4"]


def test_a_sandbox_that_just_ended_is_kept_even_beyond_the_count() -> None:
    sandboxes = [ended(f"a.{i}", "/a", 10 + i) for i in range(4)] + [ended("a.old", "/a", 61)]
    assert sandboxes_to_remove(sandboxes, 10_000.0, POLICY) == ["a.old"]
    assert sandboxes_to_remove([], 0.0, POLICY) == []
    with pytest.raises(ValueError):
        SandboxGcPolicy(delay_seconds=-1)


def test_the_flags_set_the_policy() -> None:
    args = build_parser().parse_args(["serve", "--sandbox-gc-delay", "120",
                                      "--sandbox-keep", "0"])
    assert (args.sandbox_gc_delay, args.sandbox_keep) == (120.0, 0)
    defaults = build_parser().parse_args(["serve"])
    assert (defaults.sandbox_gc_delay, defaults.sandbox_keep) == (3600.0, 5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--sandbox-keep", "-1"])


def test_the_local_runtime_removes_ended_sandboxes_and_leaves_running_ones(
        tmp_path: Path) -> None:
    state = tmp_path / "state"
    # The default minimum age (60 s) keeps the collection that observe runs from removing
    # anything here; the test runs it with a later "now".
    rt = LocalRuntime(state, gc=SandboxGcPolicy(delay_seconds=3600, keep_per_app=1))
    runner_app = make_app(cmd="sleep 30")
    runner = make_task(runner_app)
    try:
        app = make_app(cmd="echo done")
        done = [launch(rt, app, make_task(app)) for _ in range(3)]
        for t in done:
            wait_for_state(rt, t, TaskState.FINISHED)
        runner = launch(rt, runner_app, runner)
        wait_for_state(rt, runner, TaskState.RUNNING)
        found = scan(rt.tasks_dir)
        assert sorted(s.task_id for s in found) == sorted(t.id for t in done)
        assert {s.app_id for s in found} == {app.id}
        newest = max(found, key=lambda s: s.ended_at).task_id

        assert rt.sandbox_gc.run(time.time()) == [], "all ended less than a minute ago"
        removed = rt.sandbox_gc.run(time.time() + 61)
        assert sorted(removed) == sorted(t.id for t in done if t.id != newest)
        left = sorted(p.name for p in rt.tasks_dir.iterdir())
        assert left == sorted([newest, runner.id])
        assert rt.sandbox_gc.run(time.time() + 3601) == [newest], "then the delay passes"
        assert wait_for_state(rt, runner, TaskState.RUNNING).state is TaskState.RUNNING
    finally:
        rt.kill(runner, 0)
        rt.close()
        cleanup_local_state(state)
