"""The node the local runtime describes by default: this machine."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

from scheduler.model.node import Node
from scheduler.model.resources import PortRange, Resources

DEFAULT_PORTS: tuple[PortRange, ...] = ((31000, 32000),)
"""The port range of the default node (Mesos agents offer 31000-32000 by default)."""


def _mem_total_mib(meminfo: Path = Path("/proc/meminfo")) -> float:
    for line in meminfo.read_text(encoding="ascii").splitlines():
        if line.startswith("MemTotal:"):
            kib = int(line.split()[1])
            return float(kib // 1024)
    raise RuntimeError(f"no MemTotal line in {meminfo}")


def default_node(state_dir: Path) -> Node:
    """The node describing this machine: its hostname, ``os.cpu_count()`` cpus, MemTotal
    from ``/proc/meminfo`` and the free disk of ``state_dir`` (both in MiB), Mesos's default
    ports 31000-32000, no attributes."""
    return Node(
        hostname=socket.gethostname(),
        resources=Resources(
            cpus=float(os.cpu_count() or 1),
            mem=_mem_total_mib(),
            disk=float(shutil.disk_usage(state_dir).free // (1024 * 1024)),
        ),
        ports=DEFAULT_PORTS,
    )
