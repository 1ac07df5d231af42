"""The local runtime's per-task supervisor, and the sandbox file format it shares with it.

Run as ``python -m scheduler.runtimes.executor [--lock-fd N] SANDBOX``, one executor per task,
in its own session (the runtime starts it with ``start_new_session=True``). Like a Mesos
command executor it starts the task's process, waits for it, and writes down how it ended,
so the outcome survives a restart of Dromos: the executor is not Dromos's child after a
restart, so nobody else could learn the exit status.

The sandbox is ``<state_dir>/tasks/<task_id>/`` and holds (JSON files are written to a
temporary name and renamed, so a reader never sees half a file):

``launch.json``   ``{"argv": [...]}`` -- written by the runtime before the executor starts.
``env.json``      the task's complete environment -- written by the runtime (0600: it may
                  hold secrets); COMMAND health checks reuse it.
``executor.json`` ``{"pid", "start_time", "child_pid", "child_start_time", "started_at"}``
                  -- written by the executor once the task's process exists (or failed to
                  exist: ``child_pid`` null). ``start_time`` values are field 22 of
                  ``/proc/<pid>/stat`` (clock ticks since boot): a pid plus its start time
                  names one process for the life of the machine, so a reused pid is never
                  mistaken for the task. ``started_at`` is wall-clock seconds since the epoch.
``exit.json``     ``{"exit_code": int|null, "signal": int|null, "finished_at": float,
                  "error"?: str}`` -- written by the executor when the task's process has
                  ended. ``error`` is set (with exit_code 127 or 126, as a shell reports them)
                  when the command could not be executed at all.
``kill.json``     ``{"requested_at", "grace_seconds", "deadline"}`` -- written by the runtime
                  when Dromos asked for a kill, so the exit is reported as KILLED and the
                  SIGKILL deadline is enforced even by a restarted Dromos.
``stdout``, ``stderr``  the task's output, appended.
``executor.log``  the executor's own output (only interesting when something broke).
``.lock``         ``flock``-ed by the runtime while launching; the executor inherits the lock
                  (``--lock-fd``) and releases it once ``executor.json`` exists, so two
                  launches of one task id can never both start an executor.

Process layout: the executor leads its session; the task's process leads its own process
group inside that session (pgid = its pid), and everything it forks stays in that group
unless it asks otherwise. The runtime signals that group directly, so the executor survives
even a SIGKILL of the task and still records the exit. A SIGTERM/SIGINT/SIGHUP sent to the
executor itself is forwarded to the task's group. When the task's process exits, whatever it
left behind in its group is SIGKILLed, so a finished task cannot leak background processes
(e.g. ``cmd: "server & exit 0"``) that hold its ports.

This module imports nothing from Dromos: the executor must start fast and must not depend
on anything but the standard library.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

LAUNCH_FILE = "launch.json"
ENV_FILE = "env.json"
EXECUTOR_FILE = "executor.json"
EXIT_FILE = "exit.json"
KILL_FILE = "kill.json"
STDOUT_FILE = "stdout"
STDERR_FILE = "stderr"
LOG_FILE = "executor.log"
LOCK_FILE = ".lock"

# Exit codes a POSIX shell uses for "found but cannot execute" and "not found".
EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127

_FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


# --- /proc helpers (shared with the runtime) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the runtime needs."""

    state: str
    """One letter: R, S, D, T, Z (zombie), X (dead)..."""
    pgrp: int
    session: int
    start_time: int
    """Field 22: when the process started, in clock ticks since boot."""


def read_proc_stat(pid: int) -> ProcStat | None:
    """The process's stat line, or ``None`` when there is no such process (or it is unreadable)."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # Field 2 (comm) is in parentheses and may itself contain spaces and ')': split after the
    # last ')' so the remaining fields are at fixed positions (field 3 = index 0).
    try:
        fields = data[data.rindex(b")") + 2 :].split()
        return ProcStat(
            state=fields[0].decode("ascii"),
            pgrp=int(fields[2]),
            session=int(fields[3]),
            start_time=int(fields[19]),
        )
    except (ValueError, IndexError):
        return None


def process_alive(pid: int | None, start_time: int | None) -> bool:
    """True when ``pid`` is a living (not zombie) process that started at ``start_time``.

    A pid whose start time differs is a different process that reused the number, and a
    zombie has already exited: neither is the process we are looking for.
    """
    if pid is None or start_time is None:
        return False
    st = read_proc_stat(pid)
    return st is not None and st.start_time == start_time and st.state not in ("Z", "X", "x")


# --- atomic JSON files (shared with the runtime) ---------------------------------------------


def write_json_atomic(path: Path, data: Mapping[str, Any], mode: int = 0o644) -> None:
    """Write ``data`` as JSON to ``path`` so readers see the old file or the new one, never a
    part: write a temporary file in the same directory, fsync it, rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    # A task running as another user owns its sandbox and could plant a link at this name:
    # remove whatever is there and create the file anew (O_EXCL never follows a link).
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(data), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when the file does not exist.

    Raises ``ValueError`` when the file exists but is not a JSON object (files written by
    :func:`write_json_atomic` are always whole, so that means someone else wrote it).
    """
    try:
        # O_NOFOLLOW: a task may own its sandbox; a link it planted is not read through.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise ValueError(f"{path} cannot be read: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        text = f.read().decode("utf-8")
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


# --- the executor ----------------------------------------------------------------------------


class _Forwarder:
    """Forwards signals sent to the executor to the task's process group.

    A signal that arrives before the task's process exists is remembered and delivered as
    soon as it does; once the task's process has exited (and before it is reaped, when its
    pid could be reused) forwarding stops.
    """

    def __init__(self) -> None:
        self.child_pgid: int | None = None
        self.pending: list[int] = []

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.child_pgid is None:
            self.pending.append(signum)
            return
        with contextlib.suppress(OSError):
            os.killpg(self.child_pgid, signum)

    def attach(self, pgid: int) -> None:
        self.child_pgid = pgid
        while self.pending:
            self.handle(self.pending.pop(0), None)


def _exec_error(argv: list[str], exc: BaseException) -> tuple[int, str]:
    """The shell-style exit code and a readable message for a command that could not start."""
    what = argv[0] if argv else "(empty command)"
    if isinstance(exc, OSError):
        code = EXIT_NOT_FOUND if exc.errno in (errno.ENOENT, errno.ENOTDIR) else EXIT_CANNOT_EXECUTE
        return code, f"cannot execute {what!r}: {exc.strerror or exc}"
    return EXIT_CANNOT_EXECUTE, f"cannot execute {what!r}: {exc}"


def _user_args(rec: Any) -> dict[str, Any]:
    """``Popen`` keywords that run the task as the user ``launch.json`` names (``{}``: as
    the executor runs). Nothing changes when the executor already is that user."""
    if rec is None:
        return {}
    uid, gid = int(rec["uid"]), int(rec["gid"])
    if uid == os.geteuid() and gid == os.getegid():
        return {}
    return {"user": uid, "group": gid, "extra_groups": [int(g) for g in rec["groups"]]}


def run_executor(sandbox: Path, lock_fd: int | None = None) -> int:
    """Start the task described in ``sandbox``, wait for it, record its end. Returns 0 once
    ``exit.json`` is written (also when the command could not be executed)."""
    forwarder = _Forwarder()
    # A Python-level handler (not SIG_IGN) on purpose: caught signals are reset to their
    # default in the task's process at exec, ignored ones would be inherited by the task.
    for sig in _FORWARDED_SIGNALS:
        signal.signal(sig, forwarder.handle)

    me = read_proc_stat(os.getpid())
    if me is None:  # cannot happen on Linux with /proc mounted
        print("executor: cannot read /proc/self/stat", file=sys.stderr)
        return 1

    def record_start(child_pid: int | None, child_start: int | None) -> None:
        write_json_atomic(
            sandbox / EXECUTOR_FILE,
            {
                "pid": os.getpid(),
                "start_time": me.start_time,
                "child_pid": child_pid,
                "child_start_time": child_start,
                "started_at": time.time(),
            },
        )
        if lock_fd is not None:
            # Closing (not LOCK_UN) releases our reference; the runtime closes its own.
            os.close(lock_fd)

    def record_failure(code: int, message: str) -> int:
        # exit.json first: whoever sees executor.json without a child also finds the reason.
        write_json_atomic(
            sandbox / EXIT_FILE,
            {"exit_code": code, "signal": None, "finished_at": time.time(), "error": message},
        )
        record_start(None, None)
        print(f"executor: {message}", file=sys.stderr)
        return 0

    argv: list[str] = []
    try:
        launch = read_json(sandbox / LAUNCH_FILE)
        env = read_json(sandbox / ENV_FILE)
        if launch is None or env is None:
            raise ValueError(f"{LAUNCH_FILE} or {ENV_FILE} is missing")
        argv = [str(a) for a in launch["argv"]]
        if not argv:
            raise ValueError("argv is empty")
        task_env = {str(k): str(v) for k, v in env.items()}
        user = _user_args(launch.get("user"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        return record_failure(EXIT_CANNOT_EXECUTE, f"bad sandbox {sandbox}: {e}")
    if user:
        try:
            # The task's working directory is its own, as on a Mesos agent; the records
            # the executor writes later are renamed in by root, whoever owns the directory.
            os.chown(sandbox, user["user"], user["group"])
        except OSError as e:
            return record_failure(EXIT_CANNOT_EXECUTE,
                                  f"cannot run as user {launch['user'].get('name')!r}: "
                                  f"cannot hand it the sandbox: {e.strerror}")

    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out_fd = os.open(sandbox / STDOUT_FILE, flags, 0o644)
    err_fd = os.open(sandbox / STDERR_FILE, flags, 0o644)
    try:
        child = subprocess.Popen(
            argv,
            env=task_env,
            cwd=sandbox,
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            process_group=0,  # the task leads its own group: the unit the runtime signals
            # setgroups, setgid, setuid in the child, in that order, before exec.
            **user,
        )
    except PermissionError as e:
        if not user:
            return record_failure(*_exec_error(argv, e))
        return record_failure(EXIT_CANNOT_EXECUTE,
                              f"cannot run as user {launch['user'].get('name')!r} "
                              f"(uid {user['user']}): {e.strerror}")
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        return record_failure(*_exec_error(argv, e))
    finally:
        os.close(out_fd)
        os.close(err_fd)

    # The child is not reaped until we wait for it, so its pid and stat are stable here.
    child_stat = read_proc_stat(child.pid)
    try:
        record_start(child.pid, child_stat.start_time if child_stat else None)
    except BaseException:
        # Unrecorded, the task could never be found, observed or killed: do not let it run.
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise
    forwarder.attach(child.pid)

    # Wait for the exit without reaping (WNOWAIT): while the zombie exists its pid -- which
    # is also the group id -- cannot be reused, so sweeping the group below is safe.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    forwarder.child_pgid = None
    with contextlib.suppress(OSError):
        os.killpg(child.pid, signal.SIGKILL)  # leftovers of the task in its group
    returncode = child.wait()

    exit_code = returncode if returncode >= 0 else None
    signum = -returncode if returncode < 0 else None
    write_json_atomic(
        sandbox / EXIT_FILE,
        {"exit_code": exit_code, "signal": signum, "finished_at": time.time()},
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler.runtimes.executor",
        description="Supervise one Dromos task in its sandbox (started by the local runtime).",
    )
    parser.add_argument("sandbox", type=Path, help="the task's sandbox directory")
    parser.add_argument(
        "--lock-fd", type=int, default=None, help="inherited launch lock, released once started"
    )
    ns = parser.parse_args(argv)
    return run_executor(ns.sandbox.absolute(), ns.lock_fd)


if __name__ == "__main__":
    sys.exit(main())
