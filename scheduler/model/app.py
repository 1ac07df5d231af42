"""The Marathon app definition (desired state of a service), with Marathon's names and defaults."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from scheduler.model.constraints import Constraint, parse_constraint
from scheduler.model.health import HealthCheck, ReadinessCheck
from scheduler.model.limits import (
    MAX_APP_ID_LENGTH,
    MAX_ARGS,
    MAX_BACKOFF_FACTOR,
    MAX_CPUS,
    MAX_DURATION_SECONDS,
    MAX_INSTANCES,
    MAX_MIB,
    Env,
    Float,
    Int,
    Labels,
    Launchable,
    non_finite_details,
)
from scheduler.model.priority import label_errors
from scheduler.model.resources import Resources
from scheduler.model.validation import SpecError, errors_from_pydantic

_SEGMENT = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_RESERVED_SEGMENTS = {"restart", "tasks", "versions"}

# Fields Marathon returns but that clients may PUT back: accepted on writes and ignored.
READ_ONLY_FIELDS = frozenset(
    {
        "tasks",
        "tasksRunning",
        "tasksStaged",
        "tasksHealthy",
        "tasksUnhealthy",
        "deployments",
        "versionInfo",
        "lastTaskFailure",
        "taskStats",
        "readinessCheckResults",
        "version",
    }
)


def normalize_app_id(raw: str) -> str:
    """Make an app id absolute and canonical (``web`` → ``/web``; trailing ``/`` dropped).

    Raises ``ValueError`` when a segment breaks Marathon's rules.
    """
    segments = [s for s in raw.strip().split("/") if s != ""] if isinstance(raw, str) else []
    if not segments:
        raise ValueError("id must be a non-empty path such as /prod/web")
    if sum(len(s) + 1 for s in segments) > MAX_APP_ID_LENGTH:
        raise ValueError(f"id must be at most {MAX_APP_ID_LENGTH} characters long (task ids "
                         "are made from it)")
    for seg in segments:
        if seg in (".", ".."):
            raise ValueError("id must not contain '.' or '..' segments")
        if not _SEGMENT.match(seg):
            raise ValueError(
                f"path segment {seg!r} must match [a-z0-9]([a-z0-9-]*[a-z0-9])? "
                "(lowercase letters, digits and dashes)"
            )
    if segments[-1] in _RESERVED_SEGMENTS:
        raise ValueError(f"{segments[-1]!r} is a reserved name and cannot end an id")
    return "/" + "/".join(segments)


def _constraint(v: Any) -> Constraint:
    return v if isinstance(v, Constraint) else parse_constraint(v)


ConstraintField = Annotated[
    Constraint,
    BeforeValidator(_constraint),
    PlainSerializer(lambda c: c.to_json(), return_type=list[str]),
    WithJsonSchema({"type": "array", "items": {"type": "string"}, "minItems": 2,
                    "maxItems": 3, "description": "[field, OPERATOR, value?]"}),
]


class KillSelection(StrEnum):
    YOUNGEST_FIRST = "YOUNGEST_FIRST"
    OLDEST_FIRST = "OLDEST_FIRST"


class PortDefinition(BaseModel):
    """A host port the task needs. ``port`` 0 asks for any free port."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    port: Int = Field(default=0, ge=0, le=65535)
    protocol: str = Field(default="tcp", pattern="^(tcp|udp|udp,tcp|tcp,udp)$")
    name: str | None = Field(default=None, pattern="^[a-z0-9-]+$")
    labels: Labels = Field(default_factory=dict)


class PortMapping(BaseModel):
    """A container port mapped to a host port (bridge networking). ``hostPort`` 0 = dynamic."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    containerPort: Int = Field(default=0, ge=0, le=65535)
    hostPort: Int | None = Field(default=0, ge=0, le=65535)
    servicePort: Int = Field(default=0, ge=0, le=65535)
    protocol: str = Field(default="tcp", pattern="^(tcp|udp|udp,tcp|tcp,udp)$")
    name: str | None = Field(default=None, pattern="^[a-z0-9-]+$")
    labels: Labels = Field(default_factory=dict)


class DockerSpec(BaseModel):
    # Marathon's docker object has more knobs (network, parameters...); they are kept as given.
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    image: str = Field(min_length=1)
    forcePullImage: bool = False
    privileged: bool = False
    parameters: list[dict[str, str]] = Field(default_factory=list)


class Container(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    type: str = Field(default="DOCKER", pattern="^(DOCKER|MESOS)$")
    docker: DockerSpec | None = None
    portMappings: list[PortMapping] | None = None
    volumes: list[dict[str, Any]] = Field(default_factory=list)


class UpgradeStrategy(BaseModel):
    """Marathon's two capacities, plus two Dromos fields (written back only when set, so
    strict clients never see them unless the user asked for them):
    ``deploymentTimeoutSeconds`` (a deployment that has not converged by then fails; default
    600 s) and ``autoRollback`` (a failed deployment rolls back to the previous version)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    minimumHealthCapacity: Float = Field(default=1.0, ge=0, le=1)
    maximumOverCapacity: Float = Field(default=1.0, ge=0, le=1)
    # At most a year: a deployment is expected to converge or fail within that.
    deploymentTimeoutSeconds: Float | None = Field(default=None, ge=1, le=MAX_DURATION_SECONDS)
    autoRollback: bool | None = None

    @property
    def timeout_seconds(self) -> float:
        return self.deploymentTimeoutSeconds if self.deploymentTimeoutSeconds else 600.0


class AppSpec(BaseModel):
    """A validated Marathon app definition (the *desired* state of one service).

    Construct with :func:`parse_app` to get Marathon-shaped errors. ``version`` is set by the
    server when a definition is stored; clients' values are ignored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              allow_inf_nan=False)

    id: str
    cmd: Launchable | None = None
    args: list[Launchable] | None = Field(default=None, max_length=MAX_ARGS)
    user: str | None = None
    env: Env = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    instances: Int = Field(default=1, ge=0, le=MAX_INSTANCES)
    cpus: Float = Field(default=1.0, ge=0.001, le=MAX_CPUS)
    mem: Float = Field(default=128.0, ge=0, le=MAX_MIB)
    disk: Float = Field(default=0.0, ge=0, le=MAX_MIB)
    gpus: Float = Field(default=0.0, ge=0, le=MAX_CPUS)
    constraints: list[ConstraintField] = Field(default_factory=list)
    container: Container | None = None
    portDefinitions: list[PortDefinition] | None = None
    requirePorts: bool = False
    healthChecks: list[HealthCheck] = Field(default_factory=list)
    readinessChecks: list[ReadinessCheck] = Field(default_factory=list, max_length=1)
    dependencies: list[str] = Field(default_factory=list)
    upgradeStrategy: UpgradeStrategy = Field(default_factory=UpgradeStrategy)
    backoffSeconds: Float = Field(default=1.0, ge=0, le=MAX_DURATION_SECONDS)
    backoffFactor: Float = Field(default=1.15, ge=1.0, le=MAX_BACKOFF_FACTOR)
    maxLaunchDelaySeconds: Float = Field(default=300.0, ge=0, le=MAX_DURATION_SECONDS)
    killSelection: KillSelection = KillSelection.YOUNGEST_FIRST
    taskKillGracePeriodSeconds: Float | None = Field(default=None, ge=0,
                                                     le=MAX_DURATION_SECONDS)
    unreachableStrategy: dict[str, Any] | str | None = None
    acceptedResourceRoles: list[str] | None = None
    role: str | None = None
    uris: list[str] = Field(default_factory=list)
    fetch: list[dict[str, Any]] = Field(default_factory=list)
    storeUrls: list[str] = Field(default_factory=list)
    executor: str = ""
    ipAddress: dict[str, Any] | None = None
    secrets: dict[str, Any] = Field(default_factory=dict)
    residency: dict[str, Any] | None = None
    networks: list[dict[str, Any]] = Field(default_factory=list)
    taskRateLimit: Float | None = Field(default=None, ge=0)
    # Legacy Marathon field: a list of port numbers, same meaning as portDefinitions' ports.
    # Marathon returns both; clients PUT both back, so portDefinitions wins when both come.
    ports: list[Int] | None = None
    version: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return normalize_app_id(v)

    @field_validator("dependencies")
    @classmethod
    def _deps(cls, v: list[str]) -> list[str]:
        return [normalize_app_id(d) for d in v]

    @model_validator(mode="after")
    def _consistent(self) -> AppSpec:
        if self.cmd is not None and self.args is not None:
            raise ValueError("AppDefinition must either contain one of 'cmd' or 'args', not both")
        docker = self.container is not None and self.container.docker is not None
        if self.cmd is None and self.args is None and not docker:
            raise ValueError("AppDefinition must either contain one of 'cmd' or 'args', "
                             "and/or a 'container'")
        if self.cmd is not None and not self.cmd.strip():
            raise ValueError("cmd must not be empty")
        n = len(self.port_definitions)
        for i, hc in enumerate(self.healthChecks):
            if hc.protocol.kind != "COMMAND" and hc.port is None and hc.effective_port_index >= n:
                raise ValueError(f"healthChecks[{i}].portIndex {hc.effective_port_index} "
                                 f"is out of range: the app has {n} port(s)")
        fixed = [p.port for p in self.port_definitions if p.port]
        if len(set(fixed)) != len(fixed):
            raise ValueError("port numbers in portDefinitions must be unique")
        if self.id in self.dependencies:
            raise ValueError("an app cannot depend on itself")
        return self

    # --- derived views -------------------------------------------------------------------

    @property
    def port_definitions(self) -> list[PortDefinition]:
        """The effective host ports: Marathon gives an app without any one dynamic port."""
        if self.container is not None and self.container.portMappings is not None:
            return [PortDefinition(port=m.hostPort or 0, name=m.name, protocol=m.protocol)
                    for m in self.container.portMappings]
        if self.portDefinitions is not None:
            return list(self.portDefinitions)
        if self.ports is not None:
            return [PortDefinition(port=p) for p in self.ports]
        return [PortDefinition(port=0)]

    @property
    def fixed_host_ports(self) -> tuple[int, ...]:
        """Host ports that must be exactly these numbers (requirePorts, or fixed hostPort)."""
        if self.container is not None and self.container.portMappings is not None:
            return tuple(m.hostPort for m in self.container.portMappings if m.hostPort)
        if self.requirePorts:
            return tuple(p.port for p in self.port_definitions if p.port)
        return ()

    @property
    def dynamic_port_count(self) -> int:
        """How many host ports are chosen by the scheduler from the node's ranges."""
        return len(self.port_definitions) - len(self.fixed_host_ports)

    @property
    def resources(self) -> Resources:
        return Resources(self.cpus, self.mem, self.disk, self.gpus)

    @property
    def kill_grace_seconds(self) -> float:
        """SIGTERM → SIGKILL gap; Mesos's default is 3 seconds when the app sets none."""
        grace = self.taskKillGracePeriodSeconds
        return grace if grace is not None else 3.0

    def to_marathon(self) -> dict[str, Any]:
        """The definition as Marathon returns it (documented keys only, defaults filled)."""
        out = self.model_dump(mode="json", exclude={"ports"})
        port_defs = [p.model_dump(mode="json", exclude_none=True) for p in self.port_definitions]
        if self.container is not None and self.container.portMappings is not None:
            out["portDefinitions"] = []
        else:
            out["portDefinitions"] = port_defs
        out["ports"] = [p["port"] for p in port_defs]
        out["healthChecks"] = [hc.to_json() for hc in self.healthChecks]
        out["upgradeStrategy"] = {k: v for k, v in out["upgradeStrategy"].items()
                                  if v is not None}
        if out["container"] is None:
            out.pop("container")
        for key in ("acceptedResourceRoles", "ipAddress", "residency", "taskRateLimit",
                    "unreachableStrategy", "user", "role", "cmd", "args",
                    "taskKillGracePeriodSeconds"):
            if out.get(key) is None:
                out.pop(key, None)
        return out

    def with_changes(self, **changes: Any) -> AppSpec:
        """A copy with fields replaced, validated again."""
        data = self.model_dump(mode="json")
        data.update(changes)
        return parse_app(data, keep_version=True)


def parse_app(data: Any, *, keep_version: bool = False) -> AppSpec:
    """Validate a decoded JSON app definition.

    Read-only fields clients PUT back (``tasks``, ``deployments``...) are dropped first;
    ``version`` is kept only when ``keep_version`` (the store's own round trip).
    Raises :class:`SpecError` with one detail per bad field path.
    """
    if not isinstance(data, dict):
        raise SpecError("Object is not valid", [("", ["must be a JSON object"])])
    cleaned = {k: v for k, v in data.items() if k not in READ_ONLY_FIELDS}
    non_finite = non_finite_details(cleaned)
    if non_finite:
        raise SpecError("Object is not valid", non_finite)
    if keep_version and "version" in data:
        cleaned["version"] = data["version"]
    try:
        spec = AppSpec.model_validate(cleaned)
    except ValidationError as e:
        raise SpecError("Object is not valid", errors_from_pydantic(e)) from None
    bad_labels = label_errors(spec.labels)  # dromos.io/priority, dromos.io/gang
    if bad_labels:
        raise SpecError("Object is not valid", bad_labels)
    return spec


def task_id_prefix(app_id: str) -> str:
    """``/prod/web`` → ``prod_web``: the part of a task id before the dot."""
    return app_id.strip("/").replace("/", "_")
