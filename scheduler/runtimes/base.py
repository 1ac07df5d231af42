"""The Runtime protocol: how Dromos launches, observes and kills tasks on a backend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, TypedDict

from scheduler.model.app import AppSpec
from scheduler.model.job import JobRun, JobSpec
from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.model.task import Task, TaskState, job_app_id
from scheduler.model.timefmt import iso

# Labels on everything a runtime creates, so `docker ps --filter label=...` and
# `kubectl get pods -l ...` show a user what Dromos runs.
LABEL_APP = "dromos.io/app"
LABEL_TASK = "dromos.io/task"
LABEL_VERSION = "dromos.io/version"
LABEL_JOB = "dromos.io/job"
LABEL_RUN = "dromos.io/run"


class RuntimeUnavailable(Exception):
    """The backend cannot be reached right now (Docker Engine down, API server gone)."""


class LaunchExtra(TypedDict, total=False):
    """Definition details as Marathon/Chronos JSON, for the backends that need them.

    ``container``: the app's (or job's) ``container`` object (Docker reads portMappings,
    parameters, volumes; Kubernetes the image and ports). ``portDefinitions``: the app's
    effective port definitions (Kubernetes Services). ``healthChecks`` and
    ``readinessChecks``: the app's checks (Kubernetes probes). Job runs carry only
    ``container``.
    """

    container: Mapping[str, Any]
    portDefinitions: list[Mapping[str, Any]]
    healthChecks: list[Mapping[str, Any]]
    readinessChecks: list[Mapping[str, Any]]


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a runtime needs to start one task (an app's or a job run's attempt); built
    by :func:`launch_spec`.

    Exactly one of ``cmd`` (run by ``/bin/sh -c`` as given) and ``args`` (exec'd, no shell)
    is set, unless ``image`` is set and the container's own entrypoint runs.
    """

    task_id: str
    app_id: str
    version: str
    host: str
    ports: tuple[int, ...]
    resources: Resources
    env: Mapping[str, str]
    labels: Mapping[str, str]
    cmd: str | None = None
    args: tuple[str, ...] | None = None
    image: str | None = None
    kill_grace_seconds: float = 3.0
    # The user to run as (``None``: the runtime's default); see scheduler/runtimes/users.py.
    user: str | None = None
    # Set for job runs (Chronos side): the job's name and the run id (== task_id).
    job_name: str | None = None
    run_id: str | None = None
    # The parts of the definition, as Marathon/Chronos JSON, that only some backends read.
    extra: LaunchExtra = field(default_factory=lambda: LaunchExtra())
    # The node's GPU devices this task owns (indices), assigned by the sharing step; the env
    # carries them as CUDA_VISIBLE_DEVICES, Docker as a device request.
    gpu_devices: tuple[int, ...] = ()


def task_env(spec: AppSpec, task_id: str, host: str, ports: Sequence[int]) -> dict[str, str]:
    """The environment Marathon gives a task: the app's ``env`` plus PORT0..n, PORTS, PORT,
    HOST, MARATHON_APP_ID, MARATHON_APP_VERSION, MESOS_TASK_ID (Dromos's values win)."""
    env = dict(spec.env)
    for i, p in enumerate(ports):
        env[f"PORT{i}"] = str(p)
        name = spec.port_definitions[i].name if i < len(spec.port_definitions) else None
        if name:
            env[f"PORT_{name.upper().replace('-', '_')}"] = str(p)
    if ports:
        env["PORT"] = str(ports[0])
    env["PORTS"] = ",".join(str(p) for p in ports)
    env["HOST"] = host
    env["MARATHON_APP_ID"] = spec.id
    env["MARATHON_APP_VERSION"] = spec.version or ""
    env["MESOS_TASK_ID"] = task_id
    for k, v in spec.labels.items():
        key = "MARATHON_APP_LABEL_" + "".join(c if c.isalnum() else "_" for c in k).upper()
        env[key] = v
    return env


def launch_spec(definition: AppSpec | JobSpec, task: Task,
                run: JobRun | None = None) -> LaunchSpec:
    """The LaunchSpec for ``task``: one builder for app tasks (``definition`` its app) and job
    run attempts (``definition`` its job, ``run`` the run, for its scheduled time). The task
    gives the id, host and ports; the definition what to run and with what."""
    if isinstance(definition, JobSpec):
        return _job_launch_spec(definition, task, run)
    spec = definition
    image = spec.container.docker.image if spec.container and spec.container.docker else None
    return LaunchSpec(
        task_id=task.id,
        app_id=spec.id,
        version=task.version,
        host=task.host,
        ports=task.ports,
        resources=spec.resources,
        env=task_env(spec, task.id, task.host, task.ports),
        labels=dict(spec.labels),
        cmd=spec.cmd,
        args=tuple(spec.args) if spec.args is not None else None,
        image=image,
        kill_grace_seconds=spec.kill_grace_seconds,
        user=spec.user or None,
        extra=_app_extra(spec),
    )


def _job_launch_spec(job: JobSpec, task: Task, run: JobRun | None) -> LaunchSpec:
    """Chronos's shell/arguments rules, its CHRONOS_* environment, the job's image."""
    run_id = task.run_id or (run.id if run else task.id)
    scheduled = run.scheduled_for if run else None
    env = dict(job.env)
    env.update({
        "CHRONOS_JOB_NAME": job.name, "CHRONOS_JOB_OWNER": job.owner,
        "CHRONOS_RESOURCE_CPU": f"{job.cpus:g}", "CHRONOS_RESOURCE_MEM": f"{job.mem:g}",
        "CHRONOS_RESOURCE_DISK": f"{job.disk:g}", "MESOS_TASK_ID": task.id,
        "DROMOS_RUN_ID": run_id, "DROMOS_ATTEMPT": str(task.attempt), "HOST": task.host,
        "DROMOS_SCHEDULED_TIME": iso(scheduled) if scheduled else "",
    })
    cmd: str | None = None
    args: tuple[str, ...] | None = None
    if job.shell:
        cmd = job.command or None
    else:
        args = tuple(([job.command] if job.command else []) + list(job.arguments)) or None
    extra = LaunchExtra()
    if job.container:
        extra["container"] = job.container.model_dump(mode="json")
    return LaunchSpec(
        task_id=task.id, app_id=job_app_id(job.name), version="", host=task.host, ports=(),
        resources=job.resources, env=env, labels={}, cmd=cmd, args=args,
        image=job.container.image if job.container else None,
        job_name=job.name, run_id=run_id, extra=extra, user=job.runAsUser or None,
    )


def _app_extra(spec: AppSpec) -> LaunchExtra:
    """What backends that run checks themselves (Kubernetes probes, Services) need."""
    extra = LaunchExtra(
        portDefinitions=[p.model_dump(mode="json", exclude_none=True)
                         for p in spec.port_definitions],
        healthChecks=[hc.to_json() for hc in spec.healthChecks],
        readinessChecks=[rc.model_dump(mode="json") for rc in spec.readinessChecks],
    )
    if spec.container:
        extra["container"] = spec.container.model_dump(mode="json")
    return extra


@dataclass(frozen=True)
class Observation:
    """What the runtime sees of one task right now.

    ``state`` is RUNNING while the task's process/container is alive, and a terminal state
    once it is gone: FINISHED (exit 0), FAILED (non-zero, or never started), KILLED (it was
    killed through :meth:`Runtime.kill`), LOST (the runtime has no trace of it at all).
    ``exit_code`` is ``None`` while running or when unknowable. ``ports_taken``: host
    ports the task could not have because a process Dromos does not own holds them (the
    task then is FAILED without having run); placement avoids them on that node for a while.
    """

    task_id: str
    state: TaskState
    exit_code: int | None = None
    message: str = ""
    handle: Mapping[str, Any] = field(default_factory=dict)
    started_at: datetime | None = None
    ports_taken: tuple[int, ...] = ()


@dataclass(frozen=True)
class OutputChunk:
    """Output of one stream: ``stdout``, ``stderr``, or ``output`` (both interleaved, as
    Docker and Kubernetes keep them)."""

    stream: str
    text: str


@dataclass(frozen=True)
class Output:
    """What :meth:`Runtime.read_output` read: one chunk per stream, the cursor to read on
    from, and where it came from (e.g. ``sandbox files``, ``docker``)."""

    chunks: tuple[OutputChunk, ...]
    cursor: str
    source: str


@dataclass(frozen=True)
class SandboxFile:
    """One file the runtime keeps for a task: its path relative to the task's sandbox (``/``
    separated), size in bytes and modification time."""

    path: str
    size: int
    modified: datetime


def unobservable(task: Task, error: Exception) -> Observation:
    """What ``observe`` reports for a task it could not read: its last known state, with the
    error as the message (one odd task must not hide the others, nor be declared dead)."""
    return Observation(task_id=task.id, state=task.state, exit_code=task.exit_code,
                       message=f"could not observe the task: {error}",
                       handle=dict(task.handle), started_at=task.started_at)


class Runtime(Protocol):
    """A backend that runs tasks.

    Contract:
    - Names are deterministic: everything the runtime creates for a task is findable from
      the task id alone, so ``launch`` of an id that is already running returns the existing
      handle instead of starting a twin, and a restarted Dromos can adopt what runs.
    - ``launch`` returns quickly with a handle (JSON-serialisable) once the task was started;
      it raises :class:`RuntimeUnavailable` if the backend is down, ``ValueError`` if the spec
      cannot run here (e.g. an image on the local runtime).
    - ``kill`` does not block: it asks the task to stop (SIGTERM or equivalent) and makes sure
      it is forcibly stopped ``grace_seconds`` later. Killing a task that is gone is a no-op.
      Kill is idempotent: a second kill never extends the first one's deadline, and a kill
      that raised :class:`RuntimeUnavailable` can simply be sent again once the backend is
      back (:mod:`scheduler.runtimes.kills`).
    - ``read_output`` and ``sandbox_files`` show what a task printed and the files the
      runtime keeps for it, also after it ended.
    - ``observe`` reports every task it is given, in order, and never raises for one task.
    """

    name: str

    def nodes(self) -> list[Node]:
        """The nodes tasks can be placed on, with their total capacity."""
        ...

    def launch(self, spec: LaunchSpec) -> Mapping[str, Any]: ...

    def kill(self, task: Task, grace_seconds: float) -> None: ...

    def observe(self, tasks: Sequence[Task]) -> list[Observation]: ...

    def probe_host(self, task: Task) -> str:
        """The address health checks connect to for ``task`` (e.g. ``127.0.0.1``)."""
        ...

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]:
        """argv and environment that run a COMMAND health check in the task's context."""
        ...

    def read_output(self, task: Task, tail: int | None, cursor: str | None) -> Output:
        """The task's output: without ``cursor``, the last ``tail`` lines (all when ``None``,
        within a bound of a few MiB) of each stream; with ``cursor`` (from an earlier
        :class:`Output` of the same task), what was written since, at most about 1 MiB per
        call (the rest comes with the next cursor), never ending inside a character. A
        cursor of another runtime or a damaged one reads like no cursor. Works for tasks
        that ended, as long as the runtime keeps their output. A task the runtime has no
        output of reads as empty chunks. Raises ``LookupError`` when this task's output
        cannot be read (an id the backend cannot name, a node that does not answer) and
        :class:`RuntimeUnavailable` when the backend is down."""
        ...

    def sandbox_files(self, task: Task) -> list[SandboxFile]:
        """The files the runtime keeps for the task on the Dromos host, sorted by path: its
        sandbox (local), or its records and saved output (docker, kubernetes). ``[]`` when
        it keeps none (never launched here, or an id the runtime cannot name). Never
        raises for a task it does not know."""
        ...

    def read_sandbox_file(self, task: Task, path: str, offset: int = 0,
                          limit: int = 1 << 20) -> bytes:
        """At most ``limit`` bytes of one of :meth:`sandbox_files`, from byte ``offset``
        (``b""`` past its end). Raises ``LookupError`` for a path that is not one of the
        task's files (including any path leaving the sandbox)."""
        ...

    def close(self) -> None:
        """Release backend resources. Running tasks keep running (they are adopted later)."""
        ...
