"""The local-process runtime: tasks are processes on this machine (the embedded default).

Each task runs under its own small supervisor (:mod:`scheduler.runtimes.executor`) in its own
session, much like a Mesos command executor, with its sandbox at
``<state_dir>/tasks/<task_id>/`` (the file format is described in the executor module). The
sandbox path follows from the task id alone, which is what makes launches idempotent and lets
a restarted Dromos adopt running tasks: a new :class:`LocalRuntime` over the same
``state_dir`` finds, observes and kills what the previous one started, and learns exit
statuses from ``exit.json`` even though the processes are not its children.

Nodes are accounting and constraint domains: every node's tasks run on this machine. That is
why configured nodes must not share ports (they would share this machine's ports).

Reported states (see :meth:`LocalRuntime.observe`):

- RUNNING while the executor or the task's process is alive (pid + start time match, not a
  zombie). A kill in progress is still RUNNING until the process is gone.
- KILLED once gone after :meth:`LocalRuntime.kill` was called, whatever the exit status.
- FINISHED on exit status 0.
- FAILED on a non-zero exit status, on death by a signal, or when the command could not be
  executed. ``exit_code`` follows the shell: ``128 + n`` for death by signal ``n`` (the
  message names the signal), 127 for a command that was not found, 126 for one that could
  not be executed.
- LOST when the task is gone without an exit status on record (its executor was killed from
  outside, or the sandbox was removed): the runtime cannot say how it ended, and Marathon's
  word for "gone without a known outcome" is LOST, not FAILED.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import scheduler
from scheduler.model.node import Node
from scheduler.model.task import Task, TaskState
from scheduler.runtimes.base import (
    LaunchSpec,
    Observation,
    Output,
    RuntimeUnavailable,
    SandboxFile,
    unobservable,
)
from scheduler.runtimes.executor import (
    ENV_FILE,
    EXECUTOR_FILE,
    EXIT_FILE,
    KILL_FILE,
    LAUNCH_FILE,
    LOCK_FILE,
    LOG_FILE,
    STDERR_FILE,
    STDOUT_FILE,
    process_alive,
    read_json,
    read_proc_stat,
    write_json_atomic,
)
from scheduler.runtimes.kills import read_kill, record_kill
from scheduler.runtimes.local_nodes import default_node
from scheduler.runtimes.output import list_files, open_in, read_file_in, read_stream_files
from scheduler.runtimes.ports import check_ports_disjoint, refuse_taken_ports
from scheduler.runtimes.sandbox_gc import SandboxCollector, SandboxGcPolicy
from scheduler.runtimes.users import local_launch_user, local_user_problem

log = logging.getLogger(__name__)

LAUNCH_TIMEOUT_SECONDS = 30.0
"""How long :meth:`LocalRuntime.launch` waits for the executor to report the task started.
Normally a few tens of milliseconds; the bound only matters on a machine in distress."""

LOCK_TIMEOUT_SECONDS = LAUNCH_TIMEOUT_SECONDS + 5.0

# Variables of Dromos's own environment a task inherits; everything else comes from the
# LaunchSpec, so Dromos's configuration and credentials do not leak into tasks.
_INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR")
_MAX_NAME_BYTES = 255  # NAME_MAX on Linux file systems

_BIN_SH = "/bin/sh"


# --- executors this process started ----------------------------------------------------------

# Process-wide, not per runtime instance: a runtime that replaced another in the same process
# (tests simulate restarts that way) must still reap the executors its predecessor started.
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def reap_executors() -> None:
    """Collect the exit status of every finished executor this process started, so none
    lingers as a zombie. Cheap; called by every launch and observe."""
    with _children_lock:
        for pid, proc in list(_children.items()):
            if proc.poll() is not None:
                del _children[pid]


# --- task identity ---------------------------------------------------------------------------


def validate_task_id(task_id: str) -> str:
    """Return ``task_id`` if it is safe as one path component, else raise ``ValueError``.

    Permissive on purpose (job run ids contain ``:`` and job names may contain spaces): it
    rejects only what could escape or confuse the tasks directory -- empty, ``.``/``..``, a
    leading dot, ``/``, control characters, more than 255 bytes.
    """
    if not isinstance(task_id, str) or not task_id:
        raise ValueError("task id must be a non-empty string")
    if task_id.startswith("."):
        raise ValueError(f"task id {task_id!r} must not start with '.'")
    if "/" in task_id or any(ord(c) < 32 or ord(c) == 127 for c in task_id):
        raise ValueError(f"task id {task_id!r} must not contain '/' or control characters")
    if len(task_id.encode("utf-8", "surrogateescape")) > _MAX_NAME_BYTES:
        raise ValueError(f"task id {task_id[:40]!r}... is longer than {_MAX_NAME_BYTES} bytes")
    return task_id


@dataclass(frozen=True, slots=True)
class _Identity:
    """Which processes are the task: the executor, and the task's own process (when known)."""

    pid: int
    start_time: int
    child_pid: int | None = None
    child_start_time: int | None = None
    started_at: float | None = None

    @property
    def executor_alive(self) -> bool:
        return process_alive(self.pid, self.start_time)

    @property
    def child_alive(self) -> bool:
        return process_alive(self.child_pid, self.child_start_time)

    @property
    def alive(self) -> bool:
        # The task's process counts on its own: if the executor was killed from outside, the
        # task still runs (and can still be killed) even though its exit status will be lost.
        return self.child_alive or self.executor_alive


def _opt_int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) else None


def _identity_from(rec: Mapping[str, Any]) -> _Identity | None:
    pid, start = _opt_int(rec.get("pid")), _opt_int(rec.get("start_time"))
    if pid is None or start is None:
        return None
    started_at = rec.get("started_at")
    return _Identity(
        pid=pid,
        start_time=start,
        child_pid=_opt_int(rec.get("child_pid")),
        child_start_time=_opt_int(rec.get("child_start_time")),
        started_at=float(started_at) if isinstance(started_at, int | float) else None,
    )


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text(encoding="ascii").splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


def _wallclock_of(start_ticks: int) -> float:
    """Seconds since the epoch at which a process with this ``/proc`` start time began."""
    return _boot_time() + start_ticks / os.sysconf("SC_CLK_TCK")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# --- the runtime -----------------------------------------------------------------------------


class LocalRuntime:
    """Runs tasks as local processes, each under an executor, sandboxed under ``state_dir``.

    ``nodes``: the accounting domains tasks are placed on; ``None`` or empty means one node
    describing this machine (:func:`default_node`). Raises ``ValueError`` when two nodes'
    port ranges overlap. ``gc``: when ended tasks' sandboxes are removed
    (:mod:`scheduler.runtimes.sandbox_gc`). Safe to use from several threads.
    """

    name = "local"

    def __init__(self, state_dir: Path, nodes: Sequence[Node] | None = None,
                 gc: SandboxGcPolicy | None = None) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.tasks_dir = self.state_dir / "tasks"
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        # Ended tasks' sandboxes go after a while (run from observe, at most every 30 s).
        self.sandbox_gc = SandboxCollector(self.tasks_dir, gc or SandboxGcPolicy())
        if nodes:
            check_ports_disjoint(nodes, "local")
            self._nodes = list(nodes)
        else:
            self._nodes = [default_node(self.state_dir)]
        self._timers: dict[str, threading.Timer] = {}
        self._timers_lock = threading.Lock()

    # --- the Runtime protocol ----------------------------------------------------------------

    def nodes(self) -> list[Node]:
        """The configured nodes (or the default node), with their total capacity."""
        return list(self._nodes)

    def probe_host(self, task: Task) -> str:
        """Every task runs on this machine, whatever node it was placed on."""
        return "127.0.0.1"

    def user_problem(self, user: str) -> str | None:
        """Why tasks cannot run as ``user`` here (:mod:`scheduler.runtimes.users`)."""
        return local_user_problem(user)

    def sandbox(self, task_id: str) -> Path:
        """The task's sandbox directory (which may not exist). Raises ``ValueError`` for an
        id that is not a safe path component."""
        return self.tasks_dir / validate_task_id(task_id)

    def launch(self, spec: LaunchSpec) -> Mapping[str, Any]:
        """Start the task under an executor; return ``{"pid", "start_time", "sandbox"}``
        (the executor's pid and ``/proc`` start time, the sandbox path).

        Idempotent per task id: when the sandbox shows the task was already started, the
        existing handle is returned and nothing is started -- also when that task has
        finished since, because a task id runs at most once (a retry needs a new id). A
        command that cannot be executed is not an error here: the task is then observed as
        FAILED with the reason. Raises ``ValueError`` for an image, a bad task id, or
        neither/both of ``cmd`` and ``args``; :class:`RuntimeUnavailable` when the executor
        cannot be started or the sandbox stays locked by another launch.
        """
        if spec.image is not None:
            raise ValueError(
                f"the local runtime runs processes, not images: task {spec.task_id!r} asks "
                f"for image {spec.image!r}; use the docker or kubernetes runtime for it"
            )
        argv = _argv(spec)
        sandbox = self.sandbox(spec.task_id)
        user = local_launch_user(spec.user)
        env = _task_environment(spec, sandbox, user)
        reap_executors()
        try:
            return self._launch_in(sandbox, spec.task_id, {
                "argv": argv, "user": user, "app_id": spec.app_id, "ports": list(spec.ports)},
                env)
        except OSError as e:  # a full or read-only disk: this backend cannot run tasks now
            raise RuntimeUnavailable(
                f"cannot launch task {spec.task_id!r} in {sandbox}: {e}"
            ) from e

    def _launch_in(self, sandbox: Path, task_id: str, launch: Mapping[str, Any],
                   env: Mapping[str, str]) -> dict[str, Any]:
        sandbox.mkdir(mode=0o700, exist_ok=True)
        lock_fd = os.open(sandbox / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _flock(lock_fd, LOCK_TIMEOUT_SECONDS, task_id)
            existing = self._read_identity(sandbox)
            if existing is not None:
                return self._handle(existing, sandbox)
            # Leftovers of a launch that never got as far as starting the task.
            for stale in (EXIT_FILE, KILL_FILE):
                (sandbox / stale).unlink(missing_ok=True)
            if (refused := refuse_taken_ports(sandbox, launch["ports"])) is not None:
                return refused
            write_json_atomic(sandbox / ENV_FILE, env, mode=0o600)
            write_json_atomic(sandbox / LAUNCH_FILE, launch)
            proc, start_time = _start_executor(sandbox, lock_fd)
            # Still holding our reference to the lock, so a concurrent launch waits until the
            # executor has either recorded the start or been declared failed below.
            return self._await_start(proc, start_time, sandbox)
        finally:
            os.close(lock_fd)

    def kill(self, task: Task, grace_seconds: float) -> None:
        """Ask the task to stop: SIGTERM to its process group now, SIGKILL ``grace_seconds``
        later if it is still alive (at once when ``grace_seconds <= 0``). Does not block.

        The request and its deadline are recorded in the sandbox first, so the task is
        reported KILLED and a restarted Dromos enforces the deadline (in :meth:`observe`).
        A second kill never extends an earlier deadline. A task that is gone, unknown, or
        already has its exit recorded is left alone (no-op).
        """
        sandbox = self._sandbox_or_none(task.id)
        ident = self._identity(task, sandbox)
        if ident is None or not ident.alive:
            return
        if sandbox is not None and (sandbox / EXIT_FILE).exists():
            return
        now = time.time()
        if sandbox is not None and sandbox.is_dir():
            remaining = record_kill(sandbox, grace_seconds, now).remaining(now)
        else:  # no sandbox to record in (removed): the kill still goes out
            remaining = max(0.0, float(grace_seconds))
        if remaining <= 0:
            _signal(ident, signal.SIGKILL)
            return
        _signal(ident, signal.SIGTERM)
        self._schedule_escalation(task, remaining)

    def observe(self, tasks: Sequence[Task]) -> list[Observation]:
        """One observation per task, in order; never raises for one task.

        State rules are in the module docstring. Side effects: reaps finished executors, and
        SIGKILLs a task whose recorded kill deadline has passed (this is what makes a kill
        survive a restart of Dromos). If a task cannot be observed at all (e.g. a sandbox
        file someone corrupted), its previous state is reported unchanged with the reason in
        ``message``, rather than guessing a terminal state.
        """
        reap_executors()
        self.sandbox_gc.maybe_run()
        out: list[Observation] = []
        for task in tasks:
            try:
                out.append(self._observe_one(task))
            except Exception as e:  # one broken sandbox must not hide the other tasks
                log.exception("observing task %s failed", task.id)
                out.append(unobservable(task, e))
        return out

    def check_command(self, task: Task, command: str) -> tuple[list[str], dict[str, str]]:
        """``/bin/sh -c command`` with the task's environment (from ``env.json``; Dromos's
        basic variables when the sandbox has none)."""
        env: dict[str, str] | None = None
        sandbox = self._sandbox_or_none(task.id)
        if sandbox is not None:
            rec = read_json(sandbox / ENV_FILE)
            if rec is not None:
                env = {str(k): str(v) for k, v in rec.items()}
        if env is None:
            env = _inherited_env()
        return [_BIN_SH, "-c", command], env

    def read_output(self, task: Task, tail: int | None, cursor: str | None) -> Output:
        """The sandbox's ``stdout`` and ``stderr`` files, two chunks with a byte-offset cursor
        (:func:`~scheduler.runtimes.output.read_stream_files`). ``LookupError`` for an id
        that is not a safe path component."""
        try:
            sandbox = self.sandbox(task.id)
        except ValueError as e:
            raise LookupError(str(e)) from None
        return read_stream_files(sandbox, (STDOUT_FILE, STDERR_FILE), tail, cursor,
                                 "sandbox files")

    def sandbox_files(self, task: Task) -> list[SandboxFile]:
        """Every file of the task's sandbox: its output, the executor's records, and what
        the task wrote into its working directory."""
        sandbox = self._sandbox_or_none(task.id)
        return list_files(sandbox) if sandbox is not None else []

    def read_sandbox_file(self, task: Task, path: str, offset: int = 0,
                          limit: int = 1 << 20) -> bytes:
        """One of :meth:`sandbox_files`."""
        try:
            sandbox = self.sandbox(task.id)
        except ValueError as e:
            raise LookupError(str(e)) from None
        return read_file_in(sandbox, path, offset, limit)

    def close(self) -> None:
        """Stop pending SIGKILL timers. Tasks keep running; their kill deadlines stay on
        disk and are enforced by the next :meth:`observe` of any runtime on this state."""
        with self._timers_lock:
            timers = list(self._timers.values())
            self._timers.clear()
        for t in timers:
            t.cancel()

    # --- internals ---------------------------------------------------------------------------

    def _sandbox_or_none(self, task_id: str) -> Path | None:
        try:
            return self.sandbox(task_id)
        except ValueError:
            return None

    @staticmethod
    def _read_identity(sandbox: Path) -> _Identity | None:
        rec = read_json(sandbox / EXECUTOR_FILE)
        return _identity_from(rec) if rec is not None else None

    def _identity(self, task: Task, sandbox: Path | None) -> _Identity | None:
        """The sandbox's record, else the handle Dromos stored (a launch whose executor had
        not written its record yet, or a sandbox that was removed)."""
        if sandbox is not None:
            ident = self._read_identity(sandbox)
            if ident is not None:
                return ident
        return _identity_from(task.handle)

    @staticmethod
    def _handle(ident: _Identity, sandbox: Path) -> dict[str, Any]:
        return {"pid": ident.pid, "start_time": ident.start_time, "sandbox": str(sandbox)}

    def _await_start(
        self, proc: subprocess.Popen[bytes], start_time: int, sandbox: Path
    ) -> dict[str, Any]:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_SECONDS
        delay = 0.002
        while True:
            ident = self._read_identity(sandbox)
            if ident is not None:
                return self._handle(ident, sandbox)
            if proc.poll() is not None:
                # Died before recording anything (a broken interpreter, a full disk...).
                # Record it ourselves, so the task is observed FAILED rather than LOST.
                if (ident := self._read_identity(sandbox)) is not None:
                    return self._handle(ident, sandbox)
                reason = _tail(sandbox / LOG_FILE)
                write_json_atomic(
                    sandbox / EXIT_FILE,
                    {
                        "exit_code": None,
                        "signal": None,
                        "finished_at": time.time(),
                        "error": f"the executor exited with status {proc.returncode} before "
                        f"starting the task: {reason or 'no output'}",
                    },
                )
                write_json_atomic(
                    sandbox / EXECUTOR_FILE,
                    {
                        "pid": proc.pid,
                        "start_time": start_time,
                        "child_pid": None,
                        "child_start_time": None,
                        "started_at": None,
                    },
                )
                return self._handle(_Identity(proc.pid, start_time), sandbox)
            if time.monotonic() >= deadline:
                # The executor still runs and will record the start; observe() and kill()
                # use this handle until it does.
                log.warning("executor for %s slow to start; returning its handle", sandbox)
                return self._handle(_Identity(proc.pid, start_time), sandbox)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _observe_one(self, task: Task) -> Observation:
        sandbox = self._sandbox_or_none(task.id)
        ident = self._identity(task, sandbox)
        exit_rec = read_json(sandbox / EXIT_FILE) if sandbox is not None else None
        kill_rec = read_kill(sandbox) if sandbox is not None else None
        handle = (
            self._handle(ident, sandbox)
            if ident is not None and sandbox is not None
            else dict(task.handle)
        )
        started_at = _started_at(ident)

        taken = tuple(exit_rec.get("ports_taken") or ()) if exit_rec is not None else ()

        def obs(state: TaskState, exit_code: int | None = None, message: str = "") -> Observation:
            return Observation(task.id, state, exit_code, message, handle, started_at, taken)

        if ident is None and exit_rec is None:
            where = sandbox if sandbox is not None else "(invalid task id)"
            return obs(TaskState.LOST, message=f"the local runtime has no trace of it in {where}")

        # exit.json first: once it exists the task's process is gone, even if the executor
        # is still on its way out.
        if exit_rec is None and ident is not None and ident.alive:
            if kill_rec is None:
                return obs(TaskState.RUNNING)
            if kill_rec.overdue(time.time()):
                _signal(ident, signal.SIGKILL)  # overdue, e.g. the timer died with Dromos
            return obs(TaskState.RUNNING, message="kill requested; waiting for the task to exit")

        if exit_rec is None:
            if kill_rec is not None:
                return obs(TaskState.KILLED, message="killed; its exit status was not recorded")
            pid = ident.pid if ident is not None else "?"
            return obs(
                TaskState.LOST,
                message=f"its executor (pid {pid}) is gone and recorded no exit status",
            )

        code, how = _describe_exit(exit_rec)
        if kill_rec is not None:
            return obs(TaskState.KILLED, code, f"killed: {how}")
        if code == 0 and not exit_rec.get("error"):
            return obs(TaskState.FINISHED, 0, how)
        return obs(TaskState.FAILED, code, how)

    def _schedule_escalation(self, task: Task, delay: float) -> None:
        timer = threading.Timer(delay, self._escalate, args=(task,))
        timer.daemon = True  # a pending SIGKILL must not keep Dromos from exiting
        with self._timers_lock:
            old = self._timers.pop(task.id, None)
            self._timers[task.id] = timer
        if old is not None:
            old.cancel()
        timer.start()

    def _escalate(self, task: Task) -> None:
        with self._timers_lock:
            self._timers.pop(task.id, None)
        try:
            # Re-read the identity: the executor may have recorded the task's process since.
            ident = self._identity(task, self._sandbox_or_none(task.id))
            if ident is not None:
                _signal(ident, signal.SIGKILL)
            reap_executors()
        except Exception:
            log.exception("forced kill of task %s failed", task.id)


# --- helpers ---------------------------------------------------------------------------------


def _argv(spec: LaunchSpec) -> list[str]:
    """The argv to exec: ``/bin/sh -c cmd`` exactly as given, or ``args`` as they are."""
    if spec.cmd is not None and spec.args is not None:
        raise ValueError(f"task {spec.task_id!r} has both cmd and args; give one")
    if spec.cmd is not None:
        if not spec.cmd.strip():
            raise ValueError(f"task {spec.task_id!r} has an empty cmd")
        argv = [_BIN_SH, "-c", spec.cmd]
    elif spec.args:
        argv = [str(a) for a in spec.args]
    else:
        raise ValueError(f"task {spec.task_id!r} has neither cmd nor args: nothing to run")
    if any("\0" in a for a in argv):
        raise ValueError(f"task {spec.task_id!r}: command contains a NUL character")
    return argv


def _inherited_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _INHERITED_ENV or k.startswith("LC_")}
    env.setdefault("PATH", os.defpath)
    return env


def _task_environment(spec: LaunchSpec, sandbox: Path,
                      user: Mapping[str, Any] | None) -> dict[str, str]:
    """Dromos's basic variables (the task's user's USER, LOGNAME and HOME when it runs as
    another), MESOS_SANDBOX, then the LaunchSpec's env (which wins)."""
    env = _inherited_env()
    if user is not None:
        env.update(USER=str(user["name"]), LOGNAME=str(user["name"]), HOME=str(user["home"]))
    env["MESOS_SANDBOX"] = str(sandbox)
    for k, v in spec.env.items():
        if not k or "=" in k or "\0" in k or "\0" in str(v):
            raise ValueError(f"task {spec.task_id!r}: invalid environment variable {k!r}")
        env[k] = str(v)
    return env


def _executor_environment() -> dict[str, str]:
    # The executor needs to import this package even when it is not installed (a checkout);
    # its own environment is not the task's (the task gets env.json), so nothing leaks.
    env = _inherited_env()
    env["PYTHONPATH"] = str(Path(scheduler.__file__).resolve().parent.parent)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _start_executor(sandbox: Path, lock_fd: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start the executor for ``sandbox``; return it and its ``/proc`` start time."""
    log_fd = os.open(
        sandbox / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
    )
    try:
        proc = subprocess.Popen(
            # -P: do not put the sandbox (the cwd) on sys.path, a task could plant modules.
            [
                sys.executable,
                "-P",
                "-m",
                "scheduler.runtimes.executor",
                "--lock-fd",
                str(lock_fd),
                str(sandbox),
            ],
            cwd=sandbox,
            env=_executor_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=log_fd,
            start_new_session=True,
            pass_fds=(lock_fd,),
        )
    except OSError as e:
        raise RuntimeUnavailable(f"cannot start the task executor ({sys.executable}): {e}") from e
    finally:
        os.close(log_fd)
    with _children_lock:
        _children[proc.pid] = proc
    # Our unreaped child: its pid cannot be reused yet, so this reads the right process.
    stat = read_proc_stat(proc.pid)
    return proc, stat.start_time if stat is not None else -1


def _flock(fd: int, timeout: float, task_id: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise RuntimeUnavailable(
                    f"task {task_id!r}: its sandbox is locked by another launch"
                ) from None
            time.sleep(0.01)


def _signal(ident: _Identity, sig: signal.Signals) -> None:
    """Send ``sig`` to the task's process group, if the task's process is still the one
    recorded (pid + start time). Before the executor recorded the task's process, the
    executor itself is signalled: it forwards TERM, and a KILL leaves nothing to forward to.

    The group id is the task's pid; it cannot be reused while any member of the group is
    alive, and the executor kills the group before reaping the task, so a verified pid is
    safe to use as a group id.
    """
    try:
        if ident.child_pid is not None:
            if ident.child_alive:
                os.killpg(ident.child_pid, sig)
        elif ident.executor_alive:
            os.kill(ident.pid, sig)
    except ProcessLookupError:
        pass  # exited between the check and the signal


def _started_at(ident: _Identity | None) -> datetime | None:
    if ident is None:
        return None
    if ident.started_at is not None:
        return datetime.fromtimestamp(ident.started_at, UTC)
    if ident.start_time < 0:
        return None
    try:
        return datetime.fromtimestamp(_wallclock_of(ident.start_time), UTC)
    except (OSError, RuntimeError, ValueError):
        return None


def _describe_exit(rec: Mapping[str, Any]) -> tuple[int | None, str]:
    """The exit code to report (``128 + n`` for signal ``n``) and a readable account."""
    error = rec.get("error")
    code = _opt_int(rec.get("exit_code"))
    if error:
        return code, str(error)
    signum = _opt_int(rec.get("signal"))
    if signum is not None:
        return 128 + signum, f"terminated by {_signal_name(signum)} (signal {signum})"
    if code is None:
        return None, "ended with an unknown status"
    return code, f"exited with status {code}"


def _tail(path: Path, limit: int = 2000) -> str:
    try:
        with open_in(path.parent, path.name) as f:  # never through a link
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - limit))
            return f.read().decode("utf-8", "replace").strip()
    except (OSError, LookupError):
        return ""
