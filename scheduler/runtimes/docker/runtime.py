"""The :class:`DockerRuntime`: the Runtime protocol over a Docker Engine (see the package
docstring for the whole design)."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from scheduler.model.node import Node
from scheduler.model.resources import PortRange, Resources
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import (
    LABEL_TASK,
    LaunchSpec,
    Observation,
    Output,
    RuntimeUnavailable,
    SandboxFile,
    unobservable,
)
from scheduler.runtimes.docker.containers import BIN_SH, create_args, ensure_image, explain
from scheduler.runtimes.docker.engine import (
    UNREACHABLE,
    ClientFactory,
    EngineConnection,
    default_client,
    inspect,
)
from scheduler.runtimes.docker.names import container_name, name_of, safe_name
from scheduler.runtimes.docker.observing import (
    RUNNING_STATES,
    collect_exited,
    observation,
    signal_container,
)
from scheduler.runtimes.docker.records import (
    EXIT_FILE,
    LAUNCH_FILE,
    OUTPUT_FILE,
    handle,
    iso,
    parse_time,
    write_exit,
    write_launch,
)
from scheduler.runtimes.executor import read_json, write_json_atomic
from scheduler.runtimes.extra import docker_section
from scheduler.runtimes.kills import read_kill, record_kill
from scheduler.runtimes.output import (
    list_files,
    read_combined,
    read_file_in,
    read_text_in,
    tail_lines,
)
from scheduler.runtimes.ports import check_ports_disjoint, ports_in_message

log = logging.getLogger(__name__)

DEFAULT_PORTS: tuple[PortRange, ...] = ((31000, 32000),)
"""The port range of the Docker host's node (Mesos agents offer 31000-32000 by default)."""
NODE_REFRESH_SECONDS = 60.0
"""How often the Docker host's capacity (``docker info``) is read again."""
DEFAULT_KEEP_EXITED_SECONDS = 3600.0
# Passed to `docker exec` so the CLI talks to the same engine the SDK found (from_env reads
# the same variables); nothing else of Dromos's environment is handed on.
_CLI_ENV = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH",
            "DOCKER_CONFIG", "DOCKER_CONTEXT", "DOCKER_API_VERSION")


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
            check_ports_disjoint(nodes, "docker")
        self._nodes = list(nodes or ())
        self.default_image = default_image
        self.bind_address = bind_address
        self.extra_labels = dict(labels or {})
        self.keep_exited_seconds = keep_exited_seconds
        self._engine = EngineConnection(client_factory)
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
        with self._engine.calling(f"launching task {spec.task_id!r}"):
            existing = inspect(api, name)
            if existing is not None:
                return self._relaunch(api, spec.task_id, name, existing)
            earlier = read_json(self._dir(name) / LAUNCH_FILE)
            if earlier is not None:
                # It ran, ended, and its container was removed: never again under this id.
                return handle(str(earlier.get("container_id") or ""), name)
            kwargs = create_args(api, spec, name, image, bind_address=self.bind_address,
                                 extra_labels=self.extra_labels,
                                 ncpu=self._ncpu() if spec.resources.cpus > 0 else 0.0)
            ensure_image(api, image, force_pull)
            try:
                created = api.create_container(**kwargs)
            except docker.errors.APIError as e:
                if e.status_code == 409:  # a concurrent launch of the same id won the name
                    raced = inspect(api, name)
                    if raced is not None:
                        return self._relaunch(api, spec.task_id, name, raced)
                raise ValueError(
                    f"docker cannot create the container of task {spec.task_id!r}: "
                    f"{explain(e)}"
                ) from None
            container_id = str(created["Id"])
            write_launch(self._dir(name), name, spec.task_id, container_id, image, started_at=None)
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
        with self._engine.calling(f"killing task {task.id!r}"):
            attrs = inspect(api, name)
            if attrs is None or (attrs.get("Labels") or {}).get(LABEL_TASK, task.id) != task.id:
                return
            status = str((attrs.get("State") or {}).get("Status", ""))
            if status not in RUNNING_STATES and status != "created":
                return
            now = time.time()
            request = record_kill(record_dir, grace_seconds, now)
            if status == "created":
                return  # never started: observe reports it KILLED, and launch won't start it
            if request.overdue(now):
                signal_container(api, name, "SIGKILL")
                return
            stop_signal = str((attrs.get("Config") or {}).get("StopSignal") or "SIGTERM")
            signal_container(api, name, stop_signal)
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
        with self._engine.calling("listing containers"):
            listed: list[dict[str, Any]] = api.containers(
                all=True, filters={"label": LABEL_TASK}
            )
        by_task: dict[str, dict[str, Any]] = {}
        for summary in listed:
            task_id = (summary.get("Labels") or {}).get(LABEL_TASK)
            # Two containers with one task label would be someone else's doing: the one with
            # the task's deterministic name is the task's.
            if task_id and (task_id not in by_task or name_of(summary) == safe_name(task_id)):
                by_task[task_id] = summary
        out: list[Observation] = []
        for task in tasks:
            try:
                name = container_name(task.id)
                out.append(observation(api, task, name, self._dir(name),
                                       by_task.get(task.id)))
            except RuntimeUnavailable:
                raise
            except UNREACHABLE as e:  # gone in the middle: no observation is better than a guess
                raise self._failed(f"the Docker Engine stopped answering: {e}") from e
            except Exception as e:  # one odd container or record must not hide the others
                log.exception("observing task %s failed", task.id)
                out.append(unobservable(task, e))
        if self.keep_exited_seconds is not None:
            collect_exited(api, listed, self.records_dir, self.keep_exited_seconds)
        return out

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]:
        """``docker exec <container> /bin/sh -c <command>``: the command runs inside the
        task's container, with its environment. The environment returned is only what the
        ``docker`` CLI needs to reach the same engine (``PATH``, ``HOME``, ``DOCKER_*``)."""
        cli = shutil.which("docker") or "docker"
        env = {k: v for k, v in os.environ.items() if k in _CLI_ENV}
        env.setdefault("PATH", os.defpath)
        return [cli, "exec", container_name(task.id), BIN_SH, "-c", command], env

    def close(self) -> None:
        """Cancel pending SIGKILL timers and drop the engine connection. Containers keep
        running; kill deadlines stay recorded and are enforced by the next :meth:`observe`
        of any runtime over this state."""
        with self._timers_lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for t in timers:
            t.cancel()
        self._engine.close()

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
        name = safe_name(task.id)
        return list_files(self._dir(name)) if name is not None else []

    def read_sandbox_file(self, task: Task, path: str, offset: int = 0,
                          limit: int = 1 << 20) -> bytes:
        """One of :meth:`sandbox_files`."""
        name = safe_name(task.id)
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
        with self._engine.calling(f"reading the output of task {task.id!r}"):
            try:
                raw: bytes = api.logs(name, stdout=True, stderr=True,
                                      tail="all" if tail is None else max(0, tail))
                return raw.decode("utf-8", "replace")
            except docker.errors.NotFound:
                pass
        text = read_text_in(self._dir(name), OUTPUT_FILE)
        return tail_lines(text or "", tail)

    def container_name(self, task_id: str) -> str:
        """The name of ``task_id``'s container (see :func:`container_name`)."""
        return container_name(task_id)

    # --- the engine --------------------------------------------------------------------------

    def _api(self) -> Any:
        return self._engine.api()

    def _failed(self, why: str) -> RuntimeUnavailable:
        return self._engine.failed(why)





    def _host_info(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._info is not None and now - self._info_read_at < NODE_REFRESH_SECONDS:
            return self._info
        cache = self.state_dir / "docker" / "node.json"
        try:
            api = self._api()
            with self._engine.calling("reading the engine's info"):
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

    def _ncpu(self) -> float:
        """The engine's cores, 0 when unknown."""
        try:
            return float(self._host_info().get("NCPU") or 0)
        except RuntimeUnavailable:
            return 0.0






    def _start(self, api: Any, task_id: str, name: str, container_id: str) -> dict[str, Any]:
        try:
            api.start(container_id)
        except docker.errors.NotFound:
            return handle(container_id, name)  # removed by someone meanwhile: LOST
        except docker.errors.APIError as e:
            # Like a command that cannot be executed on the local runtime: the task failed,
            # the launch did not. Record why (and which host ports others hold, so placement
            # avoids them), so observe reports it; and remove the container, which would
            # otherwise stay "created" for good, one more at each retry.
            why = explain(e)
            write_exit(self._dir(name), {
                "state": TaskState.FAILED.value,
                "exit_code": None,
                "message": f"docker could not start the container: {why}",
                "finished_at": iso(datetime.now(UTC)),
                "ports_taken": list(ports_in_message(why)),
            })
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container_id, force=True)
            return handle(container_id, name)
        attrs = inspect(api, container_id)
        started = parse_time((attrs or {}).get("State", {}).get("StartedAt"))
        image = str((attrs or {}).get("Config", {}).get("Image", ""))
        write_launch(self._dir(name), name, task_id, container_id, image, started_at=started)
        return handle(container_id, name)

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
            started = parse_time((attrs.get("State") or {}).get("StartedAt"))
            write_launch(self._dir(name), name, task_id, container_id,
                               str((attrs.get("Config") or {}).get("Image", "")), started)
        if (status == "created" and not read_kill(record_dir) is not None
                and not (record_dir / EXIT_FILE).exists()):
            return self._start(api, task_id, name, container_id)
        return handle(container_id, name)

    # --- killing -----------------------------------------------------------------------------

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
            with self._engine.calling(f"killing container {name}"):
                signal_container(api, name, "SIGKILL")
        except Exception as e:  # observe() enforces the deadline once the engine is back
            log.warning("forced kill of container %s failed: %s", name, e)

    # --- records -----------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.records_dir / name
