"""What the Kubernetes runtime remembers beside the cluster, per task: ``kill.json``,
``exit.json`` and ``output.log`` under ``<state_dir>/kubernetes/<namespace>/tasks/<pod name>/``
(see the package docstring), and how a task's state follows from its pod and its records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.client.exceptions import ApiException

from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import Observation, RuntimeUnavailable
from scheduler.runtimes.executor import read_json, write_json_atomic
from scheduler.runtimes.kills import KILL_FILE, KillRequest
from scheduler.runtimes.kubernetes.cache import PodView, outcome, parse_time
from scheduler.runtimes.kubernetes.client import TIMEOUT, UNREACHABLE, describe
from scheduler.runtimes.kubernetes.fencing import Fence
from scheduler.runtimes.kubernetes.names import CONTAINER_NAME

log = logging.getLogger(__name__)

EXIT_FILE = "exit.json"
OUTPUT_FILE = "output.log"
MAX_CACHED_RECORDS = 100000
LOG_TAIL_LINES = 1000
"""How much of a deleted pod's output is kept (``output.log``)."""
MAX_DELETIONS_PER_OBSERVE = 20


@dataclass
class TaskRecords:
    """The files of one task's pod under the state directory. ``seen`` caches what was read
    or written (records are written once, or only ever made stricter, so a cached record
    stays true; a missing one is looked up again, another instance may write it)."""

    directory: Path
    seen: dict[Path, dict[str, Any]]

    def read(self, name: str) -> dict[str, Any] | None:
        path = self.directory / name
        cached = self.seen.get(path)
        if cached is not None:
            return cached
        try:
            data = read_json(path)
        except ValueError:
            return None
        if data is not None:
            self._remember(path, data)
        return data

    def write(self, name: str, data: Mapping[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.directory / name, data)
        self._remember(self.directory / name, dict(data))

    def _remember(self, path: Path, data: dict[str, Any]) -> None:
        if len(self.seen) >= MAX_CACHED_RECORDS:
            self.seen.clear()  # only a cache: start afresh rather than grow without bound
        self.seen[path] = data

    def write_once(self, name: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Create the record unless it exists, atomically (a hard link of a complete file
        either appears or fails): the first writer wins, also against another thread or
        process. Returns the record that is there."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / name
        tmp = path.with_name(f".{name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(dict(data), f)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
                stored = dict(data)
            except FileExistsError:
                stored = read_json(path) or dict(data)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._remember(path, stored)
        return stored

    def exists(self, name: str) -> bool:
        return self.read(name) is not None


    def kill(self) -> KillRequest | None:
        """The kill recorded for the task, if any."""
        return KillRequest.from_json(self.read(KILL_FILE))

    def record_end(self, view: PodView, state: TaskState, code: int | None,
                   message: str) -> dict[str, Any]:
        """Record how the task of ``view`` ended, unless something is recorded already;
        returns the record."""
        return self.write_once(EXIT_FILE, {
            "task_id": view.task_id, "uid": view.uid,
            "state": state.value, "exit_code": code, "message": message,
            "started_at": view.started_at.isoformat() if view.started_at else None,
            "recorded_at": time.time(),
        })


def pod_handle(namespace: str, name: str, uid: str) -> dict[str, Any]:
    """A task's handle: where its pod is, and which pod of that name it was."""
    return {"namespace": namespace, "pod": name, "uid": uid}


def opt_int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def observation(task: Task, records: TaskRecords, view: PodView | None, namespace: str,
                name: str) -> Observation:
    """What ``task`` is, from its pod (``view``: ``None`` when there is none) and its records
    (package docstring, "Reported states"). Records the end when first seen, and "no pod"
    (LOST, or KILLED after a kill) so that a later launch of this id starts nothing."""
    ended = records.read(EXIT_FILE)
    killed = task.kill_requested_at is not None or records.exists(KILL_FILE)
    if view is not None:
        handle = pod_handle(view.namespace, view.name, view.uid)
    elif ended is not None and ended.get("uid"):
        handle = pod_handle(namespace, name, str(ended["uid"]))
    else:
        handle = dict(task.handle)
    started = view.started_at if view is not None else parse_time(
        (ended or {}).get("started_at"))

    def obs(state: TaskState, code: int | None = None, message: str = "") -> Observation:
        return Observation(task.id, state, code, message, handle, started)

    def recorded(record: Mapping[str, Any]) -> Observation:
        return obs(TaskState(record["state"]), opt_int(record.get("exit_code")),
                   str(record.get("message", "")))

    if ended is not None:
        return recorded(ended)
    if view is None:
        # Recorded, so that a later launch of this id does not start it after all. The
        # watch may have recorded the pod's deletion a moment ago: its record wins.
        if killed:
            state, message = (TaskState.KILLED,
                              "killed; its pod is gone and how it ended was not seen")
        else:
            state, message = TaskState.LOST, f"there is no pod {name!r}"
        return recorded(records.write_once(EXIT_FILE, {
            "task_id": task.id, "uid": handle.get("uid"), "state": state.value,
            "exit_code": None, "message": message, "started_at": None,
            "recorded_at": time.time()}))
    if view.ended:
        return recorded(records.record_end(view, *outcome(view, killed=killed)))
    note = "kill requested; waiting for the pod to terminate" if view.deleting else ""
    if view.phase == "Running":
        return obs(TaskState.RUNNING, message=note)
    if view.phase == "Unknown":
        return obs(TaskState.RUNNING, message="the pod's node stopped reporting")
    return obs(TaskState.STARTING, message=note or view.waiting or "pod pending")


def record_removal(records: TaskRecords, view: PodView, final: bool) -> None:
    """A pod of ours left the cache: record how its task ended, unless that is recorded
    already. ``final``: ``view`` is its last state (a DELETED event), not the last one seen
    before a relist found it gone."""
    if records.exists(EXIT_FILE):
        return
    killed = records.exists(KILL_FILE)
    if view.ended or (final and killed and view.exit_code is not None):
        state, code, message = outcome(view, killed=killed)
    elif killed:
        state, code, message = (TaskState.KILLED, None,
                                "killed; its pod was deleted before its exit was seen")
    else:
        how = "deleted" if final else "gone"
        state, code, message = (TaskState.LOST, None,
                                f"its pod was {how} without Dromos asking")
    records.record_end(view, state, code, message)


def collect_ended(core: Callable[[], Any], namespace: str, ours: Sequence[PodView],
                  records_of: Callable[[str], TaskRecords], keep_seconds: float,
                  fence: Fence | None = None) -> None:
    """Delete the ended pods among ``ours`` whose end was recorded ``keep_seconds`` ago
    (at most :data:`MAX_DELETIONS_PER_OBSERVE` per call), saving their output's tail first.
    Failures are logged: the next observe tries again."""
    now = time.time()
    deleted = 0
    for view in ours:
        if not view.ended or view.deleting:
            continue
        records = records_of(view.name)
        ended = records.read(EXIT_FILE)
        if ended is None or ended.get("uid") != view.uid:
            continue  # its end not recorded yet (or it is another pod of that name)
        if now - float(ended.get("recorded_at", now)) < keep_seconds:
            continue
        if deleted >= MAX_DELETIONS_PER_OBSERVE:
            return
        try:
            api = core()
            try:
                response = api.read_namespaced_pod_log(
                    view.name, namespace, container=CONTAINER_NAME, tail_lines=LOG_TAIL_LINES,
                    _preload_content=False, _request_timeout=TIMEOUT)
                (records.directory / OUTPUT_FILE).write_bytes(bytes(response.data))
            except ApiException:
                pass  # no output to keep (the kubelet is gone, or it never ran)
            if fence is not None:
                fence.stamp(api.patch_namespaced_pod, view.name, namespace)
            api.delete_namespaced_pod(
                view.name, namespace, body={"preconditions": {"uid": view.uid}},
                _preload_content=False, _request_timeout=TIMEOUT)
            deleted += 1
        except ApiException as e:
            if e.status not in (404, 409):
                log.warning("could not delete ended pod %s: %s", view.name, describe(e))
        except (RuntimeUnavailable, *UNREACHABLE):
            return  # the next observe says so
