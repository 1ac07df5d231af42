"""Names and labels of what the Kubernetes runtime creates: pod and Service names, label
values, annotations (see the package docstring, "Identity").

Pure: everything here follows from task and app ids alone.
"""

from __future__ import annotations

import hashlib
import re

from scheduler.model.app import task_id_prefix
from scheduler.model.resources import PortRange

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

_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-))*[a-z0-9]$|^[a-z]$")



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
    if len(task_id) <= MAX_NAME_LENGTH and DNS_LABEL.fullmatch(task_id):
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
    if len(segments) == 1 and len(joined) <= MAX_NAME_LENGTH and DNS_LABEL.fullmatch(joined):
        return joined
    return _with_digest(re.sub(r"[^a-z0-9-]+", "-", joined.lower()).strip("-"), app_id)


def port_name(name: str | None, index: int) -> str:
    """A container port name (IANA service name: at most 15 characters, a letter somewhere,
    no ``--``); Marathon's name when valid, else ``port<i>``."""
    if name and len(name) <= 15 and _PORT_NAME.fullmatch(name):
        return name
    return f"port{index}"

