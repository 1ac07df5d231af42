"""Building a task's container from its LaunchSpec, and making its image available (see the
package docstring, "Decisions")."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import docker
import docker.errors
import docker.types

from scheduler.runtimes.base import (
    LABEL_APP,
    LABEL_JOB,
    LABEL_RUN,
    LABEL_TASK,
    LABEL_VERSION,
    LaunchSpec,
)
from scheduler.runtimes.extra import container_section, docker_section

log = logging.getLogger(__name__)

MIN_MEMORY_MIB = 6.0
"""Docker refuses memory limits below 6 MiB."""
MIN_CPUS = 0.01
"""The smallest CFS quota the kernel accepts (1 ms per 100 ms period)."""
BIN_SH = "/bin/sh"


def create_args(api: Any, spec: LaunchSpec, name: str, image: str, *, bind_address: str,
                extra_labels: Mapping[str, str], ncpu: float) -> dict[str, Any]:
    """The keyword arguments of ``create_container`` for ``spec`` (package docstring:
    commands, ports on ``bind_address``, resources on an engine of ``ncpu`` cores, 0 when
    unknown); ``ValueError`` for what cannot run."""
    container = container_section(spec)
    docker_spec = docker_section(spec)
    if container.get("volumes"):
        raise ValueError(f"task {spec.task_id!r}: container volumes are not supported by "
                         "the docker runtime yet")
    if docker_spec.get("parameters"):
        raise ValueError(f"task {spec.task_id!r}: docker parameters are not supported by "
                         "the docker runtime yet")
    if spec.resources.gpus > 0 and not spec.gpu_devices:
        raise ValueError(f"task {spec.task_id!r} asks for GPUs but was given no devices")
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
        ([], {}) if network == "HOST" else port_bindings(spec, container, bind_address)
    )
    labels = {**extra_labels, LABEL_APP: spec.app_id, LABEL_TASK: spec.task_id,
              LABEL_VERSION: spec.version}
    if spec.job_name is not None:
        labels[LABEL_JOB] = spec.job_name
    if spec.run_id is not None:
        labels[LABEL_RUN] = spec.run_id
    host_config = api.create_host_config(
        init=True,
        port_bindings=bindings or None,
        network_mode="host" if network == "HOST" else None,
        nano_cpus=nano_cpus(spec.resources.cpus, ncpu),
        mem_limit=mem_bytes(spec.resources.mem),
        # Same as the limit: no swap on top, so the limit means what the app asked for.
        memswap_limit=mem_bytes(spec.resources.mem),
        privileged=bool(docker_spec.get("privileged", False)),
        # The devices the sharing step assigned, by index (nvidia container toolkit).
        device_requests=[docker.types.DeviceRequest(
            device_ids=[str(d) for d in spec.gpu_devices], capabilities=[["gpu"]])]
        if spec.gpu_devices else None,
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
    if spec.user:
        # A name the image knows, or uid[:gid]; the engine refuses the start otherwise.
        kwargs["user"] = spec.user
    if spec.cmd is not None:
        # The entrypoint is replaced (Mesos does the same) so the shell runs the command
        # exactly as given, whatever ENTRYPOINT the image has.
        kwargs["entrypoint"] = [BIN_SH, "-c"]
        kwargs["command"] = [spec.cmd]
    elif spec.args:
        kwargs["command"] = [str(a) for a in spec.args]
    return kwargs


def port_bindings(
    spec: LaunchSpec, container: Mapping[str, Any], bind_address: str
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
            bindings.setdefault(key, []).append((bind_address, host_port))
    return exposed, bindings


def nano_cpus(cpus: float, ncpu: float) -> int:
    """A CFS quota for ``cpus``: at least :data:`MIN_CPUS`, at most the engine's ``ncpu``
    cores (when known: more is refused by Docker, and virtual nodes may promise more)."""
    if cpus <= 0:
        return 0
    limit = max(cpus, MIN_CPUS)
    if ncpu > 0:
        limit = min(limit, ncpu)
    return round(limit * 1e9)


def mem_bytes(mem_mib: float) -> int | None:
    """A memory limit in bytes (at least Docker's minimum); ``None`` for no limit."""
    if mem_mib <= 0:
        return None  # no limit asked for
    return int(max(mem_mib, MIN_MEMORY_MIB) * 1024 * 1024)


def ensure_image(api: Any, image: str, force_pull: bool) -> None:
    """Make ``image`` available locally, pulling it when forced or missing."""
    local = _image_present(api, image)
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


def _image_present(api: Any, image: str) -> bool:
    try:
        api.inspect_image(image)
    except docker.errors.NotFound:
        return False
    return True


def _pull(api: Any, image: str) -> str | None:
    """Pull ``image``; ``None`` on success, else why not. Errors arrive either as an HTTP
    error or inside the progress stream, depending on when the registry says no."""
    repository, tag = docker.utils.parse_repository_tag(image)
    try:
        for message in api.pull(repository, tag=tag or "latest", stream=True, decode=True):
            if isinstance(message, Mapping) and message.get("error"):
                return str(message["error"])
    except docker.errors.APIError as e:
        return explain(e)
    return None


def explain(e: docker.errors.APIError) -> str:
    """What the engine said."""
    return str(e.explanation or e)
