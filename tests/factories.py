"""Small factories tests share: make_node, make_app, make_task."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

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


def make_task(app: AppSpec | str = "/web", host: str = "n1",
              state: TaskState = TaskState.RUNNING, version: str | None = None,
              staged_offset: float = 0.0, ports: tuple[int, ...] = (31000,), *,
              task_id: str | None = None, started_at: datetime | Literal["auto"] | None = "auto",
              **changes: Any) -> Task:
    """The one task factory: a task of ``app`` (a spec, or just an app id) staged
    ``staged_offset`` seconds after T0; a fresh Marathon-style id unless ``task_id`` is given.
    ``started_at`` defaults to T0 for a RUNNING task; other fields via ``changes``."""
    app_id = app if isinstance(app, str) else app.id
    default_version = V1 if isinstance(app, str) else (app.version or V1)
    task = Task(
        id=task_id or new_task_id(app_id), app_id=app_id, host=host,
        version=version or default_version, state=state,
        staged_at=T0 + timedelta(seconds=staged_offset), ports=ports,
        started_at=(T0 if state is TaskState.RUNNING else None) if started_at == "auto"
        else started_at,
    )
    return task.with_(**changes) if changes else task
