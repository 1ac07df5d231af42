"""Scalar resources (cpus, mem, disk, gpus) and port ranges."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# Float comparisons on cpus: 0.1 + 0.2 must fit into 0.3.
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of scalar resources. ``mem`` and ``disk`` are MiB, as in Marathon."""

    cpus: float = 0.0
    mem: float = 0.0
    disk: float = 0.0
    gpus: float = 0.0

    def __add__(self, other: Resources) -> Resources:
        return Resources(
            self.cpus + other.cpus,
            self.mem + other.mem,
            self.disk + other.disk,
            self.gpus + other.gpus,
        )

    def __sub__(self, other: Resources) -> Resources:
        return Resources(
            self.cpus - other.cpus,
            self.mem - other.mem,
            self.disk - other.disk,
            self.gpus - other.gpus,
        )

    def fits_in(self, capacity: Resources) -> bool:
        """True when every dimension of ``self`` is at most the same dimension of ``capacity``."""
        return (
            self.cpus <= capacity.cpus + EPSILON
            and self.mem <= capacity.mem + EPSILON
            and self.disk <= capacity.disk + EPSILON
            and self.gpus <= capacity.gpus + EPSILON
        )


PortRange = tuple[int, int]
"""An inclusive range of TCP ports ``(first, last)``."""


def parse_port_ranges(spec: str | list[str] | list[list[int]]) -> tuple[PortRange, ...]:
    """Parse ``"31000-31099,32000"`` (or a list of such strings or ``[first, last]`` pairs).

    Raises ``ValueError`` with a readable message on anything malformed, out of 1..65535,
    reversed, or overlapping.
    """
    parts: list[str | list[int]] = []
    if isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
    else:
        parts = list(spec)
    ranges: list[PortRange] = []
    for part in parts:
        if isinstance(part, list):
            if len(part) != 2 or not all(isinstance(x, int) for x in part):
                raise ValueError(f"port range {part!r} must be [first, last]")
            lo, hi = part
        else:
            text = str(part)
            pieces = text.split("-")
            if len(pieces) not in (1, 2) or not all(p.strip().isdigit() for p in pieces):
                raise ValueError(f"port range {text!r} must look like 31000-31099")
            lo = int(pieces[0])
            hi = int(pieces[-1])
        if not (1 <= lo <= hi <= 65535):
            raise ValueError(f"port range {lo}-{hi} must satisfy 1 <= first <= last <= 65535")
        ranges.append((lo, hi))
    ranges.sort()
    for (_, a_hi), (b_lo, _) in itertools.pairwise(ranges):
        if b_lo <= a_hi:
            raise ValueError(f"port ranges overlap at {b_lo}")
    return tuple(ranges)


def port_count(ranges: tuple[PortRange, ...]) -> int:
    """How many ports the ranges hold."""
    return sum(hi - lo + 1 for lo, hi in ranges)


def format_port_ranges(ranges: tuple[PortRange, ...]) -> str:
    """The inverse of :func:`parse_port_ranges` for display: ``"31000-31099"``."""
    return ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in ranges)
