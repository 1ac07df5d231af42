"""A scriptable in-memory runtime for orchestrator tests: no processes, no sleeps.

Tasks it launched stay RUNNING until a test ends them (:meth:`FakeRuntime.finish`) or a kill
reaches it; ``unavailable`` and ``fail_kills`` make the backend raise
:class:`RuntimeUnavailable` like a Docker Engine or API server that went away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler.model.node import Node
from scheduler.model.resources import Resources
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import LaunchSpec, Observation, RuntimeUnavailable


@dataclass
class FakeRuntime:
    """Implements the Runtime protocol in memory (see module docstring)."""

    name: str = "fake"
    node_list: list[Node] = field(default_factory=lambda: [
        Node("n1", Resources(8, 8192, 100_000), ((31000, 31999),))])
    unavailable: bool = False
    fail_kills: int = 0
    """How many of the next kill calls raise RuntimeUnavailable."""
    launches: list[LaunchSpec] = field(default_factory=list)
    kills: list[tuple[str, float]] = field(default_factory=list)
    states: dict[str, TaskState] = field(default_factory=dict)
    exit_codes: dict[str, int | None] = field(default_factory=dict)

    def _check(self) -> None:
        if self.unavailable:
            raise RuntimeUnavailable("fake runtime is down")

    def nodes(self) -> list[Node]:
        self._check()
        return list(self.node_list)

    def launch(self, spec: LaunchSpec) -> Mapping[str, Any]:
        self._check()
        self.launches.append(spec)
        self.states.setdefault(spec.task_id, TaskState.RUNNING)
        return {"fake": spec.task_id}

    def kill(self, task: Task, grace_seconds: float) -> None:
        self._check()
        if self.fail_kills > 0:
            self.fail_kills -= 1
            raise RuntimeUnavailable("fake runtime refused the kill")
        self.kills.append((task.id, grace_seconds))
        if self.states.get(task.id) is TaskState.RUNNING:
            self.states[task.id] = TaskState.KILLED

    def observe(self, tasks: Sequence[Task]) -> list[Observation]:
        self._check()
        out = []
        for t in tasks:
            state = self.states.get(t.id, TaskState.LOST)
            out.append(Observation(t.id, state, exit_code=self.exit_codes.get(t.id)))
        return out

    def finish(self, task_id: str, exit_code: int = 0) -> None:
        """End a running task as if its process exited with ``exit_code``."""
        self.states[task_id] = TaskState.FINISHED if exit_code == 0 else TaskState.FAILED
        self.exit_codes[task_id] = exit_code

    def killed_ids(self) -> list[str]:
        return [task_id for task_id, _ in self.kills]

    def probe_host(self, task: Task) -> str:
        return "127.0.0.1"

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]:
        return ["true"], {}

    def close(self) -> None:
        return None
