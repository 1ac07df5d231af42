"""Small factories tests share: make_node, make_app, make_task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.model.app import AppSpec, parse_app
from scheduler.model.node import Node
from scheduler.model.resources import Resources, parse_port_ranges
from scheduler.model.task import Task, TaskState, new_task_id

T0 = datetime(2026, 1, 1, tzinfo=UTC)
V1 = "2026-01-01T00:00:00.000Z"
V2 = "2026-01-01T01:00:00.000Z"


def make_node(hostname: str, cpus: float = 4, mem: float = 4096, disk: float = 10000,
              ports: str = "31000-31099", **attributes: str) -> Node:
    return Node(hostname, Resources(cpus, mem, disk), parse_port_ranges(ports), attributes)


def make_app(app_id: str = "/web", version: str = V1, **fields: Any) -> AppSpec:
    data: dict[str, Any] = {"id": app_id, "cmd": "sleep 1000", "cpus": 1, "mem": 128}
    data.update(fields)
    data["version"] = version
    return parse_app(data, keep_version=True)


def make_task(app: AppSpec, host: str = "n1", state: TaskState = TaskState.RUNNING,
              version: str | None = None, staged_offset: float = 0.0,
              ports: tuple[int, ...] = (31000,)) -> Task:
    return Task(
        id=new_task_id(app.id), app_id=app.id, host=host, version=version or app.version or V1,
        state=state, staged_at=T0 + timedelta(seconds=staged_offset), ports=ports,
        started_at=T0 if state is TaskState.RUNNING else None,
    )
