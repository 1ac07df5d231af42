"""The shared parts of reading task output and sandbox files (scheduler/runtimes/output.py),
the shared kill records (kills.py) and retry pacing (backoff.py): pure or file-level, no
backend needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from scheduler.runtimes.backoff import Backoff, next_delay
from scheduler.runtimes.base import RuntimeUnavailable
from scheduler.runtimes.kills import KillRequest, kill_in_force, read_kill, record_kill
from scheduler.runtimes.output import (
    list_files,
    read_combined,
    read_file_in,
    read_from,
    read_stream_files,
)

# --- output -------------------------------------------------------------------------------------


def test_reading_never_splits_a_character(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes("aé".encode()[:2])  # "a" and the first byte of "é"
    data, pos = read_from(path, 0)
    assert (data, pos) == (b"a", 1)
    path.write_bytes("aé".encode())
    assert read_from(path, pos) == ("é".encode(), 3)


def test_stream_files_tail_then_follow_and_start_over_when_truncated(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_bytes(b"".join(b"line %d\n" % i for i in range(10)))
    (tmp_path / "stderr").write_bytes(b"err\n")
    names = ("stdout", "stderr")
    first = read_stream_files(tmp_path, names, 3, None, "files")
    assert [(c.stream, c.text) for c in first.chunks] == [
        ("stdout", "line 7\nline 8\nline 9\n"), ("stderr", "err\n")]
    with open(tmp_path / "stdout", "ab") as f:
        f.write("more ü\n".encode())
    nxt = read_stream_files(tmp_path, names, None, first.cursor, "files")
    assert [c.text for c in nxt.chunks] == ["more ü\n", ""]
    (tmp_path / "stdout").write_bytes(b"new\n")
    assert read_stream_files(tmp_path, names, None, nxt.cursor, "files").chunks[0].text == \
        "new\n"
    assert read_stream_files(tmp_path, names, 0, None, "files").chunks[0].text == ""


def test_combined_output_follows_complete_lines() -> None:
    first = read_combined("a\nb\nc\npart", 2, None, "fake")
    assert [(c.stream, c.text) for c in first.chunks] == [("output", "b\nc\n")]
    nxt = read_combined("a\nb\nc\npartial line\nd\n", None, first.cursor, "fake")
    assert nxt.chunks[0].text == "partial line\nd\n" and nxt.cursor == "l:5"
    assert read_combined("x\n", None, nxt.cursor, "fake").chunks[0].text == "x\n", \
        "fewer lines than seen: the log was reset, read it from the start"
    assert read_combined("a\nb\n", None, "f:1,2", "fake").chunks[0].text == "a\nb\n", \
        "a cursor of another kind reads like none"


def test_sandbox_files_are_listed_and_read_but_nothing_outside(tmp_path: Path) -> None:
    sandbox = tmp_path / "sandbox"
    (sandbox / "sub").mkdir(parents=True)
    (sandbox / "stdout").write_bytes(b"hello world")
    (sandbox / "sub" / "data.txt").write_bytes(b"x" * 10)
    (tmp_path / "secret").write_bytes(b"secret")
    os.symlink(tmp_path / "secret", sandbox / "link")
    os.symlink(tmp_path, sandbox / "dirlink")

    files = list_files(sandbox)
    assert [(f.path, f.size) for f in files] == [("stdout", 11), ("sub/data.txt", 10)]
    assert read_file_in(sandbox, "stdout", 6, 100) == b"world"
    assert read_file_in(sandbox, "stdout", 0, 5) == b"hello"
    assert read_file_in(sandbox, "stdout", 50, 5) == b""
    for bad in ("../secret", "/etc/passwd", "link", "dirlink/secret", "sub", "", "missing"):
        with pytest.raises(LookupError):
            read_file_in(sandbox, bad, 0, 10)
    assert list_files(tmp_path / "nowhere") == []


# --- kill records -------------------------------------------------------------------------------


def test_a_second_kill_never_extends_the_deadline_but_may_shorten_it(tmp_path: Path) -> None:
    first = record_kill(tmp_path, 10, now=100.0)
    assert first == KillRequest(100.0, 10.0, 110.0)
    assert record_kill(tmp_path, 60, now=105.0) == first, "a later, longer kill changes nothing"
    shorter = record_kill(tmp_path, 1, now=105.0)
    assert shorter.deadline == 106.0
    assert read_kill(tmp_path) == shorter
    assert shorter.remaining(105.5) == 0.5 and not shorter.overdue(105.5)
    assert shorter.overdue(106.0) and shorter.remaining(200.0) == 0.0


def test_kill_in_force_is_pure_and_clamps_negative_grace() -> None:
    request, new = kill_in_force(None, -5, now=10.0)
    assert new and request == KillRequest(10.0, 0.0, 10.0)
    assert kill_in_force(request, 3, now=11.0) == (request, False)


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_doubles_to_a_ceiling_and_resets_on_success() -> None:
    now = [0.0]
    backoff = Backoff(clock=lambda: now[0])
    backoff.check()  # nothing failed yet: go ahead
    assert isinstance(backoff.failed("engine down"), RuntimeUnavailable)
    assert backoff.delay == 1.0
    with pytest.raises(RuntimeUnavailable, match="engine down"):
        backoff.check()
    now[0] = 1.0
    backoff.check()  # the wait is over: one attempt may go
    delays = []
    for _ in range(7):
        backoff.failed("still down")
        delays.append(backoff.delay)
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    backoff.succeeded()
    backoff.failed("down again")
    assert backoff.delay == 1.0
    assert next_delay(0.0) == 1.0 and next_delay(20.0) == 30.0
