"""How a task's state follows from its container and its records (see the package docstring,
"Reported states"), and the housekeeping of exited containers."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors

from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import Observation
from scheduler.runtimes.docker.containers import explain
from scheduler.runtimes.docker.engine import UNREACHABLE, inspect
from scheduler.runtimes.docker.names import is_safe_name, name_of
from scheduler.runtimes.docker.records import (
    EXIT_FILE,
    LAUNCH_FILE,
    OUTPUT_FILE,
    handle,
    iso,
    opt_int,
    outcome,
    parse_time,
    write_bytes_atomic,
    write_exit,
    write_launch,
)
from scheduler.runtimes.executor import read_json
from scheduler.runtimes.kills import read_kill

log = logging.getLogger(__name__)

RUNNING_STATES = frozenset({"running", "paused", "restarting"})
LOG_TAIL_LINES = 1000
"""How much of a removed container's output is kept (``output.log``)."""
MAX_REMOVALS_PER_OBSERVE = 20
"""Bounds the time one observe spends removing exited containers; the rest wait a pass."""


def signal_container(api: Any, name: str, sig: str) -> None:
    """Send ``sig`` to a container; one that is gone or no longer runs is left alone."""
    try:
        api.kill(name, signal=sig)
    except docker.errors.NotFound:
        pass  # removed meanwhile
    except docker.errors.APIError as e:
        if e.status_code != 409:  # 409: it is not running any more, which is the point
            log.warning("sending %s to container %s failed: %s", sig, name, explain(e))


def observation(api: Any, task: Task, name: str, record_dir: Path,
                summary: Mapping[str, Any] | None) -> Observation:
    """What ``task`` is, from its container's ``docker ps`` ``summary`` (``None``: no
    container) and its records. Records the end when first seen (one inspect), and SIGKILLs
    a container whose recorded kill deadline has passed."""
    launched = read_json(record_dir / LAUNCH_FILE)
    ended = read_json(record_dir / EXIT_FILE)
    kill = read_kill(record_dir)
    if summary is not None:
        hdl = handle(str(summary["Id"]), name)
    elif launched is not None:
        hdl = handle(str(launched.get("container_id") or ""), name)
    else:
        hdl = dict(task.handle)
    started_at = parse_time(launched.get("started_at")) if launched else None

    def obs(state: TaskState, exit_code: int | None = None, message: str = "") -> Observation:
        return Observation(task.id, state, exit_code, message, hdl, started_at)

    if ended is not None:
        taken = tuple(int(p) for p in ended.get("ports_taken") or ())
        return Observation(task.id, TaskState(ended["state"]), opt_int(ended.get("exit_code")),
                           str(ended.get("message", "")), hdl, started_at, taken)
    if summary is None:
        if kill is not None:
            return obs(TaskState.KILLED,
                       message="killed; its container is gone and its exit was not seen")
        return obs(TaskState.LOST, message=f"there is no container {name!r}")

    status = str(summary.get("State", ""))
    if status in RUNNING_STATES:
        if started_at is None:  # adopted after a crash right after `docker start`
            attrs = inspect(api, name)
            if attrs is not None:
                started_at = parse_time(attrs["State"].get("StartedAt"))
                write_launch(record_dir, name, task.id, str(attrs["Id"]),
                             str(attrs["Config"].get("Image", "")), started_at)
        if kill is None:
            return obs(TaskState.RUNNING)
        if kill.overdue(time.time()):
            signal_container(api, name, "SIGKILL")  # overdue, e.g. the timer died with Dromos
        return obs(TaskState.RUNNING, message="kill requested; waiting for the container "
                                              "to exit")
    if status == "created":
        if kill is None:
            return obs(TaskState.STARTING, message="container created, not started yet")
        write_exit(record_dir, {"state": TaskState.KILLED.value, "exit_code": None,
                                "message": "killed before its container started",
                                "finished_at": iso(datetime.now(UTC))})
        return obs(TaskState.KILLED, message="killed before its container started")

    # exited, dead or being removed: its exit code and OOM flag need an inspect (once).
    attrs = inspect(api, name)
    if attrs is None:
        return obs(TaskState.KILLED if kill is not None else TaskState.LOST,
                   message="its container was removed before its exit was seen")
    result = outcome(attrs, killed=kill is not None)
    write_exit(record_dir, result)
    if launched is None:
        started_at = parse_time(attrs["State"].get("StartedAt"))
        write_launch(record_dir, name, task.id, str(attrs["Id"]),
                     str(attrs["Config"].get("Image", "")), started_at)
    return obs(TaskState(result["state"]), opt_int(result["exit_code"]), str(result["message"]))


def collect_exited(api: Any, listed: Sequence[Mapping[str, Any]], records_dir: Path,
                   keep_seconds: float) -> None:
    """Record the end of exited containers launched over ``records_dir`` (also those Dromos
    no longer asks about), and remove the ones whose end was recorded more than
    ``keep_seconds`` ago, saving their output's tail first. Failures are logged: the next
    observe tries again."""
    now = time.time()
    removed = 0
    for summary in listed:
        status = str(summary.get("State", ""))
        if status in RUNNING_STATES or status == "removing":
            continue
        name = name_of(summary)
        record_dir = records_dir / name if is_safe_name(name) else None
        if record_dir is None or not record_dir.is_dir():
            continue  # not launched by a runtime over this state: not ours to remove
        try:
            ended = read_json(record_dir / EXIT_FILE)
            if ended is None and status == "created":
                continue  # not started yet; a re-launch may still start it
            if ended is None:
                attrs = inspect(api, name)
                if attrs is not None:
                    killed = read_kill(record_dir) is not None
                    write_exit(record_dir, outcome(attrs, killed=killed))
                continue
            if now - float(ended.get("recorded_at", now)) < keep_seconds:
                continue
            if removed >= MAX_REMOVALS_PER_OBSERVE:
                return
            tail: bytes = api.logs(summary["Id"], stdout=True, stderr=True, tail=LOG_TAIL_LINES)
            write_bytes_atomic(record_dir / OUTPUT_FILE, tail)
            api.remove_container(summary["Id"], v=True)
            removed += 1
        except docker.errors.NotFound:
            continue
        except UNREACHABLE:
            return  # the next observe says so
        except Exception as e:  # removal is housekeeping; never fail an observe for it
            log.warning("could not remove exited container %s: %s", name, e)
