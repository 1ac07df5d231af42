"""Ports on one host. Virtual nodes: the local and Docker runtimes run every node's tasks on
one machine, so the nodes are accounting domains whose port ranges must not overlap. Taken
ports: a host port held by a process Dromos does not own fails the task without starting it,
and the observation names the port (:attr:`~scheduler.runtimes.base.Observation.ports_taken`)
so placement avoids it for a while."""

from __future__ import annotations

import errno
import re
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from scheduler.model.node import Node
from scheduler.model.resources import format_port_ranges
from scheduler.runtimes.executor import EXIT_FILE, write_json_atomic


def check_ports_disjoint(nodes: Sequence[Node], runtime: str) -> None:
    """Raise ``ValueError`` naming two nodes and the ports they share when port ranges of
    ``nodes`` overlap (``runtime`` names the runtime in the message)."""
    spans = sorted((lo, hi, node.hostname) for node in nodes for lo, hi in node.ports)
    widest: tuple[int, int, str] | None = None  # the range reaching furthest so far
    for lo, hi, host in spans:
        if widest is not None and lo <= widest[1]:
            w_lo, w_hi, w_host = widest
            end = min(hi, w_hi)
            shared = f"port {lo}" if lo == end else f"ports {lo}-{end}"
            raise ValueError(
                f"nodes {w_host!r} ({format_port_ranges(((w_lo, w_hi),))}) and {host!r} "
                f"({format_port_ranges(((lo, hi),))}) share {shared}: the {runtime} runtime "
                "runs every node's tasks on one host, so the nodes' port ranges must not "
                "overlap"
            )
        if widest is None or hi > widest[1]:
            widest = (lo, hi, host)


# --- host ports taken by something else ------------------------------------------------------

PORT_TAKEN_MESSAGES = re.compile(
    r"[:\s](\d{1,5})(?::\s*bind: address already in use| failed: port is already allocated)")
"""How the Docker Engine says a host port is held by another process."""


def taken_ports(ports: Iterable[int]) -> list[int]:
    """The TCP ports among ``ports`` that something on this machine listens on (a bind to
    ``0.0.0.0`` fails with EADDRINUSE). ``SO_REUSEADDR`` so that connections of an ended
    task in TIME_WAIT do not count: only a listener does."""
    taken: list[int] = []
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    taken.append(port)
    return taken


def refuse_taken_ports(sandbox: Path, ports: Iterable[int]) -> dict[str, Any] | None:
    """For the local runtime's launch: when a host port of the task is taken by a process
    Dromos does not know, record the task as failed without starting it (``exit.json`` with
    ``ports_taken``, observed as FAILED with :attr:`Observation.ports_taken`) and return its
    handle; ``None`` when every port is free."""
    taken = taken_ports(ports)
    if not taken:
        return None
    write_json_atomic(sandbox / EXIT_FILE, {
        "exit_code": None, "signal": None, "finished_at": time.time(), "ports_taken": taken,
        "error": f"host port{'s' if len(taken) > 1 else ''} "
                 f"{', '.join(map(str, taken))} taken by another process on this machine; "
                 "the task was not started (Dromos places it elsewhere)"})
    return {"pid": None, "sandbox": str(sandbox), "ports_taken": taken}


def ports_in_message(message: str) -> tuple[int, ...]:
    """The host ports a Docker Engine start error says are taken (``()``: none)."""
    return tuple(sorted({int(p) for p in PORT_TAKEN_MESSAGES.findall(message)}))
