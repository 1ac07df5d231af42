"""Nodes: the machines (or accounting domains) tasks are placed on."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from scheduler.model.resources import PortRange, Resources, parse_port_ranges
from scheduler.model.validation import SpecError, errors_from_pydantic

HOSTNAME_FIELD = "hostname"
_ATTR_NAME = re.compile(r"^[A-Za-z0-9_.\-/]+$")


@dataclass(frozen=True)
class Node:
    """A node's total capacity and attributes.

    ``attributes`` holds every constraint field but ``hostname`` (rack, zone, labels...).
    """

    hostname: str
    resources: Resources
    ports: tuple[PortRange, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)

    def attribute(self, name: str) -> str | None:
        """The value constraints see for field ``name``; ``None`` when the node lacks it."""
        if name == HOSTNAME_FIELD:
            return self.hostname
        return self.attributes.get(name)


class NodeConfig(BaseModel):
    """One entry of the ``--nodes`` file."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    hostname: str = Field(min_length=1, max_length=253)
    cpus: float = Field(gt=0)
    mem: float = Field(gt=0)
    disk: float = Field(default=0, ge=0)
    gpus: float = Field(default=0, ge=0)
    ports: str | list[str] | list[list[int]] = "31000-32000"
    attributes: dict[str, str] = Field(default_factory=dict)

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: str | list[str] | list[list[int]]) -> str | list[str] | list[list[int]]:
        parse_port_ranges(v)
        return v

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if name == HOSTNAME_FIELD:
                raise ValueError("'hostname' is the node's hostname, not an attribute")
            if not _ATTR_NAME.match(name):
                raise ValueError(f"attribute name {name!r} has characters outside [A-Za-z0-9_./-]")
        return v

    def to_node(self) -> Node:
        return Node(
            hostname=self.hostname,
            resources=Resources(self.cpus, self.mem, self.disk, self.gpus),
            ports=parse_port_ranges(self.ports),
            attributes=dict(self.attributes),
        )


def parse_nodes(data: Any) -> list[Node]:
    """Validate a decoded ``--nodes`` document (a list of node objects).

    Raises :class:`SpecError` whose details carry the JSON path of each bad field
    (``/1/cpus``). Duplicate hostnames are an error.
    """
    if not isinstance(data, list) or not data:
        raise SpecError("Nodes are not valid", [("", ["must be a non-empty list of nodes"])])
    nodes: list[Node] = []
    details: list[tuple[str, list[str]]] = []
    for i, item in enumerate(data):
        try:
            nodes.append(NodeConfig.model_validate(item).to_node())
        except ValidationError as e:
            details.extend((f"/{i}{path}", msgs) for path, msgs in errors_from_pydantic(e))
    seen: set[str] = set()
    for i, n in enumerate(nodes):
        if n.hostname in seen:
            details.append((f"/{i}/hostname", [f"duplicate hostname {n.hostname!r}"]))
        seen.add(n.hostname)
    if details:
        raise SpecError("Nodes are not valid", details)
    return nodes
