"""One writer per state directory: an exclusive ``flock`` held for the life of the process.

Contract:
- ``StateLock(state_dir, holder).acquire()`` takes the lock or raises :class:`StateDirHeld`
  naming the live holder (pid, host, API address, since). ``wait(stop)`` blocks until the lock
  is free (a standby) and then holds it.
- The kernel releases a ``flock`` when the last descriptor of its open file closes, so the lock
  dies with its process, ``kill -9`` included: there is never a stale lock file to remove. The
  descriptor is opened close-on-exec, so tasks and executors started by Dromos never inherit it
  (an executor outliving its scheduler must not keep the state dir locked).
- The holder's identity is written into the lock file after the lock is taken; a reader that
  fails to take the lock reads it to name the holder. The file's contents are advisory; the
  ``flock`` is the truth.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

LOCK_FILE = "dromos.lock"
# How often a standby tries the lock: well inside the 2 s takeover promise.
POLL_SECONDS = 0.1


@dataclass(frozen=True)
class Holder:
    """Who holds a state directory."""

    pid: int
    host: str
    api: str
    since: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    @classmethod
    def me(cls, api: str) -> Holder:
        return cls(pid=os.getpid(), host=socket.gethostname(), api=api)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, API {self.api}, since {self.since}"


class StateDirHeld(Exception):
    """Another live process holds the state directory. ``holder`` is ``None`` when it has not
    written its identity yet (it took the lock an instant ago)."""

    def __init__(self, state_dir: Path, holder: Holder | None) -> None:
        self.state_dir = state_dir
        self.holder = holder
        who = holder.describe() if holder else "a process that is still starting"
        super().__init__(f"state directory {state_dir} is held by another Dromos ({who}); "
                         "stop it, use another --state-dir, or start this one with --standby "
                         "to take over when it exits")


class StateLock:
    """The exclusive lock on one state directory (see the module docstring)."""

    def __init__(self, state_dir: Path, holder: Holder) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self.holder = holder
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock now or raise :class:`StateDirHeld`."""
        if not self.try_acquire():
            raise StateDirHeld(self.state_dir, read_holder(self.state_dir))

    def try_acquire(self) -> bool:
        """Take the lock if it is free; ``True`` when this process now holds it."""
        if self._fd is not None:
            return True
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        data = json.dumps(asdict(self.holder)).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self._fd = fd
        return True

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Block until the lock is ours (``True``) or ``stop`` is set (``False``)."""
        while not self.try_acquire():
            if stop is not None and stop.wait(POLL_SECONDS):
                return False
            if stop is None:
                time.sleep(POLL_SECONDS)
        return True

    def release(self) -> None:
        """Give the lock up (closing the descriptor releases the ``flock``)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_holder(state_dir: Path) -> Holder | None:
    """The identity the current holder wrote, or ``None`` (no file, not written yet, garbled)."""
    try:
        raw = json.loads((state_dir / LOCK_FILE).read_text())
        return Holder(pid=int(raw["pid"]), host=str(raw["host"]), api=str(raw["api"]),
                      since=str(raw["since"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
