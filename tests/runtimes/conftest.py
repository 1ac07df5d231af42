"""Fixtures for the runtime contract suite: a factory of runtimes per backend, and helpers.

``runtime_factory`` is parametrised over the backends in ``BACKENDS``. Calling it makes a
fresh runtime instance over the *same* state (directory, containers, pods), which is how the
suite simulates a restart of Dromos. A :class:`Backend` says how to make a runtime over a
state directory, how to remove everything it started, whether it is usable here, and -- the
per-backend hook -- how to start a task that does something (:class:`Does`: run until killed,
exit with a code after a while, handle or ignore SIGTERM) and what can be seen of it: its
output, how it was launched (command, args, environment), how many copies of it run.

Local and Docker run real processes: a task is a shell script. On Kubernetes (KWOK) no
container runs: the same behaviour is scripted through ``DROMOS_SIM_*`` variables that the
cluster's KWOK stages act on (``kind-cluster/offline/stages.yaml``), and the task's output is
not its own (:attr:`Backend.runs_processes` is false). On a real node (``kubernetes-real``,
``k8s_real_support``) pods run real processes: tasks are shell scripts again.

Tests start real processes; teardown kills every one of them (and fails the test if any
survives), so a failing test cannot leak processes into the next.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from scheduler.model.app import AppSpec, parse_app
from scheduler.model.task import Task, TaskState, new_task_id
from scheduler.runtimes.base import Observation, Runtime, RuntimeUnavailable, launch_spec
from scheduler.runtimes.executor import (
    ENV_FILE,
    EXECUTOR_FILE,
    LAUNCH_FILE,
    STDOUT_FILE,
    process_alive,
)
from scheduler.runtimes.local import LocalRuntime, reap_executors
from tests.runtimes.docker_support import (
    cleanup_docker_state,
    docker_outage,
    docker_stdout,
    docker_unavailable,
    launched_container,
    make_docker_runtime,
)
from tests.runtimes.k8s_real_support import (
    cleanup_real_state,
    make_real_runtime,
    real_copies,
    real_launched,
    real_outage,
    real_stdout,
    real_unavailable,
)
from tests.runtimes.k8s_support import (
    cleanup_kube_state,
    kube_outage,
    kube_unavailable,
    launched_pod,
    make_kube_runtime,
    pods_of_task,
)

T = TypeVar("T")

VERSION = "2026-01-01T00:00:00.000Z"

# Loops of short sleeps rather than one long sleep: a shell runs its trap only once the
# foreground command returns.
LOOP = "while :; do sleep 0.1; done"


# --- what a task does ------------------------------------------------------------------------


@dataclass(frozen=True)
class Does:
    """What a contract-suite task does, whatever the backend.

    ``exit_code``: ``None`` runs until killed, else it exits with that code ``run_for``
    seconds after it started. ``on_term``: ``"die"`` (SIGTERM's default: status 143),
    ``"exit:<code>"`` (a handler exits with that code) or ``"ignore"``.
    """

    exit_code: int | None = None
    run_for: float = 0.0
    on_term: str = "die"
    prints_sample: bool = False
    """Print :data:`SAMPLE_OUTPUT` once started (what KWOK answers for every pod's log)."""


SAMPLE_OUTPUT = (("stdout", "no container runs on a KWOK node: this is simulated output"),
                 ("stdout", "line 2"), ("stderr", "line 3 (stderr)"), ("stdout", "line 4"),
                 ("stdout", "line 5"))
"""kind-cluster/offline/sim-output.log: the output KWOK shows for every pod."""


def runs_forever(on_term: str = "die", prints_sample: bool = False) -> Does:
    return Does(on_term=on_term, prints_sample=prints_sample)


def exits(code: int, after: float = 0.0) -> Does:
    return Does(exit_code=code, run_for=after)


def handles_term(exit_code: int) -> Does:
    return Does(on_term=f"exit:{exit_code}")


def ignores_term() -> Does:
    return Does(on_term="ignore")


def shell_script(does: Does) -> str:
    """The shell command that behaves as ``does`` says; it prints ``ready`` once its TERM
    handling is in place."""
    parts: list[str] = []
    if does.on_term == "ignore":
        parts.append("trap '' TERM")
    elif does.on_term.startswith("exit:"):
        parts.append(f"trap 'echo got-term; exit {does.on_term[5:]}' TERM")
    parts.append("echo ready")
    if does.prints_sample:
        for stream, line in SAMPLE_OUTPUT:
            # A pause after stderr: Docker merges the two streams in the order it reads them.
            parts.append(f"echo '{line}' >&2; sleep 0.2" if stream == "stderr"
                         else f"echo '{line}'")
    if does.exit_code is None:
        parts.append(LOOP)
    else:
        if does.run_for > 0:
            parts.append(f"sleep {does.run_for:g}")
        parts.append(f"exit {does.exit_code}")
    return "; ".join(parts)


def sim_env(does: Does) -> dict[str, str]:
    """The ``DROMOS_SIM_*`` variables that make a KWOK pod behave as ``does`` says."""
    env: dict[str, str] = {}
    if does.exit_code is not None:
        env["DROMOS_SIM_EXIT"] = str(does.exit_code)
        env["DROMOS_SIM_RUN_FOR"] = f"{round(does.run_for * 1000)}ms"
    if does.on_term != "die":
        env["DROMOS_SIM_ON_TERM"] = does.on_term
    return env


@dataclass(frozen=True)
class Launched:
    """How a backend started a task: the command that replaced the image's entrypoint (or
    the process's argv when there is no image), the arguments handed to the image's
    entrypoint, and the environment it was given."""

    command: list[str] | None
    args: list[str] | None
    env: dict[str, str]


class Outage:
    """A runtime whose backend can be taken away and brought back (``cut``/``restore``).
    ``can_fail``: whether calls then raise RuntimeUnavailable (a local runtime has no remote
    backend to lose)."""

    def __init__(self, runtime: Runtime, cut: Callable[[], None], restore: Callable[[], None],
                 can_fail: bool = True) -> None:
        self.runtime = runtime
        self.cut = cut
        self.restore = restore
        self.can_fail = can_fail


# --- backends --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    make: Callable[[Path], Runtime]
    """A new runtime instance over the state in the given directory."""
    app_fields: Callable[[Does], dict[str, Any]]
    """Marathon app fields (``cmd``, ``env``) of a task that behaves as ``Does`` says."""
    stdout: Callable[[Path, Task], str]
    """What the task wrote to stdout so far (only meaningful when ``runs_processes``)."""
    launched: Callable[[Path, Task], Launched]
    """How the task was started (read from the backend: sandbox, container, pod)."""
    copies: Callable[[Path, Task], int]
    """How many processes/containers/pods of the task were ever started."""
    cleanup: Callable[[Path], None]
    """Forcibly remove everything runtimes over this state started; raise if anything stays."""
    outage: Callable[[Path, Path], AbstractContextManager[Outage]]
    """A runtime over the state (first path) whose backend can be cut; second: a scratch
    directory."""
    runs_processes: bool = True
    """Whether a task is a real process (its output is its own, commands run in it)."""
    kill_slack: float = 0.1
    """How early a forced kill may come (Kubernetes keeps deletion deadlines in whole
    seconds)."""
    unavailable: Callable[[], str | None] = lambda: None
    """Why the backend cannot be tested here (e.g. no Docker Engine); ``None`` when it can."""


def _local_stdout(state_dir: Path, task: Task) -> str:
    try:
        return (state_dir / "tasks" / task.id / STDOUT_FILE).read_text()
    except FileNotFoundError:
        return ""


def _local_launched(state_dir: Path, task: Task) -> Launched:
    sandbox = state_dir / "tasks" / task.id
    argv = json.loads((sandbox / LAUNCH_FILE).read_text())["argv"]
    env = json.loads((sandbox / ENV_FILE).read_text())
    if argv[:2] == ["/bin/sh", "-c"]:
        return Launched(argv, None, env)
    return Launched(None, argv, env)


def _local_processes(state_dir: Path) -> list[tuple[int, int, bool]]:
    """(pid, start_time, is_group_leader_of_task) of every process the local runtime recorded."""
    found: list[tuple[int, int, bool]] = []
    for rec_path in state_dir.glob(f"tasks/*/{EXECUTOR_FILE}"):
        rec = json.loads(rec_path.read_text())
        if rec.get("child_pid") is not None and rec.get("child_start_time") is not None:
            found.append((rec["child_pid"], rec["child_start_time"], True))
        found.append((rec["pid"], rec["start_time"], False))
    return found


def cleanup_local_state(state_dir: Path) -> None:
    """SIGKILL every process a LocalRuntime over ``state_dir`` started, wait until all are
    gone (reaped), and fail if any survives. Usable by any test that runs local tasks."""
    # Everything the local runtime starts is findable from its state directory: the task's
    # process group (the task and anything it forked) and the executor.
    procs = _local_processes(state_dir)
    for pid, start, is_group in procs:
        if process_alive(pid, start):
            try:
                if is_group:
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def all_gone() -> bool:
        reap_executors()
        return not any(process_alive(pid, start) for pid, start, _ in procs)

    wait_until(all_gone, timeout=10, what="every process of the test to be gone")


@contextmanager
def _local_outage(state_dir: Path, scratch: Path) -> Iterator[Outage]:
    """The local runtime has no backend that can go away: cutting it changes nothing."""
    rt = LocalRuntime(state_dir)
    try:
        yield Outage(rt, lambda: None, lambda: None, can_fail=False)
    finally:
        rt.close()


def _output_copies(stdout: Callable[[Path, Task], str]) -> Callable[[Path, Task], int]:
    # A shell_script task prints "ready" once per process started.
    return lambda state_dir, task: stdout(state_dir, task).count("ready\n")


BACKENDS: dict[str, Backend] = {
    "local": Backend(
        name="local",
        make=lambda state_dir: LocalRuntime(state_dir),
        app_fields=lambda does: {"cmd": shell_script(does)},
        stdout=_local_stdout,
        launched=_local_launched,
        copies=_output_copies(_local_stdout),
        cleanup=cleanup_local_state,
        outage=_local_outage,
    ),
    # Containers on a real Docker Engine, started (and the busybox test image built) by
    # tests/support/docker-setup.sh; apps without a container run in that image.
    "docker": Backend(
        name="docker",
        make=make_docker_runtime,
        app_fields=lambda does: {"cmd": shell_script(does)},
        stdout=docker_stdout,
        launched=launched_container,
        copies=_output_copies(docker_stdout),
        cleanup=cleanup_docker_state,
        outage=docker_outage,
        unavailable=docker_unavailable,
    ),
    # Pods on the offline cluster (kind-cluster/offline/up.sh: a real API server, KWOK as the
    # kubelet), started once per session; skipped with the reason when it cannot come up.
    "kubernetes": Backend(
        name="kubernetes",
        make=make_kube_runtime,
        app_fields=lambda does: {"cmd": shell_script(does), "env": sim_env(does)},
        stdout=lambda state_dir, task: "",
        launched=launched_pod,
        copies=pods_of_task,
        cleanup=cleanup_kube_state,
        outage=kube_outage,
        runs_processes=False,
        kill_slack=1.0,
        unavailable=kube_unavailable,
    ),
    # Pods on a real node (containerd + runc, kubelet, kube-proxy: up.sh --real-nodes 1, see
    # k8s_real_support): real processes, so the whole contract runs as for local and Docker;
    # what is seen of a task is read from its pod through the real cluster's kubeconfig.
    "kubernetes-real": Backend(
        name="kubernetes-real",
        make=make_real_runtime,
        app_fields=lambda does: {"cmd": shell_script(does)},
        stdout=real_stdout,
        launched=real_launched,
        copies=real_copies,
        cleanup=cleanup_real_state,
        outage=real_outage,
        kill_slack=1.0,
        unavailable=real_unavailable,
    ),
}


class RuntimeFactory:
    """Makes runtime instances of one backend over one shared state, and starts tasks that
    do what a test needs on it."""

    def __init__(self, backend: Backend, state_dir: Path) -> None:
        self.backend = backend
        self.state_dir = state_dir
        self.made: list[Runtime] = []

    @property
    def name(self) -> str:
        return self.backend.name

    def __call__(self) -> Runtime:
        """A new runtime instance: a restarted Dromos, as far as the tasks can tell."""
        rt = self.backend.make(self.state_dir)
        self.made.append(rt)
        return rt

    def task_that(self, does: Does, **fields: Any) -> AppSpec:
        """An app whose task does what ``does`` says on this backend; ``fields`` are further
        Marathon fields (an ``env`` is merged with what the backend needs)."""
        made = self.backend.app_fields(does)
        env = {**fields.pop("env", {}), **made.pop("env", {})}
        return make_app(**made, **fields, **({"env": env} if env else {}))

    def started(self, rt: Runtime, task: Task) -> Observation:
        """Wait until the task runs with its TERM handling in place (a shell_script prints
        ``ready`` then; a simulated pod is Running)."""
        obs = wait_for_state(rt, task, TaskState.RUNNING)
        if self.backend.runs_processes:
            wait_for_output(self, task, "ready")
        return obs

    def stdout(self, task: Task) -> str:
        return self.backend.stdout(self.state_dir, task)

    def launched(self, task: Task) -> Launched:
        return self.backend.launched(self.state_dir, task)

    def copies(self, task: Task) -> int:
        return self.backend.copies(self.state_dir, task)

    def outage(self, scratch: Path) -> AbstractContextManager[Outage]:
        return self.backend.outage(self.state_dir, scratch)

    def teardown(self) -> None:
        for rt in self.made:
            rt.close()
        self.backend.cleanup(self.state_dir)


@pytest.fixture(params=sorted(BACKENDS))
def runtime_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RuntimeFactory]:
    backend = BACKENDS[request.param]
    reason = backend.unavailable()
    if reason is not None:
        pytest.skip(f"{backend.name} runtime unavailable: {reason}")
    factory = RuntimeFactory(backend, tmp_path / "state")
    try:
        yield factory
    finally:
        factory.teardown()


@pytest.fixture
def runtime(runtime_factory: RuntimeFactory) -> Runtime:
    return runtime_factory()


# --- small factories -------------------------------------------------------------------------


def make_app(**fields: Any) -> AppSpec:
    """A valid app; ``fields`` are Marathon JSON fields (``cmd`` defaults to a long sleep)."""
    data: dict[str, Any] = {"id": "/test/app", "cpus": 0.1, "mem": 32}
    if "cmd" not in fields and "args" not in fields:
        data["cmd"] = "sleep 30"
    data.update(fields)
    return parse_app(data)


def make_task(
    app: AppSpec,
    *,
    task_id: str | None = None,
    host: str = "localhost",
    ports: Sequence[int] = (),
) -> Task:
    """A freshly placed (STAGING) task of ``app``; a new unique id unless one is given."""
    return Task(
        id=task_id or new_task_id(app.id),
        app_id=app.id,
        host=host,
        version=VERSION,
        state=TaskState.STAGING,
        staged_at=datetime.now(UTC),
        ports=tuple(ports),
    )


def launch(rt: Runtime, app: AppSpec, task: Task) -> Task:
    """Launch ``task`` and return it with its handle, as the orchestrator would store it."""
    handle = rt.launch(launch_spec(app, task))
    return task.with_(handle=dict(handle), state=TaskState.STARTING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- waiting ---------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T | None],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that; fail the test
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def observe_one(rt: Runtime, task: Task) -> Observation:
    [obs] = rt.observe([task])
    return obs


def wait_for_state(
    rt: Runtime, task: Task, *states: TaskState, timeout: float = 10.0
) -> Observation:
    """Observe ``task`` until it is in one of ``states``; return that observation."""
    last: list[Observation] = []

    def reached() -> Observation | None:
        obs = observe_one(rt, task)
        last[:] = [obs]
        return obs if obs.state in states else None

    try:
        return wait_until(reached, timeout, what=f"{task.id} to be {'/'.join(states)}")
    except AssertionError as e:
        raise AssertionError(f"{e}; last seen: {last}") from None


def wait_for_output(factory: RuntimeFactory, task: Task, text: str, timeout: float = 10.0) -> str:
    def seen() -> str | None:
        out = factory.stdout(task)
        return out if text in out else None

    return wait_until(seen, timeout, what=f"{text!r} in the stdout of {task.id}")


def when_available(call: Callable[[], T]) -> Callable[[], T | None]:
    """``call`` made into a predicate for :func:`wait_until` that says "not yet" while the
    runtime is unavailable (after an outage it backs off for a while)."""
    def attempt() -> T | None:
        try:
            return call()
        except RuntimeUnavailable:
            return None

    return attempt
