"""The Runtime contract suite: what every backend promises, run against each of them.

Backend-agnostic on purpose: everything goes through the Runtime protocol plus the fixture's
``stdout`` helper, so docker and kubernetes only need a new entry in ``conftest.BACKENDS``.
"""

from __future__ import annotations

import json
import subprocess
import time

from scheduler.model.task import TaskState
from scheduler.runtimes.base import Runtime
from tests.runtimes.conftest import (
    RuntimeFactory,
    launch,
    make_app,
    make_task,
    observe_one,
    wait_for_output,
    wait_for_state,
)

# Loops of short sleeps rather than one long sleep: a shell runs its trap only once the
# foreground command returns.
LOOP = "while :; do sleep 0.1; done"


def test_a_launched_task_is_observed_running(runtime: Runtime) -> None:
    app = make_app(cmd="sleep 30")
    task = launch(runtime, app, make_task(app))

    assert task.handle, "launch returns a handle"
    json.dumps(dict(task.handle))  # the handle is stored beside the task: JSON only
    obs = wait_for_state(runtime, task, TaskState.RUNNING)
    assert obs.task_id == task.id
    assert obs.exit_code is None
    assert obs.started_at is not None
    assert dict(obs.handle) == dict(task.handle)


def test_exit_status_zero_is_finished(runtime: Runtime) -> None:
    app = make_app(cmd="exit 0")
    task = launch(runtime, app, make_task(app))

    obs = wait_for_state(runtime, task, TaskState.FINISHED, TaskState.FAILED)
    assert obs.state is TaskState.FINISHED
    assert obs.exit_code == 0


def test_exit_status_three_is_failed_with_that_exit_code(runtime: Runtime) -> None:
    app = make_app(cmd="exit 3")
    task = launch(runtime, app, make_task(app))

    obs = wait_for_state(runtime, task, TaskState.FINISHED, TaskState.FAILED)
    assert obs.state is TaskState.FAILED
    assert obs.exit_code == 3
    assert "3" in obs.message


def test_kill_lets_a_task_that_handles_term_exit_within_the_grace_period(
    runtime_factory: RuntimeFactory,
) -> None:
    rt = runtime_factory()
    app = make_app(cmd=f"trap 'echo got-term; exit 0' TERM; echo ready; {LOOP}")
    task = launch(rt, app, make_task(app))
    wait_for_output(runtime_factory, task, "ready")

    start = time.monotonic()
    rt.kill(task, grace_seconds=10)
    assert time.monotonic() - start < 1, "kill does not block"
    obs = wait_for_state(rt, task, TaskState.KILLED, timeout=5)

    assert time.monotonic() - start < 5, "killed well within the 10 s grace period"
    assert "got-term" in runtime_factory.stdout(task)
    assert obs.exit_code == 0, "the task's own exit status is kept"


def test_kill_forces_a_task_that_ignores_term_once_the_grace_period_is_over(
    runtime_factory: RuntimeFactory,
) -> None:
    rt = runtime_factory()
    app = make_app(cmd=f"trap '' TERM; echo ready; {LOOP}")
    task = launch(rt, app, make_task(app))
    wait_for_output(runtime_factory, task, "ready")

    start = time.monotonic()
    rt.kill(task, grace_seconds=1.0)
    time.sleep(0.5)
    assert observe_one(rt, task).state is TaskState.RUNNING, "TERM is ignored during grace"
    wait_for_state(rt, task, TaskState.KILLED, timeout=6)

    assert time.monotonic() - start >= 0.9


def test_kill_of_a_task_that_is_gone_or_unknown_is_a_no_op(runtime: Runtime) -> None:
    app = make_app(cmd="exit 0")
    done = launch(runtime, app, make_task(app))
    wait_for_state(runtime, done, TaskState.FINISHED)
    unknown = make_task(app)

    runtime.kill(done, grace_seconds=1)
    runtime.kill(unknown, grace_seconds=1)

    assert observe_one(runtime, done).state is TaskState.FINISHED, "not turned into KILLED"
    assert observe_one(runtime, unknown).state is TaskState.LOST


def test_the_task_environment_has_marathons_variables(
    runtime_factory: RuntimeFactory,
) -> None:
    rt = runtime_factory()
    app = make_app(
        cmd="env",
        env={"GREETING": "hello world"},
        labels={"team": "infra"},
        portDefinitions=[{"port": 0, "name": "http"}, {"port": 0}],
    )
    task = launch(rt, app, make_task(app, host="node-a.example", ports=(31005, 31006)))
    wait_for_state(rt, task, TaskState.FINISHED)

    env = dict(
        line.split("=", 1) for line in runtime_factory.stdout(task).splitlines() if "=" in line
    )
    assert env["PORT0"] == "31005"
    assert env["PORT1"] == "31006"
    assert env["PORT"] == "31005"
    assert env["PORT_HTTP"] == "31005"
    assert env["PORTS"] == "31005,31006"
    assert env["HOST"] == "node-a.example"
    assert env["MARATHON_APP_ID"] == "/test/app"
    assert env["MESOS_TASK_ID"] == task.id
    assert env["MARATHON_APP_LABEL_TEAM"] == "infra"
    assert env["GREETING"] == "hello world"
    assert "PATH" in env


def test_cmd_runs_through_sh_exactly_as_given(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = make_app(cmd="printf '%s|' \"a b\" c; echo; echo $HOST && exit 3")
    task = launch(rt, app, make_task(app, host="node-a.example"))

    obs = wait_for_state(rt, task, TaskState.FAILED, TaskState.FINISHED)
    assert obs.state is TaskState.FAILED
    assert obs.exit_code == 3
    assert runtime_factory.stdout(task) == "a b|c|\nnode-a.example\n"


def test_args_run_without_a_shell(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = make_app(args=["printf", "%s|", "$HOME", "a b", "; exit 3"])
    task = launch(rt, app, make_task(app))

    obs = wait_for_state(rt, task, TaskState.FINISHED, TaskState.FAILED)
    assert obs.state is TaskState.FINISHED
    assert runtime_factory.stdout(task) == "$HOME|a b|; exit 3|"


def test_launching_an_id_twice_returns_the_same_handle_and_starts_one_process(
    runtime_factory: RuntimeFactory,
) -> None:
    rt = runtime_factory()
    app = make_app(cmd=f"echo started; {LOOP}")
    task = make_task(app)

    first = launch(rt, app, task)
    second = launch(rt, app, task)
    after_restart = launch(runtime_factory(), app, task)

    assert dict(second.handle) == dict(first.handle)
    assert dict(after_restart.handle) == dict(first.handle)
    wait_for_output(runtime_factory, task, "started")
    time.sleep(0.3)  # a twin, had one been started, would have printed by now
    assert runtime_factory.stdout(task).count("started") == 1


def test_a_restarted_runtime_adopts_a_running_task(runtime_factory: RuntimeFactory) -> None:
    before = runtime_factory()
    app = make_app(cmd=f"trap 'exit 7' TERM; echo ready; {LOOP}")
    task = launch(before, app, make_task(app))
    wait_for_output(runtime_factory, task, "ready")
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
    app = make_app(cmd="sleep 0.3; exit 5")
    task = launch(before, app, make_task(app))
    before.close()

    after = runtime_factory()
    obs = wait_for_state(after, task, TaskState.FAILED, TaskState.FINISHED)
    assert obs.state is TaskState.FAILED
    assert obs.exit_code == 5


def test_a_task_is_found_from_its_id_alone(runtime_factory: RuntimeFactory) -> None:
    rt = runtime_factory()
    app = make_app(cmd="sleep 30")
    task = launch(rt, app, make_task(app))

    # A new instance, and a task record that lost its handle (Dromos died mid-launch).
    obs = observe_one(runtime_factory(), task.with_(handle={}))
    assert obs.state is TaskState.RUNNING
    assert dict(obs.handle) == dict(task.handle)


def test_observe_reports_every_task_in_order(runtime: Runtime) -> None:
    app = make_app(cmd="sleep 30")
    running = launch(runtime, app, make_task(app))
    finished_app = make_app(cmd="exit 0")
    finished = launch(runtime, finished_app, make_task(finished_app))
    unknown = make_task(app)
    wait_for_state(runtime, finished, TaskState.FINISHED)

    observed = runtime.observe([unknown, running, finished])

    assert [o.task_id for o in observed] == [unknown.id, running.id, finished.id]
    assert [o.state for o in observed] == [
        TaskState.LOST,
        TaskState.RUNNING,
        TaskState.FINISHED,
    ]


def test_check_command_runs_in_the_tasks_environment(runtime: Runtime) -> None:
    app = make_app(cmd="sleep 30")
    task = launch(runtime, app, make_task(app, ports=(31042,)))

    argv, env = runtime.check_command(task, 'echo "$MESOS_TASK_ID $PORT0"; exit 2')
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)

    assert done.returncode == 2, "the command's status is the check's result"
    assert done.stdout.strip() == f"{task.id} 31042"


def test_nodes_have_capacity_and_tasks_a_probe_address(runtime: Runtime) -> None:
    nodes = runtime.nodes()
    assert nodes
    for node in nodes:
        assert node.hostname
        assert node.resources.cpus > 0
        assert node.resources.mem > 0
    app = make_app()
    assert runtime.probe_host(make_task(app))
