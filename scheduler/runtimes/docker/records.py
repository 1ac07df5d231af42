"""What the Docker runtime remembers per task beside its container, in ``<state_dir>/docker/
tasks/<container name>/`` (see the package docstring), and how an exited container ended."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.model.task import TaskState
from scheduler.runtimes.executor import write_json_atomic

LAUNCH_FILE = "launch.json"
EXIT_FILE = "exit.json"
OUTPUT_FILE = "output.log"

_ZERO_TIME = "0001-01-01T00:00:00Z"


def write_launch(record_dir: Path, name: str, task_id: str, container_id: str, image: str,
                 started_at: datetime | None) -> None:
    """Record which container runs the task (``launch.json``)."""
    record_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record_dir / LAUNCH_FILE, {
        "task_id": task_id,
        "container_id": container_id,
        "container_name": name,
        "image": image,
        "started_at": iso(started_at) if started_at else None,
    })


def write_exit(record_dir: Path, outcome: Mapping[str, Any]) -> None:
    """Record how the task ended (``exit.json``), with the time it was recorded."""
    record_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record_dir / EXIT_FILE, {**outcome, "recorded_at": time.time()})


def handle(container_id: str, name: str) -> dict[str, Any]:
    """A task's handle: its container's id and name."""
    return {"container_id": container_id, "container_name": name}


def outcome(attrs: Mapping[str, Any], *, killed: bool) -> dict[str, Any]:
    """How an exited container ended, as recorded in ``exit.json``."""
    state = attrs.get("State") or {}
    code = opt_int(state.get("ExitCode"))
    error = str(state.get("Error") or "")
    finished = parse_time(state.get("FinishedAt"))
    if error:
        how = f"docker could not run the container: {error}"
    elif state.get("OOMKilled"):
        limit = int((attrs.get("HostConfig") or {}).get("Memory") or 0) // (1024 * 1024)
        how = "OOM killed" + (f" (memory limit {limit} MiB)" if limit else "")
    else:
        how = _describe_code(code)
    if killed:
        result, how = TaskState.KILLED, f"killed: {how}"
    elif code == 0 and not error and not state.get("OOMKilled"):
        result = TaskState.FINISHED
    else:
        result = TaskState.FAILED
    return {
        "state": result.value,
        "exit_code": code,
        "message": how,
        "finished_at": iso(finished) if finished else None,
    }


def _describe_code(code: int | None) -> str:
    if code is None:
        return "ended with an unknown status"
    if code > 128:
        try:
            name = signal.Signals(code - 128).name
            return f"exited with status {code} (terminated by {name}, signal {code - 128})"
        except ValueError:
            pass
    return f"exited with status {code}"


def opt_int(v: Any) -> int | None:
    """``v`` when it is an int (not a bool), else ``None``."""
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def parse_time(value: Any) -> datetime | None:
    """A Docker timestamp (RFC 3339 with nanoseconds) or our ISO string as an aware
    datetime; ``None`` for Docker's zero time or anything unparsable."""
    if not isinstance(value, str) or not value or value == _ZERO_TIME:
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # Python reads at most microseconds: cut nanoseconds to six digits.
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if m is None:
        return None
    frac = (m.group(2) or "")[:7]
    try:
        parsed = datetime.fromisoformat(m.group(1) + frac + m.group(3))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return None if parsed.year <= 1 else parsed.astimezone(UTC)


def iso(dt: datetime) -> str:
    """``dt`` in UTC, ISO 8601."""
    return dt.astimezone(UTC).isoformat()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` at once (readers see the old or the new file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
