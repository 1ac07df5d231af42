"""The local runtime's tasks that outlive Dromos: finding and stopping them by the records
their executors keep in the state dir (see :mod:`scheduler.runtimes.executor`).

Tasks keep running when ``dromos serve`` stops (as on Mesos: the next start adopts them).
This module answers "which are still running?" (for the shutdown note and ``make clean``)
and stops them without Dromos (``dromos stop-all`` when no Dromos is up): a kill request is
written to each sandbox first, exactly as the runtime writes it, so a Dromos started later
reports those tasks as KILLED, not failed; then SIGTERM goes to the task's process group
and, after the grace period, SIGKILL.

Standard library only (it imports only the executor's file format), so ``make clean`` can
run ``python3 -m scheduler.stop --check DIR`` before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from scheduler.runtimes.executor import (
    EXECUTOR_FILE,
    EXIT_FILE,
    KILL_FILE,
    process_alive,
    read_json,
    write_json_atomic,
)


@dataclass(frozen=True)
class Executor:
    """One task's executor as its sandbox records it. ``pid`` is the executor (it
    supervises the task and records how it ended); ``child_pid`` is the task's own process,
    the leader of the task's process group."""

    task_id: str
    sandbox: Path
    pid: int
    start_time: int | None
    child_pid: int | None
    child_start_time: int | None

    @property
    def executor_alive(self) -> bool:
        return process_alive(self.pid, self.start_time)

    @property
    def task_alive(self) -> bool:
        return process_alive(self.child_pid, self.child_start_time)

    @property
    def alive(self) -> bool:
        return self.executor_alive or self.task_alive


def executors(state_dir: Path) -> list[Executor]:
    """Every executor recorded under ``state_dir/tasks`` (alive or not), by task id."""
    tasks = state_dir / "tasks"
    found: list[Executor] = []
    if not tasks.is_dir():
        return found
    for sandbox in sorted(tasks.iterdir()):
        rec = read_json(sandbox / EXECUTOR_FILE)
        if rec is None or not isinstance(rec.get("pid"), int):
            continue
        found.append(Executor(
            task_id=sandbox.name, sandbox=sandbox, pid=rec["pid"],
            start_time=_int(rec.get("start_time")), child_pid=_int(rec.get("child_pid")),
            child_start_time=_int(rec.get("child_start_time"))))
    return found


def running(state_dir: Path) -> list[Executor]:
    """The executors of ``state_dir`` whose task is still running: the process recorded
    (pid and start time, so a reused pid never counts) is alive and no exit is recorded."""
    return [e for e in executors(state_dir)
            if e.alive and not (e.sandbox / EXIT_FILE).exists()]


def shutdown_note(state_dir: Path, runtime: str) -> str | None:
    """The line ``dromos serve`` logs when it stops, or ``None`` when nothing keeps
    running on the local runtime."""
    if runtime != "local":
        where = {"docker": "as containers (docker ps --filter label=dromos.io/task)",
                 "kubernetes": "as pods"}.get(runtime, "")
        return (f"Dromos stopped; its tasks keep running {where}; the next `dromos serve "
                f"--state-dir {state_dir}` adopts them").replace("  ", " ")
    alive = running(state_dir)
    if not alive:
        return None
    n = len(alive)
    return (f"Dromos stopped; {n} task{'s' if n != 1 else ''} keep{'s' if n == 1 else ''} "
            f"running (the next `dromos serve --state-dir {state_dir}` adopts them); to stop "
            f"them: `dromos stop-all --state-dir {state_dir}` (or `make stop`)")


def request_kill(e: Executor, grace: float, now: float) -> None:
    """Record the kill in the sandbox (the runtime's format; an earlier deadline is kept),
    then SIGTERM the task's process group (or the executor, before it recorded a task
    process: it forwards TERM)."""
    earlier = read_json(e.sandbox / KILL_FILE)
    if earlier is None or float(earlier.get("deadline", now + grace)) > now + grace:
        write_json_atomic(e.sandbox / KILL_FILE, {
            "requested_at": now, "grace_seconds": grace, "deadline": now + grace})
    _signal(e, signal.SIGTERM)


def _signal(e: Executor, sig: signal.Signals) -> None:
    try:
        if e.child_pid is not None:
            if e.task_alive:
                os.killpg(e.child_pid, sig)
        elif e.executor_alive:
            os.kill(e.pid, sig)
    except ProcessLookupError:
        pass  # ended between the check and the signal


def stop(alive: Sequence[Executor], grace: float, *,
         clock: Callable[[], float] = time.time,
         sleep: Callable[[float], None] = time.sleep,
         on_progress: Callable[[int, int], None] | None = None) -> list[Executor]:
    """Stop these tasks: kill requests and SIGTERM now, SIGKILL for those still alive after
    ``grace`` seconds; then wait (up to 10 s more) for their executors to record the exit.
    Returns the executors still alive at the end (normally none).
    ``on_progress(stopped, total)`` is called while waiting."""
    start = clock()
    for e in alive:
        request_kill(e, grace, start)
    left = list(alive)
    killed = False
    while left:
        left = [e for e in left if e.alive]
        if on_progress is not None:
            on_progress(len(alive) - len(left), len(alive))
        if not left:
            break
        now = clock()
        if not killed and now - start >= grace:
            for e in left:
                _signal(e, signal.SIGKILL)
            killed = True
        elif killed and now - start >= grace + 10:
            break
        sleep(0.1)
    return left


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def main(argv: list[str] | None = None) -> int:
    """``python3 -m scheduler.stop --check DIR``: exit 1 (with a warning on stderr) while
    tasks of ``DIR`` are running; ``make clean`` uses it."""
    parser = argparse.ArgumentParser(prog="python3 -m scheduler.stop")
    parser.add_argument("state_dir")
    parser.add_argument("--check", action="store_true", required=True)
    args = parser.parse_args(argv)
    alive = running(Path(args.state_dir))
    if not alive:
        return 0
    ids = ", ".join(e.task_id for e in alive[:5]) + (", …" if len(alive) > 5 else "")
    print(f"warning: {len(alive)} task(s) of {args.state_dir} are still running ({ids}); "
          f"deleting the state dir would leave them running with no record. Stop them "
          f"first: `make stop` (or `dromos stop-all --state-dir {args.state_dir}`)",
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
