"""What is specific to the Docker runtime: names, labels, ports, limits, images, the engine
going away, kills across restarts, exited containers, the containerised examples.

The runtime contract (launch, observe, kill with grace, exit codes, adoption...) is checked
for Docker by ``test_contract.py``; these tests need a real engine too (see
``docker_support``), and remove every container they create.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from scheduler.cli import build_parser
from scheduler.clock import FakeClock
from scheduler.composition import build_runtime
from scheduler.config import Credentials, ServeConfig
from scheduler.events import EventBus
from scheduler.model.app import AppSpec, parse_app
from scheduler.model.job import (
    JobRun,
    RunStatus,
    Trigger,
    attempt_task_id,
    parse_job,
    scheduled_run_id,
)
from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.model.task import Task, TaskState, task_of_run
from scheduler.orchestrator import Orchestrator
from scheduler.runtimes.base import RuntimeUnavailable, launch_spec
from scheduler.runtimes.docker import (
    LABEL_APP,
    LABEL_JOB,
    LABEL_RUN,
    LABEL_TASK,
    LABEL_VERSION,
    DockerRuntime,
    container_name,
)
from scheduler.store.memory import MemoryStore
from tests.factories import make_node
from tests.runtimes.conftest import (
    BACKENDS,
    VERSION,
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
from tests.runtimes.docker_support import (
    BUSYBOX_IMAGE,
    EngineProxy,
    client,
    containers_of,
    docker_unavailable,
    engine_socket,
    make_docker_runtime,
)
from tests.support.server import Server, wait_for

JOBS = Path(__file__).resolve().parents[2] / "jobs"
LOOP = "while :; do sleep 0.1; done"
DOCKER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[RuntimeFactory]:
    """Like ``runtime_factory``, for the docker backend only."""
    reason = docker_unavailable()
    if reason is not None:
        pytest.skip(f"docker runtime unavailable: {reason}")
    f = RuntimeFactory(BACKENDS["docker"], tmp_path / "state")
    try:
        yield f
    finally:
        f.teardown()


@pytest.fixture
def rt(factory: RuntimeFactory) -> DockerRuntime:
    runtime = factory()
    assert isinstance(runtime, DockerRuntime)
    return runtime


def container_app(**fields: Any) -> AppSpec:
    """An app running in the busybox test image (``container`` fields merge in)."""
    container: dict[str, Any] = {"type": "DOCKER", "docker": {"image": BUSYBOX_IMAGE}}
    container.update(fields.pop("container", {}))
    return make_app(container=container, **fields)


def inspect(task: Task) -> dict[str, Any]:
    attrs: dict[str, Any] = client().api.inspect_container(container_name(task.id))
    return attrs


def http_get(port: int, path: str = "/") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def answers(port: int, path: str = "/") -> tuple[int, str] | None:
    try:
        return http_get(port, path)
    except OSError:
        return None


# --- names and labels ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task_id", "expected"),
    [
        ("prod_web.0c6b8a1e-5f0e-4c9e-9a44-3f1d2b7c8e90",
         "dromos-prod_web.0c6b8a1e-5f0e-4c9e-9a44-3f1d2b7c8e90"),
        ("etl:20261201T010000Z", None),
        ("etl:manual-0c6b8a1e", None),
        ("nightly report:20261201T010000Z", None),
        ("x" * 300, None),
    ],
)
def test_container_names_are_deterministic_and_valid_docker_names(
    task_id: str, expected: str | None
) -> None:
    name = container_name(task_id)

    assert name == container_name(task_id)
    assert DOCKER_NAME.match(name)
    assert name.startswith("dromos-")
    assert len(name) <= 128
    if expected is not None:
        assert name == expected, "a task id that is already a valid name is kept readable"
    else:
        assert re.search(r"-[0-9a-f]{12}$", name), "a changed id gets a hash of the original"


def test_ids_that_sanitise_alike_get_different_names() -> None:
    ids = ["etl:20261201T010000Z", "etl-20261201T010000Z", "etl 20261201T010000Z",
           "etl_20261201T010000Z", "x" * 300, "x" * 301]
    assert len({container_name(i) for i in ids}) == len(ids)
    with pytest.raises(ValueError):
        container_name("")


def test_every_container_is_labelled_and_named_after_its_task(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    app = container_app(id="/shop/web", cmd="sleep 30", labels={"team": "infra"})
    task = launch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.RUNNING)

    shown = subprocess.run(
        ["docker", "ps", "--filter", "label=dromos.io/app=/shop/web", "--filter",
         f"label={LABEL_TASK}={task.id}", "--format",
         '{{.ID}} {{.Names}} {{.Label "dromos.io/version"}}'],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.split()
    assert shown[1:] == [container_name(task.id), VERSION]
    assert task.handle["container_id"].startswith(shown[0])
    labels = inspect(task)["Config"]["Labels"]
    assert labels[LABEL_APP] == "/shop/web"
    assert labels[LABEL_TASK] == task.id
    assert labels[LABEL_VERSION] == VERSION
    assert LABEL_JOB not in labels and LABEL_RUN not in labels


def test_a_job_run_is_labelled_with_its_job_and_run_and_its_example_scores_a_batch(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    # The LaunchSpec of a job run's attempt, with the Chronos container shape (image on top).
    job = parse_job(json.loads((JOBS / "score-batch.json").read_text()))
    scheduled = datetime(2026, 1, 1, 2, tzinfo=UTC)
    run = JobRun(id=scheduled_run_id(job.name, scheduled), job=job.name,
                 trigger=Trigger.SCHEDULE, status=RunStatus.QUEUED, created_at=scheduled,
                 scheduled_for=scheduled, attempt=1)
    task_id = attempt_task_id(run.id, run.attempt)  # a retry: score-batch:2026...Z.retry1
    spec = launch_spec(job, task_of_run(run, host="docker-host"), run)
    task = Task(id=task_id, app_id=spec.app_id, host="docker-host", version="",
                state=TaskState.STAGING, staged_at=scheduled)
    task = task.with_(handle=dict(rt.launch(spec)))

    obs = wait_for_state(rt, task, TaskState.FINISHED, TaskState.FAILED)
    assert obs.state is TaskState.FINISHED and obs.exit_code == 0
    assert factory.stdout(task).splitlines() == [
        "1,10", "2,13", "3,16", "4,19", "5,22", "scored 5 inputs, total 80"]
    attrs = inspect(task)
    assert attrs["Name"] == "/" + container_name(task_id)
    labels = attrs["Config"]["Labels"]
    assert (labels[LABEL_JOB], labels[LABEL_RUN], labels[LABEL_TASK]) == (
        "score-batch", "score-batch:20260101T020000Z", task_id)
    assert attrs["HostConfig"]["Memory"] == 32 * 1024 * 1024


# --- ports, environment, resources -----------------------------------------------------------


def test_mapped_container_ports_answer_on_the_host_ports_placement_chose(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    fixed, dynamic = free_port(), free_port()
    app = container_app(
        container={"portMappings": [{"containerPort": 8080, "hostPort": 0},
                                    {"containerPort": 0, "hostPort": 0, "name": "admin"}]},
        # A fixed containerPort is bound as such; containerPort 0 is the host port, $PORT1.
        cmd="mkdir -p /www && echo hello > /www/index.html && httpd -p 8080 -h /www && "
            "exec httpd -f -p $PORT1 -h /www",
    )
    task = launch(rt, app, make_task(app, ports=(fixed, dynamic)))

    assert wait_until(lambda: answers(fixed), what="httpd on the first host port") == (
        200, "hello\n")
    assert wait_until(lambda: answers(dynamic), what="httpd on the second host port") == (
        200, "hello\n")
    bindings = inspect(task)["HostConfig"]["PortBindings"]
    assert bindings == {
        "8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(fixed)}],
        f"{dynamic}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(dynamic)}],
    }
    # Marathon's environment holds the host ports, inside the container too.
    argv, env = rt.check_command(task, 'echo "$PORT0 $PORT1 $PORT_ADMIN $PORTS"')
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30).stdout
    assert out.split() == [str(fixed), str(dynamic), str(dynamic), f"{fixed},{dynamic}"]
    assert rt.probe_host(task) == "127.0.0.1"


def test_host_networking_uses_the_tasks_ports_directly(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    port = free_port()
    app = container_app(
        container={"docker": {"image": BUSYBOX_IMAGE, "network": "HOST"}},
        cmd="mkdir -p /www && echo host > /www/index.html && "
            "exec httpd -f -p 127.0.0.1:$PORT0 -h /www",
    )
    task = launch(rt, app, make_task(app, ports=(port,)))

    assert wait_until(lambda: answers(port), what="httpd on the host's port") == (200, "host\n")
    host_config = inspect(task)["HostConfig"]
    assert host_config["NetworkMode"] == "host"
    assert not host_config["PortBindings"]


def test_a_host_port_that_is_taken_fails_the_task_not_the_launch(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        app = container_app(container={"portMappings": [{"containerPort": 80}]})
        task = launch(rt, app, make_task(app, ports=(taken,)))

        obs = observe_one(rt, task)
    assert obs.state is TaskState.FAILED
    assert "could not start" in obs.message and str(taken) in obs.message


def test_cpu_and_memory_limits_come_from_the_apps_resources(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    ncpu = client().info()["NCPU"]
    cases = [  # (cpus, mem) asked -> (NanoCpus, Memory) set
        ((0.25, 48), (250_000_000, 48 * 1024 * 1024)),
        ((0.001, 1), (10_000_000, 6 * 1024 * 1024)),  # the engine's minimums
        ((ncpu + 8, 0), (ncpu * 1_000_000_000, 0)),  # no more cores than the host has
    ]
    for (cpus, mem), (nano, memory) in cases:
        app = container_app(cmd="exit 0", cpus=cpus, mem=mem)
        task = launch(rt, app, make_task(app))
        host_config = inspect(task)["HostConfig"]
        assert (host_config["NanoCpus"], host_config["Memory"]) == (nano, memory)
        assert host_config["MemorySwap"] == (memory or 0), "no swap beyond the limit"
        assert host_config["Init"] is True


def test_a_container_that_runs_out_of_memory_is_failed_as_oom_killed(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    # tail keeps the whole (newline-free) line in memory: far more than 8 MiB.
    app = container_app(cmd="head -c 200m /dev/zero | tail", mem=8)
    task = launch(rt, app, make_task(app))

    obs = wait_for_state(rt, task, TaskState.FAILED, TaskState.FINISHED, timeout=30)
    assert obs.state is TaskState.FAILED
    assert obs.message.startswith("OOM killed")
    assert obs.exit_code is not None and obs.exit_code != 0


def test_args_are_handed_to_the_images_entrypoint_and_neither_runs_its_default(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    with_args = container_app(args=["echo", "from", "args"])
    task = launch(rt, with_args, make_task(with_args))
    wait_for_state(rt, task, TaskState.FINISHED)
    assert factory.stdout(task) == "from args\n"

    # No cmd, no args: the image's own command (the busybox image's is /bin/sh, which
    # ends at once on an empty stdin).
    bare = parse_app({"id": "/test/bare", "cpus": 0.1, "mem": 16,
                      "container": {"docker": {"image": BUSYBOX_IMAGE}}})
    task = launch(rt, bare, make_task(bare))
    assert wait_for_state(rt, task, TaskState.FINISHED).exit_code == 0
    assert inspect(task)["Config"]["Cmd"] == ["/bin/sh"]


# --- images and what cannot run --------------------------------------------------------------


@pytest.mark.parametrize("force_pull", [False, True])
def test_an_image_that_is_missing_and_cannot_be_pulled_is_a_clear_error(
    factory: RuntimeFactory, rt: DockerRuntime, force_pull: bool
) -> None:
    app = make_app(container={"docker": {"image": "dromos-test/no-such-image:1",
                                         "forcePullImage": force_pull}})

    with pytest.raises(ValueError, match=r"image 'dromos-test/no-such-image:1' is not on the "
                                         r"Docker host and cannot be pulled: \S"):
        rt.launch(launch_spec(app, make_task(app)))
    assert containers_of(factory.state_dir) == []


def test_force_pull_falls_back_to_the_local_image_when_the_pull_fails(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    # dromos-test/busybox:1 exists only here: no registry has it, reachable or not.
    app = container_app(container={"docker": {"image": BUSYBOX_IMAGE,
                                              "forcePullImage": True}})
    task = launch(rt, app, make_task(app))
    wait_for_state(rt, task, TaskState.RUNNING)


def test_an_app_without_a_container_is_refused_unless_a_default_image_is_configured(
    factory: RuntimeFactory,
) -> None:
    strict = make_docker_runtime(factory.state_dir, default_image=None)
    factory.made.append(strict)
    app = make_app(id="/plain/cmd", cmd="sleep 30")

    with pytest.raises(ValueError, match=r"app '/plain/cmd' has no container.docker.image"):
        strict.launch(launch_spec(app, make_task(app)))
    assert containers_of(factory.state_dir) == []


@pytest.mark.parametrize(
    ("container", "reason"),
    [
        ({"volumes": [{"containerPath": "/data", "hostPath": "/tmp", "mode": "RW"}]},
         "volumes are not supported"),
        ({"docker": {"image": BUSYBOX_IMAGE, "parameters": [{"key": "user", "value": "1"}]}},
         "parameters are not supported"),
        ({"docker": {"image": BUSYBOX_IMAGE, "network": "USER"}}, "network 'USER'"),
    ],
)
def test_container_options_the_runtime_does_not_support_are_refused(
    factory: RuntimeFactory, rt: DockerRuntime, container: dict[str, Any], reason: str
) -> None:
    app = container_app(container=container)
    with pytest.raises(ValueError, match=reason):
        rt.launch(launch_spec(app, make_task(app)))
    assert containers_of(factory.state_dir) == []


# --- the engine going away -------------------------------------------------------------------


@pytest.fixture
def proxy(factory: RuntimeFactory) -> Iterator[EngineProxy]:
    p = EngineProxy(engine_socket())
    p.up()
    yield p
    p.down()


def test_an_engine_that_does_not_answer_makes_every_call_raise_runtime_unavailable(
    tmp_path: Path,
) -> None:
    closed = free_port()  # nothing listens there
    attempts: list[float] = []

    def connect() -> Any:
        attempts.append(time.monotonic())
        return docker.DockerClient(base_url=f"tcp://127.0.0.1:{closed}", timeout=5)

    rt = DockerRuntime(tmp_path, client_factory=connect)  # built while the engine is away
    app = container_app()
    task = make_task(app).with_(handle={"container_id": "x", "container_name": "y"})

    for call in (lambda: rt.launch(launch_spec(app, task)), lambda: rt.observe([task]),
                 lambda: rt.kill(task, 1), lambda: rt.logs(task)):
        with pytest.raises(RuntimeUnavailable, match="Docker Engine"):
            call()
    assert rt.nodes() == [], "no capacity known yet: nothing can be placed (and pages work)"
    assert len(attempts) == 1, "within the retry delay the engine is not tried again"
    with pytest.raises(RuntimeUnavailable, match=r"next attempt in \d"):
        rt.observe([task])
    time.sleep(1.1)
    with pytest.raises(RuntimeUnavailable):
        rt.observe([task])
    assert len(attempts) == 2, "tried again once the delay was over"

    virtual = [make_node("node-a", ports="31000-31009")]
    assert DockerRuntime(tmp_path, virtual, client_factory=connect).nodes() == virtual


def test_the_docker_hosts_last_known_capacity_outlives_the_engine(
    factory: RuntimeFactory, proxy: EngineProxy
) -> None:
    seen = make_docker_runtime(factory.state_dir, client_factory=proxy.client).nodes()
    proxy.down()

    restarted = make_docker_runtime(factory.state_dir, client_factory=proxy.client)
    assert restarted.nodes() == seen, "read back from <state dir>/docker/node.json"
    with pytest.raises(RuntimeUnavailable):
        restarted.observe([])


def test_while_the_engine_is_away_dromos_serves_says_so_and_adopts_on_its_return(
    factory: RuntimeFactory, proxy: EngineProxy
) -> None:
    nodes = [make_node("node-a", cpus=2, mem=512, ports="31500-31509")]
    rt = make_docker_runtime(factory.state_dir, nodes=nodes, client_factory=proxy.client,
                             default_image=None)
    factory.made.append(rt)
    clock = FakeClock()
    orchestrator = Orchestrator(MemoryStore(), rt, EventBus(), clock)
    api = TestClient(create_app(orchestrator, Credentials()))
    app = {"id": "/ml/echo", "cmd": f"echo up; {LOOP}", "cpus": 0.1, "mem": 16,
           "container": {"type": "DOCKER", "docker": {"image": BUSYBOX_IMAGE},
                         "portMappings": [{"containerPort": 80}]}}
    assert api.post("/v2/apps", json=app).status_code == 201

    def run_until_running() -> list[dict[str, Any]] | None:
        orchestrator.run_once(clock.now())
        tasks: list[dict[str, Any]] = api.get("/v2/apps/ml/echo/tasks").json()["tasks"]
        return tasks if tasks and tasks[0]["state"] == "TASK_RUNNING" else None

    [before] = wait_until(run_until_running, timeout=20, what="the app's task to run")
    [container] = containers_of(factory.state_dir)

    proxy.down()
    orchestrator.run_once(clock.now())
    assert api.get("/v2/info").json()["marathon_config"]["master"].startswith(
        "docker (unavailable: ")
    runtime = api.get("/dromos/info").json()["runtime"]
    assert runtime["available"] is False and runtime["error"]
    assert api.get("/v2/apps/ml/echo").status_code == 200, "the API keeps serving"
    assert "docker runtime unavailable" in api.get("/").text

    proxy.up()

    def available() -> bool:
        orchestrator.run_once(clock.now())  # refused at once until the retry delay is over
        return bool(api.get("/v2/info").json()["marathon_config"]["master"]
                    == "docker (available)")

    wait_until(available, timeout=10, interval=0.2, what="the engine to be used again")
    [after] = api.get("/v2/apps/ml/echo/tasks").json()["tasks"]
    assert (after["id"], after["state"]) == (before["id"], "TASK_RUNNING")
    assert [c["Id"] for c in containers_of(factory.state_dir)] == [container["Id"]], (
        "nothing duplicated, nothing lost")


# --- kills, restarts, exited containers ------------------------------------------------------


def test_a_kill_deadline_survives_a_restart_of_dromos(factory: RuntimeFactory) -> None:
    before = factory()
    app = make_app(cmd=f"trap '' TERM; echo ready; {LOOP}")
    task = launch(before, app, make_task(app))
    wait_for_output(factory, task, "ready")

    before.kill(task, grace_seconds=1.0)
    before.close()  # its SIGKILL timer dies with it
    after = factory()
    assert observe_one(after, task).state is TaskState.RUNNING, "TERM is ignored"
    time.sleep(1.2)

    obs = wait_for_state(after, task, TaskState.KILLED, timeout=5)
    assert obs.exit_code == 137 and "SIGKILL" in obs.message


def test_a_restarted_runtime_reports_the_same_container(factory: RuntimeFactory) -> None:
    app = container_app(cmd="sleep 30")
    task = launch(factory(), app, make_task(app))

    adopted = wait_for_state(factory(), task.with_(handle={}), TaskState.RUNNING)
    assert adopted.handle["container_id"] == inspect(task)["Id"]
    assert len(containers_of(factory.state_dir)) == 1


def test_exited_containers_are_removed_after_a_while_and_what_they_said_is_kept(
    factory: RuntimeFactory,
) -> None:
    rt = make_docker_runtime(factory.state_dir, keep_exited_seconds=0)
    factory.made.append(rt)
    app = make_app(cmd="echo to-stdout; echo to-stderr >&2; exit 4")
    task = launch(rt, app, make_task(app))

    obs = wait_for_state(rt, task, TaskState.FAILED)
    assert containers_of(factory.state_dir) == [], "removed once its end was recorded"
    again = observe_one(rt, task)
    assert (again.state, again.exit_code, again.handle) == (obs.state, 4, task.handle)
    # Both streams; their relative order is the engine's (it reads them concurrently).
    assert sorted(rt.logs(task).splitlines()) == ["to-stderr", "to-stdout"]
    # A task id runs at most once, even after its container is gone.
    assert dict(rt.launch(launch_spec(app, task))) == dict(task.handle)
    assert containers_of(factory.state_dir) == []


def test_logs_return_the_tail_of_a_running_containers_output(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    app = make_app(cmd=f"for i in 1 2 3 4 5; do echo line-$i; done; {LOOP}")
    task = launch(rt, app, make_task(app))
    wait_for_output(factory, task, "line-5")

    assert rt.logs(task, tail=2) == "line-4\nline-5\n"
    assert rt.logs(make_task(app)) == ""


# --- nodes and wiring ------------------------------------------------------------------------


def test_without_configured_nodes_the_docker_host_is_the_node(rt: DockerRuntime) -> None:
    info = client().info()
    [node] = rt.nodes()
    assert node.hostname == info["Name"]
    assert node.resources.cpus == info["NCPU"]
    assert node.resources.mem == info["MemTotal"] // (1024 * 1024)
    assert node.ports == ((31000, 32000),)


def test_configured_nodes_are_used_as_given_and_must_not_share_ports(tmp_path: Path) -> None:
    nodes = [make_node("node-a", ports="31000-31009"), make_node("node-b", ports="31010-31019")]
    assert DockerRuntime(tmp_path, nodes).nodes() == nodes
    with pytest.raises(ValueError, match="overlap"):
        DockerRuntime(tmp_path, [*nodes, make_node("node-c", ports="31005-31006")])


def test_dromos_serve_can_run_on_docker(tmp_path: Path) -> None:
    assert build_parser().parse_args(["serve", "--runtime", "docker"]).runtime == "docker"
    runtime = build_runtime(ServeConfig(runtime="docker", state_dir=tmp_path))
    assert isinstance(runtime, DockerRuntime)
    assert runtime.default_image is None, "apps without a container are refused"


def test_the_model_service_example_serves_its_model(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    app = parse_app(json.loads((JOBS / "model-service.json").read_text()))
    port = free_port()
    task = launch(rt, app, make_task(app, ports=(port,)))

    status, body = wait_until(lambda: answers(port, "/model.json"), timeout=10,
                              what="the model service")
    assert status == 200
    assert json.loads(body) == {"name": "linear-score", "version": "2026-01",
                                "inputs": ["x"], "weight": 3, "intercept": 7}
    status, body = http_get(port, "/cgi-bin/predict?x=4")
    assert (status, json.loads(body)) == (200, {"model": "linear-score", "version": "2026-01",
                                                "x": 4, "score": 19})
    status, body = http_get(port, "/cgi-bin/predict?x=four")
    assert (status, "error" in json.loads(body)) == (400, True)
    assert app.healthChecks[0].path == "/model.json"
    rt.kill(task, app.kill_grace_seconds)
    wait_for_state(rt, task, TaskState.KILLED)


def test_virtual_nodes_share_the_one_engine(factory: RuntimeFactory) -> None:
    nodes = [Node("node-a", Resources(2, 512), ((31600, 31609),)),
             Node("node-b", Resources(2, 512), ((31610, 31619),))]
    rt = make_docker_runtime(factory.state_dir, nodes=nodes)
    factory.made.append(rt)
    app = make_app(cmd="echo $HOST")
    tasks = [launch(rt, app, make_task(app, host=n.hostname)) for n in nodes]
    for t, n in zip(tasks, nodes, strict=True):
        wait_for_state(rt, t, TaskState.FINISHED)
        assert factory.stdout(t) == f"{n.hostname}\n"
    assert rt.nodes() == nodes


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.integration
def test_dromos_serve_on_docker_runs_health_checks_and_adopts_after_kill_9(
    factory: RuntimeFactory,
) -> None:
    nodes_file = factory.state_dir.parent / "nodes.json"
    nodes_file.write_text(json.dumps([{"hostname": "docker-a", "cpus": 2, "mem": 1024,
                                       "ports": "33700-33719"}]))
    app = json.loads((JOBS / "model-service.json").read_text())
    app["healthChecks"][0].update(intervalSeconds=1, timeoutSeconds=1)
    server = Server(factory.state_dir, nodes_file, "--runtime", "docker")
    server.start()
    try:
        assert httpx.post(server.url + "/v2/apps", json=app).status_code == 201

        def healthy() -> list[dict[str, Any]] | None:
            tasks = server.get("/v2/apps/ml/model-service")["app"]["tasks"]
            ok = [t for t in tasks if t["state"] == "TASK_RUNNING" and t["healthCheckResults"]
                  and all(h["alive"] for h in t["healthCheckResults"])]
            return ok if len(ok) == 2 else None

        before = wait_for(healthy, 30, "two healthy model-service tasks")
        containers = {c["Id"] for c in containers_of(factory.state_dir)}
        assert len(containers) == 2
        shown = subprocess.run(
            ["docker", "ps", "-q", "--no-trunc", "--filter",
             "label=dromos.io/app=/ml/model-service"],
            capture_output=True, text=True, check=True, timeout=30).stdout.split()
        assert containers <= set(shown)
        port = before[0]["ports"][0]
        assert http_get(port, "/cgi-bin/predict?x=1")[1].endswith('"score": 10}\n')

        server.kill9()
        server.start()
        after = wait_for(healthy, 30, "the same two tasks, healthy again")
        assert {t["id"] for t in after} == {t["id"] for t in before}
        assert {c["Id"] for c in containers_of(factory.state_dir)} == containers, (
            "adopted, not replaced")
    finally:
        server.stop()


def test_a_container_runs_as_the_apps_user(factory: RuntimeFactory, rt: DockerRuntime) -> None:
    """Issue 11, defect 6: ``user`` was ignored (the container ran as root)."""
    app = container_app(user="nobody", cmd="id -u; id -un")
    task = launch(rt, app, make_task(app))
    assert inspect(task)["Config"]["User"] == "nobody"
    assert wait_for_state(rt, task, TaskState.FINISHED, TaskState.FAILED).state is \
        TaskState.FINISHED
    assert wait_for_output(factory, task, "nobody").split() == ["65534", "nobody"]


def test_a_container_that_could_not_start_is_removed_and_the_taken_port_named(
    factory: RuntimeFactory, rt: DockerRuntime
) -> None:
    """Issue 11, defect 8: such containers stayed "created", one more at each retry."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        app = container_app(container={"portMappings": [{"containerPort": 80}]})
        task = launch(rt, app, make_task(app, ports=(taken,)))
        obs = observe_one(rt, task)
    assert obs.state is TaskState.FAILED and obs.ports_taken == (taken,), obs.message
    assert containers_of(factory.state_dir) == [], "no container left behind, created"
