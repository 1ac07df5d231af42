"""Docker for the tests: make an engine and the test images available, make runtimes, clean up.

Nothing here is pulled from a registry: ``tests/support/docker-setup.sh`` installs Debian's
``docker.io`` when dockerd is missing, starts dockerd when no engine answers, and builds
``dromos-test/busybox:1`` from busybox-static with ``docker import``. It runs once per test
session, the first time a test needs Docker (:func:`docker_unavailable`).

Every container a test runtime creates carries the label :data:`TEST_LABEL` with the test's
state directory as its value, and is recorded under that directory, so
:func:`cleanup_docker_state` removes exactly what one test started, and nothing of other
sessions or of a Dromos sharing the engine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors

from scheduler.model.task import Task

if TYPE_CHECKING:
    from tests.runtimes.conftest import Launched, Outage
from scheduler.runtimes.base import LABEL_TASK
from scheduler.runtimes.docker import DockerRuntime, container_name

BUSYBOX_IMAGE = "dromos-test/busybox:1"
"""busybox-static in an otherwise empty root filesystem (``sh``, ``httpd``, ``printf``...)."""
TEST_LABEL = "dromos.io/test-state"
SETUP_SCRIPT = Path(__file__).resolve().parents[1] / "support" / "docker-setup.sh"
SETUP_TIMEOUT_SECONDS = 600  # a first run installs docker.io


@functools.cache
def docker_unavailable() -> str | None:
    """Why Docker cannot be tested on this machine, or ``None`` when an engine answers and
    the test images exist. Runs the setup script once per session (it is idempotent)."""
    try:
        done = subprocess.run(
            ["bash", str(SETUP_SCRIPT)],
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{SETUP_SCRIPT.name} could not run: {e}"
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return f"{SETUP_SCRIPT.name} failed ({done.returncode}): {' / '.join(why)}"
    return None


@functools.cache
def client() -> Any:
    """One SDK client for the helpers (the runtimes under test make their own)."""
    return docker.from_env(timeout=60)


def make_docker_runtime(state_dir: Path, **options: Any) -> DockerRuntime:
    """A DockerRuntime over ``state_dir`` whose containers are labelled for cleanup.

    Apps without a container run in the busybox image (``default_image``), which is how the
    backend-neutral contract suite, whose apps are bare commands, runs on Docker.
    """
    options.setdefault("default_image", BUSYBOX_IMAGE)
    labels = {TEST_LABEL: str(state_dir), **options.pop("labels", {})}
    return DockerRuntime(state_dir, labels=labels, **options)


def docker_stdout(state_dir: Path, task: Task) -> str:
    """What the task's container wrote to stdout (not stderr) so far; ``""`` without one."""
    try:
        raw: bytes = client().api.logs(container_name(task.id), stdout=True, stderr=False)
    except docker.errors.NotFound:
        return ""
    return raw.decode("utf-8", "replace")


def launched_container(state_dir: Path, task: Task) -> Launched:
    """How the task's container was created: the entrypoint that replaced the image's (with
    the command after it), the command handed to the image's entrypoint, the environment."""
    from tests.runtimes.conftest import Launched

    config = client().api.inspect_container(container_name(task.id))["Config"]
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    entrypoint, cmd = config.get("Entrypoint"), config.get("Cmd")
    if entrypoint:
        return Launched(list(entrypoint) + list(cmd or []), None, env)
    return Launched(None, list(cmd) if cmd is not None else None, env)


@contextlib.contextmanager
def docker_outage(state_dir: Path, scratch: Path) -> Iterator[Outage]:
    """A runtime over ``state_dir`` that reaches the engine through an :class:`EngineProxy`
    (cut: the engine is away; restore: it is back)."""
    from tests.runtimes.conftest import Outage

    proxy = EngineProxy(engine_socket())
    proxy.up()
    rt = make_docker_runtime(state_dir, client_factory=proxy.client)
    try:
        yield Outage(rt, proxy.down, proxy.up)
    finally:
        rt.close()
        proxy.down()


def containers_of(state_dir: Path) -> list[dict[str, Any]]:
    """Every container (any state) a runtime over ``state_dir`` created: those labelled with
    it by :func:`make_docker_runtime`, and those recorded under it (a ``dromos serve``
    subprocess's runtime puts no test label on its containers)."""
    found: dict[str, dict[str, Any]] = {
        c["Id"]: c
        for c in client().api.containers(all=True,
                                         filters={"label": f"{TEST_LABEL}={state_dir}"})
    }
    records = state_dir / "docker" / "tasks"
    names = sorted(p.name for p in records.iterdir()) if records.is_dir() else []
    if names:
        for c in client().api.containers(all=True, filters={"label": LABEL_TASK}):
            if c["Names"][0].lstrip("/") in names:
                found[c["Id"]] = c
    return list(found.values())


def cleanup_docker_state(state_dir: Path) -> None:
    """Remove every container runtimes over ``state_dir`` created (running or not) and fail
    if any remains."""
    for summary in containers_of(state_dir):
        try:
            client().api.remove_container(summary["Id"], force=True, v=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            if e.status_code != 409:  # 409: its removal is already in progress
                raise
    deadline = time.monotonic() + 20
    while left := containers_of(state_dir):
        if time.monotonic() >= deadline:
            names = [s["Names"][0] for s in left]
            raise AssertionError(f"containers of the test survived cleanup: {names}")
        time.sleep(0.1)


def engine_socket() -> str:
    """The path of the engine's unix socket (``DOCKER_HOST`` when it is ``unix://``)."""
    host = os.environ.get("DOCKER_HOST", "")
    return host[len("unix://"):] if host.startswith("unix://") else "/var/run/docker.sock"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EngineProxy:
    """A TCP front for the engine's unix socket that can be switched off and on: an engine
    that goes away and comes back, without stopping the real one (others use it)."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.port = _free_port()
        self._server: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def client(self) -> Any:
        return docker.DockerClient(base_url=self.base_url, timeout=10)

    def up(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def down(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            conns, self._open = self._open, []
        for s in ([server] if server else []) + conns:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.socket_path)
            with self._lock:
                self._open += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
