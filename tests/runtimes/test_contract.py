"""The Runtime contract suite: what every backend promises, run against each of them.

Backend-agnostic on purpose: everything goes through the Runtime protocol plus the fixture's
per-backend hook (``runtime_factory.task_that(...)`` starts a task that does something; the
factory says what can be seen of it), so a new backend only needs a ``conftest.BACKENDS``
entry. Where a backend runs no real process (Kubernetes on KWOK), the promise is checked on
what it launched (command, environment) instead of on the process's output.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import Observation, Output, Runtime, RuntimeUnavailable
from tests.runtimes.conftest import (
    RuntimeFactory,
    exits,
    handles_term,
    ignores_term,
    launch,
    make_app,
    make_task,
    observe_one,
    runs_forever,
    wait_for_state,
    wait_until,
    when_available,
)


def test_a_launched_task_is_observed_running(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(runs_forever())
    task = launch(rt, app, make_task(app))

    assert task.handle, "launch returns a handle"
    json.dumps(dict(task.handle))  # the handle is stored beside the task: JSON only
    obs = wait_for_state(rt, task, TaskState.RUNNING)
    assert obs.task_id == task.id
    assert obs.exit_code is None
    assert obs.started_at is not None
    assert dict(obs.handle) == dict(task.handle)


def test_exit_status_zero_is_finished(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(exits(0))
    task = launch(rt, app, make_task(app))

    obs = wait_for_state(rt, task, TaskState.FINISHED, TaskState.FAILED)
    assert obs.state is TaskState.FINISHED
    assert obs.exit_code == 0


def test_exit_status_three_is_failed_with_that_exit_code(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(exits(3))
    task = launch(rt, app, make_task(app))

    obs = wait_for_state(rt, task, TaskState.FINISHED, TaskState.FAILED)
    assert obs.state is TaskState.FAILED
    assert obs.exit_code == 3
    assert "3" in obs.message


def test_kill_lets_a_task_that_handles_term_exit_within_the_grace_period(
    runtime_factory: RuntimeFactory,
) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(handles_term(exit_code=0))
    task = launch(rt, app, make_task(app))
    runtime_factory.started(rt, task)

    start = time.monotonic()
    rt.kill(task, grace_seconds=10)
    assert time.monotonic() - start < 1, "kill does not block"
    obs = wait_for_state(rt, task, TaskState.KILLED, timeout=5)

    assert time.monotonic() - start < 5, "killed well within the 10 s grace period"
    assert obs.exit_code == 0, "the task's own exit status is kept (its TERM handler ran)"
    if runtime_factory.backend.runs_processes:
        assert "got-term" in runtime_factory.stdout(task)


def test_kill_forces_a_task_that_ignores_term_once_the_grace_period_is_over(
    runtime_factory: RuntimeFactory,
) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(ignores_term())
    task = launch(rt, app, make_task(app))
    runtime_factory.started(rt, task)

    grace = 2.0
    start = time.monotonic()
    rt.kill(task, grace_seconds=grace)
    time.sleep(0.5)
    assert observe_one(rt, task).state is TaskState.RUNNING, "TERM is ignored during grace"
    obs = wait_for_state(rt, task, TaskState.KILLED, timeout=grace + 6)

    assert time.monotonic() - start >= grace - runtime_factory.backend.kill_slack
    assert obs.exit_code == 137, "SIGKILL once the grace period was over"


def test_kill_of_a_task_that_is_gone_or_unknown_is_a_no_op(
    runtime_factory: RuntimeFactory,
) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(exits(0))
    done = launch(rt, app, make_task(app))
    wait_for_state(rt, done, TaskState.FINISHED)
    unknown = make_task(app)

    rt.kill(done, grace_seconds=1)
    rt.kill(unknown, grace_seconds=1)

    assert observe_one(rt, done).state is TaskState.FINISHED, "not turned into KILLED"
    assert observe_one(rt, unknown).state is TaskState.LOST


def test_a_kill_refused_while_the_backend_is_away_reaches_the_task_when_sent_again(
    runtime_factory: RuntimeFactory, tmp_path: Path,
) -> None:
    """Kill is idempotent and can be retried after an outage: what the orchestrator relies
    on when it re-sends kills it recorded while the runtime was unavailable."""
    with runtime_factory.outage(tmp_path / "outage") as link:
        rt = link.runtime
        app = runtime_factory.task_that(handles_term(exit_code=0))
        task = launch(rt, app, make_task(app))
        runtime_factory.started(rt, task)

        link.cut()
        if link.can_fail:
            with pytest.raises(RuntimeUnavailable):
                rt.kill(task, grace_seconds=10)
            link.restore()
            back = wait_until(when_available(lambda: observe_one(rt, task)), timeout=45,
                              interval=0.2, what="the runtime to be available again")
            assert back.state is TaskState.RUNNING, "the refused kill did not go out"
            wait_until(when_available(lambda: rt.kill(task, grace_seconds=10) or True),
                       timeout=30, interval=0.2, what="the re-sent kill to go through")
        else:  # nothing can be away: the kill goes through at once, and again is a no-op
            rt.kill(task, grace_seconds=10)
            link.restore()
            wait_for_state(rt, task, TaskState.KILLED)
            rt.kill(task, grace_seconds=10)
        obs = wait_until(when_available(lambda: _killed(rt, task)), timeout=15,
                         interval=0.1, what=f"{task.id} to be KILLED")
        assert obs.exit_code == 0, "the kill reached the task: its TERM handler ran"
        if runtime_factory.backend.runs_processes:
            assert runtime_factory.stdout(task).count("got-term") == 1


def _killed(rt: Runtime, task: Task) -> Observation | None:
    obs = observe_one(rt, task)
    return obs if obs.state is TaskState.KILLED else None


def test_the_task_environment_has_marathons_variables(
    runtime_factory: RuntimeFactory,
) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(
        exits(0),
        env={"GREETING": "hello world"},
        labels={"team": "infra"},
        portDefinitions=[{"port": 0, "name": "http"}, {"port": 0}],
    ).model_copy(update={"cmd": "env"})
    task = launch(rt, app, make_task(app, host="localhost", ports=(31005, 31006)))
    wait_for_state(rt, task, TaskState.FINISHED)

    given = runtime_factory.launched(task).env
    seen = [given]
    if runtime_factory.backend.runs_processes:  # and the process itself sees them
        printed = dict(line.split("=", 1)
                       for line in runtime_factory.stdout(task).splitlines() if "=" in line)
        assert "PATH" in printed
        seen.append(printed)
    for env in seen:
        assert env["PORT0"] == "31005"
        assert env["PORT1"] == "31006"
        assert env["PORT"] == "31005"
        assert env["PORT_HTTP"] == "31005"
        assert env["PORTS"] == "31005,31006"
        assert env["HOST"] == "localhost"
        assert env["MARATHON_APP_ID"] == "/test/app"
        assert env["MESOS_TASK_ID"] == task.id
        assert env["MARATHON_APP_LABEL_TEAM"] == "infra"
        assert env["GREETING"] == "hello world"


def test_cmd_runs_through_sh_exactly_as_given(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    cmd = "printf '%s|' \"a b\" c; echo; echo $HOST && exit 3"
    app = runtime_factory.task_that(exits(3)).model_copy(update={"cmd": cmd})
    task = launch(rt, app, make_task(app, host="localhost"))

    obs = wait_for_state(rt, task, TaskState.FAILED, TaskState.FINISHED)
    assert obs.state is TaskState.FAILED
    assert obs.exit_code == 3
    launched = runtime_factory.launched(task)
    assert (launched.command, launched.args) == (["/bin/sh", "-c", cmd], None)
    if runtime_factory.backend.runs_processes:
        assert runtime_factory.stdout(task) == "a b|c|\nlocalhost\n"


def test_args_run_without_a_shell(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    args = ["printf", "%s|", "$HOME", "a b", "; exit 3"]
    app = runtime_factory.task_that(exits(0)).model_copy(update={"cmd": None, "args": args})
    task = launch(rt, app, make_task(app))

    obs = wait_for_state(rt, task, TaskState.FINISHED, TaskState.FAILED)
    assert obs.state is TaskState.FINISHED
    launched = runtime_factory.launched(task)
    assert (launched.command, launched.args) == (None, args)
    if runtime_factory.backend.runs_processes:
        assert runtime_factory.stdout(task) == "$HOME|a b|; exit 3|"


def test_launching_an_id_twice_returns_the_same_handle_and_starts_one_process(
    runtime_factory: RuntimeFactory,
) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(runs_forever())
    task = make_task(app)

    first = launch(rt, app, task)
    second = launch(rt, app, task)
    after_restart = launch(runtime_factory(), app, task)

    assert dict(second.handle) == dict(first.handle)
    assert dict(after_restart.handle) == dict(first.handle)
    runtime_factory.started(rt, first)
    time.sleep(0.3)  # a twin, had one been started, would have shown by now
    assert runtime_factory.copies(task) == 1


def test_a_restarted_runtime_adopts_a_running_task(runtime_factory: RuntimeFactory) -> None:
    before = runtime_factory()
    app = runtime_factory.task_that(handles_term(exit_code=7))
    task = launch(before, app, make_task(app))
    runtime_factory.started(before, task)
    seen_before = observe_one(before, task)
    before.close()

    after = runtime_factory()
    adopted = observe_one(after, task)
    assert adopted.state is TaskState.RUNNING
    assert dict(adopted.handle) == dict(task.handle)
    assert adopted.started_at == seen_before.started_at

    after.kill(task, grace_seconds=5)
    obs = wait_for_state(after, task, TaskState.KILLED, timeout=5)
    assert obs.exit_code == 7, "the exit status is known although Dromos restarted"


def test_a_restarted_runtime_learns_how_tasks_ended_while_it_was_down(
    runtime_factory: RuntimeFactory,
) -> None:
    before = runtime_factory()
    app = runtime_factory.task_that(exits(5, after=0.3))
    task = launch(before, app, make_task(app))
    before.close()

    after = runtime_factory()
    obs = wait_for_state(after, task, TaskState.FAILED, TaskState.FINISHED)
    assert obs.state is TaskState.FAILED
    assert obs.exit_code == 5


def test_a_task_is_found_from_its_id_alone(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(runs_forever())
    task = launch(rt, app, make_task(app))

    # A new instance, and a task record that lost its handle (Dromos died mid-launch).
    obs = wait_for_state(runtime_factory(), task.with_(handle={}), TaskState.RUNNING)
    assert dict(obs.handle) == dict(task.handle)


def test_observe_reports_every_task_in_order(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(runs_forever())
    running = launch(rt, app, make_task(app))
    finished_app = runtime_factory.task_that(exits(0))
    finished = launch(rt, finished_app, make_task(finished_app))
    unknown = make_task(app)
    wait_for_state(rt, running, TaskState.RUNNING)
    wait_for_state(rt, finished, TaskState.FINISHED)

    observed = rt.observe([unknown, running, finished])

    assert [o.task_id for o in observed] == [unknown.id, running.id, finished.id]
    assert [o.state for o in observed] == [
        TaskState.LOST,
        TaskState.RUNNING,
        TaskState.FINISHED,
    ]


def test_check_command_runs_in_the_tasks_environment(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(runs_forever())
    task = launch(rt, app, make_task(app, ports=(31042,)))
    runtime_factory.started(rt, task)
    command = 'echo "$MESOS_TASK_ID $PORT0"; exit 2'

    argv, env = rt.check_command(task, command)

    assert argv[-3:] == ["/bin/sh", "-c", command], "a shell in the task's context runs it"
    assert "PATH" in env
    if runtime_factory.backend.runs_processes:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)
        assert done.returncode == 2, "the command's status is the check's result"
        assert done.stdout.strip() == f"{task.id} 31042"


def _stdout_of(output: Output) -> str:
    """What the task wrote to stdout, or to its combined output where streams are merged."""
    return "".join(c.text for c in output.chunks if c.stream in ("stdout", "output"))


def test_output_is_tailed_then_followed_with_a_cursor(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(runs_forever(prints_sample=True))
    task = launch(rt, app, make_task(app))
    runtime_factory.started(rt, task)
    wait_until(lambda: "line 5" in _stdout_of(rt.read_output(task, None, None)),
               what="the task's output")

    last = rt.read_output(task, 2, None)
    assert _stdout_of(last) == "line 4\nline 5\n"
    assert rt.read_output(task, 0, None).chunks
    assert _stdout_of(rt.read_output(task, 0, None)) == ""
    everything = "".join(c.text for c in rt.read_output(task, None, None).chunks)
    assert "simulated output" in everything and "line 3 (stderr)" in everything
    follow = rt.read_output(task, None, last.cursor)
    assert "".join(c.text for c in follow.chunks) == "", "nothing new since the cursor"
    assert rt.read_output(task, 2, "not-a-cursor") == last, "a bad cursor reads like none"

    unknown = rt.read_output(make_task(app), 5, None)
    assert all(c.text == "" for c in unknown.chunks), "no output of a task never started"


def test_sandbox_files_of_a_task_are_listed_and_read(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = runtime_factory.task_that(exits(0))
    task = launch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.FINISHED)

    files = rt.sandbox_files(task)
    assert files, "the runtime keeps something of a task it ran"
    assert [f.path for f in files] == sorted(f.path for f in files)
    first = files[0]
    data = rt.read_sandbox_file(task, first.path, 0, first.size + 10)
    assert len(data) == first.size
    assert rt.read_sandbox_file(task, first.path, 1, 2) == data[1:3]
    assert rt.read_sandbox_file(task, first.path, first.size + 5, 10) == b""
    for bad in ("../../etc/passwd", "/etc/passwd", "no-such-file"):
        with pytest.raises(LookupError):
            rt.read_sandbox_file(task, bad)
    assert rt.sandbox_files(make_task(app)) == [], "nothing of a task never started"


def test_nodes_have_capacity_and_tasks_a_probe_address(runtime: Runtime) -> None:
    nodes = runtime.nodes()
    assert nodes
    for node in nodes:
        assert node.hostname
        assert node.resources.cpus > 0
        assert node.resources.mem > 0
    app = make_app()
    assert runtime.probe_host(make_task(app))
