"""The Docker runtime: every task is one container on a Docker Engine (``--runtime docker``).

Identity. A task's container is named :func:`container_name` of its task id (``dromos-`` +
the id, sanitised to Docker's ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``, plus a short hash of the id
whenever sanitising changed it) and carries the labels ``dromos.io/app``, ``dromos.io/task``,
``dromos.io/version`` and, for job runs, ``dromos.io/job`` and ``dromos.io/run``; ``docker ps
--filter label=dromos.io/app`` shows what Dromos runs. Docker refuses a second container of
the same name, which is what makes :meth:`DockerRuntime.launch` idempotent even when two
launches race, and a restarted Dromos finds its containers again by label (adoption).

What the runtime remembers lives beside the containers, in ``<state_dir>/docker/tasks/<container
name>/`` (a container's labels cannot change after creation): ``launch.json`` (container id,
start time), ``kill.json`` (a kill was requested, and its SIGKILL deadline), ``exit.json``
(how the task ended, written when the end is first seen) and ``output.log`` (the tail of the
container's output, saved when the container is removed). These records make a task id run
at most once, keep kills and outcomes across restarts, and let exited containers be removed
without losing what they said.

Decisions (also in the README, "Docker runtime"):

- **Apps (and jobs) without a container** are refused with a ``ValueError`` naming them: the
  docker runtime runs images, and silently running a bare command on the host (or in some
  image) would surprise. Whoever embeds the runtime may set ``default_image`` to run such apps'
  ``cmd``/``args`` in that image instead (the test suite does, to run the runtime contract
  suite on Docker).
- **Commands.** ``cmd`` runs as ``/bin/sh -c <cmd>`` (the entrypoint is replaced, as Mesos's
  Docker containerizer does); ``args`` are the container's command, handed to the image's
  entrypoint (Marathon's meaning); neither runs the image's own entrypoint and command. Every
  container runs Docker's init (``--init``, tini) as PID 1, so signals reach the task the way
  they do outside a container (a PID 1 ignores SIGTERM unless it handles it) and zombies are
  reaped.
- **Ports** use bridge networking. ``portMappings[i]`` publishes ``containerPort`` on host port
  ``LaunchSpec.ports[i]`` (the host ports Dromos's placement chose, in mapping order); a
  ``containerPort`` of 0 means "the same number as the host port" (Marathon). Apps with
  ``portDefinitions`` (no mappings) get each host port published on the same container port.
  Ports are bound on ``bind_address`` (127.0.0.1 unless configured). ``docker.network: HOST``
  uses the host's network instead (nothing published).
- **Environment.** Exactly Marathon's: ``PORT0..n``, ``PORT``, ``PORTS`` and ``PORT_<NAME>`` hold
  the *host* ports ("only host ports are made available to a task through environment
  variables"; ``HOST:PORT0`` is the task's address as the rest of the world sees it). With a
  fixed ``containerPort`` the task binds that port; with ``containerPort`` 0 the container port
  equals the host port, so ``$PORT0`` is the port to bind.
- **Resources.** ``cpus`` becomes a CFS quota (``NanoCpus``), clamped to 0.01 .. the engine's
  cores; ``mem`` (MiB) a hard memory limit, swap included, of at least Docker's 6 MiB (0 = no
  limit). ``gpus`` are refused.
- **Images.** A local image is used as it is; a missing one is pulled; ``forcePullImage``
  always pulls first and falls back to the local image when the pull fails. An image that is
  neither local nor pullable is a ``ValueError`` naming the image (the launch is marked
  failed). Pulls happen inside :meth:`DockerRuntime.launch`, so a large first pull holds the
  control loop for its duration.
- **Exited containers** are kept ``keep_exited_seconds`` (default an hour: ``docker logs``
  and ``docker inspect`` for whoever investigates) after their end was recorded, then
  removed by a later :meth:`DockerRuntime.observe`, which first saves the tail of their
  output for :meth:`DockerRuntime.logs`. ``None`` keeps them forever.

Reported states (:meth:`DockerRuntime.observe`):

- RUNNING while the container runs (also paused or restarting). A kill in progress is still
  RUNNING until the container has exited.
- STARTING for a container that was created but not started yet (Dromos died between the two).
- KILLED once exited after :meth:`DockerRuntime.kill`, whatever its exit code (which is kept).
- FINISHED on exit code 0.
- FAILED on a non-zero exit code (``128 + n`` after death by signal ``n``; 127 for a command
  that was not found, as from a shell), when the container could not be started (the engine's
  reason), or when the kernel's OOM killer ended it (message ``OOM killed``).
- LOST when there is no container for the task and no recorded end.

When the engine cannot be reached, :meth:`~DockerRuntime.launch`,
:meth:`~DockerRuntime.observe`, :meth:`~DockerRuntime.kill` and :meth:`~DockerRuntime.logs`
raise :class:`RuntimeUnavailable` (nothing is guessed; :meth:`~DockerRuntime.nodes` answers
with the host's last known figures, or no node at all); the orchestrator keeps serving, shows
the runtime as unavailable and retries on its next passes. The runtime backs off meanwhile: after
a failure the engine is tried again after 1 s, then 2, 4... up to 30 s between attempts (calls
in between raise at once), so a dead or hung engine does not slow the control loop down.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from scheduler.model.node import Node
from scheduler.model.resources import PortRange, Resources, format_port_ranges
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.backoff import Backoff
from scheduler.runtimes.base import (
    LABEL_APP,
    LABEL_JOB,
    LABEL_RUN,
    LABEL_TASK,
    LABEL_VERSION,
    LaunchSpec,
    Observation,
    Output,
    RuntimeUnavailable,
    SandboxFile,
    unobservable,
)
from scheduler.runtimes.executor import read_json, write_json_atomic
from scheduler.runtimes.extra import container_section, docker_section
from scheduler.runtimes.kills import read_kill, record_kill
from scheduler.runtimes.output import list_files, read_combined, read_file_in, tail_lines

log = logging.getLogger(__name__)


NAME_PREFIX = "dromos-"
MAX_NAME_LENGTH = 128
"""Container names (and the record directories named after them) stay below this length."""

DEFAULT_PORTS: tuple[PortRange, ...] = ((31000, 32000),)
"""The port range of the Docker host's node (Mesos agents offer 31000-32000 by default)."""

MIN_MEMORY_MIB = 6.0
"""Docker refuses memory limits below 6 MiB."""
MIN_CPUS = 0.01
"""The smallest CFS quota the kernel accepts (1 ms per 100 ms period)."""

API_TIMEOUT_SECONDS = 60.0
"""How long one Docker API call may take before the engine counts as unavailable."""
NODE_REFRESH_SECONDS = 60.0
"""How often the Docker host's capacity (``docker info``) is read again."""
DEFAULT_KEEP_EXITED_SECONDS = 3600.0
LOG_TAIL_LINES = 1000
"""How much of a removed container's output is kept for :meth:`DockerRuntime.logs`."""
MAX_REMOVALS_PER_OBSERVE = 20
"""Bounds the time one observe spends removing exited containers; the rest wait a pass."""

LAUNCH_FILE = "launch.json"
EXIT_FILE = "exit.json"
OUTPUT_FILE = "output.log"

_RUNNING_STATES = frozenset({"running", "paused", "restarting"})
_UNREACHABLE = (requests.ConnectionError, requests.Timeout)
_UNSAFE_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_.-]")
_ZERO_TIME = "0001-01-01T00:00:00Z"
_BIN_SH = "/bin/sh"
# Passed to `docker exec` so the CLI talks to the same engine the SDK found (from_env reads
# the same variables); nothing else of Dromos's environment is handed on.
_CLI_ENV = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH",
            "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_API_VERSION")

ClientFactory = Callable[[], Any]
"""Returns a ``docker.DockerClient``; may raise when the engine cannot be reached."""


def default_client() -> Any:
    """A client for the engine the environment points at (``DOCKER_HOST``, else the local
    socket), with :data:`API_TIMEOUT_SECONDS` per call."""
    return docker.from_env(timeout=int(API_TIMEOUT_SECONDS))


# --- names -----------------------------------------------------------------------------------


def container_name(task_id: str) -> str:
    """The container name of ``task_id``: ``dromos-<task id>`` when the id only uses Docker's
    name characters, else the sanitised id (each other character becomes ``-``) followed by
    ``-`` and 12 hex digits of the id's SHA-256, so ids that sanitise alike (``etl:1`` and
    ``etl-1``) still get different names. Raises ``ValueError`` for an empty id."""
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("task id must be a non-empty string")
    safe = _UNSAFE_NAME_CHARS.sub("-", task_id)
    name = NAME_PREFIX + safe
    if safe != task_id or len(name) > MAX_NAME_LENGTH:
        digest = hashlib.sha256(task_id.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        name = f"{name[: MAX_NAME_LENGTH - len(digest) - 1]}-{digest}"
    return name


# --- the runtime -----------------------------------------------------------------------------


class DockerRuntime:
    """Runs each task as one container on the Docker Engine ``client_factory`` connects to.

    ``nodes``: the accounting domains tasks are placed on (all run on the one engine, so
    their port ranges must not overlap: ``ValueError`` otherwise); ``None`` or empty means one
    node describing the Docker host (:meth:`nodes`). ``default_image``: the image that runs
    apps without a container (``None``: they are refused). ``bind_address``: where published
    ports listen on the host. ``labels``: extra labels for every container (Dromos's own win),
    e.g. to tell several Dromos instances sharing an engine apart. ``keep_exited_seconds``: see
    the module docstring.

    Nothing touches the engine until first use, so a runtime can be built while the engine is
    down. Safe to use from several threads.
    """

    name = "docker"

    def __init__(
        self,
        state_dir: Path,
        nodes: Sequence[Node] | None = None,
        client_factory: ClientFactory = default_client,
        *,
        default_image: str | None = None,
        bind_address: str = "127.0.0.1",
        labels: Mapping[str, str] | None = None,
        keep_exited_seconds: float | None = DEFAULT_KEEP_EXITED_SECONDS,
    ) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.records_dir = self.state_dir / "docker" / "tasks"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        if nodes:
            _check_ports_disjoint(nodes)
        self._nodes = list(nodes or ())
        self._client_factory = client_factory
        self.default_image = default_image
        self.bind_address = bind_address
        self.extra_labels = dict(labels or {})
        self.keep_exited_seconds = keep_exited_seconds
        self._client_obj: Any = None
        self._client_lock = threading.RLock()  # _api() notes failures while holding it
        self._backoff = Backoff()
        self._info: dict[str, Any] | None = None
        self._info_read_at = 0.0
        self._timers: dict[str, threading.Timer] = {}
        self._timers_lock = threading.Lock()

    # --- the Runtime protocol ----------------------------------------------------------------

    def nodes(self) -> list[Node]:
        """The configured nodes; without any, one node for the Docker host: its name, cores
        and memory from ``docker info``, the free disk of its data directory (when that is
        on this machine; else of ``state_dir``), ports 31000-32000.

        The host's figures are re-read every :data:`NODE_REFRESH_SECONDS`; while the engine is
        down the last known ones are used (kept in ``<state_dir>/docker/node.json`` across
        restarts). Never raises: when the engine has never answered there is no node (``[]``)
        -- nothing can be placed, and :meth:`observe` and :meth:`launch` raise
        :class:`RuntimeUnavailable` saying why -- so the pages that list nodes keep working.
        """
        if self._nodes:
            return list(self._nodes)
        try:
            info = self._host_info()
        except RuntimeUnavailable:
            return []
        root = Path(str(info.get("DockerRootDir") or ""))
        disk_of = root if root.is_absolute() and root.is_dir() else self.state_dir
        return [
            Node(
                hostname=str(info.get("Name") or "docker"),
                resources=Resources(
                    cpus=float(info.get("NCPU") or 1),
                    mem=float(int(info.get("MemTotal") or 0) // (1024 * 1024)),
                    disk=float(shutil.disk_usage(disk_of).free // (1024 * 1024)),
                ),
                ports=DEFAULT_PORTS,
            )
        ]

    def probe_host(self, task: Task) -> str:
        """Where the task's published ports answer: ``bind_address``, or 127.0.0.1 when
        ports are bound on every address."""
        return "127.0.0.1" if self.bind_address in ("", "0.0.0.0", "::") else self.bind_address

    def launch(self, spec: LaunchSpec) -> Mapping[str, Any]:
        """Create and start the task's container; return ``{"container_id",
        "container_name"}``.

        Idempotent per task id: when the task's container exists, its handle is returned and
        nothing new is created (a container left created-but-not-started by a crash is
        started); when the task ran before and its container was removed since, the recorded
        handle is returned -- a task id runs at most once. A container the engine creates but
        cannot start (a host port already taken, say) is not an error here: the task is then
        observed as FAILED with the engine's reason.

        Raises ``ValueError`` when the task cannot run here: no image (and no
        ``default_image``), an image that is neither local nor pullable, unsupported container
        options, or a definition the engine rejects. Raises :class:`RuntimeUnavailable` when
        the engine cannot be reached.
        """
        name = container_name(spec.task_id)
        image = spec.image or self.default_image
        if not image:
            what = (f"job {spec.job_name!r} has no container.image" if spec.job_name is not None
                    else f"app {spec.app_id!r} has no container.docker.image")
            raise ValueError(f"the docker runtime runs containers: {what} (give it a "
                             "container, or run it on the local runtime)")
        force_pull = bool(docker_section(spec).get("forcePullImage", False))
        api = self._api()
        with self._engine(f"launching task {spec.task_id!r}"):
            existing = self._inspect(api, name)
            if existing is not None:
                return self._relaunch(api, spec.task_id, name, existing)
            earlier = read_json(self._dir(name) / LAUNCH_FILE)
            if earlier is not None:
                # It ran, ended, and its container was removed: never again under this id.
                return _handle(str(earlier.get("container_id") or ""), name)
            kwargs = self._create_args(api, spec, name, image)
            self._ensure_image(api, image, force_pull)
            try:
                created = api.create_container(**kwargs)
            except docker.errors.APIError as e:
                if e.status_code == 409:  # a concurrent launch of the same id won the name
                    raced = self._inspect(api, name)
                    if raced is not None:
                        return self._relaunch(api, spec.task_id, name, raced)
                raise ValueError(
                    f"docker cannot create the container of task {spec.task_id!r}: "
                    f"{_explain(e)}"
                ) from None
            container_id = str(created["Id"])
            self._write_launch(name, spec.task_id, container_id, image, started_at=None)
            return self._start(api, spec.task_id, name, container_id)

    def kill(self, task: Task, grace_seconds: float) -> None:
        """Ask the container to stop: its stop signal (the image's ``STOPSIGNAL``, else
        SIGTERM) now, SIGKILL ``grace_seconds`` later if it still runs (at once when
        ``grace_seconds <= 0``). Does not block: the SIGKILL is sent by a timer.

        The request and its deadline are recorded first, so the task is reported KILLED and
        a restarted Dromos enforces the deadline (in :meth:`observe`). A second kill never
        extends an earlier deadline. A task whose container has exited, is unknown, or whose
        end is already recorded is left alone (no-op). Raises :class:`RuntimeUnavailable`
        when the engine cannot be reached (nothing is recorded then; ask again).
        """
        try:
            name = container_name(task.id)
        except ValueError:
            return
        record_dir = self._dir(name)
        if (record_dir / EXIT_FILE).exists():
            return
        api = self._api()
        with self._engine(f"killing task {task.id!r}"):
            attrs = self._inspect(api, name)
            if attrs is None or (attrs.get("Labels") or {}).get(LABEL_TASK, task.id) != task.id:
                return
            status = str((attrs.get("State") or {}).get("Status", ""))
            if status not in _RUNNING_STATES and status != "created":
                return
            now = time.time()
            request = record_kill(record_dir, grace_seconds, now)
            if status == "created":
                return  # never started: observe reports it KILLED, and launch won't start it
            if request.overdue(now):
                self._signal(api, name, "SIGKILL")
                return
            stop_signal = str((attrs.get("Config") or {}).get("StopSignal") or "SIGTERM")
            self._signal(api, name, stop_signal)
        self._schedule_escalation(name, request.remaining(now))

    def observe(self, tasks: Sequence[Task]) -> list[Observation]:
        """One observation per task, in order; never raises for one task.

        One ``GET /containers/json`` per call (all containers labelled ``dromos.io/task``),
        plus one inspect per container whose end is seen for the first time (its exit code
        and OOM flag are not in the list). State rules are in the module docstring.

        Side effects: records ends (``exit.json``), SIGKILLs a container whose recorded kill
        deadline has passed (a kill survives a restart of Dromos), and removes exited
        containers older than ``keep_exited_seconds``. If one task cannot be observed its
        previous state is reported with the reason. Raises :class:`RuntimeUnavailable` when
        the engine cannot be reached.
        """
        api = self._api()
        with self._engine("listing containers"):
            listed: list[dict[str, Any]] = api.containers(
                all=True, filters={"label": LABEL_TASK}
            )
        by_task: dict[str, dict[str, Any]] = {}
        for summary in listed:
            task_id = (summary.get("Labels") or {}).get(LABEL_TASK)
            # Two containers with one task label would be someone else's doing: the one with
            # the task's deterministic name is the task's.
            if task_id and (task_id not in by_task or _name_of(summary) == _safe_name(task_id)):
                by_task[task_id] = summary
        out: list[Observation] = []
        for task in tasks:
            try:
                out.append(self._observe_one(api, task, by_task.get(task.id)))
            except RuntimeUnavailable:
                raise
            except _UNREACHABLE as e:  # gone in the middle: no observation is better than a guess
                raise self._failed(f"the Docker Engine stopped answering: {e}") from e
            except Exception as e:  # one odd container or record must not hide the others
                log.exception("observing task %s failed", task.id)
                out.append(unobservable(task, e))
        self._collect_exited(api, listed)
        return out

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]:
        """``docker exec <container> /bin/sh -c <command>``: the command runs inside the
        task's container, with its environment. The environment returned is only what the
        ``docker`` CLI needs to reach the same engine (``PATH``, ``HOME``, ``DOCKER_*``)."""
        cli = shutil.which("docker") or "docker"
        env = {k: v for k, v in os.environ.items() if k in _CLI_ENV}
        env.setdefault("PATH", os.defpath)
        return [cli, "exec", container_name(task.id), _BIN_SH, "-c", command], env

    def close(self) -> None:
        """Cancel pending SIGKILL timers and drop the engine connection. Containers keep
        running; kill deadlines stay recorded and are enforced by the next :meth:`observe`
        of any runtime over this state."""
        with self._timers_lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for t in timers:
            t.cancel()
        with self._client_lock:
            client, self._client_obj = self._client_obj, None
        if client is not None:
            try:
                client.close()
            except Exception:  # closing a connection pool must not fail a shutdown
                log.debug("closing the docker client failed", exc_info=True)

    def read_output(self, task: Task, tail: int | None, cursor: str | None) -> Output:
        """The container's output (stdout and stderr interleaved, one ``output`` chunk) with
        a line cursor (:func:`~scheduler.runtimes.output.read_combined`), from :meth:`logs`."""
        try:
            text = self.logs(task, None)
        except ValueError as e:  # an id that names no container
            raise LookupError(str(e)) from None
        return read_combined(text, tail, cursor, self.name)

    def sandbox_files(self, task: Task) -> list[SandboxFile]:
        """The task's records (``launch.json``, ``kill.json``, ``exit.json``) and the output
        tail saved when its container was removed; the container's own files stay in it."""
        name = _safe_name(task.id)
        return list_files(self._dir(name)) if name is not None else []

    def read_sandbox_file(self, task: Task, path: str, offset: int = 0,
                          limit: int = 1 << 20) -> bytes:
        """One of :meth:`sandbox_files`."""
        name = _safe_name(task.id)
        if name is None:
            raise LookupError(f"task id {task.id!r} names no container")
        return read_file_in(self._dir(name), path, offset, limit)

    # --- beyond the protocol -----------------------------------------------------------------

    def logs(self, task: Task, tail: int | None = 200) -> str:
        """The last ``tail`` lines (all when ``None``) of the task's output, stdout and stderr
        interleaved (in the order the engine read them: lines written to both at nearly the
        same moment may swap); from the container while it exists, else from the tail saved
        when it was removed (``""`` when there is nothing). Raises
        :class:`RuntimeUnavailable` when the engine cannot be reached."""
        name = container_name(task.id)
        api = self._api()
        with self._engine(f"reading the output of task {task.id!r}"):
            try:
                raw: bytes = api.logs(name, stdout=True, stderr=True,
                                      tail="all" if tail is None else max(0, tail))
                return raw.decode("utf-8", "replace")
            except docker.errors.NotFound:
                pass
        try:
            text = (self._dir(name) / OUTPUT_FILE).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        return tail_lines(text, tail)

    def container_name(self, task_id: str) -> str:
        """The name of ``task_id``'s container (see :func:`container_name`)."""
        return container_name(task_id)

    # --- the engine --------------------------------------------------------------------------

    def _api(self) -> Any:
        """The low-level API client, connecting on first use.

        Raises :class:`RuntimeUnavailable` when the engine cannot be reached, and without
        trying while the retry delay after the last failure runs
        (:class:`~scheduler.runtimes.backoff.Backoff`), so a dead or hung engine costs the
        control loop nothing between attempts.
        """
        with self._client_lock:
            self._backoff.check()
            if self._client_obj is None:
                try:
                    self._client_obj = self._client_factory()
                except (docker.errors.DockerException, requests.RequestException, OSError) as e:
                    raise self._failed(f"cannot connect to the Docker Engine: {e}") from e
            return self._client_obj.api

    def _failed(self, why: str) -> RuntimeUnavailable:
        """Note that the engine could not be reached: back off, and drop the client so the
        next attempt connects afresh (the engine may come back as another version)."""
        with self._client_lock:
            self._client_obj = None
            return self._backoff.failed(why)

    @contextmanager
    def _engine(self, doing: str) -> Iterator[None]:
        """Turns a failure to reach the engine, and an engine error nobody handled on the way
        out (an inspect or a list that fails), into :class:`RuntimeUnavailable`. The errors
        that say something about the task (a create or start the engine refuses, a failed
        pull) are handled where they happen. A call that went through resets the retry
        delay."""
        try:
            yield
        except docker.errors.APIError as e:
            raise RuntimeUnavailable(
                f"the Docker Engine failed while {doing}: {_explain(e)}"
            ) from e
        except _UNREACHABLE as e:
            raise self._failed(f"the Docker Engine did not answer while {doing}: {e}") from e
        self._backoff.succeeded()

    @staticmethod
    def _inspect(api: Any, name: str) -> dict[str, Any] | None:
        try:
            attrs: dict[str, Any] = api.inspect_container(name)
        except docker.errors.NotFound:
            return None
        # Inspect has the labels under Config; keep them where the list call has them too.
        attrs.setdefault("Labels", (attrs.get("Config") or {}).get("Labels") or {})
        return attrs

    def _host_info(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._info is not None and now - self._info_read_at < NODE_REFRESH_SECONDS:
            return self._info
        cache = self.state_dir / "docker" / "node.json"
        try:
            api = self._api()
            with self._engine("reading the engine's info"):
                raw = api.info()
            info = {k: raw.get(k) for k in ("Name", "NCPU", "MemTotal", "DockerRootDir")}
            write_json_atomic(cache, info)
        except (RuntimeUnavailable, docker.errors.APIError) as e:
            if self._info is not None:
                return self._info
            try:
                saved = read_json(cache)
            except ValueError:
                saved = None
            if saved is None:
                raise RuntimeUnavailable(f"the Docker host's capacity is unknown: {e}") from e
            info = saved
        self._info, self._info_read_at = info, now
        return info

    # --- launching ---------------------------------------------------------------------------

    def _create_args(self, api: Any, spec: LaunchSpec, name: str, image: str) -> dict[str, Any]:
        """The keyword arguments of ``create_container``; ``ValueError`` for what cannot run."""
        container = container_section(spec)
        docker_spec = docker_section(spec)
        if container.get("volumes"):
            raise ValueError(f"task {spec.task_id!r}: container volumes are not supported by "
                             "the docker runtime yet")
        if docker_spec.get("parameters"):
            raise ValueError(f"task {spec.task_id!r}: docker parameters are not supported by "
                             "the docker runtime yet")
        if spec.resources.gpus > 0:
            raise ValueError(f"task {spec.task_id!r} asks for GPUs; the docker runtime has none")
        if spec.cmd is not None and spec.args is not None:
            raise ValueError(f"task {spec.task_id!r} has both cmd and args; give one")
        if spec.cmd is not None and not spec.cmd.strip():
            raise ValueError(f"task {spec.task_id!r} has an empty cmd")
        env: dict[str, str] = {}
        for k, v in spec.env.items():
            if not k or "=" in k or "\0" in k or "\0" in str(v):
                raise ValueError(f"task {spec.task_id!r}: invalid environment variable {k!r}")
            env[k] = str(v)
        network = str(docker_spec.get("network") or "BRIDGE").upper()
        if network not in ("BRIDGE", "HOST"):
            raise ValueError(f"task {spec.task_id!r}: docker network {network!r} is not "
                             "supported (BRIDGE or HOST)")
        exposed, bindings = (
            ([], {}) if network == "HOST" else self._port_bindings(spec, container)
        )
        labels = {**self.extra_labels, LABEL_APP: spec.app_id, LABEL_TASK: spec.task_id,
                  LABEL_VERSION: spec.version}
        if spec.job_name is not None:
            labels[LABEL_JOB] = spec.job_name
        if spec.run_id is not None:
            labels[LABEL_RUN] = spec.run_id
        host_config = api.create_host_config(
            init=True,
            port_bindings=bindings or None,
            network_mode="host" if network == "HOST" else None,
            nano_cpus=self._nano_cpus(spec.resources.cpus),
            mem_limit=_mem_bytes(spec.resources.mem),
            # Same as the limit: no swap on top, so the limit means what the app asked for.
            memswap_limit=_mem_bytes(spec.resources.mem),
            privileged=bool(docker_spec.get("privileged", False)),
        )
        kwargs: dict[str, Any] = {
            "image": image,
            "name": name,
            "labels": labels,
            "environment": env,
            "ports": exposed or None,
            "host_config": host_config,
            "detach": True,
        }
        if spec.cmd is not None:
            # The entrypoint is replaced (Mesos does the same) so the shell runs the command
            # exactly as given, whatever ENTRYPOINT the image has.
            kwargs["entrypoint"] = [_BIN_SH, "-c"]
            kwargs["command"] = [spec.cmd]
        elif spec.args:
            kwargs["command"] = [str(a) for a in spec.args]
        return kwargs

    def _port_bindings(
        self, spec: LaunchSpec, container: Mapping[str, Any]
    ) -> tuple[list[tuple[int, str]], dict[str, list[tuple[str, int]]]]:
        """Container ports to expose and their host bindings, in Docker's ``port/proto`` form."""
        mappings = container.get("portMappings")
        pairs: list[tuple[int, int, str]] = []  # (container port, host port, protocol)
        if mappings is not None:
            if len(spec.ports) != len(mappings):
                raise ValueError(
                    f"task {spec.task_id!r} has {len(spec.ports)} host port(s) for "
                    f"{len(mappings)} portMappings"
                )
            for m, host_port in zip(mappings, spec.ports, strict=True):
                container_port = int(m.get("containerPort") or 0) or host_port
                pairs.append((container_port, host_port, str(m.get("protocol") or "tcp")))
        else:
            # portDefinitions: the host ports are the task's ports; published one to one.
            pairs = [(p, p, "tcp") for p in spec.ports]
        exposed: list[tuple[int, str]] = []
        bindings: dict[str, list[tuple[str, int]]] = {}
        for container_port, host_port, protocols in pairs:
            for proto in protocols.split(","):
                key = f"{container_port}/{proto}"
                if key not in bindings:
                    exposed.append((container_port, proto))
                bindings.setdefault(key, []).append((self.bind_address, host_port))
        return exposed, bindings

    def _nano_cpus(self, cpus: float) -> int:
        if cpus <= 0:
            return 0
        limit = max(cpus, MIN_CPUS)
        # More cores than the engine has is refused by Docker; virtual nodes may promise them.
        try:
            ncpu = float(self._host_info().get("NCPU") or 0)
        except RuntimeUnavailable:
            ncpu = 0.0
        if ncpu > 0:
            limit = min(limit, ncpu)
        return round(limit * 1e9)

    def _ensure_image(self, api: Any, image: str, force_pull: bool) -> None:
        """Make ``image`` available locally, pulling it when forced or missing."""
        local = self._image_present(api, image)
        if local and not force_pull:
            return
        error = _pull(api, image)
        if error is None:
            return
        if local:
            log.warning("forcePullImage: pulling %s failed (%s); using the local image",
                        image, error)
            return
        raise ValueError(f"image {image!r} is not on the Docker host and cannot be pulled: "
                         f"{error}")

    @staticmethod
    def _image_present(api: Any, image: str) -> bool:
        try:
            api.inspect_image(image)
        except docker.errors.NotFound:
            return False
        return True

    def _start(self, api: Any, task_id: str, name: str, container_id: str) -> dict[str, Any]:
        try:
            api.start(container_id)
        except docker.errors.NotFound:
            return _handle(container_id, name)  # removed by someone meanwhile: LOST
        except docker.errors.APIError as e:
            # Like a command that cannot be executed on the local runtime: the task failed,
            # the launch did not. Record why, so observe reports it.
            self._write_exit(name, {
                "state": TaskState.FAILED.value,
                "exit_code": None,
                "message": f"docker could not start the container: {_explain(e)}",
                "finished_at": _iso(datetime.now(UTC)),
            })
            return _handle(container_id, name)
        attrs = self._inspect(api, container_id)
        started = _parse_time((attrs or {}).get("State", {}).get("StartedAt"))
        image = str((attrs or {}).get("Config", {}).get("Image", ""))
        self._write_launch(name, task_id, container_id, image, started_at=started)
        return _handle(container_id, name)

    def _relaunch(
        self, api: Any, task_id: str, name: str, attrs: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Launch of an id whose container exists: its handle, starting it if a crash left
        it created but never started (and no kill or end was recorded)."""
        owner = (attrs.get("Labels") or {}).get(LABEL_TASK)
        if owner != task_id:
            raise ValueError(f"container {name!r} belongs to task {owner!r}, not {task_id!r}")
        container_id = str(attrs["Id"])
        record_dir = self._dir(name)
        status = str((attrs.get("State") or {}).get("Status", ""))
        if read_json(record_dir / LAUNCH_FILE) is None:
            started = _parse_time((attrs.get("State") or {}).get("StartedAt"))
            self._write_launch(name, task_id, container_id,
                               str((attrs.get("Config") or {}).get("Image", "")), started)
        if (status == "created" and not read_kill(record_dir) is not None
                and not (record_dir / EXIT_FILE).exists()):
            return self._start(api, task_id, name, container_id)
        return _handle(container_id, name)

    # --- observing ---------------------------------------------------------------------------

    def _observe_one(
        self, api: Any, task: Task, summary: Mapping[str, Any] | None
    ) -> Observation:
        name = container_name(task.id)
        record_dir = self._dir(name)
        launched = read_json(record_dir / LAUNCH_FILE)
        ended = read_json(record_dir / EXIT_FILE)
        kill = read_kill(record_dir)
        if summary is not None:
            handle = _handle(str(summary["Id"]), name)
        elif launched is not None:
            handle = _handle(str(launched.get("container_id") or ""), name)
        else:
            handle = dict(task.handle)
        started_at = _parse_time(launched.get("started_at")) if launched else None

        def obs(state: TaskState, exit_code: int | None = None, message: str = "") -> Observation:
            return Observation(task.id, state, exit_code, message, handle, started_at)

        if ended is not None:
            return obs(TaskState(ended["state"]), _opt_int(ended.get("exit_code")),
                       str(ended.get("message", "")))
        if summary is None:
            if kill is not None:
                return obs(TaskState.KILLED,
                           message="killed; its container is gone and its exit was not seen")
            return obs(TaskState.LOST, message=f"there is no container {name!r}")

        status = str(summary.get("State", ""))
        if status in _RUNNING_STATES:
            if started_at is None:  # adopted after a crash right after `docker start`
                attrs = self._inspect(api, name)
                if attrs is not None:
                    started_at = _parse_time(attrs["State"].get("StartedAt"))
                    self._write_launch(name, task.id, str(attrs["Id"]),
                                       str(attrs["Config"].get("Image", "")), started_at)
            if kill is None:
                return obs(TaskState.RUNNING)
            if kill.overdue(time.time()):
                self._signal(api, name, "SIGKILL")  # overdue, e.g. the timer died with Dromos
            return obs(TaskState.RUNNING, message="kill requested; waiting for the container "
                                                  "to exit")
        if status == "created":
            if kill is None:
                return obs(TaskState.STARTING, message="container created, not started yet")
            self._write_exit(name, {"state": TaskState.KILLED.value, "exit_code": None,
                                    "message": "killed before its container started",
                                    "finished_at": _iso(datetime.now(UTC))})
            return obs(TaskState.KILLED, message="killed before its container started")

        # exited, dead or being removed: its exit code and OOM flag need an inspect (once).
        attrs = self._inspect(api, name)
        if attrs is None:
            return obs(TaskState.KILLED if kill is not None else TaskState.LOST,
                       message="its container was removed before its exit was seen")
        outcome = _outcome(attrs, killed=kill is not None)
        self._write_exit(name, outcome)
        if launched is None:
            started_at = _parse_time(attrs["State"].get("StartedAt"))
            self._write_launch(name, task.id, str(attrs["Id"]),
                               str(attrs["Config"].get("Image", "")), started_at)
        return obs(TaskState(outcome["state"]), _opt_int(outcome["exit_code"]),
                   str(outcome["message"]))

    def _collect_exited(self, api: Any, listed: Sequence[Mapping[str, Any]]) -> None:
        """Record the end of exited containers this state launched (also those Dromos no
        longer asks about), and remove the ones whose end was recorded more than
        ``keep_exited_seconds`` ago, saving their output's tail first. Failures are logged:
        the next observe tries again."""
        if self.keep_exited_seconds is None:
            return
        now = time.time()
        removed = 0
        for summary in listed:
            status = str(summary.get("State", ""))
            if status in _RUNNING_STATES or status == "removing":
                continue
            name = _name_of(summary)
            record_dir = self._dir(name) if _is_safe_name(name) else None
            if record_dir is None or not record_dir.is_dir():
                continue  # not launched by a runtime over this state: not ours to remove
            try:
                ended = read_json(record_dir / EXIT_FILE)
                if ended is None and status == "created":
                    continue  # not started yet; a re-launch may still start it
                if ended is None:
                    attrs = self._inspect(api, name)
                    if attrs is not None:
                        killed = read_kill(record_dir) is not None
                        self._write_exit(name, _outcome(attrs, killed=killed))
                    continue
                if now - float(ended.get("recorded_at", now)) < self.keep_exited_seconds:
                    continue
                if removed >= MAX_REMOVALS_PER_OBSERVE:
                    return
                tail: bytes = api.logs(summary["Id"], stdout=True, stderr=True,
                                       tail=LOG_TAIL_LINES)
                _write_bytes_atomic(record_dir / OUTPUT_FILE, tail)
                api.remove_container(summary["Id"], v=True)
                removed += 1
            except docker.errors.NotFound:
                continue
            except _UNREACHABLE:
                return  # the next observe says so
            except Exception as e:  # removal is housekeeping; never fail an observe for it
                log.warning("could not remove exited container %s: %s", name, e)

    # --- killing -----------------------------------------------------------------------------

    @staticmethod
    def _signal(api: Any, name: str, sig: str) -> None:
        try:
            api.kill(name, signal=sig)
        except docker.errors.NotFound:
            pass  # removed meanwhile
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: it is not running any more, which is the point
                log.warning("sending %s to container %s failed: %s", sig, name, _explain(e))

    def _schedule_escalation(self, name: str, delay: float) -> None:
        timer = threading.Timer(delay, self._escalate, args=(name,))
        timer.daemon = True  # a pending SIGKILL must not keep Dromos from exiting
        with self._timers_lock:
            old = self._timers.pop(name, None)
            self._timers[name] = timer
        if old is not None:
            old.cancel()
        timer.start()

    def _escalate(self, name: str) -> None:
        with self._timers_lock:
            self._timers.pop(name, None)
        try:
            api = self._api()
            with self._engine(f"killing container {name}"):
                self._signal(api, name, "SIGKILL")
        except Exception as e:  # observe() enforces the deadline once the engine is back
            log.warning("forced kill of container %s failed: %s", name, e)

    # --- records -----------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.records_dir / name

    def _write_launch(self, name: str, task_id: str, container_id: str, image: str,
                      started_at: datetime | None) -> None:
        record_dir = self._dir(name)
        record_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record_dir / LAUNCH_FILE, {
            "task_id": task_id,
            "container_id": container_id,
            "container_name": name,
            "image": image,
            "started_at": _iso(started_at) if started_at else None,
        })

    def _write_exit(self, name: str, outcome: Mapping[str, Any]) -> None:
        record_dir = self._dir(name)
        record_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record_dir / EXIT_FILE, {**outcome, "recorded_at": time.time()})


# --- helpers ---------------------------------------------------------------------------------


def _handle(container_id: str, name: str) -> dict[str, Any]:
    return {"container_id": container_id, "container_name": name}


def _name_of(summary: Mapping[str, Any]) -> str:
    names = summary.get("Names") or [""]
    return str(names[0]).lstrip("/")


def _safe_name(task_id: str) -> str | None:
    try:
        return container_name(task_id)
    except ValueError:
        return None


def _is_safe_name(name: str) -> bool:
    return bool(name) and not name.startswith(".") and "/" not in name and "\0" not in name


def _mem_bytes(mem_mib: float) -> int | None:
    if mem_mib <= 0:
        return None  # no limit asked for
    return int(max(mem_mib, MIN_MEMORY_MIB) * 1024 * 1024)


def _pull(api: Any, image: str) -> str | None:
    """Pull ``image``; ``None`` on success, else why not. Errors arrive either as an HTTP
    error or inside the progress stream, depending on when the registry says no."""
    repository, tag = docker.utils.parse_repository_tag(image)
    try:
        for message in api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if isinstance(message, Mapping) and message.get("error"):
                return str(message["error"])
    except docker.errors.APIError as e:
        return _explain(e)
    return None


def _outcome(attrs: Mapping[str, Any], *, killed: bool) -> dict[str, Any]:
    """How an exited container ended, as recorded in ``exit.json``."""
    state = attrs.get("State") or {}
    code = _opt_int(state.get("ExitCode"))
    error = str(state.get("Error") or "")
    finished = _parse_time(state.get("FinishedAt"))
    if error:
        how = f"docker could not run the container: {error}"
    elif state.get("OOMKilled"):
        limit = int((attrs.get("HostConfig") or {}).get("Memory") or 0) // (1024 * 1024)
        how = "OOM killed" + (f" (memory limit {limit} MiB)" if limit else "")
    else:
        how = _describe_code(code)
    if killed:
        result, how = TaskState.KILLED, f"killed: {how}"
    elif code == 0 and not error and not state.get("OOMKilled"):
        result = TaskState.FINISHED
    else:
        result = TaskState.FAILED
    return {
        "state": result.value,
        "exit_code": code,
        "message": how,
        "finished_at": _iso(finished) if finished else None,
    }


def _describe_code(code: int | None) -> str:
    if code is None:
        return "ended with an unknown status"
    if code > 128:
        try:
            name = signal.Signals(code - 128).name
            return f"exited with status {code} (terminated by {name}, signal {code - 128})"
        except ValueError:
            pass
    return f"exited with status {code}"


def _explain(e: docker.errors.APIError) -> str:
    return str(e.explanation or e)


def _opt_int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _parse_time(value: Any) -> datetime | None:
    """A Docker timestamp (RFC 3339 with nanoseconds) or our ISO string as an aware
    datetime; ``None`` for Docker's zero time or anything unparsable."""
    if not isinstance(value, str) or not value or value == _ZERO_TIME:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python reads at most microseconds: cut nanoseconds to six digits.
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if m is None:
        return None
    frac = (m.group(2) or "")[:7]
    try:
        parsed = datetime.fromisoformat(m.group(1) + frac + m.group(3))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return None if parsed.year <= 1 else parsed.astimezone(UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat()


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_ports_disjoint(nodes: Sequence[Node]) -> None:
    """``ValueError`` when two nodes' port ranges overlap: every node's containers publish
    their ports on the one Docker host."""
    spans = sorted((lo, hi, node.hostname) for node in nodes for lo, hi in node.ports)
    for (lo1, hi1, host1), (lo2, hi2, host2) in itertools.pairwise(spans):
        if lo2 <= hi1:
            raise ValueError(
                f"nodes {host1!r} ({format_port_ranges(((lo1, hi1),))}) and {host2!r} "
                f"({format_port_ranges(((lo2, hi2),))}) overlap: the docker runtime publishes "
                "every node's ports on the one Docker host, so port ranges must not overlap"
            )

