"""A real `dromos serve` subprocess for end-to-end tests, and helpers to inspect it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last value: {last!r}")


class Server:
    """A `dromos serve` subprocess on a free port with its own state dir."""

    def __init__(self, state: Path, nodes_file: Path, *extra: str) -> None:
        self.state = state
        self.nodes_file = nodes_file
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.state.parent / "dromos.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler.cli", "serve", "--port", str(self.port),
             "--state-dir", str(self.state), "--nodes", str(self.nodes_file), *self.extra],
            stdout=log, stderr=log, start_new_session=True,
        )
        wait_for(lambda: httpx.get(self.url + "/ping").text == "pong", 30, "dromos /ping")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def get(self, path: str) -> Any:
        r = httpx.get(self.url + path, timeout=10)
        r.raise_for_status()
        return r.json()


def executors(state: Path) -> dict[str, dict[str, Any]]:
    """Task id → executor.json for every task sandbox."""
    out = {}
    for f in (state / "tasks").glob("*/executor.json"):
        out[f.parent.name] = json.loads(f.read_text())
    return out


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextmanager
def serving(tmp: Path, nodes: list[dict[str, Any]], *extra: str) -> Iterator[Server]:
    """A started `dromos serve` over ``nodes`` with its state under ``tmp``; on exit it is
    stopped and every process its tasks started is killed."""
    # Imported here: the runtime test helpers import this module's neighbours.
    from tests.runtimes.conftest import cleanup_local_state

    nodes_file = tmp / "nodes.json"
    nodes_file.write_text(json.dumps(nodes))
    srv = Server(tmp / "state", nodes_file, *extra)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        cleanup_local_state(srv.state)
