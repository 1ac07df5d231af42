"""Building the Pod and the Service of a task from its LaunchSpec, and reading resource
quantities (see the package docstring, "Mapping of a LaunchSpec to a Pod" and "Services").

Pure: plain JSON in, plain JSON out; nothing here talks to the API server.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.utils import parse_quantity

from scheduler.model.resources import Resources
from scheduler.runtimes.base import (
    LABEL_APP,
    LABEL_JOB,
    LABEL_RUN,
    LABEL_TASK,
    LABEL_VERSION,
    LaunchSpec,
)
from scheduler.runtimes.extra import container_section, docker_section
from scheduler.runtimes.kubernetes.names import (
    ANNOTATION_APP_ID,
    ANNOTATION_HOST,
    ANNOTATION_JOB_NAME,
    ANNOTATION_RUN_ID,
    ANNOTATION_TASK_ID,
    ANNOTATION_VERSION,
    CONTAINER_NAME,
    DEFAULT_RUN_AS_USER,
    GPU_RESOURCE,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    SERVICE_PORT_BASE,
    app_label,
    label_value,
    pod_name,
    port_name,
    service_name,
)
from scheduler.runtimes.users import kubernetes_uid

__all__ = ["PortPlan", "build_pod", "build_service", "grace_period", "parse_quantity",
           "pod_labels", "pod_requests", "port_plan", "probes", "resources_of"]

log = logging.getLogger(__name__)

Json = dict[str, Any]
MIB = 2.0**20


# --- quantities ------------------------------------------------------------------------------


def resources_of(quantities: Mapping[str, Any]) -> Resources:
    """Resources from Kubernetes quantities (``cpu``, ``memory``, ``ephemeral-storage``,
    GPUs); a quantity that does not parse counts as 0."""
    def q(key: str) -> float:
        try:
            return float(parse_quantity(quantities[key])) if key in quantities else 0.0
        except (ValueError, TypeError, ArithmeticError):
            return 0.0

    return Resources(cpus=q("cpu"), mem=q("memory") / MIB,
                     disk=q("ephemeral-storage") / MIB, gpus=q(GPU_RESOURCE))


def _format_cpu(cpus: float) -> str:
    return f"{max(1, round(cpus * 1000))}m"


def _format_mib(mib: float) -> str:
    if float(mib).is_integer():
        return f"{int(mib)}Mi"
    return str(math.ceil(mib * MIB))


def pod_requests(pod: Mapping[str, Any]) -> Resources:
    """What a pod holds on its node, as the scheduler counts it: the sum of its containers'
    requests (a limit stands in for a missing request), at least the largest init
    container's, plus the pod overhead."""
    spec = pod.get("spec") or {}

    def of(container: Mapping[str, Any]) -> Resources:
        res = container.get("resources") or {}
        merged = {**(res.get("limits") or {}), **(res.get("requests") or {})}
        return resources_of(merged)

    total = Resources()
    for c in spec.get("containers") or ():
        total = total + of(c)
    for c in spec.get("initContainers") or ():
        init = of(c)
        total = Resources(max(total.cpus, init.cpus), max(total.mem, init.mem),
                          max(total.disk, init.disk), max(total.gpus, init.gpus))
    return total + resources_of(spec.get("overhead") or {})


@dataclass(frozen=True)
class PortPlan:
    """One task port as the pod and the Service see it."""

    index: int
    name: str
    container_port: int
    protocols: tuple[str, ...]
    service_port: int


def port_plan(spec: LaunchSpec) -> list[PortPlan]:
    """The task's ports: names, container ports and service ports (package docstring)."""
    mappings = container_section(spec).get("portMappings")
    definitions = spec.extra.get("portDefinitions")
    plans: list[PortPlan] = []
    used: set[str] = set()
    for i, allocated in enumerate(spec.ports):
        name: str | None = None
        protocol = "tcp"
        container_port = allocated
        service_port = 0
        if isinstance(mappings, Sequence) and i < len(mappings):
            m = mappings[i] or {}
            name = m.get("name")
            protocol = str(m.get("protocol") or "tcp")
            container_port = int(m.get("containerPort") or 0) or allocated
            service_port = int(m.get("servicePort") or 0)
        elif isinstance(definitions, Sequence) and i < len(definitions):
            d = definitions[i] or {}
            name = d.get("name")
            protocol = str(d.get("protocol") or "tcp")
            service_port = int(d.get("port") or 0)
        name_ = port_name(name, i)
        if name_ in used:
            name_ = f"port{i}"
        used.add(name_)
        protocols = tuple(dict.fromkeys(p.strip().upper() for p in protocol.split(",")
                                        if p.strip())) or ("TCP",)
        plans.append(PortPlan(i, name_, container_port, protocols,
                              service_port or SERVICE_PORT_BASE + i))
    return plans


def _twin_name(name: str, protocol: str) -> str:
    """The name of a port's second protocol (``tcp,udp``): port names must be unique."""
    return f"{name[:11]}-{protocol.lower()[:3]}"


def _probe_handler(check: Mapping[str, Any], ports: Sequence[PortPlan]) -> Json | None:
    """The probe action of one Marathon health check; ``None`` when its port does not exist."""
    kind = str(check.get("protocol") or "HTTP").upper().removeprefix("MESOS_")
    if kind == "COMMAND":
        value = (check.get("command") or {}).get("value")
        return {"exec": {"command": ["/bin/sh", "-c", str(value)]}} if value else None
    port: int | str
    if check.get("port"):
        port = int(check["port"])
    else:
        index = int(check.get("portIndex") or 0)
        if index >= len(ports):
            return None
        port = ports[index].name
    if kind in ("HTTP", "HTTPS"):
        return {"httpGet": {"path": str(check.get("path") or "/"), "port": port,
                            "scheme": kind}}
    if kind == "TCP":
        return {"tcpSocket": {"port": port}}
    return None


def probes(spec: LaunchSpec, ports: Sequence[PortPlan]) -> Json:
    """``livenessProbe``, ``startupProbe`` and ``readinessProbe`` of the task's container from
    ``extra["healthChecks"]`` and ``extra["readinessChecks"]`` (package docstring)."""
    out: Json = {}
    checks = [c for c in spec.extra.get("healthChecks") or () if isinstance(c, Mapping)]
    first: tuple[Mapping[str, Any], Json] | None = None
    for check in checks:
        handler = _probe_handler(check, ports)
        if handler is not None:
            first = (check, handler)
            break
    if first is not None:
        check, handler = first
        interval = max(1, int(check.get("intervalSeconds", 60)))
        timeout = max(1, int(check.get("timeoutSeconds", 20)))
        failures = int(check.get("maxConsecutiveFailures", 3))
        grace = max(0, int(check.get("gracePeriodSeconds", 300)))
        timing = {"periodSeconds": interval, "timeoutSeconds": timeout}
        if failures > 0:
            out["livenessProbe"] = {**handler, **timing, "failureThreshold": failures}
            if grace > 0:
                # Marathon ignores failures before the first success for the grace period,
                # then kills after maxConsecutiveFailures: a startup probe says exactly that.
                out["startupProbe"] = {**handler, **timing, "failureThreshold":
                                       math.ceil(grace / interval) + failures}
        out["readinessProbe"] = {**handler, **timing, "failureThreshold": 1}
    readiness = [c for c in spec.extra.get("readinessChecks") or () if isinstance(c, Mapping)]
    if readiness:
        rc = readiness[0]
        names = {p.name for p in ports}
        wanted = str(rc.get("portName") or "http-api")
        target: int | str | None = wanted if wanted in names else None
        if target is None and ports:
            log.warning("readiness check of %s names port %r, which the app does not have; "
                        "probing its first port", spec.app_id, wanted)
            target = ports[0].name
        if target is not None:
            out["readinessProbe"] = {
                "httpGet": {"path": str(rc.get("path") or "/"), "port": target,
                            "scheme": str(rc.get("protocol") or "HTTP").upper()},
                "periodSeconds": max(1, int(rc.get("intervalSeconds", 30))),
                "timeoutSeconds": max(1, int(rc.get("timeoutSeconds", 10))),
                "failureThreshold": 1,
            }
    return out


def _check_runnable(spec: LaunchSpec) -> None:
    container = container_section(spec)
    docker = docker_section(spec)
    what = f"task {spec.task_id!r}"
    if spec.cmd is not None and spec.args is not None:
        raise ValueError(f"{what} has both cmd and args; give one")
    if spec.cmd is not None and not spec.cmd.strip():
        raise ValueError(f"{what} has an empty cmd")
    if docker.get("privileged"):
        raise ValueError(f"{what} asks for a privileged container, which the kubernetes "
                         "runtime does not run (Pod Security 'restricted')")
    if container.get("volumes"):
        raise ValueError(f"{what}: container volumes are not supported by the kubernetes "
                         "runtime yet")
    if docker.get("parameters"):
        raise ValueError(f"{what}: docker parameters have no meaning on Kubernetes")
    network = str(docker.get("network") or "BRIDGE").upper()
    if network not in ("BRIDGE", "USER"):
        raise ValueError(f"{what}: docker network {network!r} is not supported on Kubernetes "
                         "(every pod has its own network namespace)")
    if spec.resources.gpus and not float(spec.resources.gpus).is_integer():
        raise ValueError(f"{what} asks for {spec.resources.gpus:g} GPUs; Kubernetes only "
                         "hands out whole GPUs")
    for k, v in spec.env.items():
        if not k or "=" in k or "\0" in k or "\0" in str(v):
            raise ValueError(f"{what}: invalid environment variable {k!r}")


def pod_labels(spec: LaunchSpec) -> dict[str, str]:
    """The labels of the task's pod (package docstring)."""
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_TASK: label_value(spec.task_id)}
    if spec.job_name is not None:
        labels[LABEL_JOB] = label_value(spec.job_name)
        labels[LABEL_RUN] = label_value(spec.run_id or spec.task_id)
    else:
        labels[LABEL_APP] = app_label(spec.app_id)
        if spec.version:
            labels[LABEL_VERSION] = label_value(spec.version)
    return labels


def build_pod(spec: LaunchSpec, *, namespace: str, node_name: str, image: str,
              run_as_user: int | None = DEFAULT_RUN_AS_USER,
              extra_labels: Mapping[str, str] | None = None) -> Json:
    """The Pod (plain JSON) that runs ``spec`` on node ``node_name``. Pure. Raises
    ``ValueError`` for what cannot run on Kubernetes (package docstring)."""
    _check_runnable(spec)
    ports = port_plan(spec)
    annotations = {ANNOTATION_TASK_ID: spec.task_id, ANNOTATION_HOST: spec.host}
    if spec.job_name is not None:
        annotations[ANNOTATION_JOB_NAME] = spec.job_name
        annotations[ANNOTATION_RUN_ID] = spec.run_id or spec.task_id
    else:
        annotations[ANNOTATION_APP_ID] = spec.app_id
        annotations[ANNOTATION_VERSION] = spec.version
    quantities: dict[str, str] = {}
    if spec.resources.cpus > 0:
        quantities["cpu"] = _format_cpu(spec.resources.cpus)
    if spec.resources.mem > 0:
        quantities["memory"] = _format_mib(spec.resources.mem)
    if spec.resources.disk > 0:
        quantities["ephemeral-storage"] = _format_mib(spec.resources.disk)
    if spec.resources.gpus > 0:
        quantities[GPU_RESOURCE] = str(int(spec.resources.gpus))
    container: Json = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": "Always" if docker_section(spec).get("forcePullImage")
        else "IfNotPresent",
        "env": [{"name": k, "value": str(v)} for k, v in spec.env.items()],
        "resources": {"requests": dict(quantities), "limits": dict(quantities)},
        "securityContext": {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    if spec.cmd is not None:
        container["command"] = ["/bin/sh", "-c", spec.cmd]
    elif spec.args is not None:
        container["args"] = list(spec.args)
    container_ports: list[Json] = []
    for p in ports:
        for n, protocol in enumerate(p.protocols):
            container_ports.append({"name": p.name if n == 0 else _twin_name(p.name, protocol),
                                    "containerPort": p.container_port, "protocol": protocol})
    if container_ports:
        container["ports"] = container_ports
    container.update(probes(spec, ports))
    pod_security: Json = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if spec.user:
        run_as_user = kubernetes_uid(spec.user)  # the task's own user wins over the default
    if run_as_user is not None:
        pod_security["runAsUser"] = run_as_user
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(spec.task_id),
            "namespace": namespace,
            "labels": {**(extra_labels or {}), **pod_labels(spec)},
            "annotations": annotations,
        },
        "spec": {
            "nodeName": node_name,
            "restartPolicy": "Never",
            # The grace of deletions Dromos does not make (kubectl delete, a drain).
            "terminationGracePeriodSeconds": grace_period(spec.kill_grace_seconds),
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": pod_security,
            "containers": [container],
        },
    }


def build_service(spec: LaunchSpec, *, namespace: str,
                  extra_labels: Mapping[str, str] | None = None) -> Json | None:
    """The app's Service (plain JSON), or ``None`` for a job run or an app without ports."""
    if spec.job_name is not None or not spec.ports:
        return None
    label = app_label(spec.app_id)
    ports: list[Json] = []
    for p in port_plan(spec):
        for n, protocol in enumerate(p.protocols):
            name = p.name if n == 0 else _twin_name(p.name, protocol)
            ports.append({"name": name, "port": p.service_port, "targetPort": name,
                          "protocol": protocol})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name(spec.app_id),
            "namespace": namespace,
            "labels": {**(extra_labels or {}), LABEL_MANAGED_BY: MANAGED_BY, LABEL_APP: label},
            "annotations": {ANNOTATION_APP_ID: spec.app_id},
        },
        "spec": {"type": "ClusterIP", "selector": {LABEL_APP: label}, "ports": ports},
    }


def grace_period(seconds: float) -> int:
    """A pod's grace period: whole seconds, at least 1 (0 would make the API server forget
    the pod before the kubelet has stopped it)."""
    return max(1, math.ceil(float(seconds)))

