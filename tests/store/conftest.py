"""The ``store`` fixture (one param per StateStore implementation) and small factories.

A new implementation joins the contract suite by adding its name to ``STORE_KINDS`` and a
branch to :func:`open_store`.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.model.app import AppSpec, parse_app
from scheduler.model.job import JobRun, JobSpec, RunStatus, Trigger, parse_job
from scheduler.model.task import Task
from scheduler.store.base import StateStore
from scheduler.store.memory import MemoryStore
from scheduler.store.sqlite import SqliteStore
from tests.factories import make_task

STORE_KINDS = ["memory", "sqlite", "kubernetes"]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def open_store(kind: str, tmp_path: Path) -> StateStore:
    """A fresh, empty store of ``kind``; file-backed ones live under ``tmp_path``."""
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(tmp_path / "state" / "dromos.db")
    if kind == "kubernetes":
        from tests.store.kube_store import open_kube_store

        return open_kube_store(tmp_path)
    raise ValueError(f"unknown store kind {kind!r}")


@pytest.fixture(params=STORE_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    s = open_store(request.param, tmp_path)
    yield s
    s.close()


def version_at(seconds: float) -> str:
    """A server-style version string ``seconds`` after T0 (``2026-01-01T00:00:00.000Z``)."""
    t = T0 + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def make_app(app_id: str = "/web", version: str | None = None, **fields: Any) -> AppSpec:
    """A valid app; ``version`` defaults to T0. Extra fields are Marathon JSON fields."""
    data: dict[str, Any] = {"id": app_id, "cmd": "sleep 1", **fields}
    data["version"] = version if version is not None else version_at(0)
    return parse_app(data, keep_version=True)


def make_rich_app(app_id: str = "/prod/web", version: str | None = None) -> AppSpec:
    """An app using nested fields (env, labels, constraints, checks, ports) for round trips."""
    return make_app(
        app_id,
        version,
        cmd="python -m http.server $PORT0",
        env={"MODE": "prod", "EMPTY": ""},
        labels={"team": "infra"},
        instances=3,
        cpus=0.25,
        mem=64.5,
        constraints=[["hostname", "UNIQUE"], ["rack", "GROUP_BY", "2"]],
        portDefinitions=[{"port": 0, "name": "http"}],
        healthChecks=[
            {"protocol": "HTTP", "path": "/health", "intervalSeconds": 5},
            {"protocol": "COMMAND", "command": {"value": "true"}},
        ],
        upgradeStrategy={"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0.25},
        dependencies=["/prod/db"],
    )


def stored_task(
    task_id: str = "web.1",
    app_id: str = "/web",
    staged_after: float = 0.0,
    **changes: Any,
) -> Task:
    """A running task staged ``staged_after`` seconds after T0 (millisecond precision: what
    the stores keep), from the shared :func:`tests.factories.make_task`."""
    fields: dict[str, Any] = {"host": "node-1", "version": version_at(0), "ports": (),
                              "started_at": None, **changes}
    return make_task(app_id, staged_offset=staged_after, task_id=task_id, **fields)


def make_job(name: str = "etl", **fields: Any) -> JobSpec:
    """A valid dependency job (parent ``root``); extra fields are Chronos JSON fields."""
    data: dict[str, Any] = {"name": name, "command": "echo hi", "parents": ["root"], **fields}
    return parse_job(data)


def make_scheduled_job(
    name: str = "nightly",
    schedule: str = "R/2026-01-01T00:00:00Z/PT1H",
    tz: str = "",
    **fields: Any,
) -> JobSpec:
    """A valid time-triggered job."""
    data: dict[str, Any] = {"name": name, "command": "echo hi", "schedule": schedule,
                            "scheduleTimeZone": tz, **fields}
    return parse_job(data)


def make_rich_job(name: str = "etl") -> JobSpec:
    """A job using nested and aliased fields (env, constraints, container, async...)."""
    return make_job(
        name,
        command="python -m etl --day $DAY",
        parents=["extract", "load"],
        epsilon="PT5M",
        retries=5,
        retryDelay="PT30S",
        missedRunPolicy="skip",
        concurrent=True,
        owner="data@example.com",
        description="nightly \u00e9tl \u2603",
        cpus=0.5,
        mem=512.5,
        disk=1024,
        container={"type": "DOCKER", "image": "etl:1", "volumes": [{"hostPath": "/d"}],
                   "extraField": {"kept": [1, 2]}},
        environmentVariables=[{"name": "DAY", "value": "mon"}, {"name": "EMPTY"}],
        constraints=[["rack", "EQUALS", "r1"], ["hostname", "UNIQUE"]],
        uris=["https://example.com/a.tgz"],
        fetch=[{"uri": "https://example.com/b", "extract": True}],
        **{"async": True},
    )


def make_run(
    run_id: str = "etl:1",
    job: str = "etl",
    created_after: float = 0.0,
    status: RunStatus = RunStatus.QUEUED,
    **changes: Any,
) -> JobRun:
    """A run of ``job`` created ``created_after`` seconds after T0 (millisecond precision)."""
    run = JobRun(
        id=run_id,
        job=job,
        trigger=Trigger.MANUAL,
        status=status,
        created_at=T0 + timedelta(seconds=created_after),
    )
    return run.with_(**changes) if changes else run
