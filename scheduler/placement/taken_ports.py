"""Host ports that a process Dromos does not own holds, kept out of placement for a while.

A runtime that finds a task's host port taken (a squatter, not one of Dromos's tasks) fails
the task without running it and names the port in its observation. Placing the replacement
on the same port would fail the same way, again and again; so the orchestrator notes the
(node, port) here and the placement snapshot holds it as taken until :data:`TAKEN_PORT_TTL`
has passed (then it is tried again: the squatter may be gone). Time is an argument.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime, timedelta

from scheduler.model.resources import Resources
from scheduler.placement.results import PlacedTask

TAKEN_PORT_TTL = timedelta(minutes=5)
"""How long a port found taken stays out of placement on its node."""

HOLDER = "/dromos.io/ports-taken-by-others"
"""The app id of the stand-in task that holds the ports in a snapshot; it never launches,
and no app is placed against it (constraints count an app's own tasks)."""


class TakenPorts:
    """Ports found taken, per node, until when. Thread-safe."""

    def __init__(self, ttl: timedelta = TAKEN_PORT_TTL) -> None:
        self.ttl = ttl
        self._until: dict[tuple[str, int], datetime] = {}
        self._lock = threading.Lock()

    def mark(self, host: str, ports: Iterable[int], now: datetime) -> None:
        """Note that ``ports`` on node ``host`` were found taken at ``now``."""
        with self._lock:
            for port in ports:
                self._until[(host, port)] = now + self.ttl

    def active(self, now: datetime) -> dict[str, tuple[int, ...]]:
        """The ports still out of placement at ``now``, per node (expired ones forgotten)."""
        with self._lock:
            self._until = {k: v for k, v in self._until.items() if v > now}
            by_host: dict[str, list[int]] = {}
            for host, port in sorted(self._until):
                by_host.setdefault(host, []).append(port)
        return {h: tuple(p) for h, p in by_host.items()}

    def placed(self, now: datetime) -> list[PlacedTask]:
        """Stand-in tasks, one per node, that hold the taken ports (and no resources) in a
        :class:`~scheduler.placement.results.ClusterSnapshot`."""
        return [PlacedTask(HOLDER, host, Resources(), ports)
                for host, ports in self.active(now).items()]
