"""What is specific to the local-process runtime: sandboxes, process identity, nodes."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import LaunchSpec, launch_spec
from scheduler.runtimes.executor import (
    process_alive,
    read_json,
    read_proc_stat,
    write_json_atomic,
)
from scheduler.runtimes.local import LocalRuntime, validate_task_id
from tests.runtimes.conftest import (
    BACKENDS,
    RuntimeFactory,
    free_port,
    launch,
    make_app,
    make_task,
    observe_one,
    wait_for_output,
    wait_for_state,
    wait_until,
)

LOOP = "while :; do sleep 0.1; done"


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[RuntimeFactory]:
    """Like ``runtime_factory``, for the local backend only."""
    f = RuntimeFactory(BACKENDS["local"], tmp_path / "state")
    try:
        yield f
    finally:
        f.teardown()


@pytest.fixture
def rt(factory: RuntimeFactory) -> LocalRuntime:
    runtime = factory()
    assert isinstance(runtime, LocalRuntime)
    return runtime


def sandbox_of(rt: LocalRuntime, task: Task) -> Path:
    return rt.sandbox(task.id)


def record(rt: LocalRuntime, task: Task) -> dict[str, int]:
    data: dict[str, int] = json.loads((sandbox_of(rt, task) / "executor.json").read_text())
    return data


def spec_for(task: Task, **changes: object) -> LaunchSpec:
    return replace(launch_spec(make_app(), task), **changes)  # type: ignore[arg-type]


# --- identities and the sandbox --------------------------------------------------------------


@pytest.mark.parametrize(
    "task_id", ["", ".", "..", "../escape", "a/b", ".hidden", "a\nb", "x" * 256]
)
def test_a_task_id_that_is_not_one_safe_path_component_is_rejected(
    rt: LocalRuntime, task_id: str
) -> None:
    task = make_task(make_app(), task_id="placeholder")
    with pytest.raises(ValueError):
        rt.launch(spec_for(task, task_id=task_id))
    assert not (rt.state_dir / "escape").exists()


@pytest.mark.parametrize(
    "task_id",
    ["prod_web.0c6b6a3e-5d6b-4f1e-9a43-3e7c2f0c9e11", "etl:20261201T010000Z", "nightly job:x"],
)
def test_marathon_task_ids_and_job_run_ids_are_accepted(task_id: str) -> None:
    assert validate_task_id(task_id) == task_id


def test_the_sandbox_is_named_after_the_task_and_holds_its_records(rt: LocalRuntime) -> None:
    app = make_app(cmd=f"echo out; echo err >&2; {LOOP}")
    task = launch(rt, app, make_task(app, ports=(31007,)))
    wait_for_state(rt, task, TaskState.RUNNING)

    sandbox = rt.state_dir / "tasks" / task.id
    assert task.handle["sandbox"] == str(sandbox)
    rec = record(rt, task)
    assert (rec["pid"], rec["start_time"]) == (task.handle["pid"], task.handle["start_time"])
    env = json.loads((sandbox / "env.json").read_text())
    assert env["MESOS_TASK_ID"] == task.id
    assert env["PORT0"] == "31007"
    assert env["MESOS_SANDBOX"] == str(sandbox)
    # The executor leads its session; the task leads its own group inside it.
    executor = read_proc_stat(rec["pid"])
    child = read_proc_stat(rec["child_pid"])
    assert executor is not None and child is not None
    assert executor.session == rec["pid"]
    assert child.session == rec["pid"]
    assert child.pgrp == rec["child_pid"]
    wait_until(lambda: (sandbox / "stderr").read_text() == "err\n", what="stderr")
    assert (sandbox / "stdout").read_text() == "out\n"


def test_the_task_runs_in_its_sandbox_without_dromoss_environment(
    rt: LocalRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DROMOS_SECRET_TOKEN", "s3cret")
    app = make_app(cmd='pwd; echo "token=${DROMOS_SECRET_TOKEN:-none}"')
    task = launch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.FINISHED)

    out = (sandbox_of(rt, task) / "stdout").read_text().splitlines()
    assert Path(out[0]).resolve() == sandbox_of(rt, task).resolve()
    assert out[1] == "token=none"


# --- what cannot run -------------------------------------------------------------------------


def test_an_image_is_rejected(rt: LocalRuntime) -> None:
    task = make_task(make_app())
    with pytest.raises(ValueError, match="the local runtime runs processes, not images"):
        rt.launch(spec_for(task, image="nginx:1.27"))
    assert not sandbox_of(rt, task).exists()


@pytest.mark.parametrize(
    "changes",
    [{"cmd": None, "args": None}, {"cmd": "true", "args": ("true",)}, {"cmd": "  "}],
    ids=["neither", "both", "blank-cmd"],
)
def test_a_spec_without_exactly_one_command_is_rejected(
    rt: LocalRuntime, changes: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        rt.launch(spec_for(make_task(make_app()), **changes))


def test_a_missing_executable_is_failed_with_the_reason(rt: LocalRuntime) -> None:
    app = make_app(args=["/nonexistent/dromos-test-prog", "--flag"])
    task = launch(rt, app, make_task(app))

    obs = wait_for_state(rt, task, TaskState.FAILED, TaskState.FINISHED)
    assert obs.state is TaskState.FAILED
    assert obs.exit_code == 127
    assert "/nonexistent/dromos-test-prog" in obs.message
    assert "No such file" in obs.message


def test_a_file_that_is_not_executable_is_failed_with_the_reason(
    rt: LocalRuntime, tmp_path: Path
) -> None:
    script = tmp_path / "not-executable.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    app = make_app(args=[str(script)])
    task = launch(rt, app, make_task(app))

    obs = wait_for_state(rt, task, TaskState.FAILED, TaskState.FINISHED)
    assert obs.exit_code == 126
    assert "Permission denied" in obs.message


# --- process identity ------------------------------------------------------------------------


def test_a_reused_pid_with_another_start_time_is_not_the_task(rt: LocalRuntime) -> None:
    app = make_app(cmd="sleep 30")
    task = launch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.RUNNING)
    path = sandbox_of(rt, task) / "executor.json"
    genuine = path.read_text()
    rec = json.loads(genuine)
    forged = {
        **rec,
        "start_time": rec["start_time"] + 1,
        "child_start_time": rec["child_start_time"] + 1,
    }
    try:
        path.write_text(json.dumps(forged))

        obs = observe_one(rt, task)
        assert obs.state is TaskState.LOST, "same pids, other start times: other processes"
        rt.kill(task, grace_seconds=0)
        time.sleep(0.2)
        assert process_alive(rec["child_pid"], rec["child_start_time"]), "left alone"
        assert process_alive(rec["pid"], rec["start_time"])
    finally:
        path.write_text(genuine)
    assert observe_one(rt, task).state is TaskState.RUNNING


def test_a_handle_pointing_at_someone_elses_process_is_never_signalled(
    rt: LocalRuntime,
) -> None:
    bystander = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        stat = read_proc_stat(bystander.pid)
        assert stat is not None
        task = make_task(make_app()).with_(
            handle={"pid": bystander.pid, "start_time": stat.start_time + 1}
        )

        assert observe_one(rt, task).state is TaskState.LOST
        rt.kill(task, grace_seconds=0)
        time.sleep(0.2)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen(["true"])
    try:
        stat = read_proc_stat(child.pid)
        assert stat is not None
        wait_until(
            lambda: (s := read_proc_stat(child.pid)) is not None and s.state == "Z",
            what="the child to become a zombie",
        )
        assert not process_alive(child.pid, stat.start_time)
    finally:
        child.wait()


def test_finished_executors_are_reaped(rt: LocalRuntime) -> None:
    app = make_app(cmd="exit 0")
    tasks = [launch(rt, app, make_task(app)) for _ in range(3)]
    for task in tasks:
        wait_for_state(rt, task, TaskState.FINISHED)

    def reaped() -> bool:
        rt.observe(tasks)
        return all(
            (s := read_proc_stat(t.handle["pid"])) is None or s.start_time != t.handle["start_time"]
            for t in tasks
        )

    wait_until(reaped, timeout=5, what="the executors to be reaped, not zombies")


# --- launching -------------------------------------------------------------------------------


def test_concurrent_launches_of_one_id_start_one_executor(factory: RuntimeFactory) -> None:
    app = make_app(cmd=f"echo started; {LOOP}")
    task = make_task(app)
    spec = launch_spec(app, task)
    runtimes = [factory(), factory()]
    barrier = threading.Barrier(6)
    handles: list[object] = []
    errors: list[BaseException] = []

    def go(i: int) -> None:
        try:
            barrier.wait()
            handles.append(dict(runtimes[i % 2].launch(spec)))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert not errors
    assert len(handles) == 6 and all(h == handles[0] for h in handles)
    wait_for_output(factory, task, "started")
    time.sleep(0.3)
    assert factory.stdout(task).count("started") == 1


def test_a_task_id_runs_at_most_once(rt: LocalRuntime, factory: RuntimeFactory) -> None:
    app = make_app(cmd="echo ran; exit 0")
    task = launch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.FINISHED)

    again = launch(rt, app, task)

    assert dict(again.handle) == dict(task.handle)
    time.sleep(0.3)
    assert factory.stdout(task).count("ran") == 1
    assert observe_one(rt, task).state is TaskState.FINISHED


def test_a_real_http_server_answers_on_its_port(rt: LocalRuntime) -> None:
    port = free_port()
    app = make_app(cmd="exec python3 -m http.server $PORT0 --bind 127.0.0.1")
    task = launch(rt, app, make_task(app, ports=(port,)))
    url = f"http://{rt.probe_host(task)}:{port}/"

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    wait_until(answers, timeout=20, interval=0.1, what=f"{url} to answer")
    assert observe_one(rt, task).state is TaskState.RUNNING

    rt.kill(task, grace_seconds=2)
    wait_for_state(rt, task, TaskState.KILLED, timeout=5)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "nothing listens any more"


# --- ends of tasks ---------------------------------------------------------------------------


def test_processes_a_finished_task_left_behind_are_killed(rt: LocalRuntime) -> None:
    app = make_app(cmd="sleep 30 & echo $! > bg.pid; exit 0")
    task = launch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.FINISHED)

    bg = int((sandbox_of(rt, task) / "bg.pid").read_text())
    wait_until(
        lambda: (s := read_proc_stat(bg)) is None or s.state in ("Z", "X"),
        timeout=5,
        what="the background sleep to be killed",
    )


def test_kill_with_no_grace_kills_at_once(rt: LocalRuntime) -> None:
    app = make_app(cmd=f"trap '' TERM; {LOOP}")
    task = launch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.RUNNING)

    rt.kill(task, grace_seconds=0)
    obs = wait_for_state(rt, task, TaskState.KILLED, timeout=2)
    assert obs.exit_code == 128 + signal.SIGKILL
    assert "SIGKILL" in obs.message


def test_a_kill_deadline_survives_a_restart_of_dromos(factory: RuntimeFactory) -> None:
    before = factory()
    app = make_app(cmd=f"trap '' TERM; echo ready; {LOOP}")
    task = launch(before, app, make_task(app))
    wait_for_output(factory, task, "ready")
    before.kill(task, grace_seconds=0.3)
    before.close()  # the SIGKILL timer dies with this "Dromos"
    time.sleep(0.6)
    assert process_alive(task.handle["pid"], task.handle["start_time"]), "TERM was ignored"

    after = factory()
    obs = wait_for_state(after, task, TaskState.KILLED, timeout=3)
    assert obs.exit_code == 128 + signal.SIGKILL


def test_term_sent_to_the_executor_reaches_the_task(rt: LocalRuntime) -> None:
    app = make_app(cmd=f"trap 'exit 9' TERM; echo ready; {LOOP}")
    task = launch(rt, app, make_task(app))
    wait_until(lambda: "ready" in (sandbox_of(rt, task) / "stdout").read_text(), what="ready")

    os.kill(task.handle["pid"], signal.SIGTERM)

    obs = wait_for_state(rt, task, TaskState.FAILED, TaskState.FINISHED, timeout=5)
    assert obs.exit_code == 9, "not a kill Dromos asked for: the task's own status"


def test_a_task_outliving_its_executor_is_running_and_killable(rt: LocalRuntime) -> None:
    app = make_app(cmd="sleep 30")
    task = launch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.RUNNING)
    rec = record(rt, task)

    os.kill(rec["pid"], signal.SIGKILL)
    wait_until(lambda: not process_alive(rec["pid"], rec["start_time"]), what="executor death")
    assert observe_one(rt, task).state is TaskState.RUNNING

    rt.kill(task, grace_seconds=1)
    obs = wait_for_state(rt, task, TaskState.KILLED, timeout=5)
    assert obs.exit_code is None, "nobody was left to record it"


def test_a_task_gone_without_a_record_is_lost(rt: LocalRuntime) -> None:
    app = make_app(cmd="sleep 30")
    task = launch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.RUNNING)
    rec = record(rt, task)

    os.kill(rec["pid"], signal.SIGKILL)
    os.killpg(rec["child_pid"], signal.SIGKILL)

    obs = wait_for_state(rt, task, TaskState.LOST, timeout=5)
    assert str(rec["pid"]) in obs.message


def test_one_broken_sandbox_does_not_hide_the_other_tasks(rt: LocalRuntime) -> None:
    app = make_app(cmd="sleep 30")
    good = launch(rt, app, make_task(app))
    broken = launch(rt, app, make_task(app)).with_(state=TaskState.RUNNING)
    wait_for_state(rt, good, TaskState.RUNNING)
    path = sandbox_of(rt, broken) / "executor.json"
    genuine = path.read_text()
    try:
        path.write_text("{not json")

        first, second = rt.observe([broken, good])
        assert first.state is TaskState.RUNNING, "the last known state, unchanged"
        assert "could not observe" in first.message
        assert second.state is TaskState.RUNNING
    finally:
        path.write_text(genuine)


def test_check_command_of_an_unknown_task_gets_the_basic_environment(
    rt: LocalRuntime,
) -> None:
    argv, env = rt.check_command(make_task(make_app()), "true")
    assert argv == ["/bin/sh", "-c", "true"]
    assert "PATH" in env
    assert "MESOS_TASK_ID" not in env


# --- nodes -----------------------------------------------------------------------------------


def node(hostname: str, *ports: tuple[int, int]) -> Node:
    return Node(hostname=hostname, resources=Resources(cpus=1, mem=512), ports=ports)


def test_the_default_node_describes_this_machine(tmp_path: Path) -> None:
    [n] = LocalRuntime(tmp_path).nodes()

    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    mem_kib = int(meminfo["MemTotal"].split()[0])
    assert n.hostname == socket.gethostname()
    assert n.resources.cpus == os.cpu_count()
    assert n.resources.mem == mem_kib // 1024
    assert n.resources.disk > 0
    assert n.ports == ((31000, 32000),)
    assert dict(n.attributes) == {}


def test_configured_nodes_are_used_as_given(tmp_path: Path) -> None:
    nodes = [node("a", (31000, 31499)), node("b", (31500, 31999), (33000, 33000))]
    assert LocalRuntime(tmp_path, nodes).nodes() == nodes


@pytest.mark.parametrize(
    ("nodes", "shared"),
    [
        ([node("a", (31000, 31999)), node("b", (31500, 32000))], "ports 31500-31999"),
        ([node("a", (1000, 2000)), node("b", (3000, 3100)), node("c", (1500, 1500))], "port 1500"),
        ([node("a", (31000, 31000)), node("b", (31000, 31000))], "port 31000"),
    ],
)
def test_nodes_sharing_ports_are_rejected(tmp_path: Path, nodes: list[Node], shared: str) -> None:
    with pytest.raises(ValueError, match="must not overlap") as err:
        LocalRuntime(tmp_path, nodes)
    assert f"share {shared}:" in str(err.value)


# --- the task's user (issue 11, defect 6) ----------------------------------------------------


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("switching users needs Dromos to run as root")


def test_a_task_runs_as_its_user_and_owns_its_sandbox(rt: LocalRuntime) -> None:
    _require_root()
    nobody = pwd.getpwnam("nobody")
    app = make_app(user="nobody", cmd='id -u; id -g; echo "$USER"; echo hi > own-file')
    task = launch(rt, app, make_task(app))
    obs = wait_for_state(rt, task, TaskState.FINISHED, TaskState.FAILED)
    assert obs.state is TaskState.FINISHED, obs.message
    sandbox = sandbox_of(rt, task)
    assert (sandbox / "stdout").read_text().split() == [str(nobody.pw_uid),
                                                        str(nobody.pw_gid), "nobody"]
    assert (sandbox / "own-file").stat().st_uid == nobody.pw_uid


def test_a_user_this_machine_does_not_know_is_refused(rt: LocalRuntime) -> None:
    assert rt.user_problem("dromos-no-such-user") == \
        "there is no user 'dromos-no-such-user' on this machine"
    app = make_app(user="dromos-no-such-user")
    with pytest.raises(ValueError, match="no user 'dromos-no-such-user'"):
        rt.launch(launch_spec(app, make_task(app)))



def test_records_are_never_written_through_a_link_planted_in_the_sandbox(
        tmp_path: Path) -> None:
    """A task running as another user owns its sandbox: a link it plants at the temporary
    name the executor writes a record under must not be followed (root would overwrite
    whatever it points to)."""
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    planted = sandbox / f".exit.json.{os.getpid()}.{threading.get_ident()}.tmp"
    os.symlink(victim, planted)
    write_json_atomic(sandbox / "exit.json", {"exit_code": 0})
    assert victim.read_text() == "untouched\n"
    assert json.loads((sandbox / "exit.json").read_text()) == {"exit_code": 0}
    os.symlink(victim, sandbox / "kill.json")
    with pytest.raises(ValueError, match="cannot be read"):
        read_json(sandbox / "kill.json")
