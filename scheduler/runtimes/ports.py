"""Virtual nodes on one host: the local and Docker runtimes run every node's tasks on one
machine, so the nodes are accounting domains whose port ranges must not overlap."""

from __future__ import annotations

from collections.abc import Sequence

from scheduler.model.node import Node
from scheduler.model.resources import format_port_ranges


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
