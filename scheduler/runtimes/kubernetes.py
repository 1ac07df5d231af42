"""The Kubernetes runtime: every task is one Pod that Dromos places itself (``--runtime
kubernetes``).

Dromos is the scheduler. It reads the cluster's Nodes, places tasks with its own pipeline and
creates each Pod with ``spec.nodeName`` already set, so kube-scheduler never sees it.

Identity
    A task's pod is named :func:`pod_name` of its task id: the id lowercased, every character
    outside ``[a-z0-9-]`` turned into ``-``, plus ``-`` and 8 hex digits of the id's SHA-256
    whenever that changed the id (or it had to be cut to 63 characters), so ``etl:1`` and
    ``etl-1`` still get different pods. A job run's task id is ``<job>:<scheduled time>``
    (``etl:20261201T010000Z``, retries ``....retry1``), so its pod name follows from the job
    and the occurrence: a create that is retried after a crash or a timeout gets ``409
    AlreadyExists`` and the existing pod is adopted instead of a twin being made.

    Labels (values must be label-safe, see :func:`label_value`): ``dromos.io/task`` on every
    pod; ``dromos.io/app`` (:func:`app_label`: the app id without its leading ``/``, ``/``
    replaced by ``_`` -- ``/prod/web`` is ``prod_web``, the prefix of its task ids) and
    ``dromos.io/version`` on app pods; ``dromos.io/job`` and ``dromos.io/run`` on job-run pods.
    The exact values are kept in annotations (``dromos.io/app-id``, ``dromos.io/task-id``,
    ``dromos.io/version``, ``dromos.io/job-name``, ``dromos.io/run-id``), which is what the
    runtime itself reads. ``kubectl get pods -l dromos.io/app=prod_web`` lists an app's pods.

Mapping of a LaunchSpec to a Pod (:func:`build_pod`)
    - ``restartPolicy: Never``: a task id runs at most once. A task that exits, or whose
      liveness probe fails, ends its pod (Succeeded/Failed) and Dromos starts a new task, as
      Marathon does; the kubelet never restarts it in place.
    - resources: requests = limits (``cpu`` in millicores, ``memory`` and
      ``ephemeral-storage`` from MiB, whole ``gpus`` as ``nvidia.com/gpu``), so the pod is
      Guaranteed and the figures Dromos placed with are the ones the node enforces.
    - ``cmd`` runs as ``/bin/sh -c <cmd>`` (the image's entrypoint is replaced); ``args`` are
      the container's args (the image's entrypoint gets them, Marathon's meaning).
    - image: the app's ``container.docker.image`` (a job's ``container.image``); apps and jobs
      without a container run in ``default_image`` (``DROMOS_KUBE_DEFAULT_IMAGE``, default
      :data:`DEFAULT_IMAGE`), which must contain ``/bin/sh``. ``imagePullPolicy:
      IfNotPresent`` (``forcePullImage`` gives ``Always``).
    - env: exactly the LaunchSpec's (Marathon's variables); ``enableServiceLinks: false`` keeps
      Kubernetes' Docker-link variables out of it.
    - ports: one container port per task port, named after the port's Marathon name when that
      is a valid port name, else ``port<i>``. Pods have their own IP, so there are no host
      ports (they are also forbidden by Pod Security ``restricted``): ``containerPort`` is the
      mapping's ``containerPort``, or the number Dromos allocated (``$PORT0``...) when that is
      0 or there are no mappings, so a task that binds ``$PORT0`` listens on its container port.
    - security: what Pod Security ``restricted`` demands (non-root -- ``run_as_user``, 65534 by
      default, because most images would run as root --, no privilege escalation, all
      capabilities dropped, the runtime's default seccomp profile) and no service-account
      token. ``privileged``, container volumes, docker parameters and ``network: HOST`` are
      refused with a ``ValueError``.
    - health checks (``LaunchSpec.extra["healthChecks"]``, Marathon JSON): the first one whose
      port resolves becomes the liveness probe (``failureThreshold`` =
      ``maxConsecutiveFailures``; none when that is 0, which never kills), preceded by a
      startup probe that allows ``gracePeriodSeconds`` plus ``maxConsecutiveFailures``
      failures before the first success, which is Marathon's grace period. HTTP(S) becomes
      ``httpGet``, TCP ``tcpSocket``, COMMAND ``exec`` of ``/bin/sh -c``. The readiness probe
      is the app's readiness check (``extra["readinessChecks"]``) or else its first health
      check with ``failureThreshold`` 1: only ready pods are endpoints of the app's Service,
      which is how "only healthy tasks get traffic" carries over. Further health checks have
      no Kubernetes equivalent and are left to Dromos's own health monitor.
    - ``LaunchSpec.extra["portDefinitions"]`` (the app's effective port definitions, Marathon
      JSON, one per task port) names the ports and gives their service ports; without it
      ports are ``port<i>`` with service port ``10000 + i``.

Services
    An app with ports gets a ClusterIP Service named :func:`service_name` of its id, selecting
    ``dromos.io/app``, one port per task port: the Marathon service port (``portDefinitions[i]
    .port`` or ``portMappings[i].servicePort``; ``10000 + i`` when that is 0 -- every Service
    has its own IP, so apps cannot clash) targeting the named container port, so pods whose
    dynamic ports differ are all reached. It is created, or updated when the ports changed,
    when a runtime instance first launches a task of the app, and deleted once the app has had
    no pod for :data:`SERVICE_IDLE_SECONDS`. Kubernetes only routes to ready pods.

Nodes (:meth:`KubernetesRuntime.nodes`)
    Every Node that is schedulable (not cordoned, no ``NoSchedule``/``NoExecute`` taint, Ready)
    becomes a Dromos node. Its ``hostname`` is its ``kubernetes.io/hostname`` label (the Node's
    name when it has none; the pod's ``nodeName`` is always the Node's name), its attributes
    are all of its labels under their own names plus ``zone`` and ``region`` for
    ``topology.kubernetes.io/zone`` and ``/region`` (a literal ``zone`` label wins), so
    constraints like ``["rack", "GROUP_BY"]`` or ``["zone", "IS", "z1"]`` work. Ports are
    :data:`NODE_PORTS` (numbers for ``$PORTn``; pods do not share a network namespace).

    The Runtime protocol's ``nodes()`` is the capacity Dromos places into, and Dromos
    subtracts its own tasks itself. So the resources reported are the Node's *allocatable*
    minus the requests of every other pod bound to it that has not ended: pods of other
    namespaces (when the runtime may list pods cluster-wide; the shipped manifests only allow
    its own namespace, so pods of other namespaces are then invisible -- grant ``list/watch``
    on pods cluster-wide to account for them) and pods in its namespace that are not Dromos
    tasks. Dromos's own pods are *not* subtracted: that would count them twice. The
    ``pods`` limit of a node is not modelled: a node full by count rejects the pod and the
    task fails (``OutOfpods``).

Watching
    A background thread keeps a cache of the namespace's pods (all namespaces' when allowed)
    by list + watch: the watch resumes from the last resourceVersion it saw (bookmarks keep
    that fresh) and, when the API server answers ``410 Gone`` (the version was compacted), the
    pods are listed again (a relist; pods that vanished meanwhile are treated as deleted).
    Another keeps the Nodes. :meth:`~KubernetesRuntime.observe` reads the cache and makes no
    API call except one GET for a task whose pod the cache does not know (so a pod another
    instance created a moment ago is not declared LOST). This is what makes observing many
    tasks every half second cheap.

What the runtime remembers beside the cluster, in ``<state_dir>/kubernetes/<namespace>/tasks/
<pod name>/``: ``kill.json`` (a kill was requested, and its deadline), ``exit.json`` (how the
task ended, with its pod's uid: written when the end is first seen -- by an observe, or by the
watch when a pod of the namespace is deleted -- and also when an observed task has no pod at
all) and ``output.log`` (the tail of the output, saved when an ended pod is deleted). Nothing
is written at launch: while the pod exists it is the record of the launch (an fsync per
create would cost more than the create). Ended pods stay ``keep_ended_seconds`` (default an
hour, for ``kubectl logs``/``describe``) and are then deleted by a later observe; the records
make a task id run at most once (a launch of an id whose end is recorded returns its handle
and creates nothing) and keep outcomes across restarts.

Reported states (:meth:`~KubernetesRuntime.observe`)
    - STARTING while the pod is Pending (image pull, container creation...; the waiting reason
      is the message, e.g. ``ErrImagePull``, which Kubernetes keeps retrying).
    - RUNNING while it is Running (also while it terminates after a kill), or Unknown (its node
      stopped reporting; the message says so).
    - FINISHED when it Succeeded (exit code 0).
    - FAILED when it Failed: the container's exit code and reason (``OOMKilled`` becomes ``OOM
      killed``), or the pod's reason when no container ran (``Evicted``, ``OutOfcpu``...).
    - KILLED when it ended or disappeared after :meth:`~KubernetesRuntime.kill` (or with the
      task's ``kill_requested_at`` set), keeping the exit code when one was seen.
    - LOST when there is no pod and no recorded end (deleted by someone else, or never created).

When the API server cannot be reached (refused, timed out, 5xx, or credentials refused),
:meth:`~KubernetesRuntime.launch`, :meth:`~KubernetesRuntime.kill`,
:meth:`~KubernetesRuntime.observe` and :meth:`~KubernetesRuntime.logs` raise
:class:`RuntimeUnavailable`; the orchestrator keeps serving its API, shows the runtime as
unavailable and retries on its next passes. Calls back off (1 s, 2, 4... 30 s between
attempts; calls in between raise at once) and the watch threads retry likewise, relisting
once the API server is back, so observe reconciles with whatever happened meanwhile.
:meth:`~KubernetesRuntime.nodes` never raises: it answers from its cache (``[]`` before the
first successful list).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from scheduler.model.app import task_id_prefix
from scheduler.model.node import Node
from scheduler.model.resources import PortRange, Resources
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import (
    LABEL_APP,
    LABEL_JOB,
    LABEL_RUN,
    LABEL_TASK,
    LABEL_VERSION,
    LaunchSpec,
    Observation,
    RuntimeUnavailable,
    unobservable,
)
from scheduler.runtimes.executor import read_json, write_json_atomic

log = logging.getLogger(__name__)

Json = dict[str, Any]

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "dromos"
ANNOTATION_APP_ID = "dromos.io/app-id"
ANNOTATION_TASK_ID = "dromos.io/task-id"
ANNOTATION_VERSION = "dromos.io/version"
ANNOTATION_JOB_NAME = "dromos.io/job-name"
ANNOTATION_RUN_ID = "dromos.io/run-id"
ANNOTATION_HOST = "dromos.io/host"

LABEL_HOSTNAME = "kubernetes.io/hostname"
LABEL_ZONE = "topology.kubernetes.io/zone"
LABEL_REGION = "topology.kubernetes.io/region"
ATTRIBUTE_ALIASES = {"zone": LABEL_ZONE, "region": LABEL_REGION}
"""Constraint fields that name a well-known label by its short name."""

CONTAINER_NAME = "task"
DEFAULT_NAMESPACE = "dromos"
DEFAULT_IMAGE = "busybox:1.36"
DEFAULT_RUN_AS_USER = 65534
"""``nobody``: Pod Security ``restricted`` forbids root, and most images default to root."""
NODE_PORTS: tuple[PortRange, ...] = ((31000, 32000),)
SERVICE_PORT_BASE = 10000
"""The Service port of task port ``i`` when the app names none (Marathon's service port
range starts there too)."""
GPU_RESOURCE = "nvidia.com/gpu"
MAX_NAME_LENGTH = 63
HASH_LENGTH = 8

CONNECT_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 30.0
WATCH_TIMEOUT_SECONDS = 60
"""Server-side timeout of one watch request; the client gives up 15 s after it, so a silently
dead connection is noticed within 75 s."""
LIST_PAGE_SIZE = 500
SYNC_WAIT_SECONDS = 15.0
"""How long the first observe waits for the first list of pods before saying unavailable."""
RETRY_MIN_SECONDS = 1.0
RETRY_MAX_SECONDS = 30.0
DEFAULT_KEEP_ENDED_SECONDS = 3600.0
SERVICE_IDLE_SECONDS = 60.0
SERVICE_SWEEP_SECONDS = 30.0
LOG_TAIL_LINES = 1000
MAX_DELETIONS_PER_OBSERVE = 20
MAX_TOMBSTONES = 10000
MAX_CACHED_RECORDS = 100000

KILL_FILE = "kill.json"
EXIT_FILE = "exit.json"
OUTPUT_FILE = "output.log"

ENDED_PHASES = frozenset({"Succeeded", "Failed"})
_UNREACHABLE = (urllib3.exceptions.HTTPError, OSError)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-))*[a-z0-9]$|^[a-z]$")
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)([A-Za-z]*)$")
_SUFFIXES: dict[str, float] = {
    "": 1.0, "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "P": 1e15, "E": 1e18, "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40,
    "Pi": 2.0**50, "Ei": 2.0**60,
}
MIB = 2.0**20
# Handed to `kubectl exec` (check_command) so it reaches the same cluster the client does.
_CLI_ENV = ("PATH", "HOME", "KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT")


# --- names -----------------------------------------------------------------------------------


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_LENGTH]


def _with_digest(base: str, original: str, allowed_tail: str = "-") -> str:
    """``base`` cut so that ``-<digest of original>`` fits in 63 characters."""
    keep = MAX_NAME_LENGTH - HASH_LENGTH - 1
    stem = base[:keep].rstrip(allowed_tail)
    return f"{stem}-{_digest(original)}" if stem else _digest(original)


def pod_name(task_id: str) -> str:
    """The pod name of ``task_id``: a DNS-1123 label (at most 63 characters of ``[a-z0-9-]``,
    alphanumeric at both ends). The id itself when it already is one; otherwise the id
    lowercased with each other character (and each run of them) turned into one ``-``, then
    ``-`` and 8 hex digits of the id's SHA-256, so ids that sanitise alike stay apart.
    Raises ``ValueError`` for an empty id."""
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("task id must be a non-empty string")
    if len(task_id) <= MAX_NAME_LENGTH and _DNS_LABEL.fullmatch(task_id):
        return task_id
    safe = re.sub(r"[^a-z0-9]+", "-", task_id.lower()).strip("-")
    return _with_digest(safe or "task", task_id)


def label_value(value: str) -> str:
    """``value`` as a label value: itself when it is one (at most 63 characters of
    ``[A-Za-z0-9_.-]``, alphanumeric at both ends), else each other character replaced by
    ``-``, cut, and suffixed with ``-`` and 8 hex digits of the value's SHA-256."""
    if len(value) <= MAX_NAME_LENGTH and _LABEL_VALUE.fullmatch(value):
        return value
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", value).strip("-_.")
    return _with_digest(safe, value, allowed_tail="-_.")


def app_label(app_id: str) -> str:
    """The ``dromos.io/app`` label of an app: its id without the leading ``/`` and with ``/``
    as ``_`` (``/prod/web`` → ``prod_web``, the prefix of its task ids). Marathon ids have no
    ``_``, so this is one-to-one; ids longer than 63 characters are cut and get a hash."""
    return label_value(task_id_prefix(app_id))


def service_name(app_id: str) -> str:
    """The Service of an app (a DNS-1035 label): a one-segment id is its segment (``/web`` →
    ``web``, prefixed ``app-`` when it starts with a digit); deeper ids join their segments
    with ``-`` and add 8 hex digits of the id's hash (``/prod/web`` → ``prod-web-<hash>``)
    because ``/a/b-c`` and ``/a-b/c`` would otherwise meet. The Service's
    ``dromos.io/app-id`` annotation holds the id."""
    segments = [s for s in app_id.split("/") if s]
    joined = "-".join(segments) or "app"
    if not joined[0].isalpha():
        joined = "app-" + joined
    if len(segments) == 1 and len(joined) <= MAX_NAME_LENGTH and _DNS_LABEL.fullmatch(joined):
        return joined
    return _with_digest(re.sub(r"[^a-z0-9-]+", "-", joined.lower()).strip("-"), app_id)


def _port_name(name: str | None, index: int) -> str:
    """A container port name (IANA service name: at most 15 characters, a letter somewhere,
    no ``--``); Marathon's name when valid, else ``port<i>``."""
    if name and len(name) <= 15 and _PORT_NAME.fullmatch(name):
        return name
    return f"port{index}"


# --- quantities ------------------------------------------------------------------------------


def parse_quantity(value: Any) -> float:
    """A Kubernetes quantity (``"250m"``, ``"1Gi"``, ``"1e3"``, ``2``) as a plain number
    (cores, bytes). Raises ``ValueError`` for anything else."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    m = _QUANTITY.fullmatch(str(value).strip())
    if m is None or m.group(2) not in _SUFFIXES:
        raise ValueError(f"not a quantity: {value!r}")
    return float(m.group(1)) * _SUFFIXES[m.group(2)]


def _resources_of(quantities: Mapping[str, Any]) -> Resources:
    def q(key: str) -> float:
        try:
            return parse_quantity(quantities[key]) if key in quantities else 0.0
        except ValueError:
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
        return _resources_of(merged)

    total = Resources()
    for c in spec.get("containers") or ():
        total = total + of(c)
    for c in spec.get("initContainers") or ():
        init = of(c)
        total = Resources(max(total.cpus, init.cpus), max(total.mem, init.mem),
                          max(total.disk, init.disk), max(total.gpus, init.gpus))
    return total + _resources_of(spec.get("overhead") or {})


# --- building pods and services --------------------------------------------------------------


@dataclass(frozen=True)
class PortPlan:
    """One task port as the pod and the Service see it."""

    index: int
    name: str
    container_port: int
    protocols: tuple[str, ...]
    service_port: int


def _container_section(spec: LaunchSpec) -> Mapping[str, Any]:
    container = spec.extra.get("container") or {}
    return container if isinstance(container, Mapping) else {}


def _docker_section(spec: LaunchSpec) -> Mapping[str, Any]:
    """Marathon's ``container.docker``, or a Chronos container object (image at the top)."""
    container = _container_section(spec)
    section = container.get("docker")
    if isinstance(section, Mapping):
        return section
    return container if "image" in container else {}


def port_plan(spec: LaunchSpec) -> list[PortPlan]:
    """The task's ports: names, container ports and service ports (module docstring)."""
    mappings = _container_section(spec).get("portMappings")
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
        port_name = _port_name(name, i)
        if port_name in used:
            port_name = f"port{i}"
        used.add(port_name)
        protocols = tuple(dict.fromkeys(p.strip().upper() for p in protocol.split(",")
                                        if p.strip())) or ("TCP",)
        plans.append(PortPlan(i, port_name, container_port, protocols,
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
    ``extra["healthChecks"]`` and ``extra["readinessChecks"]`` (module docstring)."""
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
        port_name = str(rc.get("portName") or "http-api")
        target: int | str | None = port_name if port_name in names else None
        if target is None and ports:
            log.warning("readiness check of %s names port %r, which the app does not have; "
                        "probing its first port", spec.app_id, port_name)
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
    container = _container_section(spec)
    docker = _docker_section(spec)
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
    """The labels of the task's pod (module docstring)."""
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
    ``ValueError`` for what cannot run on Kubernetes (module docstring)."""
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
        "imagePullPolicy": "Always" if _docker_section(spec).get("forcePullImage")
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
            "terminationGracePeriodSeconds": _grace(spec.kill_grace_seconds),
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


def _grace(seconds: float) -> int:
    """A pod's grace period: whole seconds, at least 1 (0 would make the API server forget
    the pod before the kubelet has stopped it)."""
    return max(1, math.ceil(float(seconds)))


# --- what the runtime sees of pods and nodes -------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class PodView:
    """The parts of a pod the runtime uses (a full pod object is 10-20 times larger, and a
    cluster-wide cache holds every pod)."""

    namespace: str
    name: str
    uid: str
    node: str
    phase: str
    deleting: bool
    task_id: str | None
    requests: Resources
    app_label: str | None = None
    started_at: datetime | None = None
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    waiting: str = ""
    ready: bool = False
    pod_ip: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def ended(self) -> bool:
        return self.phase in ENDED_PHASES


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """The :class:`PodView` of a pod object."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    task_id = annotations.get(ANNOTATION_TASK_ID) if LABEL_TASK in labels else None
    statuses = status.get("containerStatuses") or []
    main = next((s for s in statuses if s.get("name") == CONTAINER_NAME),
                statuses[0] if statuses else {})
    state = main.get("state") or {}
    terminated = state.get("terminated") or {}
    running = state.get("running") or {}
    waiting = state.get("waiting") or {}
    exit_code = terminated.get("exitCode")
    started = (_parse_time(status.get("startTime")) or _parse_time(running.get("startedAt"))
               or _parse_time(terminated.get("startedAt")))
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or ())
    return PodView(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        node=str(spec.get("nodeName") or ""),
        phase=str(status.get("phase") or "Pending"),
        deleting=bool(meta.get("deletionTimestamp")),
        task_id=str(task_id) if task_id is not None else None,
        requests=pod_requests(pod),
        app_label=labels.get(LABEL_APP),
        started_at=started,
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
        reason=str(terminated.get("reason") or status.get("reason") or ""),
        message=str(terminated.get("message") or status.get("message") or ""),
        waiting=str(waiting.get("reason") or ""),
        ready=ready,
        pod_ip=str(status.get("podIP") or ""),
    )


@dataclass(frozen=True, slots=True)
class NodeView:
    name: str
    labels: Mapping[str, str]
    allocatable: Resources
    schedulable: bool


def node_view(node: Mapping[str, Any]) -> NodeView:
    """The :class:`NodeView` of a Node object. Not schedulable: cordoned, tainted NoSchedule
    or NoExecute (Dromos sets no tolerations), or not Ready."""
    meta = node.get("metadata") or {}
    spec = node.get("spec") or {}
    status = node.get("status") or {}
    tainted = any(t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or ())
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or ())
    return NodeView(
        name=str(meta.get("name") or ""),
        labels={str(k): str(v) for k, v in (meta.get("labels") or {}).items()},
        allocatable=_resources_of(status.get("allocatable") or status.get("capacity") or {}),
        schedulable=ready and not tainted and not spec.get("unschedulable"),
    )


def outcome(view: PodView, *, killed: bool) -> tuple[TaskState, int | None, str]:
    """How an ended (or vanished, ``killed``) pod's task ended: state, exit code, message."""
    code = view.exit_code
    if view.reason == "OOMKilled":
        how = "OOM killed"
    elif code is not None:
        how = f"exited with status {code}" + (f" ({view.reason})" if view.reason and
                                              view.reason not in ("Completed", "Error") else "")
    elif view.reason or view.message:
        how = ": ".join(x for x in (view.reason, view.message) if x)
    else:
        how = "ended with an unknown status"
    if killed:
        return TaskState.KILLED, code, f"killed: {how}"
    if view.phase == "Succeeded":
        return TaskState.FINISHED, 0 if code is None else code, how
    return TaskState.FAILED, code, how


# --- list + watch ----------------------------------------------------------------------------


class _Gone(Exception):
    """The API server no longer has the resourceVersion the watch asked for (410)."""


V = TypeVar("V")


class Reflector(Generic[V]):
    """A cache of one collection kept current by list + watch, in a daemon thread.

    ``list_call(**kwargs)`` is a client list method (``list_namespaced_pod`` bound to a
    namespace, ``list_node``...), called with ``_preload_content=False`` so objects stay plain
    JSON. ``convert`` turns an object into the cached value. ``on_removed(value, final)`` runs
    (in the thread) for each value that leaves the cache: ``final`` is ``True`` when it comes
    from a DELETED event (the object's last state), ``False`` when a relist found it gone.

    The watch resumes from the newest resourceVersion seen (events and bookmarks); ``410
    Gone`` or an ERROR event with code 410 makes it list again (counted in ``relists``). A
    failure marks the cache unhealthy (``error``), waits (1 s doubling to 30 s) and lists again.
    """

    def __init__(self, name: str, list_call: Callable[..., Any],
                 convert: Callable[[Mapping[str, Any]], V],
                 on_removed: Callable[[V, bool], None] | None = None) -> None:
        self.name = name
        self._list_call = list_call
        self._convert = convert
        self._on_removed = on_removed
        self._lock = threading.Lock()
        self._items: dict[str, V] = {}
        # uids of recently deleted objects, oldest first (see put_created).
        self._tombstones: dict[str, None] = {}
        self.resource_version: str | None = None
        self.relists = 0
        self.failures = 0
        self.synced = threading.Event()
        self.healthy = False
        self.error = "not listed yet"
        self._stop = threading.Event()
        self._restart = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None

    # -- reading --

    def get(self, key: str) -> V | None:
        with self._lock:
            return self._items.get(key)

    def values(self) -> list[V]:
        with self._lock:
            return list(self._items.values())

    def put_created(self, key: str, uid: str, value: V) -> None:
        """Insert what a create returned, so readers see the object before its watch event.
        Nothing happens when the watch was faster: the cache already has this object in the
        same or a newer state, or saw it deleted already (its uid is a recent tombstone)."""
        with self._lock:
            if key not in self._items and uid not in self._tombstones:
                self._items[key] = value

    # -- the thread --

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"dromos-watch-{self.name}",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._interrupt()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def restart_watch(self) -> None:
        """End the current watch request; the thread watches again from
        ``resource_version`` (tests set that to a compacted version to force a 410)."""
        self._restart.set()
        self._interrupt()

    def _interrupt(self) -> None:
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.shutdown()  # unblocks the reading thread (urllib3 >= 2.3)
            with contextlib.suppress(Exception):
                response.release_conn()

    def _run(self) -> None:
        delay = 0.0
        need_list = True
        while not self._stop.is_set():
            try:
                if need_list:
                    self._relist()
                    need_list = False
                self._watch()
                delay = 0.0
            except _Gone:
                log.info("watch of %s: resourceVersion %s is gone (410); listing again",
                         self.name, self.resource_version)
                need_list = True
            except Exception as e:
                if self._stop.is_set():
                    return
                if isinstance(e, ApiException) and e.status == 410:
                    need_list = True  # some API servers refuse the watch request itself
                    continue
                if self._restart.is_set():
                    self._restart.clear()
                    if not need_list:
                        continue  # restart_watch() cut the stream: resume from the version
                self.failures += 1
                self.healthy = False
                self.error = f"watching {self.name} failed: {_describe(e)}"
                delay = min(max(delay * 2, RETRY_MIN_SECONDS), RETRY_MAX_SECONDS)
                log.debug("%s; retrying in %.0fs", self.error, delay)
                self._stop.wait(delay)
                # After a failure nothing says which events were missed: start from a list.
                need_list = True

    def _relist(self) -> None:
        items: dict[str, V] = {}
        token: str | None = None
        version = ""
        while True:
            kwargs: dict[str, Any] = {"limit": LIST_PAGE_SIZE}
            if token:
                kwargs["_continue"] = token
            response = self._list_call(
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS * 2),
                **kwargs)
            page = json.loads(response.data)
            for obj in page.get("items") or ():
                items[_object_key(obj)] = self._convert(obj)
            meta = page.get("metadata") or {}
            version = str(meta.get("resourceVersion") or version)
            token = meta.get("continue") or None
            if not token:
                break
        with self._lock:
            vanished = [v for k, v in self._items.items() if k not in items]
        for value in vanished:  # before they leave the cache (see _event)
            self._removed(value, final=False)
        with self._lock:
            self._items = items
            self.resource_version = version
            self.relists += 1
            self.healthy = True
            self.error = ""
        self.synced.set()

    def _watch(self) -> None:
        self._restart.clear()  # a restart asked for before this request is done by it
        response = self._list_call(
            watch=True, resource_version=self.resource_version, allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT_SECONDS, _preload_content=False,
            _request_timeout=(CONNECT_TIMEOUT_SECONDS, WATCH_TIMEOUT_SECONDS + 15))
        self._response = response
        try:
            for line in _lines(response):
                if self._stop.is_set():
                    return
                self._event(json.loads(line))
        finally:
            self._response = None
            with contextlib.suppress(Exception):
                response.release_conn()

    def _event(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise _Gone()
            raise RuntimeError(f"watch error: {obj.get('message') or obj}")
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            value = self._convert(obj)
            with self._lock:
                self._items[_object_key(obj)] = value
                self.resource_version = version or self.resource_version
        elif kind == "DELETED":
            value = self._convert(obj)
            # Bookkeeping first, removal second: a reader never finds the object gone before
            # what its removal means is recorded.
            self._removed(value, final=True)
            with self._lock:
                self._items.pop(_object_key(obj), None)
                self.resource_version = version or self.resource_version
                self._tombstones[str((obj.get("metadata") or {}).get("uid"))] = None
                if len(self._tombstones) > MAX_TOMBSTONES:
                    del self._tombstones[next(iter(self._tombstones))]
        elif kind == "BOOKMARK":
            with self._lock:
                self.resource_version = version or self.resource_version

    def _removed(self, value: V, final: bool) -> None:
        if self._on_removed is None:
            return
        try:
            self._on_removed(value, final)
        except Exception:  # bookkeeping must not stop the watch
            log.exception("handling the removal of a %s failed", self.name)


def _object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _lines(response: Any) -> Iterator[bytes]:
    """The lines of a streamed (chunked) response as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                yield line
    if pending.strip():
        yield pending


def _describe(e: BaseException) -> str:
    if isinstance(e, ApiException):
        return f"{e.status} {_status_message(e)}"
    return str(e) or type(e).__name__


def _refused_by_admission(e: ApiException) -> bool:
    """A 403 that is about the pod (Pod Security, a quota), not about Dromos's rights."""
    message = _status_message(e)
    return e.status == 403 and ("violates PodSecurity" in message or "exceeded quota" in message)


def _status_message(e: ApiException) -> str:
    """The ``message`` of the Status an API error carries, else its reason."""
    try:
        body = json.loads(e.body) if e.body else {}
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or e.reason or "")


# --- client configuration --------------------------------------------------------------------


def load_client_configuration(kubeconfig: str | None = None,
                              context: str | None = None) -> Any:
    """A client ``Configuration`` from the usual places: in-cluster (the pod's service
    account) when ``KUBERNETES_SERVICE_HOST`` is set and no kubeconfig is given, else the
    kubeconfig (``kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``). Raises
    ``ConfigException`` when there is none."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=configuration)
    else:
        k8s_config.load_kube_config(config_file=kubeconfig, context=context,
                                    client_configuration=configuration)
    # Fail fast: the runtime has its own retry policy (backoff), urllib3's would hide outages.
    configuration.retries = 0
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize or 0, 32)
    return configuration


# --- the runtime -----------------------------------------------------------------------------


@dataclass
class _Records:
    """The files of one task's pod under the state directory. ``seen`` caches what was read
    or written (records are written once, or only ever made stricter, so a cached record
    stays true; a missing one is looked up again, another instance may write it)."""

    directory: Path
    seen: dict[Path, dict[str, Any]]

    def read(self, name: str) -> dict[str, Any] | None:
        path = self.directory / name
        cached = self.seen.get(path)
        if cached is not None:
            return cached
        try:
            data = read_json(path)
        except ValueError:
            return None
        if data is not None:
            self._remember(path, data)
        return data

    def write(self, name: str, data: Mapping[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.directory / name, data)
        self._remember(self.directory / name, dict(data))

    def _remember(self, path: Path, data: dict[str, Any]) -> None:
        if len(self.seen) >= MAX_CACHED_RECORDS:
            self.seen.clear()  # only a cache: start afresh rather than grow without bound
        self.seen[path] = data

    def write_once(self, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Create the record unless it exists, atomically (a hard link of a complete file
        either appears or fails): the first writer wins, also against another thread or
        process. Returns the record that is there."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / name
        tmp = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(dict(data), f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
                stored = dict(data)
            except FileExistsError:
                stored = read_json(path) or dict(data)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._remember(path, stored)
        return stored

    def exists(self, name: str) -> bool:
        return self.read(name) is not None


@dataclass
class _ServiceState:
    fingerprint: str
    ensured_at: float = field(default_factory=time.monotonic)


class KubernetesRuntime:
    """Runs each task as one Pod in ``namespace`` of the cluster the client configuration
    points at (module docstring).

    ``state_dir``: where task records live (see the module docstring). ``configuration``: a
    client ``Configuration``; ``None`` loads one lazily with :func:`load_client_configuration`
    (``kubeconfig``, ``context``). ``namespace``: ``None`` means ``$DROMOS_KUBE_NAMESPACE``,
    else :data:`DEFAULT_NAMESPACE`. ``default_image``: the image of apps and jobs without a
    container (``None``: ``$DROMOS_KUBE_DEFAULT_IMAGE``, else :data:`DEFAULT_IMAGE`).
    ``run_as_user``: the uid tasks run as (``None``: the image's, which must not be root).
    ``hosts``: only these node hostnames are offered to placement (``None``: all). ``labels``:
    extra labels on every pod and Service (Dromos's own win). ``keep_ended_seconds``: how long
    ended pods stay (``None``: forever).

    Nothing touches the API server until first use, so a runtime can be built while it is
    down. Safe to use from several threads.
    """

    name = "kubernetes"

    def __init__(
        self,
        state_dir: Path,
        *,
        namespace: str | None = None,
        configuration: Any = None,
        kubeconfig: str | None = None,
        context: str | None = None,
        default_image: str | None = None,
        run_as_user: int | None = DEFAULT_RUN_AS_USER,
        hosts: Sequence[str] | None = None,
        labels: Mapping[str, str] | None = None,
        keep_ended_seconds: float | None = DEFAULT_KEEP_ENDED_SECONDS,
    ) -> None:
        self.namespace = (namespace or os.environ.get("DROMOS_KUBE_NAMESPACE")
                          or DEFAULT_NAMESPACE)
        if not _DNS_LABEL.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a valid namespace name")
        self.state_dir = Path(state_dir).absolute()
        self.records_dir = self.state_dir / "kubernetes" / self.namespace / "tasks"
        self.records_dir.mkdir(parents=True, exist_ok=True)
        self.default_image = (default_image or os.environ.get("DROMOS_KUBE_DEFAULT_IMAGE")
                              or DEFAULT_IMAGE)
        self.run_as_user = run_as_user
        self.hosts = frozenset(hosts) if hosts else None
        self.extra_labels = dict(labels or {})
        self.keep_ended_seconds = keep_ended_seconds
        self.kubeconfig = kubeconfig
        self._context = context
        self._configuration = configuration
        self._lock = threading.RLock()
        self._api_client: Any = None
        self._core: Any = None
        self._retry_delay = 0.0
        self._retry_at = 0.0
        self._last_failure = ""
        self._pods: Reflector[PodView] | None = None
        self._nodes: Reflector[NodeView] | None = None
        self.cluster_wide = False
        self._host_to_node: dict[str, str] = {}
        self._services: dict[str, _ServiceState] = {}
        self._last_launch: dict[str, float] = {}
        self._service_sweep_at = 0.0
        self._records_seen: dict[Path, dict[str, Any]] = {}

    # --- the Runtime protocol ----------------------------------------------------------------

    def nodes(self) -> list[Node]:
        """The schedulable Nodes with their free capacity for Dromos (module docstring):
        allocatable minus the requests of other pods bound there. Never raises; ``[]`` until
        the Nodes were listed once (it waits a few seconds for that on first use)."""
        try:
            self._watching()
        except RuntimeUnavailable:
            return []
        assert self._nodes is not None and self._pods is not None
        self._nodes.synced.wait(5.0)
        self._pods.synced.wait(5.0)
        used: dict[str, Resources] = {}
        for pod in self._pods.values():
            if not pod.node or pod.ended or self._is_ours(pod):
                continue
            used[pod.node] = used.get(pod.node, Resources()) + pod.requests
        out: list[Node] = []
        mapping: dict[str, str] = {}
        views = sorted(self._nodes.values(), key=lambda n: n.name)
        hostnames = [n.labels.get(LABEL_HOSTNAME) or n.name for n in views]
        counts = Counter(hostnames)
        unique = {h for h in hostnames if counts[h] == 1}
        for view, hostname in zip(views, hostnames, strict=True):
            if hostname not in unique:
                hostname = view.name
            mapping[hostname] = view.name
            if not view.schedulable or (self.hosts is not None and hostname not in self.hosts):
                continue
            free = view.allocatable - used.get(view.name, Resources())
            attributes = dict(view.labels)
            for alias, label in ATTRIBUTE_ALIASES.items():
                if alias not in attributes and label in view.labels:
                    attributes[alias] = view.labels[label]
            out.append(Node(
                hostname=hostname,
                resources=Resources(max(0.0, free.cpus), max(0.0, free.mem),
                                    max(0.0, free.disk), max(0.0, free.gpus)),
                ports=NODE_PORTS,
                attributes=attributes,
            ))
        with self._lock:
            self._host_to_node = mapping
        return out

    def probe_host(self, task: Task) -> str:
        """The pod's IP when known (health checks reach the task there from inside the
        cluster), else the task's host."""
        view = self._cached(task.id)
        return view.pod_ip if view is not None and view.pod_ip else task.host

    def launch(self, spec: LaunchSpec) -> Mapping[str, Any]:
        """Create the task's pod on the node of ``spec.host``; return ``{"namespace", "pod",
        "uid"}``.

        Idempotent per task id: when the task's pod exists (in the cache, or the create
        answers 409 AlreadyExists and the pod carries this task id), its handle is returned;
        when the task ran before and its pod was deleted since, the recorded handle is
        returned -- a task id runs at most once. The app's Service is created or updated
        first when the app has ports. Raises ``ValueError`` when the task cannot run here
        (module docstring) or the API server rejects the pod as invalid, and
        :class:`RuntimeUnavailable` when the API server cannot be reached or refuses the
        runtime (credentials, RBAC, missing namespace).
        """
        name = pod_name(spec.task_id)
        image = spec.image or _docker_section(spec).get("image") or self.default_image
        with self._lock:
            node_name = self._host_to_node.get(spec.host, spec.host)
        body = build_pod(spec, namespace=self.namespace, node_name=node_name, image=str(image),
                         run_as_user=self.run_as_user, extra_labels=self.extra_labels)
        cached = self._cached(spec.task_id)
        if cached is not None:
            return self._handle_of(cached)
        ended = self._records(name).read(EXIT_FILE)
        if ended is not None and ended.get("task_id") == spec.task_id:
            # It ran and its end is recorded (its pod may be deleted): never again.
            return _handle(self.namespace, name, str(ended.get("uid") or ""))
        core = self._api()
        service = build_service(spec, namespace=self.namespace, extra_labels=self.extra_labels)
        if service is not None:
            self._ensure_service(core, spec.app_id, service)
        try:
            response = core.create_namespaced_pod(
                self.namespace, body, _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS))
            created = json.loads(response.data)
        except ApiException as e:
            if e.status == 409:
                existing = self._get_pod(core, name)
                if existing is not None and existing.task_id == spec.task_id:
                    return self._adopted(existing)
                if existing is not None:
                    raise ValueError(f"pod {name!r} belongs to task {existing.task_id!r}, not "
                                     f"{spec.task_id!r}") from None
                raise self._unavailable(f"pod {name!r} exists but cannot be read", e) from e
            if e.status in (400, 422) or _refused_by_admission(e):
                raise ValueError(f"the API server refused the pod of task {spec.task_id!r}: "
                                 f"{_status_message(e)}") from None
            raise self._unavailable(f"creating pod {name!r}", e) from e
        except _UNREACHABLE as e:
            raise self._unavailable(f"creating pod {name!r}", e) from e
        self._succeeded()
        view = pod_view(created)
        if self._pods is not None:
            self._pods.put_created(view.key, view.uid, view)
        with self._lock:
            self._last_launch[spec.app_id] = time.monotonic()
        return self._adopted(view)

    def kill(self, task: Task, grace_seconds: float) -> None:
        """Delete the task's pod with ``gracePeriodSeconds`` = ``grace_seconds`` (whole
        seconds, at least 1): the kubelet sends the container SIGTERM now and SIGKILL when the
        grace period is over. Does not block. The request is recorded first, so the end is
        reported KILLED, also by a restarted Dromos. A second kill never extends an earlier
        deadline (a shorter one deletes again with the shorter grace). A task whose pod has
        ended, is unknown, or whose end is recorded is left alone. Raises
        :class:`RuntimeUnavailable` when the API server cannot be reached."""
        try:
            name = pod_name(task.id)
        except ValueError:
            return
        records = self._records(name)
        if records.exists(EXIT_FILE):
            return
        core = self._api()
        view = self._cached(task.id) or self._get_pod(core, name)
        if view is None or view.task_id != task.id or view.ended:
            return
        now = time.time()
        deadline = now + max(0.0, float(grace_seconds))
        earlier = records.read(KILL_FILE)
        if earlier is not None and float(earlier.get("deadline", deadline)) <= deadline:
            if view.deleting:
                return  # already terminating with an earlier (or the same) deadline
            deadline = float(earlier["deadline"])
        else:
            records.write(KILL_FILE, {"requested_at": now, "grace_seconds": grace_seconds,
                                      "deadline": deadline})
        grace = _grace(deadline - now)
        try:
            core.delete_namespaced_pod(
                name, self.namespace,
                body={"gracePeriodSeconds": grace, "preconditions": {"uid": view.uid}},
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS))
        except ApiException as e:
            if e.status in (404, 409):  # gone already, or a different pod of that name
                self._succeeded()
                return
            raise self._unavailable(f"deleting pod {name!r}", e) from e
        except _UNREACHABLE as e:
            raise self._unavailable(f"deleting pod {name!r}", e) from e
        self._succeeded()

    def observe(self, tasks: Sequence[Task]) -> list[Observation]:
        """One observation per task, in order, from the watch cache (module docstring); one
        GET per task whose pod the cache does not hold. Records ends (``exit.json``) when
        first seen and deletes pods that ended more than ``keep_ended_seconds`` ago (their
        output's tail saved first) and Services of apps without pods. If one task cannot be
        observed its previous state is reported with the reason. Raises
        :class:`RuntimeUnavailable` while the API server cannot be reached (the cache may be
        stale then)."""
        pods = self._pods_cache()
        out: list[Observation] = []
        for task in tasks:
            try:
                out.append(self._observe_one(task))
            except RuntimeUnavailable:
                raise
            except Exception as e:  # one odd pod or record must not hide the others
                log.exception("observing task %s failed", task.id)
                out.append(unobservable(task, e))
        self._collect_ended(pods)
        self._sweep_services(pods)
        return out

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]:
        """``kubectl exec`` of ``/bin/sh -c <command>`` in the task's container, so a COMMAND
        health check runs in the task's own environment; the environment returned is what
        ``kubectl`` needs to reach the same cluster."""
        cli = shutil.which("kubectl") or "kubectl"
        env = {k: v for k, v in os.environ.items() if k in _CLI_ENV}
        env.setdefault("PATH", os.defpath)
        argv = [cli]
        if self.kubeconfig:
            argv += ["--kubeconfig", self.kubeconfig]
        if self._context:
            argv += ["--context", self._context]
        argv += ["exec", "--namespace", self.namespace, pod_name(task.id), "-c",
                 CONTAINER_NAME, "--", "/bin/sh", "-c", command]
        return argv, env

    def close(self) -> None:
        """Stop the watch threads and drop the connection pool. Pods keep running; a new
        runtime over the same state adopts them."""
        with self._lock:
            reflectors = [r for r in (self._pods, self._nodes) if r is not None]
            self._pods = self._nodes = None
            api_client, self._api_client, self._core = self._api_client, None, None
        for r in reflectors:
            r.stop()
        if api_client is not None:
            with contextlib.suppress(Exception):
                api_client.close()

    # --- beyond the protocol -----------------------------------------------------------------

    def logs(self, task: Task, tail: int | None = 200) -> str:
        """The last ``tail`` lines (all when ``None``) of the task's container output
        (``kubectl logs``), or of the tail saved when its pod was deleted (``""`` when there is
        nothing). Raises :class:`RuntimeUnavailable` when the API server cannot be reached and
        ``LookupError`` when it cannot get the output from the node (the kubelet is not
        reachable, the container never started)."""
        name = pod_name(task.id)
        core = self._api()
        kwargs: dict[str, Any] = {"container": CONTAINER_NAME}
        if tail is not None:
            kwargs["tail_lines"] = max(0, tail)
        try:
            response = core.read_namespaced_pod_log(
                name, self.namespace, _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS), **kwargs)
            self._succeeded()
            return bytes(response.data).decode("utf-8", "replace")
        except ApiException as e:
            if e.status == 404:
                self._succeeded()
            elif e.status is not None and 400 <= e.status < 500 and e.status not in (401, 403):
                raise LookupError(f"no output of task {task.id!r}: {_status_message(e)}") from e
            elif e.status == 500:
                # The API server answers 500 when it cannot reach the node's kubelet.
                raise LookupError(f"no output of task {task.id!r}: {_status_message(e)}") from e
            else:
                raise self._unavailable(f"reading the output of pod {name!r}", e) from e
        except _UNREACHABLE as e:
            raise self._unavailable(f"reading the output of pod {name!r}", e) from e
        try:
            text = (self._records(name).directory / OUTPUT_FILE).read_text(
                encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        if tail is None:
            return text
        lines = text.splitlines(keepends=True)
        return "".join(lines[-tail:]) if tail > 0 else ""

    def pod_name(self, task_id: str) -> str:
        """The name of ``task_id``'s pod (see :func:`pod_name`)."""
        return pod_name(task_id)

    def ready(self, task: Task) -> bool | None:
        """Whether the task's pod is Ready (its readiness probe passes), ``None`` when the
        cache does not know the pod."""
        view = self._cached(task.id)
        return None if view is None else view.ready

    @property
    def relists(self) -> int:
        """How many times the pod cache was listed (1 + relists after 410 Gone/failures)."""
        return self._pods.relists if self._pods is not None else 0

    # --- the API server ----------------------------------------------------------------------

    def _api(self) -> Any:
        """The CoreV1 API, building the client on first use. Raises
        :class:`RuntimeUnavailable` without trying while the retry delay after the last
        failure runs (doubling from 1 s to 30 s)."""
        with self._lock:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise RuntimeUnavailable(f"{self._last_failure} (next attempt in {wait:.1f}s)")
            if self._core is None:
                try:
                    configuration = self._configuration or load_client_configuration(
                        self.kubeconfig, self._context)
                except (ConfigException, OSError, ValueError) as e:
                    raise self._failed(f"no Kubernetes client configuration: {e}") from e
                self._configuration = configuration
                self._api_client = k8s_client.ApiClient(configuration)
                self._core = k8s_client.CoreV1Api(self._api_client)
            return self._core

    def _failed(self, why: str) -> RuntimeUnavailable:
        with self._lock:
            self._retry_delay = min(max(self._retry_delay * 2, RETRY_MIN_SECONDS),
                                    RETRY_MAX_SECONDS)
            self._retry_at = time.monotonic() + self._retry_delay
            self._last_failure = why
        return RuntimeUnavailable(why)

    def _succeeded(self) -> None:
        self._retry_delay = 0.0

    def _unavailable(self, doing: str, e: BaseException) -> RuntimeUnavailable:
        return self._failed(f"the Kubernetes API server failed while {doing}: {_describe(e)}")

    def _watching(self) -> None:
        """Start the watch threads on first use (deciding whether pods can be watched
        cluster-wide, which needs one list)."""
        with self._lock:
            if self._pods is not None:
                return
            core = self._api()
            try:
                core.list_pod_for_all_namespaces(
                    limit=1, _preload_content=False,
                    _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS))
                self.cluster_wide = True
            except ApiException as e:
                if e.status not in (401, 403):
                    raise self._unavailable("listing pods", e) from e
                self.cluster_wide = False
            except _UNREACHABLE as e:
                raise self._unavailable("listing pods", e) from e
            if self.cluster_wide:
                pods_call: Callable[..., Any] = core.list_pod_for_all_namespaces
            else:
                namespace = self.namespace

                def pods_call(**kwargs: Any) -> Any:
                    return core.list_namespaced_pod(namespace, **kwargs)

            self._pods = Reflector("pods", pods_call, pod_view, self._pod_removed)
            self._nodes = Reflector("nodes", core.list_node, node_view)
            self._pods.start()
            self._nodes.start()

    def _pods_cache(self) -> Reflector[PodView]:
        """The pod cache, synced and healthy, else :class:`RuntimeUnavailable`."""
        self._watching()
        pods = self._pods
        assert pods is not None
        deadline = time.monotonic() + SYNC_WAIT_SECONDS
        # Wait for the first list, but not through failures: those say it is unavailable.
        while not pods.synced.wait(0.05) and pods.failures == 0:
            if time.monotonic() >= deadline:
                break
        if not pods.synced.is_set() or not pods.healthy:
            raise RuntimeUnavailable(pods.error or "the pods have not been listed yet")
        return pods

    def _get_pod(self, core: Any, name: str) -> PodView | None:
        try:
            response = core.read_namespaced_pod(
                name, self.namespace, _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS))
        except ApiException as e:
            if e.status == 404:
                return None
            raise self._unavailable(f"reading pod {name!r}", e) from e
        except _UNREACHABLE as e:
            raise self._unavailable(f"reading pod {name!r}", e) from e
        self._succeeded()
        return pod_view(json.loads(response.data))

    def _ensure_service(self, core: Any, app_id: str, service: Json) -> None:
        """Create the app's Service, or update its selector and ports when they differ from
        what this instance last ensured. A Service the API server refuses (invalid, or RBAC)
        is logged, not raised: the task still runs, only its by-name address is missing."""
        fingerprint = json.dumps(service["spec"], sort_keys=True)
        with self._lock:
            known = self._services.get(app_id)
            if known is not None and known.fingerprint == fingerprint:
                known.ensured_at = time.monotonic()
                return
        name = service["metadata"]["name"]
        timeout = (CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS)
        try:
            try:
                core.create_namespaced_service(self.namespace, service, _preload_content=False,
                                               _request_timeout=timeout)
            except ApiException as e:
                if e.status != 409:
                    raise
                # It exists (an earlier instance, or an older version of the app): make its
                # ports and selector this version's; a merge patch replaces both wholesale.
                core.patch_namespaced_service(
                    name, self.namespace,
                    {"metadata": {"labels": service["metadata"]["labels"],
                                  "annotations": service["metadata"]["annotations"]},
                     "spec": {"selector": service["spec"]["selector"],
                              "ports": service["spec"]["ports"]}},
                    _content_type="application/merge-patch+json", _preload_content=False,
                    _request_timeout=timeout)
        except ApiException as e:
            if e.status is not None and 400 <= e.status < 500 and e.status != 429:
                # Invalid, or not allowed (RBAC): the task still runs, only the by-name address
                # is missing. Not retried on every launch of this version.
                log.warning("the API server refused Service %s of app %s: %s %s", name, app_id,
                            e.status, _status_message(e))
                with self._lock:
                    self._services[app_id] = _ServiceState(fingerprint)
                return
            raise self._unavailable(f"creating Service {name!r}", e) from e
        except _UNREACHABLE as e:
            raise self._unavailable(f"creating Service {name!r}", e) from e
        with self._lock:
            self._services[app_id] = _ServiceState(fingerprint)

    # --- observing ---------------------------------------------------------------------------

    def _records(self, name: str) -> _Records:
        return _Records(self.records_dir / name, self._records_seen)

    def _is_ours(self, view: PodView) -> bool:
        return view.task_id is not None and view.namespace == self.namespace

    def _cached(self, task_id: str) -> PodView | None:
        pods = self._pods
        if pods is None:
            return None
        try:
            view = pods.get(f"{self.namespace}/{pod_name(task_id)}")
        except ValueError:
            return None
        return view if view is not None and view.task_id == task_id else None

    def _handle_of(self, view: PodView) -> dict[str, Any]:
        return _handle(view.namespace, view.name, view.uid)

    def _adopted(self, view: PodView) -> dict[str, Any]:
        """The handle of a pod of ours. Nothing is written at launch: while the pod exists
        it is the record of the launch (an fsync per create would halve the create rate)."""
        return self._handle_of(view)

    def _observe_one(self, task: Task) -> Observation:
        name = pod_name(task.id)
        records = self._records(name)
        ended = records.read(EXIT_FILE)
        killed = task.kill_requested_at is not None or records.exists(KILL_FILE)
        view = self._cached(task.id)
        if view is None and ended is None:
            # Not in the cache: created a moment ago by another instance, or really gone.
            found = self._get_pod(self._api(), name)
            view = found if found is not None and found.task_id == task.id else None
        if view is not None:
            handle = self._handle_of(view)
        elif ended is not None and ended.get("uid"):
            handle = _handle(self.namespace, name, str(ended["uid"]))
        else:
            handle = dict(task.handle)
        started = view.started_at if view is not None else _parse_time(
            (ended or {}).get("started_at"))

        def obs(state: TaskState, code: int | None = None, message: str = "") -> Observation:
            return Observation(task.id, state, code, message, handle, started)

        if ended is not None:
            return obs(TaskState(ended["state"]), _opt_int(ended.get("exit_code")),
                       str(ended.get("message", "")))
        if view is None:
            # Recorded, so that a later launch of this id does not start it after all. The
            # watch may have recorded the pod's deletion a moment ago: its record wins.
            if killed:
                state, message = (TaskState.KILLED,
                                  "killed; its pod is gone and how it ended was not seen")
            else:
                state, message = TaskState.LOST, f"there is no pod {name!r}"
            stored = records.write_once(EXIT_FILE, {
                "task_id": task.id, "uid": handle.get("uid"), "state": state.value,
                "exit_code": None, "message": message, "started_at": None,
                "recorded_at": time.time()})
            return obs(TaskState(stored["state"]), _opt_int(stored.get("exit_code")),
                       str(stored.get("message", "")))
        if view.ended:
            state, code, message = outcome(view, killed=killed)
            stored = self._record_end(records, view, state, code, message)
            return obs(TaskState(stored["state"]), _opt_int(stored.get("exit_code")),
                       str(stored.get("message", "")))
        note = "kill requested; waiting for the pod to terminate" if view.deleting else ""
        if view.phase == "Running":
            return obs(TaskState.RUNNING, message=note)
        if view.phase == "Unknown":
            return obs(TaskState.RUNNING, message="the pod's node stopped reporting")
        return obs(TaskState.STARTING, message=note or view.waiting or "pod pending")

    def _record_end(self, records: _Records, view: PodView, state: TaskState,
                    code: int | None, message: str) -> dict[str, Any]:
        """Record how the task of ``view`` ended, unless something is recorded already;
        returns the record."""
        return records.write_once(EXIT_FILE, {
            "task_id": view.task_id, "uid": view.uid,
            "state": state.value, "exit_code": code, "message": message,
            "started_at": view.started_at.isoformat() if view.started_at else None,
            "recorded_at": time.time(),
        })

    def _pod_removed(self, view: PodView, final: bool) -> None:
        """A pod of ours left the cache: record how its task ended, unless that is recorded
        already. ``final``: ``view`` is its last state (a DELETED event), not the last one
        seen before a relist found it gone."""
        if not self._is_ours(view):
            return
        records = self._records(view.name)
        if records.exists(EXIT_FILE):
            return
        killed = records.exists(KILL_FILE)
        if view.ended or (final and killed and view.exit_code is not None):
            state, code, message = outcome(view, killed=killed)
        elif killed:
            state, code, message = (TaskState.KILLED, None,
                                    "killed; its pod was deleted before its exit was seen")
        else:
            how = "deleted" if final else "gone"
            state, code, message = (TaskState.LOST, None,
                                    f"its pod was {how} without Dromos asking")
        self._record_end(records, view, state, code, message)

    def _collect_ended(self, pods: Reflector[PodView]) -> None:
        """Delete our ended pods whose end was recorded ``keep_ended_seconds`` ago, saving
        their output's tail first. Failures are logged: the next observe tries again."""
        if self.keep_ended_seconds is None:
            return
        now = time.time()
        deleted = 0
        for view in pods.values():
            if not view.ended or not self._is_ours(view) or view.deleting:
                continue
            records = self._records(view.name)
            ended = records.read(EXIT_FILE)
            if ended is None or ended.get("uid") != view.uid:
                continue  # its end not recorded yet (or it is another pod of that name)
            if now - float(ended.get("recorded_at", now)) < self.keep_ended_seconds:
                continue
            if deleted >= MAX_DELETIONS_PER_OBSERVE:
                return
            try:
                core = self._api()
                try:
                    response = core.read_namespaced_pod_log(
                        view.name, self.namespace, container=CONTAINER_NAME,
                        tail_lines=LOG_TAIL_LINES, _preload_content=False,
                        _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS))
                    (records.directory / OUTPUT_FILE).write_bytes(bytes(response.data))
                except ApiException:
                    pass  # no output to keep (the kubelet is gone, or it never ran)
                core.delete_namespaced_pod(
                    view.name, self.namespace, body={"preconditions": {"uid": view.uid}},
                    _preload_content=False,
                    _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS))
                deleted += 1
            except ApiException as e:
                if e.status not in (404, 409):
                    log.warning("could not delete ended pod %s: %s", view.name, _describe(e))
            except (RuntimeUnavailable, *_UNREACHABLE):
                return  # the next observe says so

    def _sweep_services(self, pods: Reflector[PodView]) -> None:
        """Delete Services of ours whose app has had no pod for ``SERVICE_IDLE_SECONDS``
        (the app was deleted or scaled to zero; a later launch creates it again)."""
        now = time.monotonic()
        if now < self._service_sweep_at:
            return
        self._service_sweep_at = now + SERVICE_SWEEP_SECONDS
        apps = {v.app_label for v in pods.values() if self._is_ours(v) and v.app_label}
        try:
            core = self._api()
            response = core.list_namespaced_service(
                self.namespace, label_selector=f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_APP}",
                _preload_content=False,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS))
            services = json.loads(response.data).get("items") or []
            for svc in services:
                meta = svc.get("metadata") or {}
                label = (meta.get("labels") or {}).get(LABEL_APP)
                app_id = (meta.get("annotations") or {}).get(ANNOTATION_APP_ID, "")
                with self._lock:
                    launched = self._last_launch.get(app_id, -math.inf)
                created = _parse_time(meta.get("creationTimestamp"))
                young = created is not None and (
                    datetime.now(UTC) - created).total_seconds() < SERVICE_IDLE_SECONDS
                if label in apps or young or now - launched < SERVICE_IDLE_SECONDS:
                    continue
                core.delete_namespaced_service(
                    meta["name"], self.namespace, _preload_content=False,
                    _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS))
                with self._lock:
                    self._services.pop(app_id, None)
        except ApiException as e:
            if e.status != 404:
                log.warning("sweeping Services failed: %s", _describe(e))
        except (RuntimeUnavailable, *_UNREACHABLE) as e:
            log.debug("sweeping Services failed: %s", e)


# --- helpers ---------------------------------------------------------------------------------


def _handle(namespace: str, name: str, uid: str) -> dict[str, Any]:
    return {"namespace": namespace, "pod": name, "uid": uid}


def _opt_int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None
