"""The state directory's lock: one holder, named to whoever is refused, gone with its process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from scheduler.store.state_lock import Holder, StateDirHeld, StateLock, read_holder


def holder(api: str = "127.0.0.1:1") -> Holder:
    return Holder(pid=os.getpid(), host="here", api=api)


def test_second_lock_is_refused_and_names_the_holder(tmp_path: Path) -> None:
    first = StateLock(tmp_path, holder("127.0.0.1:8080"))
    first.acquire()
    second = StateLock(tmp_path, holder("127.0.0.1:9090"))
    with pytest.raises(StateDirHeld) as refused:
        second.acquire()
    assert refused.value.holder is not None
    assert refused.value.holder.api == "127.0.0.1:8080"
    assert f"pid {os.getpid()}" in str(refused.value)
    assert "--standby" in str(refused.value)
    first.release()
    second.acquire()
    assert read_holder(tmp_path) == second.holder
    second.release()


def test_waiting_lock_takes_over_when_released(tmp_path: Path) -> None:
    first = StateLock(tmp_path, holder("a"))
    first.acquire()
    second = StateLock(tmp_path, holder("b"))
    got = threading.Event()

    def standby() -> None:
        if second.wait():
            got.set()

    t = threading.Thread(target=standby)
    t.start()
    assert not got.wait(0.5)  # held: the standby keeps waiting
    first.release()
    t.join(10)
    assert got.is_set() and second.held
    second.release()


def test_wait_returns_false_when_stopped(tmp_path: Path) -> None:
    first = StateLock(tmp_path, holder("a"))
    first.acquire()
    stop = threading.Event()
    stop.set()
    assert StateLock(tmp_path, holder("b")).wait(stop) is False
    first.release()


HOLD = """
import sys, time
from pathlib import Path
from scheduler.store.state_lock import Holder, StateLock
StateLock(Path(sys.argv[1]), Holder.me("127.0.0.1:7")).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_lock_dies_with_its_process_and_is_not_inherited(tmp_path: Path) -> None:
    # The holder starts a long-lived child (as the local runtime starts executors): the child
    # must not keep the lock once the holder is killed -9.
    script = HOLD.replace('print("held"', 'import subprocess; subprocess.Popen(["sleep", "600"]); '
                                          'print("held"')
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"held"
        with pytest.raises(StateDirHeld) as refused:
            StateLock(tmp_path, holder()).acquire()
        assert refused.value.holder is not None and refused.value.holder.pid == proc.pid
        proc.kill()
        proc.wait(10)
        lock = StateLock(tmp_path, holder())
        lock.acquire()  # no stale lock: nothing to clean by hand
        lock.release()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
